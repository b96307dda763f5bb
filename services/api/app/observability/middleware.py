"""Request id and access log in one pure ASGI middleware (the HTTP metrics are the
instrumentator's, app.observability.metrics).

One layer instead of two: every middleware wraps `send` and adds a coroutine frame per message,
and both need the same facts (status, route template, duration). No BaseHTTPMiddleware: its task
per request costs more than everything here.
"""

import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability.context import request_id_var
from app.observability.logging import AccessLog

access_log = AccessLog()

# A caller-supplied id is echoed into logs and headers, so only a safe, short shape is trusted.
_VALID_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")
_UNLOGGED = ("/health", "/metrics")


def _incoming_request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id" and _VALID_REQUEST_ID.match(value):
            return str(value.decode("ascii"))
    return uuid.uuid4().hex


def route_template(scope: Scope) -> str | None:
    """The matched route's path template ("/items/{item_id}"), None when no route matched."""
    # FastAPI's API routes put themselves in the scope; plain Starlette routes (/docs) only set
    # the endpoint, and their path is their template.
    route = getattr(scope.get("route"), "path", None)
    if route is None and "endpoint" in scope:
        route = scope["path"]
    return route


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request_id = _incoming_request_id(scope)
        request_id_var.set(request_id)
        header = (b"x-request-id", request_id.encode("ascii"))
        status = 500
        start = time.perf_counter()

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [h for h in message.get("headers", []) if h[0] != b"x-request-id"]
                headers.append(header)
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_request_id)
        finally:
            seconds = time.perf_counter() - start
            route = route_template(scope)
            if route is None or not route.startswith(_UNLOGGED):
                access_log.write(
                    {
                        "method": scope["method"],
                        "route": route or "unmatched",
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round(seconds * 1000, 3),
                    }
                )

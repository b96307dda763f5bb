"""Request id and access log as a pure ASGI middleware (no BaseHTTPMiddleware task overhead)."""

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability.context import request_id_var

access_logger = logging.getLogger("app.access")

# A caller-supplied id is echoed into logs and headers, so only a safe, short shape is trusted.
_VALID_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")


def _incoming_request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id" and _VALID_REQUEST_ID.match(value):
            return str(value.decode("ascii"))
    return uuid.uuid4().hex


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
            # FastAPI's API routes put themselves in the scope; plain Starlette routes (/docs)
            # only set the endpoint, and their path is their template.
            route = getattr(scope.get("route"), "path", None)
            if route is None and "endpoint" in scope:
                route = scope["path"]
            if route is None or not route.startswith(("/health", "/metrics")):
                access_logger.info(
                    "request",
                    extra={
                        "method": scope["method"],
                        "route": route or "unmatched",
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round((time.perf_counter() - start) * 1000, 3),
                    },
                )

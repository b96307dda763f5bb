"""HEAD wherever GET is served: the GET's status and headers, no body (RFC 9110 9.3.2).

FastAPI's routes answer only the methods they declare, so HEAD was a 405 whose `Allow` listed
HEAD, and load balancers that probe /health/live with HEAD saw a failure. Routing a HEAD as the
GET keeps one handler per resource; the body is dropped here, not left to the server, so the
answer is right under any ASGI server (Uvicorn drops it too) and in-process tests.
"""

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGetMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_headers_only(message: Message) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                # Content-Length stays: it is what a GET would have sent (RFC 9110 8.6).
                message = {**message, "body": b""}
            await send(message)

        # In place, and restored after: the outer middleware (access log, metrics) reads the
        # route the router records in this scope, and must log the method the client sent.
        scope["method"] = "GET"
        try:
            await self.app(scope, receive, send_headers_only)
        finally:
            scope["method"] = "HEAD"

"""A deadline for a whole request body, counted from the moment its header is complete.

nginx's timers are per read (`client_body_timeout`), so a body sent a byte every few seconds
would hold a replica's connection and coroutine for as long as the client likes; nginx has no
total body timeout (docs/decisions/edge-hardening.md, section 3). The deadline is therefore here,
a pure ASGI middleware wrapping `receive`: no task per request, and requests without a body are
not wrapped at all.
"""

import asyncio

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_DISCONNECT: Message = {"type": "http.disconnect"}


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


class BodyDeadlineMiddleware:
    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.seconds
        body_complete = False
        expired = False
        response_started = False

        async def send_tracked(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        async def receive_by_deadline() -> Message:
            nonlocal body_complete, expired
            if body_complete:
                return await receive()
            if expired:
                # Once expired, the connection is done for: the rest of the body is never read.
                return _DISCONNECT
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                expired = True
                if response_started:
                    # Too late for a 408: stop reading, and the connection closes with the answer.
                    return _DISCONNECT
                # FastAPI re-raises an HTTPException raised while it reads the body, so this
                # becomes the app's own 408 problem (app.errors.http), with the request id, in
                # the access log and the metrics; `Connection: close` makes Uvicorn drop the
                # connection after it instead of reading the rest of the body as a next request.
                raise HTTPException(
                    408,
                    f"The request body did not arrive within {self.seconds:g} s.",
                    headers={"Connection": "close"},
                ) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_complete = True
            return message

        await self.app(scope, receive_by_deadline, send_tracked)

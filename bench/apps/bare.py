"""The floor of any ASGI app under Uvicorn: no framework, no routing, a constant answer."""

from starlette.types import Receive, Scope, Send

_HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"17")]
_BODY = b'{"message":"ok"}\n'


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _BODY})

"""The API in-process, as its tests drive it: the app's lifespan run like Uvicorn runs it, and an
httpx client speaking ASGI to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from app.config import Settings
from app.main import create_app

MakeSettings = Callable[..., Settings]
Serve = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@asynccontextmanager
async def serve(
    settings: Settings | None = None,
    *,
    app: FastAPI | None = None,
    raise_app_exceptions: bool = True,
) -> AsyncIterator[httpx.AsyncClient]:
    """`async with serve(settings) as client:` an app of its own, started and stopped around it.

    `app=` serves a prepared app instead (a test route added, say); `raise_app_exceptions=False`
    lets a test see the 500 the server would send instead of the exception.
    """
    application = app if app is not None else create_app(settings)
    async with LifespanManager(application):
        transport = httpx.ASGITransport(app=application, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
            yield client

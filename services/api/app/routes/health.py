import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from redis.exceptions import RedisError
from sqlalchemy import text

from app.deps import CacheDep, EngineDep
from app.errors import problem_response, problem_responses

router = APIRouter(prefix="/health", tags=["health"], responses=problem_responses("default"))

_DB_CHECK_TIMEOUT_SECONDS = 2.0


@router.get("/live", summary="The process answers")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/ready",
    summary="PostgreSQL is reachable; the cache's state is reported but never fails readiness",
    responses=problem_responses(503, s503="PostgreSQL is unreachable; `checks` says what failed"),
)
async def ready(request: Request, engine: EngineDep, cache: CacheDep) -> Response:
    checks: dict[str, Any] = {}
    start = time.perf_counter()
    try:
        async with asyncio.timeout(_DB_CHECK_TIMEOUT_SECONDS):
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        checks["database"] = {"status": "up", "latency_ms": _ms_since(start)}
    except Exception as exc:
        checks["database"] = {"status": "down", "error": type(exc).__name__}

    start = time.perf_counter()
    try:
        await cache.ping()
        checks["cache"] = {"status": "up", "latency_ms": _ms_since(start)}
    except RedisError as exc:
        # The cache fails open, so a down Redis degrades latency but not readiness.
        checks["cache"] = {"status": "down", "error": type(exc).__name__}

    if checks["database"]["status"] != "up":
        return problem_response(
            request,
            503,
            "PostgreSQL is unreachable.",
            slug="not-ready",
            extra={"checks": checks},
        )
    return JSONResponse({"status": "ready", "checks": checks})


def _ms_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)

import asyncio
import io
import json
import logging
from typing import Any

import httpx
import pytest

from app.observability.context import request_id_var
from app.observability.logging import AccessLog, JsonFormatter, LoopBatchingStreamHandler
from stack.testing.api import create_user


@pytest.fixture
def access_log(json_log: io.StringIO) -> io.StringIO:
    """Everything logged meanwhile (conftest's json_log); the access lines are app.access's."""
    return json_log


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_one_json_line_per_request_with_the_callers_request_id(
    client: httpx.AsyncClient, access_log: io.StringIO
) -> None:
    response = await client.get("/items/987654321", headers={"X-Request-ID": "abc-123.x"})
    assert response.headers["x-request-id"] == "abc-123.x"
    assert response.json()["request_id"] == "abc-123.x"
    (line,) = [line for line in _lines(access_log) if line["logger"] == "app.access"]
    assert line["request_id"] == "abc-123.x"
    assert line["method"] == "GET"
    assert line["route"] == "/items/{item_id}"
    assert line["status"] == 404
    assert isinstance(line["duration_ms"], float)
    assert line["replica"] == "test-replica"
    assert line["level"] == "INFO"


async def test_request_id_is_generated_when_missing_or_unsafe(
    client: httpx.AsyncClient, access_log: io.StringIO
) -> None:
    plain = await client.get("/health/live")
    unsafe = await client.get("/health/live", headers={"X-Request-ID": "bad id\twith spaces"})
    too_long = await client.get("/health/live", headers={"X-Request-ID": "a" * 200})
    ids = [r.headers["x-request-id"] for r in (plain, unsafe, too_long)]
    assert all(len(i) == 32 for i in ids)
    assert len(set(ids)) == 3


async def test_tokens_never_reach_the_log(
    client: httpx.AsyncClient, access_log: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    user = await create_user(client)
    caplog.set_level(logging.DEBUG)
    await client.post("/items", json={"name": "x", "price": 1}, headers=user.auth)
    await client.post(
        "/items", json={"name": "x", "price": 1}, headers={"Authorization": "Bearer leaked-guess"}
    )
    text = access_log.getvalue() + caplog.text
    assert access_log.getvalue()
    assert user.token not in text
    assert "leaked-guess" not in text


class _CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def _batching_logger(stream: io.StringIO) -> logging.Logger:
    handler = LoopBatchingStreamHandler(stream)
    handler.setFormatter(JsonFormatter("test-replica"))
    logger = logging.getLogger(f"test.batching.{id(stream)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


async def test_lines_of_one_loop_turn_are_written_together() -> None:
    stream = _CountingStream()
    logger = _batching_logger(stream)
    for i in range(5):
        logger.info("line", extra={"i": i})
    assert stream.writes == 0  # waiting for the end of this turn of the loop
    await asyncio.sleep(0)
    assert stream.writes == 1
    assert [line["i"] for line in _lines(stream)] == [0, 1, 2, 3, 4]


def test_lines_outside_a_loop_are_written_at_once_and_in_order() -> None:
    stream = _CountingStream()
    logger = _batching_logger(stream)
    logger.info("first")
    logger.info("second")
    assert [line["message"] for line in _lines(stream)] == ["first", "second"]


async def test_flush_writes_what_waits() -> None:
    stream = _CountingStream()
    logger = _batching_logger(stream)
    logger.info("before exit")
    for handler in logger.handlers:
        handler.flush()
    assert [line["message"] for line in _lines(stream)] == ["before exit"]


def _access_log_to(
    stream: io.StringIO, name: str, *, handler_class: type[logging.StreamHandler[Any]]
) -> AccessLog:
    handler = handler_class(stream)
    handler.setFormatter(JsonFormatter("test-replica"))
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return AccessLog(logger.name)


_FIELDS = {"method": "GET", "route": "/items/{item_id}", "path": "/items/7", "status": 200}


async def test_access_line_is_the_same_with_or_without_the_logging_machinery() -> None:
    direct, plain = _CountingStream(), io.StringIO()
    fast = _access_log_to(direct, "test.access.fast", handler_class=LoopBatchingStreamHandler)
    slow = _access_log_to(plain, "test.access.slow", handler_class=logging.StreamHandler)
    # The first skips logging's records and handler dispatch; the second cannot.
    assert fast._direct_handler() is not None
    assert slow._direct_handler() is None
    token = request_id_var.set("rid-1")
    try:
        fast.write(dict(_FIELDS))
        slow.write(dict(_FIELDS))
    finally:
        request_id_var.reset(token)
    assert direct.writes == 0  # queued for the end of the loop turn, like any other line
    await asyncio.sleep(0)
    (fast_line,) = _lines(direct)
    (slow_line,) = _lines(plain)
    assert str(fast_line.pop("time"))[:16] == str(slow_line.pop("time"))[:16]
    assert fast_line.pop("logger") == fast.logger.name
    assert slow_line.pop("logger") == slow.logger.name
    assert fast_line == slow_line
    assert fast_line["request_id"] == "rid-1"


async def test_access_log_respects_filters_and_levels() -> None:
    stream = io.StringIO()
    access = _access_log_to(stream, "test.access.filtered", handler_class=LoopBatchingStreamHandler)
    access.logger.addFilter(lambda record: record.__dict__.get("status") != 404)
    access.write({**_FIELDS, "status": 404})
    access.write({**_FIELDS, "status": 201})
    access.logger.setLevel(logging.WARNING)
    access.write({**_FIELDS, "status": 202})
    await asyncio.sleep(0)
    assert [line["status"] for line in _lines(stream)] == [201]

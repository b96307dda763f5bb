"""JSON logs: one object per line, with the replica and the current request id on every record."""

import asyncio
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from app.observability.context import request_id_var

# Attributes every LogRecord has; anything else was passed through `extra=` and is kept.
_RECORD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn duplicates its message with ANSI colours
}


class JsonFormatter(logging.Formatter):
    def __init__(self, replica: str) -> None:
        super().__init__()
        self.replica = replica

    def entry(self, created: float, level: str, logger: str, message: str) -> dict[str, Any]:
        """The fields every line starts with, the current request's id included."""
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds"),
            "level": level,
            "logger": logger,
            "message": message,
            "replica": self.replica,
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        return entry

    def format(self, record: logging.LogRecord) -> str:
        entry = self.entry(record.created, record.levelname, record.name, record.getMessage())
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class LoopBatchingStreamHandler(logging.StreamHandler[TextIO]):
    """Writes the lines logged during one turn of the event loop together, at its end.

    Under load a replica logs dozens of access lines per turn of its loop. One write(2) each cost
    the replica about a tenth of a cached GET's CPU, and woke whatever reads the log pipe
    (supervisord natively, the container runtime in Compose) once per line: make bench measured
    supervisord at ~100 µs of CPU per request. A line now waits for the rest of the current turn
    at most. Lines logged outside a running loop (start-up, other threads) are written at once,
    after any that wait; flush(), which logging.shutdown() calls at exit, writes what is left.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._waiting: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        # Runs under the handler's lock (Handler.handle), as flush() does.
        try:
            self.write_line(self.format(record) + self.terminator)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def write_line(self, line: str) -> None:
        """Queue one formatted line (terminator included) for the end of this loop turn."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None:
            self._waiting.append(line)
            self.flush()
            return
        if not self._waiting:
            loop.call_soon(self.flush)
        self._waiting.append(line)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if self._waiting:
                lines = "".join(self._waiting)
                self._waiting.clear()
                self.stream.write(lines)
            super().flush()


def configure_logging(level: str, replica: str) -> None:
    handler = LoopBatchingStreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(replica))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    # Our middleware writes the access line; uvicorn's would log every request a second time.
    logging.getLogger("uvicorn.access").disabled = True


class AccessLog:
    """Writes each request's access line: the JSON object `logger.info("request", extra=fields)`
    would give, for 9 µs of CPU instead of 25 when the line goes to the process's own JSON
    handler.

    Through `logging`, an access line cost a cached GET a tenth of its CPU (make bench): a
    LogRecord with some twenty attributes (thread, process, caller), the handler lock, and a scan
    of the record for the `extra` fields the middleware already has as a dict. When the only
    handler the line would reach is the LoopBatchingStreamHandler that configure_logging
    installs, and no filter is set on the logger, the line is built and queued here instead;
    any other set-up (tests capturing "app.access", a handler added at run time) gets the plain
    logging call, so the result is the same line either way.
    """

    def __init__(self, name: str = "app.access") -> None:
        self.logger = logging.getLogger(name)

    def _direct_handler(self) -> LoopBatchingStreamHandler | None:
        if self.logger.filters:
            return None
        found: list[logging.Handler] = []
        current: logging.Logger | None = self.logger
        while current is not None:
            found += current.handlers
            current = current.parent if current.propagate else None
        if len(found) != 1:
            return None
        (handler,) = found
        if (
            type(handler) is not LoopBatchingStreamHandler
            or handler.filters
            or not isinstance(handler.formatter, JsonFormatter)
            or handler.level > logging.INFO
        ):
            return None
        return handler

    def write(self, fields: dict[str, Any]) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        handler = self._direct_handler()
        if handler is None:
            self.logger.info("request", extra=fields)
            return
        formatter = handler.formatter
        assert isinstance(formatter, JsonFormatter)  # checked by _direct_handler
        entry = formatter.entry(time.time(), "INFO", self.logger.name, "request")
        entry.update(fields)
        line = orjson.dumps(entry, default=str).decode() + handler.terminator
        with handler.lock:  # type: ignore[union-attr]
            handler.write_line(line)

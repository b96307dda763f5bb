"""A stand-in API replica for the tests of nginx's config: it answers with what it received."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class EchoUpstream:
    """A stand-in API replica: answers with what it received, as JSON, with a fixed status.

    location: answer 307 with this Location ("{host}" is the Host header it got), the way
        Starlette builds its trailing-slash redirects.
    delay: seconds to wait before answering (a hung replica).
    body_deadline: seconds from the request header to the end of the body; a body that is not
        complete by then gets a 408 problem at once (what the API's body deadline does).
    """

    def __init__(
        self,
        status: int = 200,
        *,
        location: str | None = None,
        delay: float = 0,
        body_deadline: float | None = None,
    ) -> None:
        self.requests: list[dict[str, Any]] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes; Nagle + delayed ACK would add 40 ms to each.
            disable_nagle_algorithm = True

            def _answer(self) -> None:
                seen: dict[str, Any] = {
                    "method": self.command,
                    "path": self.path,
                    "version": self.request_version,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "header_at": time.monotonic(),
                }
                upstream.requests.append(seen)
                if not self._read_body(seen):
                    close = {"Connection": "close"}
                    self._send(408, b'{"status":408}', "application/problem+json", close)
                    self.close_connection = True
                    return
                time.sleep(delay)
                extra = {}
                answer_status = status
                if location is not None:
                    extra["Location"] = location.format(host=self.headers.get("Host", ""))
                    answer_status = 307
                self._send(answer_status, json.dumps(seen).encode(), "application/json", extra)

            def _read_body(self, seen: dict[str, Any]) -> bool:
                """Reads the body (Content-Length or chunked); False when the deadline passed."""
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while size := int(self._line(seen).split(b";")[0], 16):
                        chunks.append(self._exactly(size, seen))
                        self._exactly(2, seen)
                    self._line(seen)
                    body = b"".join(chunks)
                else:
                    body = self._exactly(int(self.headers.get("Content-Length") or 0), seen)
                seen["body_bytes"] = len(body)
                seen["body_complete"] = not seen.get("timed_out")
                return bool(seen["body_complete"])

            def _remaining(self, seen: dict[str, Any]) -> float | None:
                if body_deadline is None:
                    return None
                started: float = seen["header_at"]
                return max(started + body_deadline - time.monotonic(), 0.001)

            def _exactly(self, size: int, seen: dict[str, Any]) -> bytes:
                data = b""
                while len(data) < size and not seen.get("timed_out"):
                    self.connection.settimeout(self._remaining(seen))
                    try:
                        chunk = self.rfile.read1(size - len(data))
                    except TimeoutError:
                        seen["timed_out"] = True
                        break
                    if not chunk:
                        break
                    data += chunk
                self.connection.settimeout(None)
                return data

            def _line(self, seen: dict[str, Any]) -> bytes:
                line = b""
                while not line.endswith(b"\r\n") and not seen.get("timed_out"):
                    line += self._exactly(1, seen)
                return line.strip() or b"0"

            def _send(
                self, code: int, body: bytes, content_type: str, extra: dict[str, str]
            ) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                # The API sets its own; nginx must not send two.
                self.send_header("X-Request-ID", "from-upstream")
                self.send_header("X-Frame-Options", "SAMEORIGIN")
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_HEAD = do_POST = do_PATCH = do_PUT = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> EchoUpstream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

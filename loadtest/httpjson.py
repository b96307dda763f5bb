"""A few JSON-over-HTTP calls with the standard library, for everything outside Locust.

The orchestrator talks to nginx (seeding), Prometheus, the Pushgateway and Grafana a few hundred
times per run at most; urllib is enough and keeps the Compose image's dependencies to the lock.
"""

from __future__ import annotations

import functools
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class HttpError(OSError):
    """No HTTP answer at all: refused, reset, timed out, unresolvable."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@functools.cache
def _trusting(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def call(
    method: str,
    url: str,
    payload: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
    ca: Path | None = None,
) -> Answer:
    """One request; any HTTP status is an Answer, only a missing answer raises HttpError.

    ca: the CA an https:// URL's certificate is checked against (the stack's local CA); None:
    the system's (which SSL_CERT_FILE overrides). Never unchecked.
    """
    if not url.startswith(("http://", "https://")):
        raise HttpError(f"not an http(s) URL: {url}")
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - scheme checked
    if data is not None:
        request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        context = _trusting(ca) if ca is not None and url.startswith("https://") else None
        opened = urllib.request.urlopen(request, timeout=timeout, context=context)  # noqa: S310
        with opened as response:
            return Answer(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, dict(exc.headers), exc.read())
    except (urllib.error.URLError, OSError) as exc:
        raise HttpError(f"{method} {url}: {getattr(exc, 'reason', exc)}") from exc

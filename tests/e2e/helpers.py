"""Small helpers the e2e modules share (this module holds no tests)."""

from __future__ import annotations

import importlib.util
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from native.paths import REPO_ROOT

PROBLEM = "application/problem+json"
PROBLEM_KEYS = {"type", "title", "status", "detail", "instance", "request_id"}


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The one error shape, from the API or from nginx: RFC 9457 with the request id."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"] == PROBLEM, response.headers
    body: dict[str, Any] = response.json()
    assert body.keys() >= PROBLEM_KEYS, body
    assert body["status"] == status
    assert body["type"].startswith("https://")
    assert body["request_id"] == response.headers["x-request-id"]
    # Nothing internal leaks into an error, whoever wrote it.
    assert "Traceback" not in response.text
    assert "nginx/" not in response.text
    return body


@dataclass
class ApiUser:
    id: int
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def new_user(client: httpx.Client) -> ApiUser:
    response = client.post(
        "/users", json={"email": f"e2e-{uuid.uuid4().hex}@example.com", "name": "e2e"}
    )
    assert response.status_code == 201, response.text
    return ApiUser(response.json()["id"], response.json()["token"])


def new_item(client: httpx.Client, user: ApiUser, **fields: Any) -> dict[str, Any]:
    response = client.post("/items", json={"name": "e2e", "price": 1, **fields}, headers=user.auth)
    assert response.status_code == 201, response.text
    item: dict[str, Any] = response.json()
    return item


def wait_until_serving(base_url: str, timeout: float = 30) -> None:
    """Earlier modules stop and start replicas; nginx may still be routing around one."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if all(
                httpx.get(f"{base_url}/health/live", timeout=5).status_code == 200 for _ in range(6)
            ):
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{base_url} is not serving"
        time.sleep(0.5)


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel, query) of every Grafana panel, from services/grafana/panel_queries.py."""
    path = REPO_ROOT / "services" / "grafana" / "panel_queries.py"
    spec = importlib.util.spec_from_file_location("panel_queries", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # NamedTuple needs its module importable
    spec.loader.exec_module(module)
    return [tuple(query) for query in module.panel_queries()]

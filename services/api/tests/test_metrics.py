"""/metrics: the instrumentator's HTTP series, exactly as the dashboards, rules and alerts use
them, beside the cache, pool and build series; and the one-worker rule that keeps them whole."""

import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.staticfiles import StaticFiles

from app.config import Settings
from app.main import create_app
from app.observability.metrics import LATENCY_BUCKETS
from stack.paths import API_DIR
from stack.testing.api import create_item, create_user
from stack.testing.asgi import MakeSettings, Serve


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


def _handlers(text: str) -> set[str]:
    """Handlers that counted a request (the 5xx series of every route exist at 0 from start-up,
    tests/observability/test_capacity_metrics.py)."""
    counted = _samples(text, "http_requests_total").items()
    return {dict(labels)["handler"] for labels, value in counted if value}


@pytest.fixture
async def fresh_client(
    make_settings: MakeSettings, serve: Serve
) -> AsyncIterator[httpx.AsyncClient]:
    """An app of its own: its registry counts only this test's requests."""
    async with serve(make_settings()) as client:
        yield client


async def test_requests_are_counted_by_route_template_method_and_exact_status(
    fresh_client: httpx.AsyncClient,
) -> None:
    owner = await create_user(fresh_client)
    item = await create_item(fresh_client, owner)
    for _ in range(2):
        assert (await fresh_client.get(f"/items/{item['id']}")).status_code == 200
    assert (await fresh_client.get("/items/987654321")).status_code == 404
    assert (await fresh_client.get("/health/live")).status_code == 200
    await fresh_client.get("/metrics")
    text = (await fresh_client.get("/metrics")).text

    requests = _samples(text, "http_requests_total")
    get_item = (("handler", "/items/{item_id}"), ("method", "GET"))
    assert requests[(*get_item, ("status", "200"))] == 2
    assert requests[(*get_item, ("status", "404"))] == 1
    assert requests[(("handler", "/items"), ("method", "POST"), ("status", "201"))] == 1
    # Scrapes and probes are not traffic.
    assert not {h for h in _handlers(text) if h == "/metrics" or h.startswith("/health")}

    count = _samples(text, "http_request_duration_seconds_count")
    assert count[get_item] == 3  # no status label on the histogram
    buckets = {
        dict(labels)["le"] for labels in _samples(text, "http_request_duration_seconds_bucket")
    }
    assert buckets == {str(b) for b in LATENCY_BUCKETS} | {"+Inf"}
    # Nothing the dashboards do not use.
    names = {family.name for family in text_string_to_metric_families(text)}
    assert not {n for n in names if n.startswith("http_") and "size" in n}
    assert "_created" not in text


async def test_paths_no_route_matches_share_one_handler_label(
    fresh_client: httpx.AsyncClient,
) -> None:
    paths = ["/nope/1", "/nope/2", "/wp-login.php", "/items/1/", "/items/2/"]
    for path in paths:
        assert (await fresh_client.get(path)).status_code == 404
    text = (await fresh_client.get("/metrics")).text
    assert _handlers(text) == {"none"}
    counted = {k: v for k, v in _samples(text, "http_requests_total").items() if v}
    assert counted == {(("handler", "none"), ("method", "GET"), ("status", "404")): len(paths)}


@pytest.fixture
def static_folder(tmp_path: Path) -> Path:
    for name in "abc":
        (tmp_path / f"{name}.txt").write_text(name)
    return tmp_path


async def test_a_mount_is_one_handler_however_many_sub_paths(
    make_settings: MakeSettings, serve: Serve, static_folder: Path
) -> None:
    async def file(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.path_params["name"])

    app = create_app(make_settings())
    app.mount("/files", Starlette(routes=[Route("/{name}", file)]))
    app.mount("/static", StaticFiles(directory=static_folder))
    async with serve(app=app) as client:
        for name in "abc":
            assert (await client.get(f"/files/{name}")).status_code == 200
            assert (await client.get(f"/static/{name}.txt")).status_code == 200
        text = (await client.get("/metrics")).text
    assert _handlers(text) == {"/files/{name}", "/static"}


async def test_metrics_disabled_records_no_http_series_but_serves_the_rest(
    make_settings: MakeSettings, serve: Serve
) -> None:
    async with serve(make_settings(metrics_enabled=False)) as client:
        owner = await create_user(client)
        item = await create_item(client, owner)
        await client.get(f"/items/{item['id']}")
        text = (await client.get("/metrics")).text
    names = {family.name for family in text_string_to_metric_families(text)}
    assert not {n for n in names if n.startswith("http_")}
    assert {"api_cache_lookups", "api_build_info", "api_db_pool_size", "process_cpu_seconds"} <= (
        names
    )
    assert sum(_samples(text, "api_cache_lookups_total").values()) == 1


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("WEB_CONCURRENCY", "2", "one worker per process"),
        ("PROMETHEUS_MULTIPROC_DIR", tempfile.gettempdir(), "multiprocess mode is not supported"),
    ],
)
def test_more_than_one_worker_is_refused_at_start(variable: str, value: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings.model_validate({variable.lower(): value})
    # The real entry point exits at once, saying why, instead of serving split metrics.
    started = subprocess.run(
        [sys.executable, "-m", "app"],
        cwd=API_DIR,
        env={**os.environ, variable: value, "API_PORT": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert started.returncode != 0
    assert message in started.stderr
    assert Settings(_env_file=None, web_concurrency=1).web_concurrency == 1

"""/metrics: the instrumentator's HTTP series, exactly as the dashboards, rules and alerts use
them, beside the cache, pool and build series. The one-worker rule that keeps them whole is
tested with the entry point (test_server.py)."""

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.staticfiles import StaticFiles

from app.main import create_app
from app.observability.metrics import LATENCY_BUCKETS
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


async def _scrape(
    client: httpx.AsyncClient,
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def _value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_custom_series_exist_and_move(client: httpx.AsyncClient) -> None:
    owner = await create_user(client)
    item = await create_item(client, owner)
    before = await _scrape(client)
    await client.get(f"/items/{item['id']}")  # miss
    await client.get(f"/items/{item['id']}")  # hit
    await client.get("/items/987654321")  # miss, 404
    after = await _scrape(client)

    assert _value(after, "api_cache_lookups_total", result="hit") == (
        _value(before, "api_cache_lookups_total", result="hit") + 1
    )
    assert _value(after, "api_cache_lookups_total", result="miss") == (
        _value(before, "api_cache_lookups_total", result="miss") + 2
    )
    assert ("api_cache_lookups_total", frozenset({("result", "error")})) in after
    assert _value(after, "api_build_info", version="0.1.0", replica_name="test-replica") == 1
    assert _value(after, "api_db_pool_size") >= 1
    assert ("api_db_pool_checked_out", frozenset()) in after
    assert ("api_db_pool_overflow", frozenset()) in after
    assert _value(after, "process_resident_memory_bytes") > 0


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
    # A route's path with a method it lacks: labelled by its template, not "none".
    assert (await fresh_client.put("/items")).status_code == 405
    text = (await fresh_client.get("/metrics")).text
    assert _handlers(text) == {"none", "/items"}
    counted = {k: v for k, v in _samples(text, "http_requests_total").items() if v}
    assert counted == {
        (("handler", "none"), ("method", "GET"), ("status", "404")): len(paths),
        (("handler", "/items"), ("method", "PUT"), ("status", "405")): 1,
    }


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

import httpx
from prometheus_client.parser import text_string_to_metric_families

from stack.testing.api import create_item, create_user
from stack.testing.asgi import MakeSettings, Serve


async def _samples(
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
    before = await _samples(client)
    await client.get(f"/items/{item['id']}")  # miss
    await client.get(f"/items/{item['id']}")  # hit
    await client.get("/items/987654321")  # miss, 404
    after = await _samples(client)

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


async def test_http_metrics_by_handler_with_exact_status(client: httpx.AsyncClient) -> None:
    before = await _samples(client)
    await client.get("/items/987654321")
    await client.get("/health/live")
    after = await _samples(client)
    labels = {"handler": "/items/{item_id}", "method": "GET", "status": "404"}
    assert _value(after, "http_requests_total", **labels) == (
        _value(before, "http_requests_total", **labels) + 1
    )
    handlers = {dict(labels)["handler"] for name, labels in after if name == "http_requests_total"}
    assert not any(h.startswith(("/metrics", "/health")) for h in handlers), handlers

    buckets = {
        dict(labels)["le"]
        for name, labels in after
        if name == "http_request_duration_seconds_bucket"
        and dict(labels)["handler"] == "/items/{item_id}"
    }
    assert {"0.001", "0.005", "0.05", "0.5", "5.0", "+Inf"} <= buckets
    assert not any(
        "status" in dict(labels)
        for name, labels in after
        if name.startswith("http_request_duration")
    )


async def test_requests_no_route_matched_share_one_handler_label(
    client: httpx.AsyncClient,
) -> None:
    before = await _samples(client)
    await client.get("/no/such/path/1")
    await client.get("/no/such/path/2")
    await client.put("/items")  # a route's path, not its method: labelled by the template
    after = await _samples(client)
    unmatched = {"handler": "none", "method": "GET", "status": "404"}
    assert _value(after, "http_requests_total", **unmatched) == (
        _value(before, "http_requests_total", **unmatched) + 2
    )
    handlers = {dict(labels)["handler"] for name, labels in after if name == "http_requests_total"}
    assert not any(h.startswith("/no/") for h in handlers), handlers
    wrong_method = {"handler": "/items", "method": "PUT", "status": "405"}
    assert _value(after, "http_requests_total", **wrong_method) == (
        _value(before, "http_requests_total", **wrong_method) + 1
    )


async def test_metrics_enabled_false_records_no_http_series(
    make_settings: MakeSettings, serve: Serve
) -> None:
    async with serve(make_settings(metrics_enabled=False)) as client:
        await client.get("/items/987654321")
        samples = await _samples(client)
    names = {name for name, _ in samples}
    assert not any(name.startswith("http_request") for name in names), names
    # Everything else is still served: the replica stays a healthy scrape target.
    assert ("api_cache_lookups_total", frozenset({("result", "miss")})) in samples
    assert "process_resident_memory_bytes" in names

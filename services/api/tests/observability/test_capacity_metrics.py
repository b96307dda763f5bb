"""The series alerts depend on exist before anything happens: 5xx per route and method at 0,
and the capacity gauges (pool ceiling, replicas expected, memory limit)."""

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from app.observability.metrics import memory_limit_bytes
from stack.testing.asgi import MakeSettings, Serve


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_5xx_series_and_capacity_gauges_exist_at_start_up(
    make_settings: MakeSettings, serve: Serve
) -> None:
    settings = make_settings(api_replicas=5, db_max_overflow=7)
    async with serve(settings) as client:
        text = (await client.get("/metrics")).text
        samples = _samples(text)
    for handler, method in [("/items/{item_id}", "GET"), ("/items", "POST"), ("/users", "POST")]:
        for status in ("500", "503"):
            labels = (("handler", handler), ("method", method), ("status", status))
            assert samples[("http_requests_total", labels)] == 0, (handler, method, status)
    assert not any(name == "http_requests_total" and "/health/live" in str(labels)
                   for name, labels in samples)  # fmt: skip
    assert samples[("api_db_pool_max_overflow", ())] == 7
    assert samples[("api_replicas_expected", ())] == 5
    limit = memory_limit_bytes()
    assert samples.get(("api_memory_limit_bytes", ())) == limit


def test_the_memory_limit_is_read_from_cgroup_v2(tmp_path: Path) -> None:
    limit = tmp_path / "memory.max"
    limit.write_text("536870912\n")
    assert memory_limit_bytes(limit) == 536870912
    limit.write_text("max\n")
    assert memory_limit_bytes(limit) is None
    assert memory_limit_bytes(tmp_path / "absent") is None

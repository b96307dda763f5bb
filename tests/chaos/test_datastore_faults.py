"""Faults of the data stores under load against a live native stack (`make chaos`): PostgreSQL
and Redis each stopped, then started, and each hung; what users see, measured.

The load, the faults and the measurements are as in test_api_replica_faults.py: a bounded load
through nginx (see load.py), one fault made for real while it runs and then lifted, what the
clients saw and the stack reported checked, the numbers written to tests/chaos/results/ for
docs/reliability.md. The chaos suite's tests share one stack (conftest.py); each starts by
waiting until nginx routes to every replica again.
"""

from __future__ import annotations

import time

import httpx

from stack.ephemeral import EphemeralStack
from stack.testing.processes import frozen

from .faults import poll
from .load import (
    Load,
    assert_writes_kept,
    by_status,
    during,
    percentile,
    recovery_seconds,
    seed,
    summary,
)
from .observed import (
    DB_KINDS,
    PROBLEM,
    assert_all_problems,
    cache_hit,
    explain,
    failures,
    of_kinds,
    replica_ready,
    request_mix,
)
from .results import Results


def test_redis_stopped_then_started(chaos_stack: EphemeralStack, results: Results) -> None:
    """Reads keep answering 200 from PostgreSQL, the cache comes back by itself, and nothing
    stale is served afterwards: writes made while Redis was away could not invalidate, but
    Redis comes back empty (persistence is off)."""
    stack = chaos_stack
    stack.wait_for_full_pool()
    seeded = seed(stack.nginx, clients=8)
    mix = request_mix(seeded.cached_ids, "read", "read", "own", "update", "list")

    with Load(stack.nginx, seeded, mix, threads=8, pause=0.005) as load:
        time.sleep(2)
        stopping = time.monotonic()
        assert "stopped" in stack.supervisorctl("stop", "redis")
        time.sleep(8)
        lifted = time.monotonic()
        assert "started" in stack.supervisorctl("start", "redis")

        poll(lambda: cache_hit(stack, seeded.cached_ids[0]), timeout=20, interval=0.05)
        hits_again = time.monotonic() - lifted
        time.sleep(3)

    samples = load.samples
    assert failures(samples) == [], explain(failures(samples), load)
    before = [s for s in samples if s.end < stopping]
    assert any(s.cache == "hit" for s in before), "the load never hit the cache"
    in_fault = during(samples, [(stopping, lifted)])
    assert max(s.latency for s in in_fault) < 1.0
    assert load.stale_reads == []
    assert not (stack.data_dir / "stack" / "dump.rdb").exists(), "Redis persisted its data"
    # Every replica, asked directly, serves each item at its last acknowledged version.
    for worker in seeded.workers:
        for replica in range(1, stack.topology.replicas + 1):
            got = httpx.get(f"{stack.replica_url(replica)}/items/{worker.item_id}", timeout=5)
            assert got.json()["version"] == worker.version, (replica, worker, got.json())
    kept = assert_writes_kept(stack.nginx, seeded)
    results.record(
        "Redis stopped, then started",
        summary(
            samples,
            [(stopping, lifted)],
            recovery=hits_again,
            extra={
                "cache_hits_again_after_start_s": round(hits_again, 2),
                "writes_while_redis_was_down": len(
                    [s for s in of_kinds(in_fault, "update") if s.ok]
                ),
                "acknowledged_writes_checked": kept,
            },
        ),
    )


def test_postgres_stopped_then_started(chaos_stack: EphemeralStack, results: Results) -> None:
    """503 problem+json at once (no hung requests, no 500s), readiness red, cached reads and
    liveness unaffected; the pools recover by themselves; no acknowledged write is lost."""
    stack = chaos_stack
    stack.wait_for_full_pool()
    seeded = seed(stack.nginx, clients=9)
    mix = request_mix(seeded.cached_ids, "read", "live", "list", "create", "update", "read")
    pids = [stack.pid(f"api:api-{r}") for r in range(1, stack.topology.replicas + 1)]

    with Load(stack.nginx, seeded, mix, threads=9, pause=0.005) as load:
        time.sleep(2)
        stopping = time.monotonic()
        assert "stopped" in stack.supervisorctl("stop", "postgres")

        def all_red() -> bool:
            answers = [replica_ready(stack, r) for r in range(1, stack.topology.replicas + 1)]
            return all(
                a is not None
                and a.status_code == 503
                and a.headers["content-type"] == PROBLEM
                and a.json()["checks"]["database"]["status"] == "down"
                for a in answers
            )

        poll(all_red, timeout=10)
        red_after = time.monotonic() - stopping
        time.sleep(8)
        lifted = time.monotonic()
        assert "started" in stack.supervisorctl("start", "postgres")

        def all_ready() -> bool:
            answers = [replica_ready(stack, r) for r in range(1, stack.topology.replicas + 1)]
            return all(a is not None and a.status_code == 200 for a in answers)

        poll(all_ready, timeout=30)
        ready_after = time.monotonic() - lifted
        time.sleep(4)

    samples = load.samples
    failed = failures(samples)
    assert failed, "the outage was not seen"
    # As when PostgreSQL hangs: a COMMIT cut off by the shutdown may have applied, which the
    # writer's next conditional PATCH learns from one 412.
    refused = [s for s in failed if s.status == 412]
    assert {s.kind for s in refused} <= {"update"}, explain(failed, load)
    assert len(refused) <= load.threads, explain(failed, load)
    failed = [s for s in failed if s.status != 412]
    assert {s.status for s in failed} == {503}, explain(failed, load)
    assert all(s.retry_after for s in failed), "a 503 without Retry-After"
    assert {s.kind for s in failed} <= set(DB_KINDS), explain(failed, load)
    assert load.stale_reads == []
    assert_all_problems(samples)
    # Refused connections fail fast; nothing waits for a timeout, so nothing piles up.
    assert max(s.latency for s in failed) < 2.5
    recovery = recovery_seconds(samples, lifted, lambda s: s.ok or s.status == 412)
    assert recovery < 15
    # The same processes recovered: nothing was restarted to get the pools back.
    assert [stack.pid(f"api:api-{r}") for r in range(1, stack.topology.replicas + 1)] == pids
    kept = assert_writes_kept(stack.nginx, seeded)
    results.record(
        "PostgreSQL stopped, then started",
        summary(
            samples,
            [(stopping, lifted)],
            recovery=recovery,
            extra={
                "readiness_red_after_s": round(red_after, 2),
                "all_replicas_ready_after_start_s": round(ready_after, 2),
                "max_ms_of_a_503": round(max(s.latency for s in failed) * 1000, 1),
                "cached_reads_and_liveness_during_fault": by_status(
                    of_kinds(during(samples, [(stopping, lifted)]), "read", "live")
                ),
                "acknowledged_writes_checked": kept,
            },
        ),
    )


def test_postgres_hangs(chaos_stack: EphemeralStack, results: Results) -> None:
    """A database that accepts connections and answers nothing (every PostgreSQL process
    SIGSTOPped): the API's own timeouts answer 503 well inside nginx's 10 s, and its event
    loop keeps serving what needs no database."""
    stack = chaos_stack
    stack.wait_for_full_pool()
    seeded = seed(stack.nginx, clients=8)
    mix = request_mix(seeded.cached_ids, "read", "live", "list", "create", "update", "read", "live")

    with Load(stack.nginx, seeded, mix, threads=8, pause=0.005) as load:
        time.sleep(2)
        with frozen(stack.pid("postgres"), with_children=True):
            stopping = time.monotonic()
            time.sleep(12)
            lifted = time.monotonic()
        time.sleep(6)

    samples = load.samples
    in_fault = during(samples, [(stopping, lifted)])
    quick = of_kinds(in_fault, "read", "live")
    assert len(quick) > 200
    assert failures(quick) == [], explain(failures(quick), load)
    # The event loop is free: what needs no database answers as fast as ever.
    assert percentile((s.latency for s in quick), 99) < 0.25
    failed = failures(samples)
    assert failed, "the hang was not seen"
    # A PATCH whose COMMIT was cut off by the timeout (503) applies when PostgreSQL resumes; the
    # client's next conditional PATCH then gets one 412 (the API saying so), re-reads, and goes
    # on. More than one per writer would mean a stale cache kept it looping.
    refused = [s for s in failed if s.status == 412]
    assert {s.kind for s in refused} <= {"update"}, explain(failed, load)
    assert len(refused) <= load.threads, explain(failed, load)
    assert {s.status for s in failed} - {412} == {503}, explain(failed, load)
    assert load.stale_reads == []
    assert_all_problems(samples)
    # Pool wait (2 s) + asyncpg's command_timeout (6 s): the API answers before nginx gives up.
    assert max(s.latency for s in samples) < 9.5
    recovery = recovery_seconds(samples, lifted, lambda s: s.ok or s.status == 412)
    assert recovery < 10
    kept = assert_writes_kept(stack.nginx, seeded)
    results.record(
        "PostgreSQL hangs (SIGSTOP, 12 s)",
        summary(
            samples,
            [(stopping, lifted)],
            recovery=recovery,
            extra={
                "p99_ms_of_cached_reads_and_liveness": round(
                    percentile((s.latency for s in quick), 99) * 1000, 1
                ),
                "max_ms_of_a_database_request": round(
                    max(s.latency for s in of_kinds(in_fault, *DB_KINDS)) * 1000, 1
                ),
                "acknowledged_writes_checked": kept,
            },
        ),
    )


def test_redis_hangs(chaos_stack: EphemeralStack, results: Results) -> None:
    """A Redis that answers nothing costs one short socket timeout, then the cache is bypassed:
    reads keep answering 200 and latency stays bounded."""
    stack = chaos_stack
    stack.wait_for_full_pool()
    seeded = seed(stack.nginx, clients=8)
    mix = request_mix(seeded.cached_ids, "read", "read", "own", "list", "update")

    with Load(stack.nginx, seeded, mix, threads=8, pause=0.005) as load:
        time.sleep(2)
        with frozen(stack.pid("redis")):
            stopping = time.monotonic()
            time.sleep(6)
            lifted = time.monotonic()

        poll(lambda: cache_hit(stack, seeded.cached_ids[0]), timeout=20, interval=0.05)
        hits_again = time.monotonic() - lifted
        time.sleep(2)

    samples = load.samples
    assert failures(samples) == [], explain(failures(samples), load)
    in_fault = during(samples, [(stopping, lifted)])
    # REDIS_SOCKET_TIMEOUT_SECONDS is 0.1 s; the rest is this 2-core host under load.
    assert max(s.latency for s in in_fault) < 1.0
    kept = assert_writes_kept(stack.nginx, seeded)
    results.record(
        "Redis hangs (SIGSTOP, 6 s)",
        summary(
            samples,
            [(stopping, lifted)],
            recovery=hits_again,
            extra={
                "cache_hits_again_after_resume_s": round(hits_again, 2),
                # Writes while Redis hung could not invalidate; a hung Redis keeps its entries,
                # so a read may be stale for up to CACHE_TTL_SECONDS (docs/reliability.md).
                "stale_reads_after_acknowledged_writes": len(load.stale_reads),
                "acknowledged_writes_checked": kept,
            },
        ),
    )

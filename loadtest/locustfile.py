"""The Locust entry point: `locust -f loadtest/locustfile.py` (normally started by `python -m
loadtest`, which seeds the data set first and judges the run after; see README.md).

The master (or the only process) reads the seed file when a test starts and hands the ids to its
workers with a message that reaches them before their users are spawned, so workers need no
shared disk (in Compose they are separate containers).

The master also ends the test itself (--stop-after) instead of Locust's --run-time: that quits
the workers and waits only 0.5 s for their last numbers, so a loaded machine lost the final
second or two of a worker's requests (the client then counted fewer than nginx). Here the users
are stopped first, each worker sends its last report as it stops (before telling the master it
has stopped), and only then does the master quit. What the users offered (schedule.py) and when
the last of them started travel in the same reports, and are written to the window file with the
test's edges.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import gevent  # type: ignore[import-untyped]
from locust import events
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from loadtest import options  # noqa: F401 - registers the scenario's options
from loadtest.dataset import DataSet
from loadtest.export import Pusher
from loadtest.schedule import OFFERED
from loadtest.seed import Seed
from loadtest.users import CarelessClient, Reader, Writer, set_data
from stack.monitoring_auth import BasicAuth

__all__ = ["CarelessClient", "Reader", "Writer"]

SEED_MESSAGE = "loadtest_seed"
OFFERED_KEY = "loadtest_offered"
_pusher: Pusher | None = None


def _write_window(environment: Environment, key: str, value: Any) -> None:
    """Record `key` once in the window file (the first value given stays)."""
    path = environment.parsed_options.window_file if environment.parsed_options else ""
    if not path:
        return
    window_file = Path(path)
    window = json.loads(window_file.read_text()) if window_file.exists() else {}
    if key not in window:
        window[key] = value
        window_file.write_text(json.dumps(window))


def _stop_then_quit(environment: Environment) -> None:
    runner = environment.runner
    assert runner is not None
    _write_window(environment, "end", time.time())
    runner.stop()  # a master waits here until every worker has stopped and reported
    runner.quit()


def on_report_to_master(data: dict[str, Any], **_: Any) -> None:
    data[OFFERED_KEY] = OFFERED.report()


def on_worker_report(data: dict[str, Any], **_: Any) -> None:
    OFFERED.merge(data.get(OFFERED_KEY, {}))


def on_init(environment: Environment, **_: Any) -> None:
    global _pusher  # noqa: PLW0603 - one pusher per process
    runner, parsed = environment.runner, environment.parsed_options
    if isinstance(runner, WorkerRunner):

        def receive(msg: Any, **_: Any) -> None:
            zipf_s = environment.parsed_options.zipf_s if environment.parsed_options else 1.0
            set_data(DataSet.from_message(msg.data, zipf_s))

        runner.register_message(SEED_MESSAGE, receive)
        return
    if parsed is None:
        return
    # The master divides users between classes by these weights, so they are set here only.
    Reader.weight, Writer.weight = parsed.reader_weight, parsed.writer_weight
    CarelessClient.weight = parsed.careless_weight
    environment.user_classes = [cls for cls in environment.user_classes if cls.weight > 0]
    if parsed.pushgateway_url:
        # The credential comes in the environment (python -m loadtest passes it), never as a flag.
        auth = BasicAuth.from_env(os.environ)
        _pusher = Pusher(
            environment, parsed.pushgateway_url, parsed.run_id, parsed.push_interval, auth
        )
        _pusher.start()


def on_test_start(environment: Environment, **_: Any) -> None:
    runner, parsed = environment.runner, environment.parsed_options
    if isinstance(runner, WorkerRunner) or parsed is None:
        return
    if not parsed.seed_file:
        raise RuntimeError("no --seed-file: start the test with `python -m loadtest`")
    seed = Seed.load(Path(parsed.seed_file))
    data = DataSet(seed.item_ids, seed.user_ids, parsed.zipf_s)
    set_data(data)
    if isinstance(runner, MasterRunner):
        runner.send_message(SEED_MESSAGE, data.message())
    _write_window(environment, "start", time.time())
    if parsed.stop_after > 0:
        gevent.spawn_later(parsed.stop_after, _stop_then_quit, environment)


def on_test_stop(environment: Environment, **_: Any) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        # The last report, sent before the worker tells the master it has stopped: the same
        # message the worker sends every few seconds, through the public hooks.
        data: dict[str, Any] = {}
        environment.events.report_to_master.fire(client_id=runner.client_id, data=data)  # type: ignore[no-untyped-call]
        runner.send_message("stats", data)
        return
    _write_window(environment, "end", time.time())
    _write_window(environment, "stopped", time.time())
    offered = OFFERED.report()
    _write_window(environment, "spawned", offered["last_start"])
    _write_window(environment, "offered", {str(s): n for s, n in offered["per_second"].items()})
    if _pusher is not None:
        _pusher.push()


# EventHook.add_listener has no annotations, so it is called rather than used as a decorator.
events.init.add_listener(on_init)  # type: ignore[no-untyped-call]
events.test_start.add_listener(on_test_start)  # type: ignore[no-untyped-call]
events.report_to_master.add_listener(on_report_to_master)  # type: ignore[no-untyped-call]
events.worker_report.add_listener(on_worker_report)  # type: ignore[no-untyped-call]
events.test_stop.add_listener(on_test_stop)  # type: ignore[no-untyped-call]

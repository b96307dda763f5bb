"""The Locust entry point: `locust -f loadtest/locustfile.py` (normally started by `python -m
loadtest`, which seeds the data set first and judges the run after; see README.md).

The master (or the only process) reads the seed file when a test starts and hands the ids to its
workers with a message that reaches them before their users are spawned, so workers need no
shared disk (in Compose they are separate containers).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from locust import events
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from loadtest import options  # noqa: F401 - registers the scenario's options
from loadtest.dataset import DataSet
from loadtest.export import Pusher
from loadtest.seed import Seed
from loadtest.users import CarelessClient, Reader, Writer, set_data
from stack.monitoring_auth import BasicAuth

__all__ = ["CarelessClient", "Reader", "Writer"]

SEED_MESSAGE = "loadtest_seed"
_pusher: Pusher | None = None


def _write_window(environment: Environment, key: str) -> None:
    path = environment.parsed_options.window_file if environment.parsed_options else ""
    if not path:
        return
    window_file = Path(path)
    window = json.loads(window_file.read_text()) if window_file.exists() else {}
    window[key] = time.time()
    window_file.write_text(json.dumps(window))


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
    _write_window(environment, "start")


def on_test_stop(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return
    _write_window(environment, "end")
    if _pusher is not None:
        _pusher.push()


# EventHook.add_listener has no annotations, so it is called rather than used as a decorator.
events.init.add_listener(on_init)  # type: ignore[no-untyped-call]
events.test_start.add_listener(on_test_start)  # type: ignore[no-untyped-call]
events.test_stop.add_listener(on_test_stop)  # type: ignore[no-untyped-call]

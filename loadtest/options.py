"""The scenario's own Locust options, from the same table (and defaults) as settings.py.

The master forwards custom options to its workers with every spawn message, so a flag given to
the master (or set in the web UI) is what every worker uses.
"""

from __future__ import annotations

from typing import Any

from locust import events

from loadtest.settings import KNOBS

# Weights are read by the master when it divides users between classes; the rest by each user.
SCENARIO = {
    "reader_weight": int,
    "writer_weight": int,
    "careless_weight": int,
    "user_rps": float,
    "zipf_s": float,
}


def add_options(parser: Any, **_: Any) -> None:
    for name, kind in SCENARIO.items():
        knob = KNOBS[name]
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=kind,
            env_var=knob.env,
            default=kind(knob.default),
            help=knob.help,
        )
    parser.add_argument(
        "--spread-sources",
        choices=["on", "off"],
        env_var="LOADTEST_LOCUST_SPREAD_SOURCES",
        default="off",
        help="bind each user to its own 127.x.y.z address (python -m loadtest decides)",
    )
    parser.add_argument(
        "--ca-file",
        default="",
        env_var="LOADTEST_LOCUST_CA",
        help="CA certificate an https:// host is checked against (python -m loadtest decides); "
        "empty: the system's",
    )
    parser.add_argument(
        "--seed-file",
        default="",
        env_var=KNOBS["seed_file"].env,
        help="seed.json written by python -m loadtest: the ids the users read",
    )
    parser.add_argument(
        "--pushgateway-url",
        default="",
        env_var=KNOBS["pushgateway_url"].env,
        help="push live numbers there (job=locust, run=--run-id); empty: do not push",
    )
    parser.add_argument("--run-id", default="adhoc", help="label of this run's pushed numbers")
    parser.add_argument("--push-interval", type=float, default=2.0, include_in_web_ui=False)
    parser.add_argument(
        "--stop-after",
        type=float,
        default=0.0,
        include_in_web_ui=False,
        help="stop the users this many seconds after the test starts, wait for every worker's "
        "last numbers, then quit (0: never; Locust's --run-time quits after 0.5 s, losing them)",
    )
    parser.add_argument(
        "--window-file",
        default="",
        include_in_web_ui=False,
        help="write the test's start and stop times here (JSON)",
    )


# EventHook.add_listener has no annotations; used as a call, not a decorator, for the same reason.
events.init_command_line_parser.add_listener(add_options)  # type: ignore[no-untyped-call]

"""`python -m loadtest run|ui|check`: what `make loadtest` and `make loadtest-ui` run.

  run    seed the data set, drive the stack headless, judge it, write loadtest/reports/<UTC time>/
  ui     seed the data set and serve Locust's web UI (tests started from the browser)
  check  judge a finished run's numbers again: check loadtest/reports/<run> [--thresholds FILE]

Every flag of run and ui also has a LOADTEST_* variable (see --help and loadtest/settings.py).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from loadtest.httpjson import HttpError
from loadtest.locust_procs import LocustError
from loadtest.preflight import PreflightError
from loadtest.prom import PrometheusError
from loadtest.run import recheck, run, ui
from loadtest.seed import SeedError
from loadtest.settings import KNOBS, SettingsError, resolve
from loadtest.thresholds import ThresholdsError

# Refusals that need a sentence, not a traceback: the run never judged anything.
SETUP_ERRORS = (
    SettingsError,
    ThresholdsError,
    PreflightError,
    PrometheusError,
    SeedError,
    LocustError,
    HttpError,
)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="python -m loadtest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = root.add_subparsers(dest="command", required=True)
    for command in ("run", "ui"):
        sub = commands.add_parser(command)
        for name, knob in KNOBS.items():
            default = f", default {knob.default}" if knob.default else ""
            sub.add_argument(
                f"--{name.replace('_', '-')}", dest=name, help=f"{knob.help} [{knob.env}{default}]"
            )
    check = commands.add_parser("check")
    check.add_argument("report", type=Path, help="a report folder (holds results.json)")
    check.add_argument("--thresholds", type=Path, default=Path(KNOBS["thresholds"].default))
    return root


def _terminated(signum: int, _: object) -> None:
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so Locust's processes are stopped and
    # the run's pushed numbers deleted instead of being left behind.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)
    try:
        if args.command == "check":
            return recheck(args.report, args.thresholds)
        settings = resolve({k: v for k, v in vars(args).items() if k in KNOBS})
        return run(settings) if args.command == "run" else ui(settings)
    except SETUP_ERRORS as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("loadtest: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

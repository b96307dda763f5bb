"""`python -m loadtest` (make loadtest) run as a subprocess against a test's stack, for the
tests/e2e/test_loadtest_*.py modules, with the thresholds and user mix they share.

Runs are subprocesses, as `make loadtest` starts them: importing Locust would monkeypatch the
pytest process with gevent.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stack.ephemeral import EphemeralStack
from stack.paths import REPO_ROOT
from stack.testing.loadtest import GENEROUS

IMPOSSIBLE = (
    GENEROUS.replace("0.01", "0")
    .replace("= 0.5\n", "= 0.95\n")
    .replace("3000", "0.001")
    .replace("5000", "0.001")
)
# Enough of every kind of user in a dozen: the careless ones send the provoked 4xx.
WEIGHTS = ("--reader-weight=60", "--writer-weight=20", "--careless-weight=20")


@dataclass
class Run:
    output: str
    returncode: int
    folder: Path

    @property
    def results(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.folder / "results.json").read_text())
        return data

    def entries(self) -> dict[str, dict[str, Any]]:
        """locust.json by "METHOD name"."""
        entries = json.loads((self.folder / "locust.json").read_text())
        return {f"{e['method']} {e['name']}": e for e in entries}


def loadtest(
    stack: EphemeralStack,
    reports: Path,
    *args: str,
    during: Callable[[], None] | None = None,
) -> Run:
    """`python -m loadtest` as `make loadtest` runs it; `during` is called once the load runs."""
    env = {k: v for k, v in stack.env.items() if not k.startswith(("LOADTEST_", "GRAFANA_"))}
    env["LOADTEST_REPORTS_DIR"] = str(reports)
    with subprocess.Popen(
        [sys.executable, "-m", "loadtest", *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        try:
            if during is not None:
                deadline = time.monotonic() + 120
                while not list(reports.glob("*/window.json")):
                    assert process.poll() is None, "the run ended before its load started"
                    assert time.monotonic() < deadline, "the load did not start in 2 minutes"
                    time.sleep(0.2)
                during()
            output, _ = process.communicate(timeout=300)
        finally:
            if process.poll() is None:
                process.kill()
    folders = sorted(reports.iterdir()) if reports.exists() else []
    assert len(folders) <= 1, folders
    return Run(output, process.returncode, folders[0] if folders else reports / "none")

"""Running the real tools (promtool, amtool, nginx, hadolint, compose, servers) from the tests."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from stack.paths import REPO_ROOT
from stack.procs import stop_process


def run_tool(
    binary: str, *args: str | Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary, *map(str, args)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def output(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


@contextmanager
def background(argv: Sequence[str | Path], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A server for the length of the block, its output in `log`; stopped (then killed) after."""
    with log.open("w", encoding="utf-8") as log_file:
        process = subprocess.Popen(
            [str(arg) for arg in argv], stdout=log_file, stderr=subprocess.STDOUT
        )
        try:
            yield process
        finally:
            stop_process(process)

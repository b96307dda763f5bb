"""Running the real validators (promtool, amtool, nginx, hadolint, compose) from the tests."""

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_tool(
    binary: str, *args: str | Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary, *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def output(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr

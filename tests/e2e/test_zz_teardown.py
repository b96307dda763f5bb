"""The end of the e2e session: `make down` stops the native stack and leaves nothing behind.

In its own module, named to be collected after every other module in tests/e2e, so each of
them still has the session's stack (the `native_stack` fixture) when it runs.
"""

import os
import subprocess
from pathlib import Path

import pytest

from native.paths import REPO_ROOT
from native.servers import ServerError, wait_for_port

from .conftest import NativeStack


def test_zz_make_down_leaves_no_process_behind(native_stack: NativeStack) -> None:
    result = subprocess.run(
        ["make", "down"],
        cwd=REPO_ROOT,
        env={**native_stack.env, "STACK": "native"},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    data_dir = str(native_stack.data_dir)
    leftovers = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if data_dir in cmdline or f"STACK_DATA_DIR={data_dir}".encode() in environ:
            leftovers.append(cmdline)
    assert leftovers == []
    for port in [*native_stack.topology.ports.values(), *native_stack.topology.api_ports]:
        with pytest.raises(ServerError):
            wait_for_port(port, timeout=0.3)

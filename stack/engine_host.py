"""What the project's dockerd changes on the host, recorded before it starts and taken back after it
stops: bridges, iptables chains and rules, sysctls, the mount propagation of `/`, and the paths
dockerd and containerd create outside their roots. Only what start found absent is removed, so a
bridge, chain or directory that was there before is never touched.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

# Every address the project's dockerd hands out comes from 10.213.0.0/16: user networks take /24s
# of the lower half, the default bridge sits in the upper half. Docker's own defaults (172.17-31,
# 192.168) overlap too many LANs and VPNs. Rules that name these addresses are the engine's.
ADDRESS_POOL = "base=10.213.0.0/17,size=24"
BRIDGE_IP = "10.213.255.1/24"
OUR_ADDRESSES = "10.213."
BRIDGE = re.compile(r"^(docker0|docker_gwbridge|br-[0-9a-f]{12})$")
# Outside the data- and exec-root, regardless of flags: shim sockets (/run/containerd/s), plugin
# discovery (/run/docker/plugins) and containerd's `opt` plugin directory.
HOST_PATHS = ("/run/containerd", "/run/docker", "/opt/containerd")
# dockerd turns forwarding on (and FORWARD's policy to DROP when it was off).
SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
)
TABLES = ("filter", "nat", "mangle", "raw")

State = dict[str, object]


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=check, timeout=60)


def ping_unix(path: str, timeout: float = 2.0) -> bool:
    """Docker's /_ping over its unix socket, without the CLI (which may not be installed)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(path)
            conn.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            head = conn.recv(32)
    except OSError:
        return False
    return head.startswith(b"HTTP/1.") and head.split(b" ", 2)[1:2] == [b"200"]


def default_route_mtu() -> int:
    for line in Path("/proc/net/route").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == "00000000" and fields[7] == "00000000":
            return int(Path(f"/sys/class/net/{fields[0]}/mtu").read_text())
    return 1500


def bridges() -> set[str]:
    return {name for name in os.listdir("/sys/class/net") if BRIDGE.match(name)}


def _iptables(table: str) -> list[str]:
    """`iptables -S` of one table; empty when iptables or the table is not there."""
    if shutil.which("iptables") is None:
        return []
    result = _run("iptables", "-w", "-t", table, "-S", check=False)
    return result.stdout.splitlines() if result.returncode == 0 else []


def docker_chains() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for table in TABLES:
        chains = [line.split()[1] for line in _iptables(table) if line.startswith("-N DOCKER")]
        if chains:
            found[table] = chains
    return found


def forward_policy() -> str:
    policies = [line.split()[2] for line in _iptables("filter") if line.startswith("-P FORWARD ")]
    return policies[0] if policies else ""


def sysctls() -> dict[str, str]:
    return {
        name: (Path("/proc/sys") / name).read_text().strip()
        for name in SYSCTLS
        if (Path("/proc/sys") / name).exists()
    }


def propagation(target: str = "/") -> str:
    return _run("findmnt", "-n", "-o", "PROPAGATION", target).stdout.strip()


def set_propagation(target: str, wanted: str) -> None:
    if propagation(target) == wanted:
        return
    # "private,slave"-style combinations: slave first, then the rest, as mount(8) applies them.
    for kind in sorted(wanted.split(","), key=lambda part: part != "slave"):
        _run("mount", f"--make-{kind}", target)


def snapshot(paths: list[str]) -> State:
    return {
        "bridges": sorted(bridges()),
        "chains": docker_chains(),
        "forward_policy": forward_policy(),
        "sysctls": sysctls(),
        "propagation": propagation("/"),
        "absent_paths": [path for path in paths if not os.path.lexists(path)],
    }


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # Our own child (a test session that started the engine) stays a zombie until reaped.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return True
        time.sleep(0.2)
    return False


def engine_processes(exec_root: Path, data_root: Path) -> list[int]:
    """What runs for the project's engine once dockerd is gone: containerd and shims (their
    command line names our exec-root) and container processes (their cgroup names a container of
    our data-root). Only a dockerd killed outright leaves the last two behind."""
    containers = data_root / "containers"
    ids = [entry.name for entry in containers.iterdir()] if containers.is_dir() else []
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            cgroup = (entry / "cgroup").read_text()
            zombie = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            continue
        if not zombie and (str(exec_root).encode() in cmdline or any(i in cgroup for i in ids)):
            found.append(int(entry.name))
    return found


def kill_engine_processes(exec_root: Path, data_root: Path) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = engine_processes(exec_root, data_root)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if all(wait_gone(pid, 10) for pid in pids):
            return


def mounts_under(roots: list[Path]) -> list[str]:
    prefixes = [str(root) for root in roots]
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # mountinfo escapes blanks and backslashes in paths as octal.
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
        if any(point == prefix or point.startswith(prefix + "/") for prefix in prefixes):
            found.append(point)
    return found


def unmount_under(roots: list[Path]) -> None:
    for point in sorted(set(mounts_under(roots)), key=lambda p: p.count("/"), reverse=True):
        if _run("umount", point, check=False).returncode != 0:
            _run("umount", "--lazy", point, check=False)


def _rule_is_ours(rule: list[str], our_bridges: set[str]) -> bool:
    for flag, value in itertools.pairwise(rule):
        if flag in {"-j", "-g"} and value.startswith("DOCKER"):
            return True
        if flag in {"-i", "-o", "--in-interface", "--out-interface"} and value in our_bridges:
            return True
    return any(token.startswith(OUR_ADDRESSES) for token in rule)


def _remove_iptables(state: State) -> None:
    before = state.get("chains", {})
    assert isinstance(before, dict)
    our_bridges = bridges() - set(_strings(state.get("bridges")))
    our_bridges |= {"docker0", "docker_gwbridge"} - set(_strings(state.get("bridges")))
    for table in TABLES:
        kept = set(before.get(table, []))
        lines = _iptables(table)
        ours = {line.split()[1] for line in lines if line.startswith("-N DOCKER")} - kept
        for line in lines:
            rule = shlex.split(line)
            if rule[0] == "-A" and rule[1] not in ours and _rule_is_ours(rule[2:], our_bridges):
                _run("iptables", "-w", "-t", table, "-D", *rule[1:], check=False)
        for action in ("-F", "-X"):
            for chain in sorted(ours):
                _run("iptables", "-w", "-t", table, action, chain, check=False)
    policy = state.get("forward_policy")
    if isinstance(policy, str) and policy and policy != forward_policy():
        _run("iptables", "-w", "-P", "FORWARD", policy)


def _strings(value: object) -> list[str]:
    return [str(item) for item in value] if isinstance(value, list) else []


def restore(state: State) -> None:
    _remove_iptables(state)
    for name in sorted(bridges() - set(_strings(state.get("bridges")))):
        # A container whose network namespace outlives it (held by its sockets after a kill)
        # would keep its host-side veth, unattached, once the bridge is gone.
        for port in sorted(Path(f"/sys/class/net/{name}/brif").glob("*")):
            _run("ip", "link", "delete", port.name, check=False)
        _run("ip", "link", "delete", name, check=False)
    recorded = state.get("sysctls", {})
    assert isinstance(recorded, dict)
    for name, value in recorded.items():
        (Path("/proc/sys") / name).write_text(f"{value}\n")
    was = state.get("propagation")
    if isinstance(was, str) and was:
        set_propagation("/", was)
    for path in _strings(state.get("absent_paths")):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            os.unlink(path)


def leftovers(state: State, exec_root: Path, data_root: Path) -> list[str]:
    """What is still there that start did not find: the proof that stop took everything back."""
    problems = []
    roots = [exec_root, data_root]
    if pids := engine_processes(exec_root, data_root):
        problems.append(f"processes {pids} of the engine still run")
    if extra := bridges() - set(_strings(state.get("bridges"))):
        problems.append(f"bridges {sorted(extra)}")
    before = state.get("chains", {})
    assert isinstance(before, dict)
    for table, chains in docker_chains().items():
        if extra := set(chains) - set(before.get(table, [])):
            problems.append(f"iptables {table} chains {sorted(extra)}")
    if mounts := mounts_under(roots):
        problems.append(f"mounts {mounts}")
    if sysctls() != state.get("sysctls"):
        problems.append(f"sysctls {sysctls()} instead of {state.get('sysctls')}")
    if propagation("/") != state.get("propagation"):
        problems.append(f"/ is {propagation('/')} instead of {state.get('propagation')}")
    if present := [p for p in _strings(state.get("absent_paths")) if os.path.lexists(p)]:
        problems.append(f"paths {present}")
    return problems

"""The monitoring plane's credential, as rendered: services/monitoring-auth/render.sh (natively
and in Compose's one-shot) writes a web config that Prometheus's own checker accepts, whose bcrypt
hash verifies the password and no other, and a password file for Prometheus; both private, the
password on no command line; `.env` gets a generated password; the native prometheus.yml reads it.

(The live refusals: tests/e2e/test_monitoring_auth.py. Compose's wiring: test_compose.py.)
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from stack.envfile import ensure_env
from stack.monitoring_auth import RENDER_SCRIPT, SETTING, USER, MonitoringAuthError, render_files
from stack.native.dirs import StackDirs
from stack.native.render import render_all
from stack.paths import GRAFANA_DIR, PROMETHEUS_DIR, REPO_ROOT
from stack.testing.nginx import throwaway_tls
from stack.testing.tools import output, run_tool
from stack.topology import Topology

PASSWORD = "monitoring-test-only-0c7d"
HTPASSWD = shutil.which("htpasswd")
PROMTOOL = shutil.which("promtool")
needs_htpasswd = pytest.mark.skipif(
    HTPASSWD is None, reason="htpasswd not on PATH (Debian/Ubuntu: apt-get install apache2-utils)"
)
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not on PATH (Debian/Ubuntu: apt-get install prometheus)"
)


def _render(
    tmp_path: Path, password: str, path: str | None = None, **extra: str
) -> subprocess.CompletedProcess[str]:
    env = {"PATH": path or os.environ["PATH"], SETTING: password, **extra}
    return subprocess.run(
        ["sh", str(RENDER_SCRIPT), str(tmp_path / "web.yml"), str(tmp_path / "password")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _verifies(tmp_path: Path, hashed: str, password: str) -> bool:
    """htpasswd's own check of a password against the hash (the password on stdin)."""
    assert HTPASSWD is not None
    passwd = tmp_path / "htpasswd"
    passwd.write_text(f"{USER}:{hashed}\n")
    result = subprocess.run(
        [HTPASSWD, "-vi", str(passwd), USER],
        input=password,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return result.returncode == 0


@needs_htpasswd
def test_the_web_config_holds_a_bcrypt_hash_of_the_password_and_nothing_else(
    tmp_path: Path,
) -> None:
    rendered = _render(tmp_path, PASSWORD)
    assert rendered.returncode == 0, rendered.stderr
    assert rendered.stdout == ""
    text = (tmp_path / "web.yml").read_text()
    assert PASSWORD not in text
    config = yaml.safe_load(text)
    assert list(config) == ["basic_auth_users"]
    [(user, hashed)] = config["basic_auth_users"].items()
    assert user == USER
    assert hashed.startswith(("$2y$10$", "$2b$10$", "$2a$10$"))
    assert _verifies(tmp_path, hashed, PASSWORD)
    assert not _verifies(tmp_path, hashed, PASSWORD + "x")
    assert (tmp_path / "password").read_text() == PASSWORD
    for name in ("web.yml", "password"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["htpasswd", "password", "web.yml"]


@needs_htpasswd
@needs_promtool
def test_prometheus_accepts_the_rendered_web_config(tmp_path: Path) -> None:
    assert _render(tmp_path, PASSWORD).returncode == 0
    assert PROMTOOL is not None
    checked = run_tool(PROMTOOL, "check", "web-config", tmp_path / "web.yml")
    assert checked.returncode == 0, output(checked)
    assert "SUCCESS" in output(checked)


@needs_htpasswd
def test_every_render_replaces_the_files_with_a_fresh_salt(tmp_path: Path) -> None:
    assert _render(tmp_path, PASSWORD).returncode == 0
    first = (tmp_path / "web.yml").read_text()
    first_inode = (tmp_path / "web.yml").stat().st_ino
    assert _render(tmp_path, "another-password").returncode == 0
    second = yaml.safe_load((tmp_path / "web.yml").read_text())["basic_auth_users"][USER]
    assert second not in first
    assert _verifies(tmp_path, second, "another-password")
    # Renamed into place, never rewritten where a server might read half of it.
    assert (tmp_path / "web.yml").stat().st_ino != first_inode
    assert (tmp_path / "password").read_text() == "another-password"


@needs_htpasswd
@pytest.mark.skipif(os.geteuid() != 0, reason="handing files to another user needs root")
def test_compose_hands_the_files_to_the_services_user(tmp_path: Path) -> None:
    """Compose's one-shot runs as root and sets MONITORING_AUTH_OWNER to nobody, which
    Prometheus, Alertmanager and the Pushgateway run as (docker-compose.yml)."""
    result = _render(tmp_path, PASSWORD, MONITORING_AUTH_OWNER="65534:65534")
    assert result.returncode == 0, result.stderr
    for name in ("web.yml", "password"):
        info = (tmp_path / name).stat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (65534, 65534, 0o600)


@pytest.mark.parametrize(
    ("password", "says"),
    [("", "is empty"), ("x" * 73, "72 bytes"), ("two\nlines", "line break")],
)
def test_a_password_bcrypt_cannot_hold_is_refused(tmp_path: Path, password: str, says: str) -> None:
    rendered = _render(tmp_path, password)
    assert rendered.returncode != 0
    assert says in rendered.stderr
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(MonitoringAuthError, match=says):
        render_files({SETTING: password}, tmp_path / "web.yml", tmp_path / "password")


def test_a_missing_htpasswd_names_its_package(tmp_path: Path) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("sh", "wc"):
        found = shutil.which(tool)
        assert found is not None
        (bare / tool).symlink_to(found)
    out = tmp_path / "out"
    out.mkdir()
    rendered = _render(out, PASSWORD, path=str(bare))
    assert rendered.returncode != 0
    assert "apache2-utils" in rendered.stderr
    assert list(out.iterdir()) == []


@needs_htpasswd
def test_the_password_is_on_no_command_line(tmp_path: Path) -> None:
    """The real htpasswd runs behind a wrapper that records its arguments and standard input."""
    assert HTPASSWD is not None
    spy_dir = tmp_path / "bin"
    spy_dir.mkdir()
    spy = spy_dir / "htpasswd"
    spy.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$@" > "{tmp_path}/argv"\n'
        f'tee "{tmp_path}/stdin" | exec {HTPASSWD} "$@"\n'
    )
    spy.chmod(0o700)
    out = tmp_path / "out"
    out.mkdir()
    rendered = _render(out, PASSWORD, path=f"{spy_dir}:{os.environ['PATH']}")
    assert rendered.returncode == 0, rendered.stderr
    assert (tmp_path / "argv").read_text().split() == ["-niB", "-C", "10", USER]
    assert (tmp_path / "stdin").read_text() == f"{PASSWORD}\n"


def test_env_file_generation_fills_the_monitoring_password(tmp_path: Path) -> None:
    shutil.copyfile(REPO_ROOT / ".env.example", tmp_path / ".env.example")
    # An .env from before the setting existed gets it appended and filled, nothing rotated.
    (tmp_path / ".env").write_text("POSTGRES_PASSWORD=kept\n")
    values = ensure_env(tmp_path)
    assert values["POSTGRES_PASSWORD"] == "kept"
    assert len(values[SETTING]) >= 32
    assert ensure_env(tmp_path)[SETTING] == values[SETTING]


def _basic_auth_blocks(node: Any) -> list[dict[str, str]]:
    if isinstance(node, dict):
        found = [node["basic_auth"]] if "basic_auth" in node else []
        return found + [b for value in node.values() for b in _basic_auth_blocks(value)]
    if isinstance(node, list):
        return [b for value in node for b in _basic_auth_blocks(value)]
    return []


@needs_htpasswd
@needs_promtool
def test_the_native_prometheus_reads_the_rendered_password(tmp_path: Path) -> None:
    env = {
        "POSTGRES_USER": "app", "POSTGRES_PASSWORD": "pw-test", "POSTGRES_DB": "app",
        "REDIS_PASSWORD": "redis-test", SETTING: PASSWORD,
    }  # fmt: skip
    dirs = StackDirs(tmp_path)
    render_all(Topology.from_env(env), env, dirs, tls=throwaway_tls(), as_root=False)
    config_file = dirs.run / "prometheus.yml"
    blocks = _basic_auth_blocks(yaml.safe_load(config_file.read_text()))
    # Alerting, and the scrapes of Alertmanager, the Pushgateway and Prometheus itself.
    assert len(blocks) == 4
    assert all(
        b == {"username": USER, "password_file": str(dirs.monitoring_password)} for b in blocks
    )
    assert dirs.monitoring_password.read_text() == PASSWORD
    assert PASSWORD not in config_file.read_text()
    assert PASSWORD not in dirs.supervisor_conf.read_text()
    assert PROMTOOL is not None
    checked = run_tool(PROMTOOL, "check", "config", config_file)
    assert checked.returncode == 0, output(checked)


def test_every_file_that_names_the_user_names_the_same_one() -> None:
    """Compose's prometheus.yml, promtool's healthcheck config and Grafana's datasource cannot
    read the environment, so the user is fixed; render.sh must hash for that very user."""
    assert f"\nuser={USER}\n" in RENDER_SCRIPT.read_text()
    prometheus = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    assert {b["username"] for b in _basic_auth_blocks(prometheus)} == {USER}
    healthcheck = yaml.safe_load((PROMETHEUS_DIR / "healthcheck-http.yml").read_text())
    assert healthcheck["basic_auth"]["username"] == USER
    datasources = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
    [datasource] = yaml.safe_load(datasources.read_text())["datasources"]
    assert datasource["basicAuthUser"] == USER

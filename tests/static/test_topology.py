"""Compose and the native runner describe one topology: same services, same config files, same
published ports. Only addresses differ, and those come from stack/topology.py."""

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.config import Settings
from stack.monitoring_auth import RENDER_SCRIPT
from stack.native.dirs import StackDirs
from stack.native.render import render_all
from stack.paths import ALERTMANAGER_DIR, BLACKBOX_CONFIG, PROMETHEUS_DIR, REDIS_CONFIG, REPO_ROOT
from stack.testing.nginx import throwaway_tls
from stack.topology import (
    BACKUP_PROFILE,
    LOADTEST_PROFILE,
    NOT_NATIVE,
    PORTS,
    SERVICES,
    Topology,
)

COMPOSE: dict[str, Any] = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())


def _published_default(service: str, variable: str) -> int:
    (mapping,) = [m for m in COMPOSE["services"][service]["ports"] if variable in str(m)]
    # "${BIND:-127.0.0.1}:${NGINX_PORT:-8080}:8080" → the host port's default, 8080.
    host_part = str(mapping).rsplit(":", 1)[0]
    match = re.search(r"\$\{(\w+):-(\d+)\}$", host_part)
    assert match, mapping
    return int(match.group(2))


def test_same_services() -> None:
    assert set(COMPOSE["services"]) == set(SERVICES)
    assert {"grafana"} == NOT_NATIVE
    profiled = {name for name, svc in COMPOSE["services"].items() if svc.get("profiles")}
    assert profiled == LOADTEST_PROFILE | BACKUP_PROFILE
    assert all(COMPOSE["services"][name]["profiles"] == ["loadtest"] for name in LOADTEST_PROFILE)
    assert all(COMPOSE["services"][name]["profiles"] == ["backup"] for name in BACKUP_PROFILE)


@pytest.mark.parametrize(
    ("service", "name"),
    [("nginx", "nginx"), ("nginx", "nginx-tls"), ("prometheus", "prometheus"),
     ("alertmanager", "alertmanager")],
)  # fmt: skip
def test_same_published_ports(service: str, name: str) -> None:
    variable, native_default = PORTS[name]
    assert _published_default(service, variable) == native_default


def test_only_the_entry_points_and_monitoring_uis_are_published() -> None:
    published = {name for name, svc in COMPOSE["services"].items() if svc.get("ports")}
    # locust-master publishes Locust's web UI, and only under the `loadtest` profile.
    assert published == {"nginx", "prometheus", "alertmanager", "grafana", "locust-master"}


def _mounted_sources() -> set[Path]:
    sources = set()
    for service in COMPOSE["services"].values():
        for volume in service.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            if source.startswith("./"):
                sources.add((REPO_ROOT / source).resolve())
    return sources


def test_native_runner_uses_the_files_compose_mounts(tmp_path: Path) -> None:
    mounted = _mounted_sources()
    assert REDIS_CONFIG in mounted
    assert ALERTMANAGER_DIR in mounted
    assert PROMETHEUS_DIR in mounted
    assert REPO_ROOT / "services" / "nginx" / "nginx.conf" in mounted

    env = {
        "POSTGRES_USER": "app",
        "POSTGRES_PASSWORD": "pw-test",
        "POSTGRES_DB": "app",
        "REDIS_PASSWORD": "redis-test",
        "MONITORING_PASSWORD": "monitoring-test",
    }
    dirs = StackDirs(tmp_path)
    render_all(Topology.from_env(env), env, dirs, tls=throwaway_tls(), as_root=False)
    supervisor = dirs.supervisor_conf.read_text()
    # The monitoring plane's web config comes from the script Compose's one-shot runs.
    assert RENDER_SCRIPT.parent in mounted
    assert COMPOSE["services"]["monitoring-auth"]["entrypoint"][1] == (
        f"/etc/monitoring-auth/{RENDER_SCRIPT.name}"
    )
    for program in ("prometheus", "alertmanager", "pushgateway"):
        assert f"--web.config.file={dirs.web_config}" in _program_command(supervisor, program)
    assert str(REDIS_CONFIG) in supervisor
    # Alertmanager starts through the entrypoint Compose runs too, which renders the committed
    # alertmanager.yml with the receiver URL from the environment.
    assert f"{ALERTMANAGER_DIR / 'entrypoint.sh'} {dirs.run / 'alertmanager.yml'}" in supervisor
    compose_alertmanager = COMPOSE["services"]["alertmanager"]["entrypoint"]
    assert compose_alertmanager[1:3] == ["/etc/alertmanager/entrypoint.sh", "/tmp/alertmanager.yml"]
    assert str(BLACKBOX_CONFIG) in supervisor
    assert BLACKBOX_CONFIG.parent in mounted
    # nginx runs the shared nginx.conf unchanged; only conf.d/ and entry/ are rendered.
    shared = (REPO_ROOT / "services" / "nginx" / "nginx.conf").read_bytes()
    assert (dirs.run / "nginx" / "nginx.conf").read_bytes() == shared
    prometheus = yaml.safe_load((dirs.run / "prometheus.yml").read_text())
    assert prometheus["rule_files"] == [str(PROMETHEUS_DIR / "rules" / "*.yml")]
    compose_jobs = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    assert [j["job_name"] for j in prometheus["scrape_configs"]] == [
        j["job_name"] for j in compose_jobs["scrape_configs"]
    ]
    api_targets = next(j for j in prometheus["scrape_configs"] if j["job_name"] == "api")
    assert api_targets["static_configs"][0]["targets"] == ["127.0.0.1:8001", "127.0.0.1:8002",
                                                           "127.0.0.1:8003"]  # fmt: skip


def _program_command(supervisor: str, program: str) -> str:
    section = supervisor.split(f"[program:{program}]\n", 1)[1]
    return next(line for line in section.splitlines() if line.startswith("command="))


def test_compose_sets_only_settings_the_api_knows() -> None:
    known = {name.upper() for name in Settings.model_fields}
    for service in ("api", "migrate"):
        environment = set(COMPOSE["services"][service]["environment"])
        assert environment <= known, environment - known


def test_replica_count_comes_from_env() -> None:
    assert COMPOSE["services"]["api"]["deploy"]["replicas"] == "${API_REPLICAS:-3}"
    assert Topology.from_env({}).replicas == 3

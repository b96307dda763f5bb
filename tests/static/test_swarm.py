"""The swarm form of the stack (stack/swarm/generate.py): the Docker CLI's own `docker stack config`
accepts what the generator makes from docker-compose.yml, refuses the Compose file itself, and
refuses what the generator would pass on unchanged, so a Compose change Swarm cannot take fails
here. No engine: `docker compose config` and `docker stack config` are the client's alone."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from stack.config.nginx import (
    COMPOSE_CERTIFICATE,
    COMPOSE_KEY,
    COMPOSE_TLS_PORT,
    ENTRY_FILES,
    HttpsEntry,
    render_compose_entry,
)
from stack.envfile import read_env
from stack.paths import COMPOSE_FILE, REPO_ROOT
from stack.swarm.generate import compose_config, render, swarm_form
from stack.swarm.services import SwarmFormError
from stack.testing.nginx import throwaway_certificate

# Stand-ins for the secrets `${VAR:?}` demands; the generated file must never hold them.
SECRETS = {
    "POSTGRES_PASSWORD": "pg-secret-marker",
    "REDIS_PASSWORD": "redis-secret-marker",
    "GRAFANA_ADMIN_PASSWORD": "grafana-secret-marker",
    "MONITORING_PASSWORD": "monitoring-secret-marker",
}


@pytest.fixture(autouse=True, scope="module")
def https_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """What `make stack-config` exports before it generates (stack/tls compose-env): nginx's
    certificate, key and rendered entry folder, here throwaway ones."""
    local = throwaway_certificate()
    entry = tmp_path_factory.mktemp("compose-entry")
    https = HttpsEntry(COMPOSE_TLS_PORT, 8443, COMPOSE_CERTIFICATE, COMPOSE_KEY, "serve", None)
    render_compose_entry(entry, https)
    named = {
        "NGINX_TLS_CERT": str(local.certificate),
        "NGINX_TLS_KEY": str(local.key),
        "NGINX_TLS_ENTRY": str(entry),
    }
    with pytest.MonkeyPatch.context() as patch:
        for variable, value in named.items():
            patch.setenv(variable, value)
        yield named


@cache
def docker_cli() -> str:
    """A Docker CLI with `docker stack` (28.x on the project's machines); no engine needed."""
    for candidate in (shutil.which("docker"), "/usr/local/bin/docker", "/usr/bin/docker"):
        if not candidate or not Path(candidate).exists():
            continue
        probe = subprocess.run(
            [candidate, "stack", "config", "--help"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return candidate
    pytest.skip("no Docker CLI with `docker stack config` on PATH")


@cache
def compose() -> dict[str, Any]:
    """The committed Compose file alone: no developer's COMPOSE_FILE or .env steers it."""
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent"}
    return compose_config(REPO_ROOT / ".env.example", env=clean)


def stack_config(path: Path) -> subprocess.CompletedProcess[str]:
    """`docker stack config` as `docker stack deploy` would read the file: .env.example's
    settings exported, the secrets set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "COMPOSE_"))}
    env |= {k: v for k, v in read_env(REPO_ROOT / ".env.example").items() if v} | SECRETS
    return subprocess.run(
        [docker_cli(), "stack", "config", "--compose-file", str(path)],
        capture_output=True, text=True, env=env, check=False, timeout=60,
    )  # fmt: skip


def written(form: dict[str, Any], tmp_path: Path) -> Path:
    path = tmp_path / "stack.yml"
    path.write_text(render(form, "fastapi-stack"))
    return path


def test_docker_stack_config_accepts_the_generated_file(tmp_path: Path) -> None:
    path = written(swarm_form(compose()), tmp_path)
    checked = stack_config(path)
    assert checked.returncode == 0, checked.stderr
    text = path.read_text()
    # Interpolated at deploy time from the environment, never written down.
    assert not any(secret in text for secret in SECRETS.values())
    assert "${POSTGRES_PASSWORD:?" in text
    resolved = yaml.safe_load(checked.stdout)
    assert resolved["services"]["api"]["environment"]["POSTGRES_PASSWORD"] == "pg-secret-marker"
    assert resolved["services"]["api"]["deploy"]["replicas"] == 3


def test_docker_stack_config_refuses_the_compose_file_itself(tmp_path: Path) -> None:
    """Why the file is generated: Swarm's loader takes none of Compose's own additions."""
    refused = stack_config(COMPOSE_FILE)
    assert refused.returncode != 0
    swarm_refusal = r"depends_on must be a list|Additional property (profiles|name) is not allowed"
    assert re.search(swarm_refusal, refused.stderr), refused.stderr


def test_the_swarm_form_keeps_compose_s_behaviour_the_swarm_way() -> None:
    config = compose()
    form = swarm_form(config)
    services = form["services"]
    profiled = {name for name, s in config["services"].items() if s.get("profiles")}
    assert profiled, "docker-compose.yml has profiled services (load test, backups)"
    assert not profiled & set(services)
    # migrate is folded into every api task: the migration first, then the API's own command.
    assert "migrate" not in services
    command = services["api"]["command"]
    assert command[:2] == ["sh", "-c"]
    assert command[2] == 'alembic upgrade head && exec "$$@"'
    assert command[4:] == ["python", "-m", "app"]
    assert services["api"]["healthcheck"]["start_period"] == "60s"
    for name, service in services.items():
        assert not {"depends_on", "build", "restart", "container_name"} & set(service), name
        assert service["deploy"]["endpoint_mode"] == "dnsrr", name
        assert service["deploy"]["restart_policy"]["condition"] in {"any", "on-failure"}, name
        for port in service.get("ports", []):
            assert port["mode"] == "host", name
    for stateful in ("postgres", "redis", "prometheus"):
        constraints = services[stateful]["deploy"]["placement"]["constraints"]
        assert constraints == [f"node.labels.fastapi-stack.{stateful} == true"]
        assert services[stateful]["deploy"]["update_config"]["order"] == "stop-first"
    api = services["api"]["deploy"]
    assert api["update_config"]["order"] == "start-first"
    assert api["update_config"]["failure_action"] == "rollback"
    assert api["rollback_config"]["order"] == "start-first"
    assert services["node-exporter"]["deploy"]["mode"] == "global"
    # Swarm-only variables join the environment, and no extension key reaches the stack file.
    assert config["services"]["api"]["x-swarm-environment"]
    for key, value in config["services"]["api"]["x-swarm-environment"].items():
        assert services["api"]["environment"][key] == value
        assert key not in config["services"]["api"]["environment"]
    assert not any(k.startswith("x-") for service in services.values() for k in service)
    # The checkout's files travel as configs, one per file, at the paths Compose mounts them.
    nginx_targets = {c["target"] for c in services["nginx"]["configs"]}
    assert "/etc/nginx/nginx.conf" in nginx_targets
    assert "/etc/nginx/conf.d/upstream.conf" in nginx_targets
    prometheus_targets = {c["target"] for c in services["prometheus"]["configs"]}
    assert "/etc/prometheus/prometheus.yml" in prometheus_targets
    assert not any("/tests/" in target for target in prometheus_targets)
    for key, spec in form["configs"].items():
        assert Path(spec["file"]).is_file(), key
        assert len(f"fastapi-stack-test-0123abcd_{key}") <= 64, key


def test_https_files_travel_as_configs_and_the_key_as_a_secret(
    https_files: dict[str, str],
) -> None:
    """Compose mounts them by ${NGINX_TLS_*}; Swarm gets the deploying machine's files: the
    certificate and the rendered entry as configs, the key as a Docker secret only."""
    form = swarm_form(compose())
    nginx = form["services"]["nginx"]
    assert not [v for v in nginx.get("volumes", []) if "${" in str(v.get("source"))]
    configs = {c["target"]: form["configs"][c["source"]]["file"] for c in nginx["configs"]}
    assert configs[COMPOSE_CERTIFICATE] == https_files["NGINX_TLS_CERT"]
    for name in ENTRY_FILES:
        assert configs[f"/etc/nginx/entry/{name}"] == f"{https_files['NGINX_TLS_ENTRY']}/{name}"
    assert COMPOSE_KEY not in configs
    assert https_files["NGINX_TLS_KEY"] not in {spec["file"] for spec in form["configs"].values()}
    [secret] = nginx["secrets"]
    assert (secret["target"], secret["mode"]) == (COMPOSE_KEY, 0o400)
    assert form["secrets"] == {secret["source"]: {"file": https_files["NGINX_TLS_KEY"]}}


def test_a_missing_https_file_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NGINX_TLS_KEY", "/nonexistent/server.key")
    with pytest.raises(SwarmFormError, match=r"/nonexistent/server\.key, which does not exist"):
        swarm_form(compose())


def _gained(config: dict[str, Any]) -> dict[str, Any]:
    """docker-compose.yml as a Compose user might grow it: everything here is Compose-only."""
    changed = copy.deepcopy(config)
    services = changed["services"]
    services["worker"] = {
        "image": "${API_IMAGE:-fastapi-stack/api}:${API_IMAGE_TAG:-0.1.0}",
        "build": {"context": str(REPO_ROOT), "dockerfile": "services/api/Dockerfile"},
        "container_name": "worker",
        "profiles": ["jobs"],
        "restart": "always",
    }
    services["cron"] = {
        "image": "postgres:15.13-alpine",
        "restart": "on-failure",
        "depends_on": {"postgres": {"condition": "service_healthy", "required": True}},
        "pull_policy": "never",
        "shm_size": "64m",
        "ports": ["127.0.0.1:${CRON_PORT:-5999}:5999/udp"],
        "tmpfs": "/run",
        "volumes": [
            {
                "type": "bind",
                "source": str(REPO_ROOT / "services/redis/redis.conf"),
                "target": "/etc/cron.conf",
                "read_only": True,
            },
        ],
    }
    services["api"]["depends_on"]["cron"] = {"condition": "service_started"}
    changed["name"] = "renamed"
    return changed


def test_what_compose_gains_and_swarm_refuses_is_turned_into_swarm_s_form(tmp_path: Path) -> None:
    form = swarm_form(_gained(compose()))
    assert "worker" not in form["services"]
    cron = form["services"]["cron"]
    assert cron["deploy"]["restart_policy"]["condition"] == "on-failure"
    assert cron["ports"] == [
        {"target": 5999, "mode": "host", "published": "${CRON_PORT:-5999}", "protocol": "udp"}
    ]
    assert {"type": "tmpfs", "target": "/run"} in cron["volumes"]
    assert [c["target"] for c in cron["configs"]] == ["/etc/cron.conf"]
    checked = stack_config(written(form, tmp_path))
    assert checked.returncode == 0, checked.stderr


def test_what_the_generator_passes_on_and_swarm_refuses_fails_the_check(tmp_path: Path) -> None:
    """A Compose-only key the generator does not know reaches the stack file unchanged, and
    `docker stack config` (this test's check) refuses it: the failure a Compose change would
    cause here, before anyone deploys."""
    changed = copy.deepcopy(compose())
    changed["services"]["api"]["develop"] = {"watch": [{"path": "./services", "action": "sync"}]}
    refused = stack_config(written(swarm_form(changed), tmp_path))
    assert refused.returncode != 0
    assert "develop" in refused.stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda s: s["nginx"]["volumes"].append(
                {"type": "bind", "source": str(REPO_ROOT / "services"), "target": "/srv"}
            ),
            "writable bind mount",
        ),
        (lambda s: s["nginx"].update(ports=["8080"]), "publishes no fixed host port"),
        (
            lambda s: s["migrate"]["environment"].update(ONLY_MIGRATE="1"),
            "reads settings its dependent lacks",
        ),
        (
            lambda s: s["api"].update({"x-swarm-environment": ["DRAIN_MIN_SECONDS=6"]}),
            "x-swarm-environment and environment must be mappings",
        ),
    ],
    ids=["writable checkout mount", "ephemeral port", "one-shot's own setting", "listed extras"],
)
def test_what_has_no_swarm_form_is_refused_by_the_generator(change: Any, message: str) -> None:
    changed = copy.deepcopy(compose())
    change(changed["services"])
    with pytest.raises(SwarmFormError, match=message):
        swarm_form(changed)

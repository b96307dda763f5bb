"""docker-compose.yml: accepted by Compose v2 itself, valid per the Compose Specification schema,
and built the way the stack's rules say (private data stores, healthchecks, pinned images, no
secret in the file). What each service promises is test_compose_services.py's; how the file is
read (the binary, the schema, the fixtures `raw` and `resolved`) is stack/testing/compose_file.py
and this folder's conftest.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from stack.paths import REPO_ROOT
from stack.testing.compose_file import (
    COMPOSE_FILE,
    REQUIRED_ENV,
    compose_config,
    compose_spec_schema,
)

SERVICES = {
    "nginx",
    "api",
    "migrate",
    "postgres",
    "redis",
    "prometheus",
    "alertmanager",
    "grafana",
    "nginx-exporter",
    "redis-exporter",
    "postgres-exporter",
    "node-exporter",
    "blackbox-exporter",
    "pushgateway",
    "monitoring-auth",
}
ONE_SHOT = {"migrate", "monitoring-auth"}
# Needs no network at all: it only hashes a password into files.
NO_NETWORK = {"monitoring-auth"}
# Images with nothing inside to run a probe with: no healthcheck at all (`up --wait` then waits for
# them to run; a disabled check makes it fail).
NO_PROBE_POSSIBLE = {"nginx-exporter": "nginx/nginx-prometheus-exporter is FROM scratch"}
SECRET_NAME = re.compile(r"(PASSWORD|PASS|SECRET|TOKEN|_AUTH|_KEY)$")
REQUIRED_REFERENCE = re.compile(r"^\$\{[A-Z][A-Z0-9_]*:\?[^}]+\}$")
PINNED_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/-]*:v?\d+\.\d+(\.\d+)?(-[a-z0-9.]+)?$")


def _long_running(model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in model["services"].items()
        if service.get("restart", "no") != "no"
    }


def test_compose_config_accepts_the_file(resolved: dict[str, Any]) -> None:
    assert set(resolved["services"]) == SERVICES
    assert resolved["name"] == "fastapi-stack"


@pytest.mark.parametrize("missing", sorted(REQUIRED_ENV))
def test_compose_config_refuses_a_missing_secret(tmp_path: Path, missing: str) -> None:
    env = {key: value for key, value in REQUIRED_ENV.items() if key != missing}
    result = compose_config(tmp_path, env)
    assert result.returncode != 0
    assert f"required variable {missing} is missing a value" in result.stderr


def test_compose_config_refuses_a_misspelled_key(tmp_path: Path) -> None:
    text = COMPOSE_FILE.read_text()
    broken = text.replace("    stop_grace_period: 30s\n", "    stop_grace_periodd: 30s\n", 1)
    assert broken != text
    broken_file = tmp_path / "docker-compose.yml"
    broken_file.write_text(broken)
    result = compose_config(tmp_path, REQUIRED_ENV, broken_file)
    assert result.returncode != 0
    assert "stop_grace_periodd" in result.stderr


# --- Compose Specification schema -----------------------------------------------------------


def test_file_is_valid_per_compose_spec_schema(raw: dict[str, Any]) -> None:
    validator = jsonschema.Draft7Validator(compose_spec_schema())
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(raw)]
    assert errors == []


def test_resolved_model_is_valid_per_compose_spec_schema(resolved: dict[str, Any]) -> None:
    validator = jsonschema.Draft7Validator(compose_spec_schema())
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(resolved)]
    assert errors == []


def test_schema_check_catches_a_misspelled_key(raw: dict[str, Any]) -> None:
    broken = copy.deepcopy(raw)
    broken["services"]["api"]["restrat"] = "always"
    validator = jsonschema.Draft7Validator(compose_spec_schema())
    messages = [e.message for e in validator.iter_errors(broken)]
    assert any("restrat" in message for message in messages), messages


def test_no_version_key(raw: dict[str, Any]) -> None:
    assert "version" not in raw


# --- structure ------------------------------------------------------------------------------


def test_private_network_is_internal_and_public_is_not(resolved: dict[str, Any]) -> None:
    assert resolved["networks"]["private"].get("internal") is True
    assert not resolved["networks"]["public"].get("internal")


@pytest.mark.parametrize("name", ["postgres", "redis"])
def test_data_stores_are_private_only_and_unpublished(resolved: dict[str, Any], name: str) -> None:
    service = resolved["services"][name]
    assert not service.get("ports")
    assert set(service["networks"]) == {"private"}
    assert any(v["type"] == "volume" for v in service["volumes"]), "data needs a named volume"


def test_network_membership(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    networks = {name: set(s.get("networks", ())) for name, s in services.items()}
    both = {"nginx", "prometheus", "alertmanager", "grafana"}
    for name, joined in networks.items():
        if name in NO_NETWORK:
            assert services[name]["network_mode"] == "none", name
            assert not joined, name
            continue
        assert joined == ({"public", "private"} if name in both else {"private"}), name


def test_only_nginx_and_the_monitoring_uis_publish_ports(resolved: dict[str, Any]) -> None:
    published = {
        name: [(str(p["published"]), p["target"]) for p in service["ports"]]
        for name, service in resolved["services"].items()
        if service.get("ports")
    }
    assert published == {
        "nginx": [("8080", 8080), ("8443", 8443)],
        "prometheus": [("9090", 9090)],
        "alertmanager": [("9093", 9093)],
        "grafana": [("3000", 3000)],
    }
    # The UIs without real auth answer on loopback unless MONITORING_BIND_ADDRESS says otherwise.
    for name in ("prometheus", "alertmanager", "grafana"):
        assert resolved["services"][name]["ports"][0]["host_ip"] == "127.0.0.1"


def test_host_ports_come_from_env(raw: dict[str, Any]) -> None:
    services = raw["services"]
    assert services["nginx"]["ports"] == [
        "${NGINX_BIND_ADDRESS:-0.0.0.0}:${NGINX_PORT:-8080}:8080",
        "${NGINX_BIND_ADDRESS:-0.0.0.0}:${NGINX_TLS_PORT:-8443}:8443",
    ]
    for name, variable, port in [
        ("prometheus", "PROMETHEUS_PORT", 9090),
        ("alertmanager", "ALERTMANAGER_PORT", 9093),
        ("grafana", "GRAFANA_PORT", 3000),
    ]:
        assert services[name]["ports"] == [
            f"${{MONITORING_BIND_ADDRESS:-127.0.0.1}}:${{{variable}:-{port}}}:{port}"
        ]


def test_every_long_running_service_has_a_healthcheck(resolved: dict[str, Any]) -> None:
    long_running = _long_running(resolved)
    assert set(long_running) == SERVICES - ONE_SHOT
    for name, service in long_running.items():
        check = service.get("healthcheck") or {}
        if name in NO_PROBE_POSSIBLE:
            # `disable: true` would make `docker compose up --wait` fail on this service.
            assert "healthcheck" not in service, f"{name}: {NO_PROBE_POSSIBLE[name]}"
            continue
        assert not check.get("disable"), name
        assert check.get("test"), f"{name} has no healthcheck"
        assert check["test"][0] in {"CMD", "CMD-SHELL"}, name
        assert "curl" not in " ".join(check["test"]), f"{name}: curl is in none of the images"


def test_long_running_services_restart_under_compose_and_swarm(resolved: dict[str, Any]) -> None:
    for name, service in _long_running(resolved).items():
        assert service["restart"] == "unless-stopped", name
        assert service["deploy"]["restart_policy"]["condition"] == "any", name


def test_images_are_pinned_to_versions(resolved: dict[str, Any]) -> None:
    for name, service in resolved["services"].items():
        image = service["image"]
        assert PINNED_IMAGE.match(image), f"{name}: {image} is not pinned to a version tag"
        assert ":latest" not in image


def test_no_literal_secrets(raw: dict[str, Any]) -> None:
    found: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                where = f"{path}.{key}"
                if isinstance(key, str) and SECRET_NAME.search(key) and not isinstance(value, dict):
                    found.append(where)
                    assert REQUIRED_REFERENCE.match(str(value)), f"{where} = {value!r}"
                walk(value, where)
        elif isinstance(node, list):
            for index, value in enumerate(node):
                if index and node[index - 1] == "--requirepass":
                    found.append(f"{path}[{index}]")
                    assert REQUIRED_REFERENCE.match(str(value)), f"{path}[{index}] = {value!r}"
                walk(value, f"{path}[{index}]")

    walk(raw, "")
    assert ".services.postgres.environment.POSTGRES_PASSWORD" in found
    redis_command = raw["services"]["redis"]["command"]
    assert f".services.redis.command[{redis_command.index('--requirepass') + 1}]" in found
    assert ".services.grafana.environment.GF_SECURITY_ADMIN_PASSWORD" in found
    assert ".services.postgres-exporter.environment.DATA_SOURCE_PASS" in found
    # No `${...PASSWORD:-default}` anywhere, not even in a comment.
    text = COMPOSE_FILE.read_text()
    assert not re.search(r"\$\{[A-Z_]*(PASSWORD|PASS|SECRET|TOKEN)[A-Z_]*:?-", text)


def test_secrets_reach_the_services_from_the_env(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    password = REQUIRED_ENV["POSTGRES_PASSWORD"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == password
    assert services["api"]["environment"]["POSTGRES_PASSWORD"] == password
    assert services["migrate"]["environment"]["POSTGRES_PASSWORD"] == password
    assert services["postgres-exporter"]["environment"]["DATA_SOURCE_PASS"] == password
    redis_password = REQUIRED_ENV["REDIS_PASSWORD"]
    command = services["redis"]["command"]
    assert command[command.index("--requirepass") + 1] == redis_password
    assert services["api"]["environment"]["REDIS_PASSWORD"] == redis_password
    assert services["redis-exporter"]["environment"]["REDIS_PASSWORD"] == redis_password
    grafana = services["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == REQUIRED_ENV["GRAFANA_ADMIN_PASSWORD"]
    monitoring_password = REQUIRED_ENV["MONITORING_PASSWORD"]
    assert grafana["MONITORING_PASSWORD"] == monitoring_password
    rendering = services["monitoring-auth"]["environment"]
    assert rendering["MONITORING_PASSWORD"] == monitoring_password


def test_redis_is_an_lru_cache_with_a_memory_cap(resolved: dict[str, Any]) -> None:
    command = resolved["services"]["redis"]["command"]
    # redis-server first, or the image's entrypoint would not drop root.
    assert command[:2] == ["redis-server", "/usr/local/etc/redis/redis.conf"]
    mounts = {v["target"]: v for v in resolved["services"]["redis"]["volumes"]}
    config = mounts["/usr/local/etc/redis/redis.conf"]
    assert Path(config["source"]) == REPO_ROOT / "services/redis/redis.conf"
    assert config["read_only"] is True
    assert command[command.index("--maxmemory-policy") + 1] == "allkeys-lru"
    assert re.fullmatch(r"\d+[kmg]b", command[command.index("--maxmemory") + 1])

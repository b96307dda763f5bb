"""docker-compose.yml, service by service: the API's replicas, migrations, image and stop; nginx's
config, certificate and entry; the monitoring plane's mounts, flags and credential.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from stack.config.nginx import COMPOSE_CERTIFICATE, COMPOSE_KEY
from stack.config.prometheus import COMPOSE_AUTH_PATH
from stack.monitoring_auth import RENDER_SCRIPT, USER
from stack.paths import REPO_ROOT
from stack.testing.compose_file import REQUIRED_ENV, compose_config


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

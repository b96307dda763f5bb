"""services/prometheus/prometheus.yml with Compose's addresses swapped for loopback ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from stack.paths import PROMETHEUS_DIR
from stack.topology import Topology


def _native_target(target: str, topology: Topology) -> list[str]:
    host, _, _port = target.rpartition(":")
    if host in ("localhost", "prometheus"):
        return [topology.address("prometheus")]
    if host == "api":
        return topology.api_addresses
    if host in topology.ports:
        return [topology.address(host)]
    raise ValueError(f"prometheus.yml names {target!r}, which the native topology does not know")


def _native_probe_url(url: str, topology: Topology) -> str:
    """A probed URL (the blackbox job's targets) with its Compose host:port made native."""
    parts = urlsplit(url)
    [address] = _native_target(parts.netloc, topology)
    return urlunsplit(parts._replace(netloc=address))


def _native_targets(target: str, topology: Topology) -> list[str]:
    if "://" in target:
        return [_native_probe_url(target, topology)]
    return _native_target(target, topology)


def seconds(duration: str) -> float:
    """A Prometheus duration ("15s", "500ms", "1m") in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for unit in sorted(units, key=len, reverse=True):
        if duration.endswith(unit):
            return float(duration[: -len(unit)]) * units[unit]
    raise ValueError(f"not a Prometheus duration: {duration!r}")


def _shorter(a: str, b: str) -> str:
    return a if seconds(a) <= seconds(b) else b


# Where Compose's prometheus.yml reads the monitoring password (the prometheus_auth volume).
COMPOSE_AUTH_PATH = "/etc/prometheus-auth/password"


def _native_auth(section: dict[str, Any], password_file: Path) -> None:
    """Point a basic_auth block at the native password file (a copy: YAML aliases share one)."""
    auth = section.get("basic_auth")
    if auth is None:
        return
    if auth.get("password_file") != COMPOSE_AUTH_PATH:
        raise ValueError(f"prometheus.yml sends basic auth other than the monitoring one: {auth}")
    section["basic_auth"] = {**auth, "password_file": str(password_file)}


def _with_interval(interval: str) -> dict[str, Any]:
    """prometheus.yml with another scrape and evaluation interval."""
    config: dict[str, Any] = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config.setdefault("global", {})["scrape_interval"] = interval
    config["global"]["evaluation_interval"] = interval
    # Prometheus refuses a timeout longer than the interval; tests scrape every second.
    config["global"]["scrape_timeout"] = _shorter(
        config["global"].get("scrape_timeout", "10s"), interval
    )
    return config


def render_compose_prometheus(interval: str, target: Path) -> Path:
    """prometheus.yml for Compose, only the intervals changed: what a test stack mounts over the
    file so its checks see series within seconds (natively NATIVE_SCRAPE_INTERVAL does it)."""
    target.write_text(
        "# Rendered by stack/config/prometheus.py from services/prometheus/prometheus.yml.\n"
        + yaml.safe_dump(_with_interval(interval), sort_keys=False)
    )
    target.chmod(0o644)
    return target


def render_prometheus(topology: Topology, target: Path, password_file: Path) -> Path:
    """Write the native variant of prometheus.yml to `target`: same jobs, rules and alerting;
    the monitoring credential read from `password_file`."""
    config = _with_interval(topology.scrape_interval)
    config["rule_files"] = [str(PROMETHEUS_DIR / pattern) for pattern in config["rule_files"]]
    for job in config["scrape_configs"]:
        targets: list[str] = []
        for static in job.pop("static_configs", []):
            for address in static["targets"]:
                targets += _native_targets(address, topology)
        for dns in job.pop("dns_sd_configs", []):
            # Compose finds replicas through DNS; natively they are a rendered list.
            targets += _native_target(f"{dns['names'][0]}:{dns['port']}", topology)
        job["static_configs"] = [{"targets": targets}]
        _native_auth(job, password_file)
        # A job that scrapes through a prober (blackbox) names the prober's address here.
        for relabel in job.get("relabel_configs", []):
            if relabel.get("target_label") == "__address__" and "replacement" in relabel:
                [relabel["replacement"]] = _native_target(relabel["replacement"], topology)
    for alerting in config.get("alerting", {}).get("alertmanagers", []):
        for static in alerting.get("static_configs", []):
            static["targets"] = [topology.address("alertmanager")]
        _native_auth(alerting, password_file)
    target.write_text(
        "# Rendered by stack/config/prometheus.py from services/prometheus/prometheus.yml.\n"
        + yaml.safe_dump(config, sort_keys=False)
    )
    return target

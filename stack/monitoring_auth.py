"""The monitoring plane's one credential: Prometheus, Alertmanager and the Pushgateway refuse any
request without it (their `--web.config.file`), and everything that talks to them sends it.

The user is fixed (`monitoring`): Compose's prometheus.yml and Grafana's datasource name it in
files that cannot read the environment. The password is MONITORING_PASSWORD, generated into `.env`
like the stack's other secrets (stack/envfile.py). The web config with its bcrypt hash is rendered
at start by services/monitoring-auth/render.sh, natively by `render_files` below and under Compose
by the one-shot `monitoring-auth` service; no hash is committed.

Kept free of third-party imports: the load test's image imports it too.
"""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from stack.paths import SERVICES_DIR

USER = "monitoring"
SETTING = "MONITORING_PASSWORD"
RENDER_SCRIPT = SERVICES_DIR / "monitoring-auth" / "render.sh"


class MonitoringAuthError(RuntimeError):
    pass


@dataclass(frozen=True)
class BasicAuth:
    """A basic-auth credential whose password stays out of reprs, logs and error messages."""

    user: str
    password: str = field(repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> BasicAuth | None:
        """The monitoring credential from a stack's settings; None when the password is unset."""
        password = env.get(SETTING, "")
        return cls(USER, password) if password else None

    @property
    def header(self) -> dict[str, str]:
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}


def render_files(env: Mapping[str, str], web_config: Path, password_file: Path) -> None:
    """The web config (bcrypt hash) and Prometheus's password file, by the script Compose runs.

    The password travels in the script's environment, never on its command line.
    """
    password = env.get(SETTING, "")
    result = subprocess.run(
        ["sh", str(RENDER_SCRIPT), str(web_config), str(password_file)],
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", SETTING: password},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if result.returncode != 0:
        raise MonitoringAuthError(result.stderr.strip() or f"{RENDER_SCRIPT} failed")

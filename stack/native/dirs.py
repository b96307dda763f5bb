"""Where one native stack keeps its rendered configs, logs and data."""

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StackDirs:
    root: Path

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def postgres(self) -> Path:
        return self.root / "postgres"

    @property
    def prometheus(self) -> Path:
        return self.root / "prometheus"

    @property
    def alertmanager(self) -> Path:
        return self.root / "alertmanager"

    @property
    def nginx(self) -> Path:
        return self.run / "nginx"

    @property
    def supervisor_conf(self) -> Path:
        return self.run / "supervisord.conf"

    @property
    def web_config(self) -> Path:
        """--web.config.file of Prometheus, Alertmanager and the Pushgateway (bcrypt hash)."""
        return self.run / "web-config.yml"

    @property
    def monitoring_password(self) -> Path:
        """The monitoring password, for Prometheus's own requests (password_file)."""
        return self.run / "monitoring.password"

"""Where things are: the checkout, the services' folders, where runners keep data (git-ignored)."""

import hashlib
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVICES_DIR = REPO_ROOT / "services"
API_DIR = SERVICES_DIR / "api"
NGINX_DIR = SERVICES_DIR / "nginx"
PROMETHEUS_DIR = SERVICES_DIR / "prometheus"
ALERTMANAGER_DIR = SERVICES_DIR / "alertmanager"
BLACKBOX_CONFIG = SERVICES_DIR / "blackbox" / "blackbox.yml"
GRAFANA_DIR = SERVICES_DIR / "grafana"
REDIS_CONFIG = SERVICES_DIR / "redis" / "redis.conf"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"


def _reachable_by_others(path: Path) -> bool:
    return all(os.stat(p).st_mode & 0o001 for p in [path, *path.parents] if p.exists())


def data_root() -> Path:
    """`.data/` in the checkout, unless PostgreSQL's own user could not reach it.

    As root, PostgreSQL runs as the `postgres` user, which cannot enter a checkout under a
    private home such as /root; the data then lives under /var/tmp, named after the checkout.
    """
    override = os.environ.get("STACK_DATA_DIR")
    if override:
        return Path(override).resolve()
    local = REPO_ROOT / ".data"
    if os.geteuid() != 0 or _reachable_by_others(REPO_ROOT):
        return local
    digest = hashlib.sha256(str(REPO_ROOT).encode()).hexdigest()[:10]
    # Named after the checkout and created by root only, so not a predictable-name hazard.
    return Path("/var/tmp") / f"fastapi-stack-{digest}"  # noqa: S108

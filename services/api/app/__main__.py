"""`python -m app`: one Uvicorn worker per replica.

The stack scales by running more replicas (Compose `deploy.replicas`, or N native processes), not
workers: each process keeps its own Prometheus registry and is scraped as its own target, so
metrics stay correct without prometheus_client's multiprocess mode.
"""

import uvicorn

from app.config import get_settings
from app.observability.logging import configure_logging


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.replica_name)
    uvicorn.run(
        "app.main:create_app_from_env",
        factory=True,
        host=settings.api_host,
        port=settings.api_port,
        workers=1,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        server_header=False,
        # nginx in front sets X-Forwarded-*; trust it only from the private network's peers.
        proxy_headers=True,
        forwarded_allow_ips="*",
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
        # Longer than nginx's upstream keepalive_timeout (60 s): nginx closes idle connections
        # first, so it never sends a request on a connection Uvicorn is closing.
        timeout_keep_alive=75,
    )


if __name__ == "__main__":
    main()

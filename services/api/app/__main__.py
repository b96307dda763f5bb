"""`python -m app`: one Uvicorn worker per replica.

The stack scales by running more replicas (Compose `deploy.replicas`, or N native processes), not
workers: each process keeps its own Prometheus registry and is scraped as its own target, so
metrics stay correct without prometheus_client's multiprocess mode. The worker count is fixed at
one here, and the settings refuse to start at all when WEB_CONCURRENCY asks for more (Uvicorn's
and Gunicorn's own CLIs read it) or PROMETHEUS_MULTIPROC_DIR asks for multiprocess metrics.

SIGTERM (a deploy, `docker compose stop`, `supervisorctl stop`) loses no request:

1. Drain. The listening socket closes at once: nginx's next new connection is refused, which
   nginx retries on another replica even for a POST (nothing was sent), and the replica leaves
   nginx's pool. Requests still arriving on nginx's open keep-alive connections are served and
   answered with `Connection: close`, so nginx drops each connection after its response; idle
   ones nginx closes itself after its upstream keepalive_timeout. Uvicorn alone would close idle
   keep-alive connections at once, racing a request nginx may be writing into one: nginx cannot
   retry a POST or PATCH that reached a replica, so it answered 502 (3 failed writes in 6 rolling
   restarts under load, before this drain existed; 0 since: tests/chaos). Under Swarm the
   refusals go on for at least DRAIN_MIN_SECONDS, until nginx has looked the service's name up
   again (Settings.drain_min_seconds says why).
2. Uvicorn's graceful shutdown: requests in flight finish (within what is left of
   SHUTDOWN_GRACE_SECONDS), then the lifespan closes the PostgreSQL and Redis pools.
"""

import asyncio
import logging
import socket

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings, get_settings
from app.main import create_app
from app.observability.logging import configure_logging

logger = logging.getLogger("app.server")

# Longer than nginx's upstream keepalive_timeout (3 s, services/nginx/nginx.conf), so by the end
# of the drain nginx has closed every idle connection itself. Never shortened: the settings keep
# SHUTDOWN_GRACE_SECONDS at least a second above it.
DRAIN_SECONDS = 4.0


class Drain:
    """Shared by the server, which starts the drain, and the app wrapper, which acts on it."""

    def __init__(self) -> None:
        self.active = False


class CloseConnectionsWhileDraining:
    """Adds `Connection: close` to every response once the drain has started.

    Uvicorn then closes the connection after the response, and nginx, seeing the header, never
    sends another request into it: the close cannot race a request.
    """

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            # Checked when the response starts, so requests already in flight close too.
            if message["type"] == "http.response.start" and self.drain.active:
                headers = [*message.get("headers", []), (b"connection", b"close")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_closing)


class DrainingServer(uvicorn.Server):
    def __init__(
        self, config: uvicorn.Config, drain: Drain, drain_seconds: float, min_seconds: float = 0
    ) -> None:
        super().__init__(config)
        self.drain = drain
        self.drain_seconds = drain_seconds
        self.min_seconds = min_seconds

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.drain.active = True
        for server in self.servers:
            server.close()
        loop = asyncio.get_running_loop()
        start = loop.time()
        logger.info("draining", extra={"connections": len(self.server_state.connections)})
        # Ends early once nginx has let go of every connection, but never before min_seconds
        # (DRAIN_MIN_SECONDS); a second signal skips it. Uvicorn's connection set has no event
        # to wait on, hence the polling.
        while not self.force_exit and (  # noqa: ASYNC110
            loop.time() - start < self.min_seconds
            or (self.server_state.connections and loop.time() - start < self.drain_seconds)
        ):
            await asyncio.sleep(0.05)
        logger.info(
            "drained",
            extra={
                "seconds": round(loop.time() - start, 3),
                "connections_left": len(self.server_state.connections),
            },
        )
        await super().shutdown(sockets)


def build_server(settings: Settings, app: ASGIApp | None = None) -> DrainingServer:
    """The server `python -m app` runs: the app from `settings`, or `app` (tests add routes)."""
    grace = settings.shutdown_grace_seconds
    drain_seconds = max(DRAIN_SECONDS, settings.drain_min_seconds)
    drain = Drain()
    served = app if app is not None else create_app(settings)
    config = uvicorn.Config(
        CloseConnectionsWhileDraining(served, drain),
        host=settings.api_host,
        port=settings.api_port,
        workers=1,
        loop="uvloop",
        http="httptools",
        access_log=False,
        # Logging is configured by main(), once, as JSON: Uvicorn's loggers propagate to it.
        log_config=None,
        server_header=False,
        # nginx in front sets X-Forwarded-*; trust it only from the private network's peers.
        proxy_headers=True,
        forwarded_allow_ips="*",
        # The drain and the wait for in-flight requests share SHUTDOWN_GRACE_SECONDS, so the
        # whole shutdown fits in it (and in Compose's stop_grace_period / supervisord's
        # stopwaitsecs, which are longer).
        timeout_graceful_shutdown=max(1, int(grace - drain_seconds)),
        # Longer than nginx's upstream keepalive_timeout (3 s): nginx closes idle connections
        # first, so it never sends a request on a connection Uvicorn is closing.
        timeout_keep_alive=15,
    )
    return DrainingServer(config, drain, drain_seconds, settings.drain_min_seconds)


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.replica_name)
    build_server(settings).run()


if __name__ == "__main__":
    main()

"""Every file the native stack runs from, rendered into its run folder."""

from __future__ import annotations

from collections.abc import Mapping

from stack.config.nginx import HttpsEntry, render_nginx
from stack.config.prometheus import render_prometheus
from stack.config.supervisor import LOG_UMASK, render_supervisor
from stack.monitoring_auth import render_files
from stack.native.dirs import StackDirs
from stack.tls import TlsEntry, system_resolver
from stack.topology import Topology


def _private_logs(dirs: StackDirs) -> None:
    """Logs hold request paths and error lines that quote requests: no other local user reads
    them. New files get 0640 from supervisord's umask; this covers the folder and the files an
    older run left with wider modes."""
    dirs.logs.chmod(0o777 & ~LOG_UMASK)
    for log in dirs.logs.iterdir():
        if log.is_file():
            log.chmod(log.stat().st_mode & 0o777 & ~LOG_UMASK)


def https_entry(topology: Topology, tls: TlsEntry) -> HttpsEntry:
    port = topology.ports["nginx-tls"]
    resolver = system_resolver() if tls.ocsp else None
    return HttpsEntry(port, port, str(tls.certificate), str(tls.key), tls.http_mode, resolver)


def render_all(
    topology: Topology, env: Mapping[str, str], dirs: StackDirs, *, tls: TlsEntry, as_root: bool
) -> None:
    """tls: the checked HTTPS entry (stack.tls.prepare), which nginx serves."""
    for folder in (dirs.run, dirs.logs, dirs.prometheus, dirs.alertmanager):
        folder.mkdir(parents=True, exist_ok=True)
    _private_logs(dirs)
    render_nginx(
        dirs.nginx,
        topology.api_addresses,
        topology.ports["nginx"],
        topology.ports["nginx-internal"],
        listen_host=topology.host,
        internal_listen_host=topology.host,
        access_log="/dev/stdout",
        rate=env.get("NGINX_RATE_LIMIT", "1000r/s"),
        conn_limit=int(env.get("NGINX_CONN_LIMIT", "100")),
        https=https_entry(topology, tls),
    )
    # What Compose's one-shot monitoring-auth service renders, by the same script.
    render_files(env, dirs.web_config, dirs.monitoring_password)
    render_prometheus(topology, dirs.run / "prometheus.yml", dirs.monitoring_password)
    render_supervisor(topology, env, dirs, as_root=as_root)

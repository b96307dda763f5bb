"""services/nginx's config as written and rendered: nginx -t on the native and Compose variants,
the renderer's refusals, and what the config may name (includes, paths, the pinned image).

What the config does live, in front of stand-in replicas, is tests/static/test_nginx_proxy.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from stack.config import nginx as render
from stack.paths import NGINX_DIR, REPO_ROOT
from stack.testing.nginx import NGINX, throwaway_certificate


def _nginx_t(
    conf_dir: Path, *prefix_command: str, conf: Path | None = None
) -> subprocess.CompletedProcess[str]:
    assert Path(NGINX).is_file(), f"nginx is not installed at {NGINX} (apt-get install nginx)"
    command = [*prefix_command, NGINX, "-t", "-q", "-e", "stderr", "-p", f"{conf_dir}/"]
    command += ["-c", str(conf or conf_dir / "nginx.conf")]
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)


def test_native_variant_passes_nginx_t(tmp_path: Path) -> None:
    conf = render.render_nginx(tmp_path, ["127.0.0.1:18001", "127.0.0.1:18002"], 18080, 18081)
    assert conf == tmp_path / "nginx.conf"
    result = _nginx_t(tmp_path)
    assert result.returncode == 0, result.stderr


def test_broken_native_variant_fails_nginx_t(tmp_path: Path) -> None:
    render.render_nginx(tmp_path, ["127.0.0.1:18001"], 18080, 18081)
    upstream = tmp_path / "conf.d" / "upstream.conf"
    upstream.write_text(upstream.read_text() + "server 127.0.0.1:18002 no_such_parameter;\n")
    result = _nginx_t(tmp_path)
    assert result.returncode != 0
    assert "no_such_parameter" in result.stderr


@pytest.mark.parametrize(
    ("upstreams", "kwargs"),
    [
        ([], {}),
        (["127.0.0.1:8001; include /etc/passwd"], {}),
        (["127.0.0.1"], {}),
        (["127.0.0.1:70000"], {}),
        (["127.0.0.1:8001"], {"rate": "fast"}),
        (["127.0.0.1:8001"], {"access_log": "/tmp/x.log; error_log /tmp/e"}),
        (["127.0.0.1:8001"], {"conn_limit": 0}),
        (["127.0.0.1:8001"], {"conn_limit": "5; allow all"}),
        # Past limit_conn's largest number nginx would not start.
        (["127.0.0.1:8001"], {"conn_limit": 65536}),
    ],
)
def test_render_refuses_values_that_would_inject_config(
    tmp_path: Path, upstreams: list[str], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(ValueError, match=r"."):
        render.render_nginx(tmp_path, upstreams, 18080, 18081, **kwargs)


def test_every_include_nginx_conf_names_exists_in_both_variants(tmp_path: Path) -> None:
    nginx_conf = (NGINX_DIR / "nginx.conf").read_text()
    included = re.findall(r"^\s*include\s+(\S+);", nginx_conf, flags=re.MULTILINE)
    assert sorted(included) == sorted(
        [f"conf.d/{name}" for name in render.INCLUDE_FILES]
        + [f"entry/{name}" for name in render.ENTRY_FILES]
    )
    render.render_nginx(tmp_path / "native", ["127.0.0.1:18001"], 18080, 18081)
    rendered = {p.name for p in (tmp_path / "native" / "conf.d").iterdir()}
    committed = {p.name for p in (NGINX_DIR / "compose").glob("*.conf")}
    assert rendered == committed == set(render.INCLUDE_FILES)
    # entry/ is rendered for both runners: natively beside conf.d/, for Compose by `make up`.
    render.render_compose_entry(tmp_path / "compose", _compose_https("serve"))
    for folder in (tmp_path / "native" / "entry", tmp_path / "compose"):
        assert {p.name for p in folder.iterdir()} == set(render.ENTRY_FILES)


def _compose_https(mode: str) -> render.HttpsEntry:
    return render.HttpsEntry(
        render.COMPOSE_TLS_PORT, 8443, render.COMPOSE_CERTIFICATE, render.COMPOSE_KEY, mode
    )


def _directives(path: Path) -> list[str]:
    return [line for line in re.sub(r"#.*", "", path.read_text()).splitlines() if line.strip()]


def test_the_native_defaults_are_composes_values(tmp_path: Path) -> None:
    """Rendered with its defaults, the native http.conf is Compose's: the same access log target,
    rate and per-address limit on requests in progress (the native runner overrides some)."""
    render.render_nginx(tmp_path, ["127.0.0.1:18001"], 18080, 18081)
    rendered = _directives(tmp_path / "conf.d" / "http.conf")
    assert rendered == _directives(NGINX_DIR / "compose" / "http.conf")
    assert "limit_conn per_ip_conn 100;" in rendered


def test_nginx_conf_writes_nothing_outside_the_prefix() -> None:
    text = re.sub(r"#.*", "", (NGINX_DIR / "nginx.conf").read_text())
    # The pid file comes from the command line (native) or the image's default (Compose).
    assert not re.search(r"^\s*pid\s", text, flags=re.MULTILINE)
    for directive in re.findall(r"^\s*(\w+_temp_path)\s+(\S+);", text, flags=re.MULTILINE):
        assert not directive[1].startswith("/"), directive
    assert len(re.findall(r"_temp_path\s", text)) == 5


def _compose_nginx_image() -> str:
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    return str(compose["services"]["nginx"]["image"])


def test_compose_nginx_image_supports_upstream_resolve() -> None:
    # compose/upstream.conf relies on `server ... resolve` and `resolver` inside upstream{},
    # which open-source nginx has since 1.27.3; Compose's entry/listen.conf on `http2 on;`
    # (1.25.1).
    match = re.fullmatch(r"nginx:(\d+)\.(\d+)\.(\d+)-alpine", _compose_nginx_image())
    assert match, _compose_nginx_image()
    assert tuple(int(part) for part in match.groups()) >= (1, 27, 3)


@pytest.mark.parametrize("mode", ["serve", "redirect", "off"])
def test_compose_variant_passes_nginx_t(tmp_path: Path, mode: str) -> None:
    """The Compose variant as mounted in the container: nginx.conf, compose/ as conf.d/, the
    entry/ `make up` renders and the certificate and key under /etc/nginx/tls/.

    Debian's nginx 1.22 here predates `resolve` and `http2 on;`; those constructs (checked
    against the pinned image's version above) are taken out or said the 1.22 way (`listen ...
    http2`), and everything else is tested as committed or rendered. In its own mount namespace
    the nginx -t process gets a private /etc/hosts (the `api` name resolves) and the folder as
    /etc/nginx, so the absolute paths in entry/ are the container's.
    """
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(f"unshare --mount is not permitted here: {probe.stderr.strip()}")
    conf_dir = tmp_path / "etc-nginx"
    shutil.copytree(NGINX_DIR / "compose", conf_dir / "conf.d")
    shutil.copyfile(NGINX_DIR / "nginx.conf", conf_dir / "nginx.conf")
    render.render_compose_entry(conf_dir / "entry", _compose_https(mode))
    listen = conf_dir / "entry" / "listen.conf"
    rendered = listen.read_text()
    assert "\nlisten 8443 ssl default_server;\nhttp2 on;\n" in rendered
    listen.write_text(
        rendered.replace("ssl default_server;\nhttp2 on;", "ssl http2 default_server;")
    )
    certificate = throwaway_certificate()
    (conf_dir / "tls").mkdir()
    shutil.copyfile(certificate.certificate, conf_dir / "tls" / "server.crt")
    shutil.copyfile(certificate.key, conf_dir / "tls" / "server.key")
    upstream = conf_dir / "conf.d" / "upstream.conf"
    original = upstream.read_text()
    assert re.search(r"^server api:8000 resolve ", original, flags=re.MULTILINE)
    legacy = re.sub(r"^resolver(_timeout)?\s.*\n", "", original, flags=re.MULTILINE)
    legacy = legacy.replace(" resolve ", " ")
    assert "resolve" not in re.sub(r"#.*", "", legacy)
    upstream.write_text(legacy)
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n127.0.0.1 api\n")
    script = 'mount --bind "$0" /etc/hosts && mount --bind "$1" /etc/nginx && shift && exec "$@"'
    unshare = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
    container_conf = Path("/etc/nginx/nginx.conf")
    prefix = tmp_path / "prefix"
    prefix.mkdir()
    result = _nginx_t(prefix, *unshare, str(hosts), str(conf_dir), conf=container_conf)
    assert result.returncode == 0, result.stderr

    # Without the hosts entry the same config must fail: proves the check resolved `api`.
    script = 'mount --bind "$0" /etc/nginx && exec "$@"'
    unshare = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
    unresolved = _nginx_t(prefix, *unshare, str(conf_dir), conf=container_conf)
    assert unresolved.returncode != 0
    assert "api" in unresolved.stderr


def test_nginx_command_keeps_every_runtime_file_under_conf_dir(tmp_path: Path) -> None:
    conf_dir = tmp_path.resolve()
    command = render.nginx_command(tmp_path, nginx="/usr/sbin/nginx")
    assert command == [
        "/usr/sbin/nginx",
        "-e",
        "stderr",
        "-p",
        f"{conf_dir}/",
        "-c",
        str(conf_dir / "nginx.conf"),
        "-g",
        f"daemon off; pid {conf_dir / 'nginx.pid'};",
    ]
    with pytest.raises(ValueError, match="plain path"):
        render.nginx_command(tmp_path / "a b; user root")

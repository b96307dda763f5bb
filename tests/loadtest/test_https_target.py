"""An https:// target: which CA the load test trusts, and that it never sends load unchecked."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.settings import SettingsError, resolve


def _local_ca(tmp_path: Path) -> Path:
    ca = tmp_path / ".data" / "tls" / "ca.crt"
    ca.parent.mkdir(parents=True)
    ca.write_text("a CA certificate\n")
    return ca


def test_the_stacks_local_ca_is_trusted_for_its_https_entry(tmp_path: Path) -> None:
    ca = _local_ca(tmp_path)
    (tmp_path / ".env").write_text("NGINX_TLS_PORT=18443\n")
    environ = {"STACK_ENV_FILE": str(tmp_path / ".env")}
    settings = resolve({"host": "https://127.0.0.1:18443"}, environ)
    assert settings.ca == ca
    assert f"--ca-file={ca}" in settings.locust_options()
    # Plain HTTP: nothing to trust, and Locust is told so.
    plain = resolve({}, environ)
    assert (plain.host, plain.ca) == ("http://127.0.0.1:8080", None)
    assert "--ca-file=" in plain.locust_options()


def test_with_the_plain_port_redirecting_the_default_target_is_https(tmp_path: Path) -> None:
    ca = _local_ca(tmp_path)
    for mode in ("redirect", "off"):
        (tmp_path / ".env").write_text(f"NGINX_HTTP={mode}\nNGINX_TLS_PORT=18443\n")
        settings = resolve({}, {"STACK_ENV_FILE": str(tmp_path / ".env")})
        assert (settings.host, settings.ca) == ("https://127.0.0.1:18443", ca)


def test_your_own_certificate_is_checked_against_the_system_or_the_ca_given(
    tmp_path: Path,
) -> None:
    _local_ca(tmp_path)
    (tmp_path / ".env").write_text("NGINX_TLS_CERT=/srv/tls/full.pem\nNGINX_TLS_KEY=/srv/k.pem\n")
    environ = {"STACK_ENV_FILE": str(tmp_path / ".env")}
    # A certificate of your own: the local CA (left from before) is not what signed it.
    assert resolve({"host": "https://api.example.com"}, environ).ca is None
    given = tmp_path / "corporate-ca.pem"
    given.write_text("another CA\n")
    assert resolve({"host": "https://api.example.com", "ca": str(given)}, environ).ca == given
    with pytest.raises(SettingsError, match=r"ca \(LOADTEST_CA\) .*missing\.pem is not a file"):
        resolve({"host": "https://api.example.com", "ca": str(tmp_path / "missing.pem")}, environ)

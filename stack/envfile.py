"""`.env` from `.env.example`, with every empty secret replaced by a random value.

Running it again only fills secrets that are still empty, so it is harmless to repeat and never
rotates a password that a data folder already depends on.
"""

import os
import secrets
import sys
from pathlib import Path

SECRET_KEYS = (
    "POSTGRES_PASSWORD", "REDIS_PASSWORD", "GRAFANA_ADMIN_PASSWORD", "MONITORING_PASSWORD",
)  # fmt: skip


def _parse(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and "=" in stripped:
            key, _, value = stripped.partition("=")
            values[key.strip()] = value.strip()
    return values


def read_env(path: Path | str) -> dict[str, str]:
    """The settings an env file holds (no interpolation, as Compose and the runners read them)."""
    return _parse(Path(path).read_text())


def ensure_env(root: Path, target: Path | None = None) -> dict[str, str]:
    """Create or complete `target` (default: root/.env) from root/.env.example."""
    example = root / ".env.example"
    target = target or root / ".env"
    lines = (target if target.exists() else example).read_text().splitlines()
    present = _parse("\n".join(lines))
    # Settings added to .env.example after .env was made are appended, with their defaults.
    for key, value in _parse(example.read_text()).items():
        if key not in present:
            lines.append(f"{key}={value}")
    out = []
    for line in lines:
        key, sep, value = line.partition("=")
        if sep and key.strip() in SECRET_KEYS and not value.strip():
            out.append(f"{key}={secrets.token_urlsafe(24)}")
        else:
            out.append(line)
    text = "\n".join(out) + "\n"
    if not target.exists() or target.read_text() != text:
        target.write_text(text)
        target.chmod(0o600)
    return _parse(text)


def settings_file(root: Path) -> Path:
    """`.env` in root, or the file STACK_ENV_FILE names, so tests can run a stack without
    touching the checkout's."""
    return Path(os.environ.get("STACK_ENV_FILE", root / ".env"))


def stack_env(root: Path) -> dict[str, str]:
    """The stack's settings: `.env` (created or completed first), then the environment on top."""
    env_file = settings_file(root)
    return {**ensure_env(root, env_file), **{k: v for k, v in os.environ.items() if k.isupper()}}


def set_values(target: Path, values: dict[str, str]) -> None:
    """Set these keys in an env file: each existing line rewritten in place, new keys appended."""
    lines = target.read_text().splitlines() if target.exists() else []
    pending = dict(values)
    out = []
    for line in lines:
        key = line.partition("=")[0].strip()
        if "=" in line and not line.lstrip().startswith("#") and key in pending:
            out.append(f"{key}={pending.pop(key)}")
        else:
            out.append(line)
    out += [f"{key}={value}" for key, value in pending.items()]
    target.write_text("\n".join(out) + "\n")
    target.chmod(0o600)


if __name__ == "__main__":
    # python3 -m stack.envfile [ROOT [TARGET]]: TARGET is ROOT/.env unless make names another.
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd()
    ensure_env(root, Path(sys.argv[2]) if len(sys.argv) > 2 else None)

"""Backup files on disk: names, checksums, retention. Nothing here talks to PostgreSQL."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from stack.paths import REPO_ROOT

PREFIX = "app-"
SUFFIX = ".dump"
# app-20261130T150000Z.dump: sortable by name, and the name says when the snapshot was taken.
NAME = re.compile(r"^app-(\d{8}T\d{6}Z)\.dump$")


class BackupError(RuntimeError):
    """A backup that cannot be made or must not be restored; the message says why."""


def backup_dir(env: dict[str, str]) -> Path:
    return Path(env.get("BACKUP_DIR") or REPO_ROOT / "backups").resolve()


def new_name(now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{PREFIX}{stamp}{SUFFIX}"


def checksum_file(archive: Path) -> Path:
    return archive.with_name(archive.name + ".sha256")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def writing(folder: Path, name: str) -> Iterator[Path]:
    """A path to write the archive to; on success it appears under `name` with its checksum.

    The dump goes to a hidden partial file first, so a failed or interrupted backup never
    leaves a file that looks complete.
    """
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)  # backups hold every user's data
    partial = folder / f".{name}.partial"
    try:
        yield partial
        final = folder / name
        checksum_file(final).write_text(f"{sha256(partial)}  {name}\n")
        os.replace(partial, final)
        final.chmod(0o600)
        checksum_file(final).chmod(0o600)
    finally:
        partial.unlink(missing_ok=True)


def verify_checksum(archive: Path) -> None:
    """Refuse a file that is missing, has no checksum, or does not match it."""
    if not archive.is_file():
        raise BackupError(f"{archive}: no such backup file")
    sidecar = checksum_file(archive)
    if not sidecar.is_file():
        raise BackupError(f"{archive}: its checksum file {sidecar.name} is missing")
    expected = sidecar.read_text().split(maxsplit=1)[0] if sidecar.read_text().strip() else ""
    actual = sha256(archive)
    if actual != expected:
        raise BackupError(
            f"{archive}: checksum mismatch (file {actual[:12]}…, recorded {expected[:12]}…): "
            "the file is corrupt or truncated; nothing was restored"
        )


def backups(folder: Path) -> list[Path]:
    """Complete backups in `folder`, oldest first."""
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if NAME.match(path.name))


def prune(folder: Path, keep: int) -> list[Path]:
    """Delete all but the `keep` newest backups; returns what was deleted."""
    if keep < 1:
        raise BackupError(f"BACKUP_KEEP must be at least 1, got {keep}")
    doomed = backups(folder)[:-keep]
    for archive in doomed:
        archive.unlink()
        checksum_file(archive).unlink(missing_ok=True)
    return doomed

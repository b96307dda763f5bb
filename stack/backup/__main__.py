"""`python -m stack.backup create|restore FILE|verify FILE|list` (make backup / make restore).

STACK=native|compose says which stack (the Makefile passes the one it detected). BACKUP_DIR is
where backups go (default: backups/ at the repository root, git-ignored), BACKUP_KEEP how many
`create` keeps (default 14).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from stack.backup.archive import (
    BackupError,
    backup_dir,
    backups,
    new_name,
    prune,
    verify_checksum,
    writing,
)
from stack.backup.targets import ComposeTarget, NativeTarget, Target
from stack.envfile import stack_env
from stack.native.runner import stack_dirs
from stack.paths import REPO_ROOT
from stack.topology import Topology


def target_for(env: dict[str, str]) -> Target:
    kind = env.get("STACK", "native")
    if kind == "compose":
        # The settings file make hands Compose, which names the project too (STACK_ENV_FILE).
        env_file = env.get("STACK_ENV_FILE")
        options = ("--env-file", str(Path(env_file).resolve())) if env_file else ()
        entry = f"http://127.0.0.1:{env.get('NGINX_PORT', '8080')}"
        return ComposeTarget(entry=entry, compose=("docker", "compose", *options))
    if kind == "native":
        return NativeTarget(env, Topology.from_env(env), stack_dirs())
    raise BackupError(f"STACK must be native or compose, got {kind!r}")


def create(env: dict[str, str]) -> Path:
    target = target_for(env)
    folder = backup_dir(env)
    name = new_name()
    start = time.monotonic()
    with writing(folder, name) as partial:
        target.dump(partial)
    archive = folder / name
    size = archive.stat().st_size
    print(f"backup: {archive} ({size / 2**20:.1f} MiB) in {time.monotonic() - start:.1f} s")
    for gone in prune(folder, int(env.get("BACKUP_KEEP", "14"))):
        print(f"backup: removed {gone.name} (BACKUP_KEEP={env.get('BACKUP_KEEP', '14')})")
    return archive


def restore(env: dict[str, str], archive: Path) -> None:
    # Everything that can refuse the file runs before anything is stopped or dropped.
    verify_checksum(archive)
    target = target_for(env)
    start = time.monotonic()
    target.validate(archive)
    print(f"restore: {archive.name} checked ({time.monotonic() - start:.1f} s); stopping writers")
    target.fence()
    try:
        target.restore(archive)
        target.migrate()
        # The cache may hold rows newer than the backup: cleared before any reader comes back.
        target.clear_cache()
    finally:
        # One transaction: on failure the old data is still there, so the replicas come back
        # either way.
        target.unfence()
    print(f"restore: {archive.name} restored in {time.monotonic() - start:.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stack.backup", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("create", help="back the database up into BACKUP_DIR")
    for name in ("restore", "verify"):
        sub = commands.add_parser(name, help=f"{name} one backup file")
        sub.add_argument("file", type=Path)
    commands.add_parser("list", help="the backups in BACKUP_DIR, oldest first")
    args = parser.parse_args(argv)
    env = stack_env(REPO_ROOT)
    try:
        if args.command == "create":
            create(env)
        elif args.command == "restore":
            restore(env, args.file.resolve())
        elif args.command == "verify":
            verify_checksum(args.file.resolve())
            target_for(env).validate(args.file.resolve())
            print(f"{args.file}: checksum and archive are intact")
        else:
            for archive in backups(backup_dir(env)):
                print(archive)
    except BackupError as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

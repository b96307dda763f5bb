"""make backup / make restore on a stack of their own, native and under Compose: what was backed up
comes back, exactly, after a restore in place and after `make clean`; a damaged file is refused
first; `make down` keeps the data. Under Compose, the scheduled backups (profile `backup`) write the
same files, which `make restore` takes.

Its own stack, not the session's: `make clean` deletes the data of the stack it runs on.
"""

from __future__ import annotations

import hashlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from stack import engine
from stack.backup.archive import NAME, verify_checksum
from stack.backup.archive import backups as listed_backups
from stack.compose import ComposeStack, throwaway_compose_stack
from stack.ephemeral import throwaway_stack
from stack.paths import API_DIR
from stack.running import LiveStack, Rows
from stack.testing.api import ApiUser, new_item, new_user

REPLICAS = 2


@pytest.fixture(scope="module")
def backup_stack(runner: str, request: pytest.FixtureRequest) -> Iterator[LiveStack]:
    if runner == "native":
        with throwaway_stack("backup-stack-", REPLICAS, NATIVE_SCRAPE_INTERVAL="5s") as stack:
            yield stack
        return
    docker: engine.Engine = request.getfixturevalue("docker_engine")
    with throwaway_compose_stack("backup", docker.env, replicas=REPLICAS) as compose_stack:
        yield compose_stack


@pytest.fixture(scope="module")
def backups(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("backups")


def make(stack: LiveStack, backups: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return stack.make(*args, environment={"BACKUP_DIR": str(backups)})


def rows(stack: LiveStack) -> tuple[Rows, Rows]:
    users = stack.sql("SELECT id, email, token_hash FROM users ORDER BY id")
    items = stack.sql("SELECT id, name, version, price, owner_id FROM items ORDER BY id")
    return users, items


def served_by_every_replica(stack: LiveStack, items: Rows) -> None:
    """Each replica, asked directly, serves each item as the database has it (twice: the second
    read is the cache's), so no entry from before the restore survives anywhere."""
    urls = stack.replica_urls()
    assert len(urls) == REPLICAS
    for replica, url in enumerate(urls, start=1):
        with httpx.Client(base_url=url, timeout=10) as client:
            for item_id, name, version, _, _ in items:
                for _ in range(2):
                    body = client.get(f"/items/{item_id}").json()
                    assert (str(body["id"]), body["name"], str(body["version"])) == (
                        item_id, name, version
                    ), (replica, body)  # fmt: skip


def head_revision() -> str:
    head = ScriptDirectory.from_config(Config(str(API_DIR / "alembic.ini"))).get_current_head()
    assert head is not None
    return head


def write_more(client: httpx.Client, owner: ApiUser, items: Rows) -> None:
    """Writes after the backup: a user, items, updates and a delete the restore must undo."""
    later = new_user(client)
    for n in range(3):
        new_item(client, later, name=f"after-{n}")
    for item_id, *_ in items[:3]:
        patched = client.patch(f"/items/{item_id}", json={"name": "after"}, headers=owner.auth)
        assert patched.status_code == 200, patched.text
        client.get(f"/items/{item_id}")  # the newer version is in the cache now
    deleted = client.delete(f"/items/{items[-1][0]}", headers=owner.auth)
    assert deleted.status_code == 204, deleted.text


def test_down_keeps_the_data_and_stops_everything(backup_stack: LiveStack, backups: Path) -> None:
    stack = backup_stack
    with httpx.Client(base_url=stack.nginx, timeout=10) as client:
        new_item(client, new_user(client), name="survives make down")
    before = rows(stack)
    stopped = make(stack, backups, "down")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert stack.running() == []
    started = make(stack, backups, "up")
    assert started.returncode == 0, started.stdout + started.stderr
    assert rows(stack) == before
    served_by_every_replica(stack, before[1])


def test_restore_brings_back_exactly_the_backup(backup_stack: LiveStack, backups: Path) -> None:
    stack = backup_stack
    with httpx.Client(base_url=stack.nginx, timeout=10) as client:
        owners = [new_user(client) for _ in range(3)]
        for n in range(12):
            new_item(client, owners[n % 3], name=f"item-{n}", price=n + 0.25)
        users, items = rows(stack)
        served_by_every_replica(stack, items)  # and cached

        made = make(stack, backups, "backup")
        assert made.returncode == 0, made.stdout + made.stderr
        (archive,) = backups.glob("app-*.dump")
        assert (backups / f"{archive.name}.sha256").is_file()

        write_more(client, owners[0], [i for i in items if i[4] == str(owners[0].id)])
        assert rows(stack) != (users, items)

    restored = make(stack, backups, "restore", f"FILE={archive}")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert rows(stack) == (users, items)
    served_by_every_replica(stack, items)

    # From nothing: the data folder deleted, a fresh stack with only the migrations applied.
    for step in ("clean", "up"):
        result = make(stack, backups, step)
        assert result.returncode == 0, result.stdout + result.stderr
    assert rows(stack) == ([], [])
    restored = make(stack, backups, "restore", f"FILE={archive}")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert rows(stack) == (users, items)
    assert stack.sql("SELECT version_num FROM alembic_version") == [[head_revision()]]
    served_by_every_replica(stack, items)
    # The identity sequences came back too: a new item gets a fresh id, not a taken one.
    with httpx.Client(base_url=stack.nginx, timeout=10) as client:
        fresh = new_user(client)
        assert fresh.id > max(int(u[0]) for u in users)
        assert new_item(client, fresh)["id"] > max(int(i[0]) for i in items)


@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "no checksum"])
def test_a_damaged_backup_is_refused_before_anything_is_touched(
    backup_stack: LiveStack, backups: Path, tmp_path: Path, damage: str
) -> None:
    stack = backup_stack
    made = make(stack, backups, "backup")
    assert made.returncode == 0, made.stdout + made.stderr
    archive = sorted(backups.glob("app-*.dump"))[-1]
    data = archive.read_bytes()
    bad = tmp_path / archive.name
    sidecar = tmp_path / f"{archive.name}.sha256"
    if damage == "flipped byte":
        middle = len(data) // 2
        bad.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :])
        sidecar.write_text((backups / f"{archive.name}.sha256").read_text())
        expected = "checksum mismatch"
    elif damage == "truncated":
        # A checksum that matches the damaged file: only reading the archive can tell.
        bad.write_bytes(data[: len(data) * 2 // 3])
        sidecar.write_text(f"{hashlib.sha256(bad.read_bytes()).hexdigest()}  {bad.name}\n")
        expected = "failed"
    else:
        bad.write_bytes(data)
        expected = "checksum file"
    before = rows(stack)
    pids = stack.replica_ids()

    refused = make(stack, backups, "restore", f"FILE={bad}")
    assert refused.returncode != 0
    assert expected in refused.stderr, refused.stderr
    assert rows(stack) == before
    # The writers were never stopped: the same replica processes still serve.
    assert stack.replica_ids() == pids


@pytest.mark.compose_only(reason="natively a timer of the host's runs `make backup` on a schedule")
def test_scheduled_backups_keep_the_newest_and_restore(
    backup_stack: LiveStack, tmp_path: Path
) -> None:
    """The `backup` profile's service, every 2 s with 2 kept: the files are `make backup`'s, the
    oldest go, and `make restore` takes the newest."""
    assert isinstance(backup_stack, ComposeStack)
    stack = backup_stack
    folder = tmp_path / "scheduled"
    schedule = {"COMPOSE_PROFILES": "backup", "BACKUP_INTERVAL_SECONDS": "2", "BACKUP_KEEP": "2"}
    with httpx.Client(base_url=stack.nginx, timeout=10) as client:
        new_item(client, new_user(client), name="in the scheduled backups")
    started = stack.make("up", environment={"BACKUP_DIR": str(folder), **schedule})
    assert started.returncode == 0, started.stdout + started.stderr
    # Until the service has pruned at least once: three or more made, two kept.
    deadline = time.monotonic() + 60
    while "backup: removed" not in stack.log("backup"):
        assert time.monotonic() < deadline, stack.log("backup")
        time.sleep(1)
    stack.compose("stop", "backup")
    made = [line for line in stack.log("backup").splitlines() if line.startswith("backup: /")]
    assert len(made) >= 3, made
    kept = listed_backups(folder)
    assert len(kept) == 2
    assert sorted(path.name for path in folder.iterdir()) == sorted(
        [path.name for path in kept] + [f"{path.name}.sha256" for path in kept]
    )
    for archive in kept:
        assert NAME.match(archive.name)
        verify_checksum(archive)
    expected = rows(stack)
    restored = stack.make("restore", f"FILE={kept[-1]}")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert rows(stack) == expected

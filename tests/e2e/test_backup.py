"""make backup / make restore on a native stack of their own: what was backed up comes back,
exactly, after a restore in place and after `make clean`; a damaged file is refused first.

Its own stack, not the session's: `make clean` deletes the data of the stack it runs on.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from stack.ephemeral import EphemeralStack, throwaway_stack
from stack.paths import API_DIR, REPO_ROOT
from stack.testing.api import ApiUser, new_item, new_user

Rows = list[list[str]]


@pytest.fixture(scope="module")
def backup_stack() -> Iterator[EphemeralStack]:
    with throwaway_stack("backup-stack-", 2, NATIVE_SCRAPE_INTERVAL="5s") as stack:
        yield stack


@pytest.fixture(scope="module")
def backups(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("backups")


def make(stack: EphemeralStack, backups: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", *args],
        cwd=REPO_ROOT,
        env={**stack.env, "STACK": "native", "BACKUP_DIR": str(backups)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def rows(stack: EphemeralStack) -> tuple[Rows, Rows]:
    users = stack.sql("SELECT id, email, token_hash FROM users ORDER BY id")
    items = stack.sql("SELECT id, name, version, price, owner_id FROM items ORDER BY id")
    return users, items


def served_by_every_replica(stack: EphemeralStack, items: Rows) -> None:
    """Each replica, asked directly, serves each item as the database has it (twice: the second
    read is the cache's), so no entry from before the restore survives anywhere."""
    for replica in range(1, stack.topology.replicas + 1):
        with httpx.Client(base_url=stack.replica_url(replica), timeout=10) as client:
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


def test_restore_brings_back_exactly_the_backup(
    backup_stack: EphemeralStack, backups: Path
) -> None:
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
    backup_stack: EphemeralStack, backups: Path, tmp_path: Path, damage: str
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
    pids = [stack.pid(f"api:api-{r}") for r in range(1, stack.topology.replicas + 1)]

    refused = make(stack, backups, "restore", f"FILE={bad}")
    assert refused.returncode != 0
    assert expected in refused.stderr, refused.stderr
    assert rows(stack) == before
    # The writers were never stopped: the same replica processes still serve.
    assert [stack.pid(f"api:api-{r}") for r in range(1, stack.topology.replicas + 1)] == pids

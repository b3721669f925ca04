"""A database a newer release migrated (at a revision this code does not know): the release before it, which a
rollback brings back, runs on it as it is instead of failing to start (migrations stay compatible with the
previous release, and a rollback does not downgrade the schema)."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from alembic.util import CommandError

from controlplane.store import migrate
from controlplane.store.database import Database
from controlplane.store.unit_of_work import Store
from tests.controlplane.helpers import get_task, submit
from tests.support.plane import running_plane

pytestmark = pytest.mark.timeout(60)


def newer_revision() -> str:
    """The revision the release after this one would add (as the review's repro had it: 0006 after 0005)."""
    newer = f"{int(migrate.head_revision()) + 1:04d}"
    known = {m.revision for m in ScriptDirectory.from_config(migrate.alembic_config()).walk_revisions()}
    assert newer not in known
    return newer


async def set_revision(database: Database, revision: str) -> None:
    async with database.transaction() as conn:
        await conn.execute(sa.text("UPDATE alembic_version SET version_num = :revision"), {"revision": revision})


async def stored_revision(database: Database) -> str:
    async with database.read() as conn:
        return str((await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).scalar_one())


async def test_upgrade_leaves_a_database_at_a_newer_revision_untouched_and_says_so(store: Store) -> None:
    database, newer, head = store.database, newer_revision(), migrate.head_revision()
    await set_revision(database, newer)
    with pytest.raises(migrate.NewerSchema) as raised:
        await migrate.upgrade(database)
    assert (raised.value.found, raised.value.head) == ((newer,), head)
    assert str(raised.value) == f"database schema at revision {newer}, newer than this release's {head}"
    assert await stored_revision(database) == newer


async def test_a_plane_starts_on_a_database_a_newer_release_migrated_with_one_warning(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    database = Database(database_url, pool_size=2)
    newer, head = newer_revision(), migrate.head_revision()
    try:
        await migrate.upgrade(database)
        await set_revision(database, newer)
        with caplog.at_level(logging.INFO):
            async with (
                running_plane(tmp_path / "plane", database_url=database_url) as plane,
                grpc.aio.insecure_channel(plane.address) as channel,
            ):
                submitted = await submit(channel, "rolled.back", {"on": newer})  # the schema serves this release
                assert (await get_task(channel, submitted.id)).target.capability == "rolled.back"
        warnings = [r for r in caplog.records if r.name == migrate.__name__ and r.levelno >= logging.WARNING]
        assert [r.getMessage() for r in warnings] == [
            f"database schema at revision {newer}, newer than this release's {head}: running on it unmigrated "
            "(migrations stay compatible with the previous release)"
        ]
        assert "Traceback" not in caplog.text
        assert await stored_revision(database) == newer  # no upgrade attempted
    finally:
        await database.dispose()


async def test_other_alembic_errors_are_raised_as_before(store: Store) -> None:
    with pytest.raises(CommandError, match="Can't locate revision identified by 'nowhere'"):
        await migrate.upgrade(store.database, "nowhere")

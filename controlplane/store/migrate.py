"""Schema migrations (Alembic), applied at start-up and by `meshplane db upgrade`."""

from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from controlplane.store.database import Database
from controlplane.store.transient import DatabaseUnreachable, unavailable_reason

logger = logging.getLogger(__name__)

_MIGRATIONS = Path(__file__).parent / "migrations"
# Serialises concurrent upgrades from several replicas starting at once (PostgreSQL).
_ADVISORY_LOCK_KEY = 0x6D657368706C616E  # "meshplan"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("no migrations found")
    return head


async def current_revision(database: Database) -> str | None:
    async with database.read() as conn:
        return await conn.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())


async def upgrade(database: Database, revision: str = "head") -> str:
    """Bring the schema to `revision`; returns the revision the database is at afterwards.

    Raises DatabaseUnreachable (naming the database, password hidden) when it cannot be reached.
    """
    try:
        return await _upgrade(database, revision)
    except Exception as exc:
        if unavailable_reason(exc) is None:
            raise
        shown = database.url.render_as_string(hide_password=True)
        raise DatabaseUnreachable(f"cannot reach the database {shown} ({exc})") from exc


async def _upgrade(database: Database, revision: str) -> str:
    config = alembic_config()

    def _run(sync_conn: sa.Connection) -> None:
        if sync_conn.dialect.name == "postgresql":
            sync_conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY})
        config.attributes["connection"] = sync_conn
        command.upgrade(config, revision)

    async with database.transaction() as conn:
        await conn.run_sync(_run)
    now = await current_revision(database)
    logger.info("database schema at revision %s", now)
    return now or ""

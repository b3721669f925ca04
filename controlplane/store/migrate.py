"""Schema migrations (Alembic), applied at start-up and by `meshplane db upgrade`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import asyncpg
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from controlplane.store.database import Database, UnsupportedDatabaseUrl, server_setting_options, shown_url
from controlplane.store.transient import (
    DatabaseUnreachable,
    first_line,
    first_of_type,
    insufficient_privilege,
    login_refused,
    server_error,
    setting_refused,
    storage_full_reason,
    unavailable_reason,
)

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


class NewerSchema(Exception):
    """The database is at a revision this release does not know: a newer release migrated it.

    Migrations stay compatible with the previous release (expand, then contract a release later), so the
    previous release runs on such a database as it is (a rollback does not downgrade the schema).
    """

    def __init__(self, found: Sequence[str], head: str) -> None:
        self.found = tuple(found)
        self.head = head
        super().__init__(f"database schema at revision {', '.join(self.found)}, newer than this release's {head}")


class DatabaseRefused(RuntimeError):
    """The database answered, and refused what starting needs of it: the connection, or the migration (a role
    without the privileges it takes). Its message names the database (password hidden) and the server's reason, in
    one line."""


async def upgrade(database: Database, revision: str = "head") -> str:
    """Bring the schema to `revision`; returns the revision the database is at afterwards.

    Raises NewerSchema, changing nothing, when it is at a revision this release does not know;
    DatabaseUnreachable (naming the database, password hidden) when it cannot be reached or refuses the login;
    UnsupportedDatabaseUrl when asyncpg, or the server, refuses an option of its URL; DatabaseRefused when the
    server refuses the connection or the migration otherwise (e.g. permission denied for schema public).
    """
    try:
        await database.ping()  # connecting first tells a connection refused from a migration refused
    except Exception as exc:
        refused = _bad_url_or_unreachable(exc, database) or _connection_refused(exc, database)
        if refused is None:
            raise
        raise refused from exc
    try:
        return await _upgrade(database, revision)
    except NewerSchema:
        raise
    except Exception as exc:
        refused = _bad_url_or_unreachable(exc, database) or _migration_refused(exc, database)
        if refused is None:
            raise
        raise refused from exc


def _bad_url_or_unreachable(exc: Exception, database: Database) -> Exception | None:
    """The one-line error for `exc` when the URL, the login or the database's reachability is at fault; else None."""
    shown = shown_url(database.url)
    misread = first_of_type(exc, asyncpg.ClientConfigurationError)
    if misread is not None:  # a URL option asyncpg refuses (e.g. sslmode=bogus): a bad setting
        return UnsupportedDatabaseUrl(f"the database URL {shown} has an option asyncpg refuses: {misread}")
    refused = login_refused(exc)
    if refused is not None:
        return DatabaseUnreachable(f"cannot log in to the database {shown} ({_hidden(refused, database)})")
    if unavailable_reason(exc) is not None:
        return DatabaseUnreachable(f"cannot reach the database {shown} ({_hidden(first_line(exc), database)})")
    return None


def _connection_refused(exc: Exception, database: Database) -> Exception | None:
    """The one-line error for the server refusing the connection (`exc`, from connecting); else None. A setting the
    URL sends it refused (`?statement_timeout=abc`, `?options=-c x=y`) is a bad setting: UnsupportedDatabaseUrl."""
    shown = shown_url(database.url)
    refused_setting = setting_refused(exc)
    if refused_setting is not None and server_setting_options(database.url):
        return UnsupportedDatabaseUrl(
            f"the database server refuses a setting the database URL {shown} sends it "
            f"({_hidden(refused_setting, database)}): correct or remove the option that sets it"
        )
    refused = server_error(exc)
    if refused is None:
        return None
    return DatabaseRefused(f"the database {shown} refused the connection ({_hidden(refused, database)})")


def _migration_refused(exc: Exception, database: Database) -> Exception | None:
    """The one-line error for the server refusing the migration (`exc`) for want of a privilege or of space; else
    None (a migration's own error is a bug: its traceback is wanted)."""
    shown = shown_url(database.url)
    denied = insufficient_privilege(exc)
    if denied is not None:
        return DatabaseRefused(
            f"cannot migrate the database {shown} ({_hidden(denied, database)}): migrations need a role that may "
            "create and alter the plane's tables in its schema (e.g. the schema's owner)"
        )
    full = storage_full_reason(exc)
    if full is not None:
        return DatabaseRefused(f"cannot migrate the database {shown}: {full}")
    return None


async def upgrade_at_start(database: Database) -> str:
    """`upgrade`, as a plane starting does it: a database a newer release migrated (the plane was rolled back) is
    used as it is, with one warning. Returns the revision the database is at."""
    try:
        return await upgrade(database)
    except NewerSchema as newer:
        logger.warning("%s: running on it unmigrated (migrations stay compatible with the previous release)", newer)
        return ", ".join(newer.found)


def _hidden(detail: str, database: Database) -> str:
    """A driver's `detail` without the database's password (which no driver should quote, but none must show)."""
    for password in (database.url.password, database.url.query.get("password")):
        if isinstance(password, str) and password:
            detail = detail.replace(password, "***")
    return detail


async def _upgrade(database: Database, revision: str) -> str:
    config = alembic_config()
    script = ScriptDirectory.from_config(config)

    def _run(sync_conn: sa.Connection) -> None:
        if sync_conn.dialect.name == "postgresql":
            sync_conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY})
        # Alembic cannot upgrade from a revision it does not know ("Can't locate revision"): a newer release's.
        found = MigrationContext.configure(sync_conn).get_current_heads()
        known = {migration.revision for migration in script.walk_revisions()}
        if any(current not in known for current in found):
            raise NewerSchema(found, script.get_current_head() or "")
        config.attributes["connection"] = sync_conn
        command.upgrade(config, revision)

    async with database.transaction() as conn:
        await conn.run_sync(_run)
    now = await current_revision(database)
    logger.info("database schema at revision %s", now)
    return now or ""

"""``meshplane db upgrade``: bring the database schema up to date."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from controlplane.cli import output
from controlplane.cli.common import CliError, CliFailure, database_url_setting
from controlplane.cli.logs import configure_logging


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = subparsers.add_parser("db", help="database maintenance")
    commands = db.add_subparsers(dest="db_command", metavar="COMMAND", required=True)
    upgrade = commands.add_parser("upgrade", help="apply schema migrations (the control plane also does at start)")
    upgrade.add_argument("--database-url", default=None, help="SQLAlchemy async URL (env MESHPLANE_DATABASE_URL)")
    upgrade.add_argument("--data-dir", type=Path, default=None, help="where the default SQLite file lives")
    upgrade.set_defaults(run=upgrade_database)


async def upgrade_database(args: argparse.Namespace) -> int:
    # Heavy imports (SQLAlchemy, Alembic), only for this command.
    from controlplane.settings import Settings, warn_about_unknown_variables
    from controlplane.store import migrate
    from controlplane.store.database import Database, UnsupportedDatabaseUrl, shown_url
    from controlplane.store.transient import DatabaseUnreachable

    overrides: dict[str, Any] = {}
    if args.database_url is not None:
        overrides["database_url"] = args.database_url
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir
    settings = Settings(**overrides)
    configure_logging("WARNING", settings.log_format)
    warn_about_unknown_variables()
    setting = database_url_setting(args)
    try:
        database = Database(settings.effective_database_url)
    except UnsupportedDatabaseUrl as exc:
        raise CliError(f"{setting}: {exc}") from exc
    shown = shown_url(database.url)
    try:
        revision = await migrate.upgrade(database)
    except migrate.NewerSchema as newer:  # a rollback: this release runs on the newer schema as it is
        found = ", ".join(newer.found)
        newer_than = f"newer than this release's {newer.head} (a newer release migrated it)"
        output.out(f"nothing to do: the database {shown} is at revision {found}, {newer_than}")
        return 0
    except (DatabaseUnreachable, migrate.DatabaseRefused) as exc:
        raise CliFailure(str(exc)) from exc
    except UnsupportedDatabaseUrl as exc:
        raise CliError(f"{setting}: {exc}") from exc
    finally:
        await database.dispose()
    output.out(f"database {shown} at revision {revision}")
    return 0

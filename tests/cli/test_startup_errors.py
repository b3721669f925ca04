"""What `meshplane up` and `meshplane db upgrade` say when they cannot use their database: one line on stderr (the
password hidden), no traceback, exit code 1 for a database that refuses them and 2 for a URL that is a bad setting;
and that they accept what they can: a libpq URL (postgresql://, postgres://, CloudNativePG's `uri`), and a
database a newer release migrated (a rollback)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import asyncpg
import pytest

from controlplane.devtools.postgres import PostgresServer, find_pg_bin
from controlplane.store import migrate
from controlplane.store.database import Database
from tests.cli.conftest import cli_env, run_cli, start_mesh
from tests.store.test_migrate_newer_schema import newer_revision, set_revision, stored_revision
from tests.support.toolchain import toolchain_missing

pytestmark = pytest.mark.timeout(120)
T = TypeVar("T")

PASSWORD = "s3cret-b6f1"
WRONG_PASSWORD = "wrong-7c2e"
ACCEPTED = (
    "use postgresql+asyncpg://USER:PASSWORD@HOST[:PORT]/DATABASE (postgresql:// and postgres:// are read the same "
    "way) or sqlite+aiosqlite:///PATH"
)


@dataclass
class PasswordServer:
    """A PostgreSQL that asks TCP clients for a password (scram-sha-256): the role `meshplane` owns `mesh`."""

    server: PostgresServer

    def url(self, password: str = PASSWORD, database: str = "mesh", scheme: str = "postgresql+asyncpg") -> str:
        return f"{scheme}://meshplane:{password}@127.0.0.1:{self.server.port}/{database}"


@pytest.fixture(scope="module")
def password_server() -> Iterator[PasswordServer]:
    if find_pg_bin() is None:
        toolchain_missing("PostgreSQL server binaries (initdb/postgres) not found: apt-get install postgresql")
    server = PostgresServer().start()
    try:
        asyncio.run(_require_passwords(server))
        yield PasswordServer(server)
    finally:
        server.stop()


async def _require_passwords(server: PostgresServer) -> None:
    admin = await asyncpg.connect(server.url().replace("+asyncpg", ""))
    try:
        await admin.execute(f"CREATE ROLE meshplane LOGIN PASSWORD '{PASSWORD}'")
        await admin.execute("CREATE DATABASE mesh OWNER meshplane")
        # Writing the file keeps its owner (the server's user, when the tests run as root).
        (server.data_dir / "pg_hba.conf").write_text(
            f"local all all trust\nhost all {server.user} 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
        )
        await admin.execute("SELECT pg_reload_conf()")
    finally:
        await admin.close()
    deadline = time.monotonic() + 30
    while True:  # the server rereads pg_hba.conf a moment after the reload
        try:
            connection = await asyncpg.connect(f"postgresql://meshplane:{WRONG_PASSWORD}@127.0.0.1:{server.port}/mesh")
        except asyncpg.InvalidPasswordError:
            return
        await connection.close()
        assert time.monotonic() < deadline, "the server still lets a wrong password in"
        await asyncio.sleep(0.1)


def _up(tmp_path: Path, database_url: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """`meshplane up` run to its end (for the cases where it does not start), no gateway found."""
    flags = ["--database-url", database_url] if database_url is not None else []
    return run_cli(
        *("up", "--data-dir", str(tmp_path / "data"), "--listen", "127.0.0.1:0", *flags),
        target=None,
        env=cli_env(MESHPLANE_GATEWAY_BIN=str(tmp_path / "none"), **env),
    )


def _db_upgrade(database_url: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    flags = ["--database-url", database_url] if database_url is not None else []
    return run_cli("db", "upgrade", *flags, target=None, env=cli_env(**env))


def _assert_one_line(result: subprocess.CompletedProcess[str], code: int, line: str, *hidden: str) -> None:
    """Exit code `code`; stderr ends with `line`, has no traceback and none of the `hidden` strings."""
    assert result.returncode == code, result.stderr
    assert result.stderr.splitlines()[-1] == line, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for secret in hidden:
        assert secret not in result.stderr + result.stdout


# ----------------------------------------------------------------------------- a database that refuses them


@pytest.mark.postgres
def test_a_wrong_password_is_one_line_naming_the_database(password_server: PasswordServer, tmp_path: Path) -> None:
    url = password_server.url(WRONG_PASSWORD)
    shown = password_server.url("***")
    refused = f'cannot log in to the database {shown} (28P01: password authentication failed for user "meshplane")'
    _assert_one_line(_up(tmp_path, url), 1, f"error: the control plane did not start: {refused}", WRONG_PASSWORD)
    _assert_one_line(_db_upgrade(url), 1, f"error: {refused}", WRONG_PASSWORD)


@pytest.mark.postgres
def test_a_database_that_does_not_exist_is_one_line_naming_it(password_server: PasswordServer, tmp_path: Path) -> None:
    url = password_server.url(database="nodb")
    shown = password_server.url("***", database="nodb")
    refused = f'cannot log in to the database {shown} (3D000: database "nodb" does not exist)'
    _assert_one_line(_up(tmp_path, url), 1, f"error: the control plane did not start: {refused}", PASSWORD)
    _assert_one_line(_db_upgrade(url), 1, f"error: {refused}", PASSWORD)


# ----------------------------------------------------------------------------- libpq URLs


@pytest.mark.postgres
@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_a_libpq_url_is_read_as_an_asyncpg_one_with_its_options(
    password_server: PasswordServer, tmp_path: Path, scheme: str
) -> None:
    """CloudNativePG's `uri` (postgresql://user:password@host:port/db), as libpq reads it, options included."""
    url = password_server.url(scheme=scheme) + "?sslmode=disable&application_name=ops"
    upgraded = _db_upgrade(url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.splitlines() == [
        f"database {password_server.url('***')}?application_name=ops&sslmode=disable at revision "
        f"{migrate.head_revision()}"
    ]
    # The options reach asyncpg: this server has no TLS, so one that requires it cannot connect.
    requiring = _db_upgrade(password_server.url(scheme=scheme) + "?sslmode=require")
    refusal = f'PostgreSQL server at "127.0.0.1:{password_server.server.port}" rejected SSL upgrade'
    line = f"error: cannot reach the database {password_server.url('***')}?sslmode=require ({refusal})"
    _assert_one_line(requiring, 1, line, PASSWORD)
    mesh = start_mesh(tmp_path / "data", "--database-url", url, demo=False)
    try:
        submitted = mesh.cli("task", "submit", "nobody.serves.this", "--input", "{}")
        assert submitted.returncode == 0, submitted.stderr
    finally:
        assert mesh.stop() == 0


@pytest.mark.postgres
def test_an_option_asyncpg_refuses_is_a_bad_setting(password_server: PasswordServer, tmp_path: Path) -> None:
    url = password_server.url(scheme="postgresql") + "?sslmode=sometimes"
    line = (
        f"error: --database-url: the database URL {password_server.url('***')}?sslmode=sometimes "
        "has an option asyncpg refuses: `sslmode` parameter must be one of: disable, allow, prefer, require, "
        "verify-ca, verify-full"
    )
    _assert_one_line(_up(tmp_path, url), 2, line, PASSWORD)
    _assert_one_line(_db_upgrade(url), 2, line, PASSWORD)


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("options", "refusal"),
    [
        ("options=-c%20no_such_setting%3D1", '42704: unrecognized configuration parameter "no_such_setting"'),
        ("statement_timeout=soon", '22023: invalid value for parameter "statement_timeout": "soon"'),
    ],
)
def test_a_setting_of_the_url_the_server_refuses_is_a_bad_setting(
    password_server: PasswordServer, tmp_path: Path, options: str, refusal: str
) -> None:
    """asyncpg sends an asyncpg URL's other options to the server as settings: one it refuses was a traceback."""
    url = f"{password_server.url()}?{options}"
    shown = password_server.url("***") + "?" + options.replace("%20", "+")
    line = (
        f"error: --database-url: the database server refuses a setting the database URL {shown} sends it ({refusal}): "
        "correct or remove the option that sets it"
    )
    _assert_one_line(_up(tmp_path, url), 2, line, PASSWORD)
    _assert_one_line(_db_upgrade(url), 2, line, PASSWORD)


@pytest.mark.postgres
def test_a_password_in_the_url_s_options_shows_nowhere(password_server: PasswordServer, tmp_path: Path) -> None:
    """`?password=` (as some secrets hold it) showed in the ready line and the plane's start-up log line."""
    url = f"postgresql+asyncpg://meshplane@127.0.0.1:{password_server.server.port}/mesh?password={PASSWORD}"
    mesh = start_mesh(tmp_path / "data", "--database-url", url, demo=False)
    try:
        assert mesh.cli("agents", "ls").returncode == 0  # (logged in with that password)
    finally:
        assert mesh.stop() == 0
    assert mesh.ready_line == (f"meshplane ready: grpc {mesh.address} (database {url.replace(PASSWORD, '***')})")
    log = mesh.log.read_text()
    assert f"(database {url.replace(PASSWORD, '***')}, nats " in log
    assert PASSWORD not in mesh.ready_line + log


# ----------------------------------------------------------------------------- a role that may not migrate


@pytest.fixture(scope="module")
def visitor_url(password_server: PasswordServer) -> str:
    """A role that may log in to a database (as its URL's `?password=`) but not create anything in its schema."""
    asyncio.run(_create_visitor(password_server.server))
    return f"postgresql+asyncpg://visitor@127.0.0.1:{password_server.server.port}/visited?password={PASSWORD}"


async def _create_visitor(server: PostgresServer) -> None:
    admin = await asyncpg.connect(server.url().replace("+asyncpg", ""))
    try:
        await admin.execute(f"CREATE ROLE visitor LOGIN PASSWORD '{PASSWORD}'")
        await admin.execute("CREATE DATABASE visited")
    finally:
        await admin.close()
    visited = await asyncpg.connect(server.url("visited").replace("+asyncpg", ""))
    try:
        await visited.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")  # (PostgreSQL 15 and later do already)
    finally:
        await visited.close()


@pytest.mark.postgres
def test_a_role_that_may_not_create_tables_is_one_line_naming_the_database(visitor_url: str, tmp_path: Path) -> None:
    shown = visitor_url.replace(PASSWORD, "***")
    refused = (
        f"cannot migrate the database {shown} (42501: permission denied for schema public): migrations need a role "
        "that may create and alter the plane's tables in its schema (e.g. the schema's owner)"
    )
    _assert_one_line(_db_upgrade(visitor_url), 1, f"error: {refused}", PASSWORD)
    _assert_one_line(_up(tmp_path, visitor_url), 1, f"error: the control plane did not start: {refused}", PASSWORD)


# ----------------------------------------------------------------------------- URLs that are bad settings


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("garbage", f"the database URL is malformed: {ACCEPTED}"),
        ("mysql://meshplane:hunter2@db/mesh", f"unsupported database URL mysql://meshplane:***@db/mesh: {ACCEPTED}"),
        (
            "postgresql+psycopg2://meshplane:hunter2@db/mesh",
            f"unsupported database URL postgresql+psycopg2://meshplane:***@db/mesh: {ACCEPTED}",
        ),
        ("sqlite:///meshplane.db", f"unsupported database URL sqlite:///meshplane.db: {ACCEPTED}"),
        (
            "postgresql://meshplane@db/mesh?password=hunter2&connect_timeout=5&keepalives=1",
            "the database URL postgresql://meshplane@db/mesh?connect_timeout=5&keepalives=1&password=*** has "
            "option(s) asyncpg does not read: connect_timeout, keepalives; remove them",
        ),
        (  # asyncpg sent it to the server as a setting, which refused it: a traceback
            "postgresql+asyncpg://meshplane@db/mesh?password=hunter2&connect_timeout=5&application_name=ops",
            "the database URL postgresql+asyncpg://meshplane@db/mesh?application_name=ops&connect_timeout=5&"
            "password=*** has option(s) asyncpg does not read: connect_timeout; remove them",
        ),
    ],
)
@pytest.mark.parametrize("command", ["up", "db upgrade"])
def test_a_url_of_another_form_is_a_bad_setting_in_one_line(
    tmp_path: Path, url: str, problem: str, command: str
) -> None:
    result = _up(tmp_path, MESHPLANE_DATABASE_URL=url) if command == "up" else _db_upgrade(MESHPLANE_DATABASE_URL=url)
    _assert_one_line(result, 2, f"error: MESHPLANE_DATABASE_URL: {problem}", "hunter2")
    assert result.stderr.count("\n") == 1  # refused before anything starts: the one line alone
    assert not (tmp_path / "data").exists()


# ----------------------------------------------------------------------------- a newer release's schema


def test_on_a_database_a_newer_release_migrated_upgrade_has_nothing_to_do_and_up_runs(
    database_url: str, tmp_path: Path
) -> None:
    """A rollback: the previous release's `db upgrade` and `up` on the schema the newer one left."""
    head, newer = migrate.head_revision(), newer_revision()
    assert _db_upgrade(database_url).returncode == 0
    asyncio.run(_with_database(database_url, lambda database: set_revision(database, newer)))
    shown = database_url  # no password in the test databases' URLs

    upgraded = _db_upgrade(database_url)
    assert (upgraded.returncode, upgraded.stderr) == (0, "")
    assert upgraded.stdout.splitlines() == [
        f"nothing to do: the database {shown} is at revision {newer}, newer than this release's {head} "
        "(a newer release migrated it)"
    ]

    mesh = start_mesh(tmp_path / "data", "--database-url", database_url, demo=False)
    try:
        submitted = mesh.cli("task", "submit", "nobody.serves.this", "--input", "{}")
        assert submitted.returncode == 0, submitted.stderr
    finally:
        assert mesh.stop() == 0
    log = mesh.log.read_text()
    assert "Traceback" not in log
    assert [line.split(" ", 3)[-1] for line in log.splitlines() if " WARNING " in line] == [
        f"controlplane.store.migrate: database schema at revision {newer}, newer than this release's {head}: "
        "running on it unmigrated (migrations stay compatible with the previous release)"
    ]
    assert asyncio.run(_with_database(database_url, stored_revision)) == newer  # not downgraded, not upgraded


async def _with_database(url: str, use: Callable[[Database], Awaitable[T]]) -> T:
    database = Database(url, pool_size=1)
    try:
        return await use(database)
    finally:
        await database.dispose()

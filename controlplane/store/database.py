"""The database handle: an async engine, dialect facts, and transactions.

On PostgreSQL the hot path's transactions (`statements()`) run on a separate pool of bare asyncpg
connections (see store.sql); everything else goes through SQLAlchemy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, QueuePool

from controlplane.errors import Unavailable
from controlplane.store.sql import AlchemySql, AsyncpgSql, DuplicateKey, Sql
from controlplane.store.transient import read_only, unavailable_reason

logger = logging.getLogger(__name__)


class _OneLineTracebacks(logging.Filter):
    """asyncpg's pool logs "Failed to restore the pool connection floor; retrying" with a full traceback each
    time it retries in a database outage (its own backoff, 1 s doubling to 60 s): that line keeps the error's
    first line and drops the traceback (the plane's loops say what the outage is)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            first = str(error).splitlines()[0] if str(error) else ""
            record.msg = f"{record.getMessage()} ({type(error).__name__}{': ' + first if first else ''})"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


_ASYNCPG_POOL_LOGGER = logging.getLogger("asyncpg.pool")
if not any(isinstance(f, _OneLineTracebacks) for f in _ASYNCPG_POOL_LOGGER.filters):
    _ASYNCPG_POOL_LOGGER.addFilter(_OneLineTracebacks())


class Database:
    """Owns the engine. Services open transactions with `transaction()`; repositories only execute."""

    def __init__(self, url: str, *, pool_size: int = 10, echo: bool = False) -> None:
        self.url = database_url(url)  # UnsupportedDatabaseUrl unless one of ACCEPTED_URLS
        self.is_postgres = self.url.get_backend_name() == "postgresql"
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self.engine: AsyncEngine = _create_engine(self.url, pool_size=pool_size, echo=echo)
        self._pool_size = pool_size
        self._raw_pool: asyncpg.Pool | None = None
        self._raw_pool_lock = asyncio.Lock()
        # SQLite (WAL) has one writer but concurrent readers: reads get their own connections, which
        # never take the write lock. PostgreSQL reads share the one pool.
        self._read_engine: AsyncEngine = _create_sqlite_reader(self.url, echo=echo) if self.is_sqlite else self.engine
        self._engines = {self.engine, self._read_engine}  # one on PostgreSQL
        self._checked_in = asyncio.Event()  # set whenever a connection goes back to a pool (see dispose)
        for engine in self._engines:
            event.listen(engine.sync_engine, "checkin", lambda *_: self._checked_in.set())

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """One transaction: committed when the block ends normally, rolled back on any exception."""
        async with self.engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def statements(self, *, single_statement: bool = False) -> AsyncIterator[Sql]:
        """One transaction for plain SQL (the hot path), committed when the block ends normally.

        On PostgreSQL it runs on a bare asyncpg connection. `single_statement`: the caller runs exactly
        one statement, which PostgreSQL makes atomic by itself, so no BEGIN/COMMIT round trips are sent.
        """
        if not self.is_postgres:
            try:
                async with self.engine.begin() as conn:
                    yield AlchemySql(conn)
            except sa.exc.IntegrityError as exc:
                raise DuplicateKey(str(exc.orig)) from exc
            return
        try:
            pool = self._raw_pool or await self._open_raw_pool()
            async with pool.acquire() as conn:
                try:
                    if single_statement:
                        yield AsyncpgSql(conn)
                    else:
                        async with conn.transaction():
                            yield AsyncpgSql(conn)
                except asyncpg.InternalClientError as exc:
                    # The driver lost track of the connection's protocol state; seen when the server ended
                    # the session (an administrator, a restart) while the connection sat in the pool. As with
                    # a lost connection: drop it, and the caller may retry (on a fresh one).
                    conn.terminate()
                    raise Unavailable(f"the database connection broke ({exc}); retry") from exc
                except asyncpg.ReadOnlySQLTransactionError:
                    conn.terminate()  # connected to a standby: a fresh connection may reach the new primary
                    raise
        except asyncpg.UniqueViolationError as exc:
            raise DuplicateKey(str(exc)) from exc
        except OSError as exc:
            raise Unavailable(f"the database connection was lost ({type(exc).__name__}); retry") from exc
        except asyncpg.PostgresError as exc:
            reason = unavailable_reason(exc)  # connection exceptions (class 08), too many connections, shutdowns
            if reason is None:
                raise
            raise Unavailable(f"{reason}; retry") from exc

    async def _open_raw_pool(self) -> asyncpg.Pool:
        async with self._raw_pool_lock:
            if self._raw_pool is None:
                self._raw_pool = await asyncpg.create_pool(
                    asyncpg_dsn(self.url),
                    min_size=1,
                    max_size=self._pool_size,
                    max_inactive_connection_lifetime=1800,
                    # Every hot statement finds its rows through an index (primary keys, the queue's partial
                    # index), whatever its parameters, so prepared statements use one generic plan. Left to
                    # choose, PostgreSQL keeps planning them afresh at each execution (an `= ANY($1)` of one id
                    # looks cheaper custom-planned): up to ~0.5 ms of planning per statement of a lone result.
                    # A generic plan made while a table was small (a new database) would scan the table
                    # sequentially until statistics catch up: never here.
                    server_settings=_server_settings(self.url),
                    init=_tune_hot_session,
                    reset=_keep_session,
                )
            return self._raw_pool

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads (a read-only snapshot; rolled back at the end)."""
        async with self._read_engine.connect() as conn:
            yield conn

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    def checked_out(self) -> int:
        """Connections in use right now (both engines; the hot path's asyncpg pool waits for its own)."""
        return sum(e.pool.checkedout() for e in self._engines if isinstance(e.pool, QueuePool))

    async def dispose(self, grace: float = 5.0) -> None:
        """Close every connection, after waiting (up to `grace` seconds) for those in use to come back.

        A connection still out when its engine is disposed is left open until it is returned; one held
        for ever would keep its transaction (on SQLite, the database's one write lock) for ever."""
        deadline = time.monotonic() + grace
        while self.checked_out() and (left := deadline - time.monotonic()) > 0:
            self._checked_in.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._checked_in.wait(), left)
        if busy := self.checked_out():
            logger.warning("closing the database with %d connection(s) still in use", busy)
        if self._raw_pool is not None:
            pool, self._raw_pool = self._raw_pool, None
            await pool.close()
        for engine in self._engines:
            await engine.dispose()


HOT_SESSION_SETTINGS = {"enable_seqscan": "off", "plan_cache_mode": "force_generic_plan"}


async def _tune_hot_session(conn: asyncpg.Connection) -> None:
    """The hot path's plan settings (see `_open_raw_pool`), set on each new connection. Not as startup
    parameters: PgBouncer refuses a connection whose startup parameters it does not know."""
    await conn.execute("; ".join(f"SET {name} = {value}" for name, value in HOT_SESSION_SETTINGS.items()))


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """Released connections skip asyncpg's default reset query (a round trip per transaction): the hot
    path changes no session state. (The pool still rolls back a transaction left open.)"""


ACCEPTED_URLS = (
    "postgresql+asyncpg://USER:PASSWORD@HOST[:PORT]/DATABASE (postgresql:// and postgres:// are read the same way) "
    "or sqlite+aiosqlite:///PATH"
)
# The query options of a libpq URL (postgresql://, postgres://) that asyncpg reads as libpq does, the SQLAlchemy
# spelling `ssl` (see asyncpg_dsn), and the startup parameters both send to the server (application_name, options).
# asyncpg would send any other option to the server as a setting: the server refuses most (connect_timeout,
# keepalives), and what libpq does with them (channel_binding, gssencmode, ...) would be lost. Such a URL is refused.
_LIBPQ_OPTIONS_ASYNCPG_READS = frozenset(
    {
        "host", "port", "dbname", "database", "user", "password", "passfile", "service",
        "sslmode", "sslcert", "sslkey", "sslrootcert", "sslcrl", "sslpassword", "sslnegotiation",
        "ssl_min_protocol_version", "ssl_max_protocol_version", "target_session_attrs", "krbsrvname", "gsslib",
        "ssl", "application_name", "options",
    }
)  # fmt: skip


# libpq's connection options that asyncpg does not read (PostgreSQL 17's list, less the above; client_encoding and
# replication left out: the server takes them as startup parameters too). A postgresql+asyncpg:// URL may carry server
# settings as options (asyncpg sends them at connection: `?statement_timeout=5000`), but one of these would be sent
# as a setting the server refuses ("unrecognized configuration parameter"), so such a URL is refused too.
_LIBPQ_ONLY_OPTIONS = frozenset(
    {
        "hostaddr", "connect_timeout", "fallback_application_name", "keepalives", "keepalives_idle",
        "keepalives_interval", "keepalives_count", "tcp_user_timeout", "require_auth", "channel_binding",
        "gssencmode", "gssdelegation", "requiressl", "sslcompression", "sslcertmode", "sslcrldir", "sslsni",
        "sslkeylogfile", "requirepeer", "load_balance_hosts", "min_protocol_version", "max_protocol_version",
        "oauth_issuer", "oauth_client_id", "oauth_client_secret", "oauth_scope",
    }
)  # fmt: skip


_SECRET_OPTION = re.compile(r"([?&](?:ssl)?password=)[^&]*")


def shown_url(url: sa.URL) -> str:
    """`url` as messages show it: its password hidden, in the user part and in a `password` or `sslpassword`
    option alike."""
    return _SECRET_OPTION.sub(r"\1***", url.render_as_string(hide_password=True))


class UnsupportedDatabaseUrl(ValueError):
    """A database URL the plane cannot use (a bad setting); the message says which forms it accepts, password
    hidden."""


def database_url(text: str) -> sa.URL:
    """The URL the plane connects with: `text` if one of ACCEPTED_URLS, with a libpq URL (`postgresql://`,
    `postgres://`, as CloudNativePG's `uri` has it) read as `postgresql+asyncpg://` with the same options.

    Raises UnsupportedDatabaseUrl for anything else.
    """
    try:
        url = make_url(text)
    except (sa.exc.ArgumentError, ValueError) as exc:
        # Not echoed: a URL that does not parse may still hold a password.
        raise UnsupportedDatabaseUrl(f"the database URL is malformed: use {ACCEPTED_URLS}") from exc
    shown = shown_url(url)
    if url.drivername in ("postgresql", "postgres"):
        _refuse_unread_options(url, set(url.query) - _LIBPQ_OPTIONS_ASYNCPG_READS)
        return url.set(drivername="postgresql+asyncpg")
    if url.drivername == "postgresql+asyncpg":
        _refuse_unread_options(url, set(url.query) & _LIBPQ_ONLY_OPTIONS)
        return url
    if url.drivername == "sqlite+aiosqlite":
        return url
    raise UnsupportedDatabaseUrl(f"unsupported database URL {shown}: use {ACCEPTED_URLS}")


def _refuse_unread_options(url: sa.URL, unread: set[str]) -> None:
    """UnsupportedDatabaseUrl naming the `unread` options of `url`, if any (libpq's, which asyncpg ignores or would
    send to the server as settings)."""
    if unread:
        raise UnsupportedDatabaseUrl(
            f"the database URL {shown_url(url)} has option(s) asyncpg does not read: {', '.join(sorted(unread))}; "
            "remove them"
        )


def server_setting_options(url: sa.URL) -> list[str]:
    """The options of a PostgreSQL `url` that asyncpg sends the server as settings when it connects: `options`
    (libpq's `-c name=value` list) and any option asyncpg does not read itself (`?statement_timeout=5000`)."""
    return sorted(name for name in url.query if name == "options" or name not in _LIBPQ_OPTIONS_ASYNCPG_READS)


def _create_engine(url: sa.URL, *, pool_size: int, echo: bool) -> AsyncEngine:
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        # One connection: SQLite has one writer anyway, and batching keeps it busy, not contended.
        engine = create_async_engine(
            url,
            echo=echo,
            poolclass=AsyncAdaptedQueuePool,
            pool_size=1,
            max_overflow=0,
            pool_timeout=60,
            connect_args=_SQLITE_CONNECT_ARGS,
        )
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_on_begin)
        return engine
    dsn = asyncpg_dsn(url)

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(dsn, server_settings=_server_settings(url))

    engine = create_async_engine(
        url.set(query={}),  # the options are in the DSN `connect` uses
        echo=echo,
        pool_size=pool_size,
        max_overflow=pool_size,
        # No pre-ping (it costs a round trip per transaction): a connection found dead fails its
        # transaction once (clients get UNAVAILABLE, which is retryable) and the pool replaces it.
        pool_recycle=1800,
        async_creator=connect,
    )
    event.listen(engine.sync_engine, "handle_error", _drop_connections_to_a_standby)
    return engine


def _drop_connections_to_a_standby(context: sa.engine.ExceptionContext) -> None:
    """A write refused as read-only means the pool's connections reach a standby (the old primary, after a
    failover): treated as a disconnect, they are replaced, and new ones may reach the new primary."""
    if read_only(context.original_exception) is not None:
        context.is_disconnect = True


# SQLAlchemy's asyncpg dialect documents `?ssl=...`; libpq and asyncpg's DSN parser read `sslmode`.
_SSL_VALUES = {"true": "require", "false": "disable"}


def _server_settings(url: sa.URL) -> dict[str, str]:
    """What each connection tells the server besides the DSN: the application name, "meshplane" unless the URL
    names one (asyncpg would let this argument override the URL's)."""
    named = url.query.get("application_name")
    return {"application_name": named if isinstance(named, str) and named else "meshplane"}


def asyncpg_dsn(url: sa.URL) -> str:
    """The URL as asyncpg (and libpq) read it: `postgresql://...`, with `ssl=` spelled `sslmode=`.

    Both of the plane's PostgreSQL pools (SQLAlchemy's and the hot path's bare asyncpg one) connect with
    this DSN through asyncpg itself, so every libpq option asyncpg understands (sslmode, sslrootcert,
    sslcert, sslkey, target_session_attrs, ...) means the same on both; other query options become
    server settings.
    """
    query = dict(url.query)
    ssl = query.pop("ssl", None)
    if isinstance(ssl, str) and "sslmode" not in query:
        query["sslmode"] = _SSL_VALUES.get(ssl.lower(), ssl)
    return url.set(drivername="postgresql", query=query).render_as_string(hide_password=False)


def _create_sqlite_reader(url: sa.URL, *, echo: bool) -> AsyncEngine:
    engine = create_async_engine(
        url, echo=echo, poolclass=AsyncAdaptedQueuePool, pool_size=4, max_overflow=4, connect_args=_SQLITE_CONNECT_ARGS
    )
    event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
    event.listen(engine.sync_engine, "begin", _sqlite_on_begin_read)
    return engine


class _RollingBackConnection(sqlite3.Connection):
    """A SQLite connection that rolls back its open transaction before closing.

    A connection closed while one of its statements is unfinished (a transaction cancelled mid-statement,
    whose cursor lives on in the cancellation's traceback) only becomes a "zombie": SQLite keeps it open,
    with its transaction and the database's write lock, until that statement is finalized, which may wait
    for the cyclic garbage collector. Every writer would meanwhile wait out its busy timeout. A rollback
    aborts unfinished statements and frees the lock at once.
    """

    def close(self) -> None:
        if self.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self.rollback()
        super().close()


_SQLITE_CONNECT_ARGS: dict[str, Any] = {"factory": _RollingBackConnection}


def _sqlite_on_begin_read(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN")  # deferred: a read snapshot, never the write lock


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # the driver's implicit transactions off; _sqlite_on_begin starts them
    cursor = dbapi_conn.cursor()
    # WAL survives a killed process (SIGKILL) without losing committed transactions.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _sqlite_on_begin(conn: Any) -> None:
    # Take the write lock up front, so a transaction never fails half-way upgrading a read lock.
    conn.exec_driver_sql("BEGIN IMMEDIATE")

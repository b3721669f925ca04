"""Errors that mean "not now" rather than "not this": the database (or another backing service) cannot serve
at the moment, and the same request may succeed when sent again."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator

from sqlalchemy.exc import DBAPIError

from controlplane.errors import Unavailable

# SQLSTATEs of a server that refuses or drops connections: class 08 (connection exceptions), too many
# connections, and a server shutting down, crashed or still starting up.
_TRANSIENT_CLASS = "08"
_TRANSIENT_STATES = frozenset({"53300", "57P01", "57P02", "57P03"})
# SQLSTATEs of a statement given up on, which the same call may get past when sent again: a statement or lock
# timeout an administrator set (query_canceled, lock_not_available), and PostgreSQL breaking a deadlock or a
# serialization conflict (class 40, transaction rollback).
_GAVE_UP_CLASS = "40"
_GAVE_UP_STATES = frozenset({"57014", "55P03"})
_DISK_FULL = "53100"
_READ_ONLY = "25006"  # read_only_sql_transaction: a standby (after a failover), or default_transaction_read_only
# SQLSTATEs of a login the server refused: class 28 (invalid authorization specification: a wrong password or
# user, a pg_hba.conf rule) and invalid_catalog_name (no database of that name).
_LOGIN_REFUSED_CLASS = "28"
_NO_SUCH_DATABASE = "3D000"
_INSUFFICIENT_PRIVILEGE = "42501"  # e.g. "permission denied for schema public" (a role without CREATE on it)
# SQLSTATEs of a server refusing a setting sent at connection: undefined_object ("unrecognized configuration
# parameter"), invalid_parameter_value ("invalid value for parameter"), cant_change_runtime_param.
_SETTING_REFUSED_STATES = frozenset({"42704", "22023", "55P02"})


class DatabaseUnreachable(ConnectionError):
    """The database did not answer, or refused the login, when first needed (the plane starting, `meshplane db
    upgrade`). Its message names the database (password hidden) and says why, in one line."""


def error_chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what it wraps: SQLAlchemy's wrapped driver error (`orig`) or else its cause, each once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) and id(orig) not in seen else current.__cause__


def _one_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _sqlstate(exc: BaseException, matches: Callable[[str], bool]) -> str | None:
    """ "SQLSTATE: first line" of the first error in `exc`'s chain whose SQLSTATE `matches`; else None.

    Reads the SQLSTATE that asyncpg's errors and SQLAlchemy's wrappers of them both carry.
    """
    for error in error_chain(exc):
        state = getattr(error, "sqlstate", None)
        if isinstance(state, str) and matches(state):
            return f"{state}: {_one_line(error)}"
    return None


def first_of_type(exc: BaseException, kind: type[BaseException]) -> str | None:
    """The first line of the first error of `kind` in `exc`'s chain, if any."""
    return next((_one_line(error) for error in error_chain(exc) if isinstance(error, kind)), None)


def refused_or_lost(exc: BaseException) -> str | None:
    """What went wrong, when `exc` (or what it wraps) is a database connection refused or lost; else None."""
    return _sqlstate(exc, lambda state: state.startswith(_TRANSIENT_CLASS) or state in _TRANSIENT_STATES)


def login_refused(exc: BaseException) -> str | None:
    """What went wrong, when `exc` (or what it wraps) is the database server refusing the login (a wrong password
    or user, a pg_hba.conf rule, a database that does not exist); else None.

    At start-up it is reported as such (`migrate.upgrade`: the plane cannot start); a running plane's later
    connections refused so (a password rotated, the role locked) are unavailable (see `unavailable_reason`).
    """
    return _sqlstate(exc, lambda state: state.startswith(_LOGIN_REFUSED_CLASS) or state == _NO_SUCH_DATABASE)


def insufficient_privilege(exc: BaseException) -> str | None:
    """What went wrong, when `exc` (or what it wraps) is the database refusing the role a privilege; else None."""
    return _sqlstate(exc, lambda state: state == _INSUFFICIENT_PRIVILEGE)


def setting_refused(exc: BaseException) -> str | None:
    """What went wrong, when `exc` (or what it wraps) is the database refusing a setting (an unknown parameter, or a
    value it does not take); else None."""
    return _sqlstate(exc, lambda state: state in _SETTING_REFUSED_STATES)


def server_error(exc: BaseException) -> str | None:
    """ "SQLSTATE: first line" of the first database server error in `exc`'s chain, if any."""
    return _sqlstate(exc, lambda _state: True)


def first_line(exc: BaseException) -> str:
    """`exc` in one line: "SQLSTATE: message" of the first database error in its chain, else its own first line
    (without SQLAlchemy's wrapping)."""
    stated = server_error(exc)
    if stated is not None:
        return stated
    shown = exc.orig if isinstance(exc, DBAPIError) and isinstance(exc.orig, BaseException) else exc
    lines = str(shown).splitlines()
    return lines[0] if lines else type(shown).__name__


def storage_full_reason(exc: BaseException) -> str | None:
    """Why nothing could be written, when `exc` says the database is out of space; else None.

    PostgreSQL's disk_full (53100); SQLite's SQLITE_FULL (the file system, or max_page_count, is full).
    Each failed transaction was rolled back: what was stored before stays, and reads still work.
    """
    disk_full = _sqlstate(exc, lambda state: state == _DISK_FULL)
    if disk_full is not None:
        return f"the database is out of disk space ({disk_full})"
    if _sqlite_says(exc, "database or disk is full"):
        return "the SQLite database is out of space (database or disk is full)"
    return None


def read_only(exc: BaseException) -> str | None:
    """What went wrong, when `exc` (or what it wraps) is a write refused by a read-only database; else None."""
    return _sqlstate(exc, lambda state: state == _READ_ONLY)


def unavailable_reason(exc: BaseException) -> str | None:
    """Why a backing service cannot serve now, when that is what `exc` says (no trailing "retry"); else None."""
    if isinstance(exc, Unavailable):
        return exc.message
    refused_write = read_only(exc)
    if refused_write is not None:
        return f"the database is read-only, a standby after a failover? ({refused_write})"
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return "the database connection was lost"
    refusal = refused_or_lost(exc)
    if refusal is not None:
        return f"the database connection was refused or lost ({refusal})"
    login = login_refused(exc)
    if login is not None:  # the plane logged in before: its credentials or role changed under it
        return f"the database refuses the plane's login, a password rotated or the role locked? ({login})"
    gave_up = _sqlstate(exc, lambda state: state.startswith(_GAVE_UP_CLASS) or state in _GAVE_UP_STATES)
    if gave_up is not None:
        return f"the database gave up on a statement: a timeout, lock wait or deadlock ({gave_up})"
    if _sqlite_says(exc, "database is locked"):  # SQLITE_BUSY: another process held the lock past the timeout
        return "the SQLite database is locked by another writer (its busy timeout passed)"
    for says in _SQLITE_CANNOT_WRITE:  # SQLITE_IOERR, SQLITE_READONLY: its files' permissions or the disk
        if _sqlite_says(exc, says):
            return f"the SQLite database's files cannot be read or written ({says}): their permissions, or the disk?"
    if isinstance(exc, OSError | ConnectionError):
        return f"a backing service is unreachable ({type(exc).__name__})"
    return None


def backing_service_reason(exc: BaseException) -> str | None:
    """Why a backing service failed the call when it is an outage (`unavailable_reason`) or the database out of
    space (`storage_full_reason`), not a bug; else None."""
    return unavailable_reason(exc) or storage_full_reason(exc)


# What SQLite says when the file system refuses its files (EPERM, EROFS, EIO): an outage of the storage under it,
# answered UNAVAILABLE and logged once a minute like any other, not a bug's INTERNAL and traceback per call.
_SQLITE_CANNOT_WRITE = ("disk I/O error", "attempt to write a readonly database")


def _sqlite_says(exc: BaseException, text: str) -> bool:
    """Whether `exc` is (or wraps) SQLite's OperationalError saying `text`."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    return isinstance(orig, sqlite3.OperationalError) and text in str(orig)

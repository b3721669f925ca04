"""Database errors that mean "not now" rather than "not this": the caller may send the same request again."""

from __future__ import annotations

# SQLSTATEs of a server that refuses or drops connections: class 08 (connection exceptions), too many
# connections, and a server shutting down, crashed or still starting up.
_TRANSIENT_CLASS = "08"
_TRANSIENT_STATES = frozenset({"53300", "57P01", "57P02", "57P03"})


def refused_or_lost(exc: BaseException) -> str | None:
    """What went wrong, when `exc` (or what it wraps) is a database connection refused or lost; else None.

    Reads the SQLSTATE that asyncpg's errors and SQLAlchemy's wrappers of them both carry, following the
    wrapped error (`orig`) and the chain of causes.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        state = getattr(current, "sqlstate", None)
        if isinstance(state, str) and (state.startswith(_TRANSIENT_CLASS) or state in _TRANSIENT_STATES):
            return f"{state}: {str(current).splitlines()[0] if str(current) else type(current).__name__}"
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) and id(orig) not in seen else current.__cause__
    return None

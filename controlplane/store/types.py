"""Column types that work the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine.interfaces import Dialect


class EpochTime(sa.types.TypeDecorator[float]):
    """Epoch seconds (float) in Python; timestamptz on PostgreSQL, integer microseconds on SQLite."""

    impl = sa.BigInteger
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.TIMESTAMP(timezone=True))
        return dialect.type_descriptor(sa.BigInteger())

    def process_bind_param(self, value: float | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if dialect.name == "postgresql":
            return datetime.fromtimestamp(value, UTC)
        return round(value * 1_000_000)

    def process_result_value(self, value: Any, dialect: Dialect) -> float | None:
        if value is None:
            return None
        if isinstance(value, datetime):
            return value.timestamp()
        return int(value) / 1_000_000


JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

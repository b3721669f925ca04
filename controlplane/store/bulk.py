"""Set-based writes and lean reads for the hot path.

On PostgreSQL a batch is ONE statement: `INSERT ... SELECT FROM unnest($1::text[], ...)` or
`UPDATE ... FROM unnest(...)`, so the server parses, plans and executes once per batch instead of once
per row. On SQLite (in-process, no round trips) a batch is one `executemany`. Both skip SQLAlchemy's
per-row bind processing: values are converted here, once, to what the driver takes.

Times are epoch seconds (float) in Python; PostgreSQL columns are timestamptz (`to_timestamp`,
`extract(epoch ...)`), SQLite columns integer microseconds — the same as store.types.EpochTime.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from controlplane.store.sql import Sql


@dataclass(frozen=True, slots=True)
class Col:
    name: str
    kind: str  # text | int | smallint | float | bool | bytes | json | time


_PG_ARRAY = {
    "text": "text[]",
    "int": "int4[]",
    "smallint": "int2[]",
    "bigint": "int8[]",
    "float": "float8[]",
    "bool": "bool[]",
    "bytes": "bytea[]",
    "json": "text[]",
    "time": "float8[]",
}


def _pg_value_expr(col: Col, source: str) -> str:
    """`source` is "v" (a column of the unnest) or a scalar parameter like "$7"."""
    scalar = source.startswith("$")
    ref = f"{source}::{_PG_ARRAY[col.kind].removesuffix('[]')}" if scalar else f"{source}.{col.name}"
    if col.kind == "json":
        return f"{ref}::jsonb"
    if col.kind == "time":
        return f"to_timestamp({ref})"
    return ref


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def _json_value(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def _micros_to_seconds(value: int) -> float:
    return value / 1_000_000


def _sqlite_value(col: Col, value: Any) -> Any:
    if value is None:
        return None
    if col.kind == "json":
        return json.dumps(value, separators=(",", ":"))
    if col.kind == "time":
        return round(value * 1_000_000)
    if col.kind == "bool":
        return 1 if value else 0
    return value


@dataclass(frozen=True, slots=True)
class _Statement:
    kind: str  # insert | update
    table: str
    cols: tuple[Col, ...]  # for updates: keys then sets
    keys: int  # number of key columns (updates)
    where: str
    upsert: str = ""  # inserts: "ON CONFLICT ..." clause


class WriteBatch:
    """Several set-based writes sent together: one statement (data-modifying CTEs) on PostgreSQL.

    Statements in one batch must not touch the same row twice (PostgreSQL runs the CTEs on one snapshot).
    """

    def __init__(self, sql: Sql, *, postgres: bool) -> None:
        self._sql = sql
        self._postgres = postgres
        self._statements: list[tuple[_Statement, Sequence[Sequence[Any]]]] = []

    def insert(self, table: str, cols: Sequence[Col], rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._statements.append((_Statement("insert", table, tuple(cols), 0, ""), rows))

    def upsert(
        self,
        table: str,
        cols: Sequence[Col],
        rows: Sequence[Sequence[Any]],
        *,
        conflict: Sequence[str],
        keep: Sequence[str] = (),
    ) -> None:
        """INSERT, or on a `conflict` (unique columns) UPDATE every other column except `keep`.

        No two rows may share their conflict columns (PostgreSQL updates a row at most once per statement).
        """
        if rows:
            updated = [c.name for c in cols if c.name not in conflict and c.name not in keep]
            assignments = ", ".join(f"{name} = excluded.{name}" for name in updated)
            clause = f" ON CONFLICT ({', '.join(conflict)}) DO UPDATE SET {assignments}"
            self._statements.append((_Statement("insert", table, tuple(cols), 0, "", clause), rows))

    def update(
        self,
        table: str,
        keys: Sequence[Col],
        sets: Sequence[Col],
        rows: Sequence[Sequence[Any]],
        *,
        where: str = "",
    ) -> None:
        """UPDATE each row matched by `keys` (row values: keys first, then sets). `where` adds a guard on `t`."""
        if rows:
            self._statements.append((_Statement("update", table, (*keys, *sets), len(keys), where), rows))

    async def execute(self) -> None:
        if not self._statements:
            return
        if self._postgres:
            shapes: list[tuple[_Statement, tuple[bool, ...]]] = []
            params: list[Any] = []
            for statement, rows in self._statements:
                columns = _pg_arrays(statement.cols, rows)
                # A column with one value for every row goes once, as a scalar: most columns of a batch
                # (capability, policy, times, state...) are like that, and each array element costs.
                constant = tuple(
                    index >= statement.keys and index > 0 and column.count(column[0]) == len(column)
                    for index, column in enumerate(columns)
                )
                shapes.append((statement, constant))
                params.extend(
                    column[0] if is_constant else column for column, is_constant in zip(columns, constant, strict=True)
                )
            await self._sql.run(_pg_script(tuple(shapes)), params)
        else:
            for statement, rows in self._statements:
                await self._sqlite(statement, rows)
        self._statements.clear()

    async def _sqlite(self, statement: _Statement, rows: Sequence[Sequence[Any]]) -> None:
        if statement.kind == "insert":
            sql = _sqlite_insert_sql(statement.table, statement.cols) + statement.upsert
            await self._sql.run_many(sql, [_sqlite_row(statement.cols, row) for row in rows])
            return
        keys, sets = statement.cols[: statement.keys], statement.cols[statement.keys :]
        sql = _sqlite_update_sql(statement.table, keys, sets, statement.where)
        params = []
        for row in rows:
            converted = _sqlite_row(statement.cols, row)
            params.append((*converted[statement.keys :], *converted[: statement.keys]))  # SET values, then keys
        await self._sql.run_many(sql, params)


class Bulk:
    """Dialect-specific batch statements, built once per (table, columns) shape."""

    def __init__(self, sql: Sql, *, postgres: bool) -> None:
        self._sql = sql
        self._postgres = postgres

    def batch(self) -> WriteBatch:
        return WriteBatch(self._sql, postgres=self._postgres)

    # ------------------------------------------------------------ writes

    async def insert(self, table: str, cols: Sequence[Col], rows: Sequence[Sequence[Any]]) -> None:
        batch = self.batch()
        batch.insert(table, cols, rows)
        await batch.execute()

    async def update(
        self,
        table: str,
        keys: Sequence[Col],
        sets: Sequence[Col],
        rows: Sequence[Sequence[Any]],
        *,
        where: str = "",
    ) -> None:
        batch = self.batch()
        batch.update(table, keys, sets, rows, where=where)
        await batch.execute()

    # ------------------------------------------------------------ reads

    def select_list(self, table_alias: str, cols: Sequence[Col]) -> str:
        """Column expressions that come back as plain Python values (times as epoch floats)."""
        parts = []
        for col in cols:
            ref = f"{table_alias}.{col.name}" if table_alias else col.name
            if col.kind == "time" and self._postgres:
                parts.append(f"extract(epoch from {ref})::float8 AS {col.name}")
            else:
                parts.append(ref)
        return ", ".join(parts)

    def placeholder(self, index: int) -> str:
        """The driver's placeholder for the index-th (1-based) parameter."""
        return f"${index}" if self._postgres else "?"

    def decode_all(self, cols: Sequence[Col], rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
        """Rows as dicts of plain Python values; only the columns whose driver value differs are converted."""
        names = [col.name for col in cols]
        converted = [
            (index, col.name, convert)
            for index, col in enumerate(cols)
            if (convert := self._converter(col.kind)) is not None
        ]
        out = []
        for row in rows:
            values = dict(zip(names, row, strict=True))
            for index, name, convert in converted:
                value = row[index]
                if value is not None:
                    values[name] = convert(value)
            out.append(values)
        return out

    def _converter(self, kind: str) -> Callable[[Any], Any] | None:
        if kind == "json":
            return _json_value
        if self._postgres:  # times come back as float8 (select_list), bytea as bytes
            return None
        if kind == "time":
            return _micros_to_seconds
        if kind == "bytes":
            return bytes
        return None

    async def fetch(self, sql: str, params: Sequence[Any], cols: Sequence[Col]) -> list[dict[str, Any]]:
        return self.decode_all(cols, await self._sql.fetch(sql, params))

    async def fetch_raw(self, sql: str, params: Sequence[Any]) -> Sequence[Sequence[Any]]:
        """Rows as the driver returns them (for plain text and number columns)."""
        return await self._sql.fetch(sql, params)


# ---------------------------------------------------------------- SQL text (cached per shape)

_SQL_CACHE: dict[tuple[Any, ...], str] = {}
# A shape is the statements of a batch and which of their columns hold one value in every row, so the shapes a
# plane meets keep growing slowly with its data (a soak saw 170 after 10 minutes); past this many, start over.
_SQL_CACHE_MAX = 4096


def _cached(key: tuple[Any, ...], build: Any) -> str:
    sql = _SQL_CACHE.get(key)
    if sql is None:
        if len(_SQL_CACHE) >= _SQL_CACHE_MAX:
            _SQL_CACHE.clear()
        sql = _SQL_CACHE[key] = build()
    return sql


def _pg_statement(statement: _Statement, constant: tuple[bool, ...], first: int) -> str:
    """One statement whose parameters start at $first: one per column, an array unless `constant`."""
    cols = statement.cols
    number = {col.name: first + index for index, col in enumerate(cols)}
    varying = [col for col, is_constant in zip(cols, constant, strict=True) if not is_constant]
    names = ", ".join(c.name for c in varying)
    params = ", ".join(f"${number[c.name]}::{_PG_ARRAY[c.kind]}" for c in varying)

    def value(col: Col, is_constant: bool) -> str:
        return _pg_value_expr(col, f"${number[col.name]}" if is_constant else "v")

    if statement.kind == "insert":
        values = ", ".join(value(c, k) for c, k in zip(cols, constant, strict=True))
        all_names = ", ".join(c.name for c in cols)
        return (
            f"INSERT INTO {statement.table} ({all_names}) SELECT {values} FROM unnest({params}) AS v({names})"
            + statement.upsert
        )
    keys = cols[: statement.keys]
    assignments = ", ".join(f"{c.name} = {value(c, k)}" for c, k in zip(cols, constant, strict=True) if c not in keys)
    match = " AND ".join(f"t.{k.name} = v.{k.name}" for k in keys)
    # Without this the planner hashes the whole table (a sequential scan per batch); with it, the batch's
    # rows are fetched through the primary key.
    lookup = f"t.{keys[0].name} = ANY(${first}::{_PG_ARRAY[keys[0].kind]})"
    guard = f" AND ({statement.where})" if statement.where else ""
    return (
        f"UPDATE {statement.table} AS t SET {assignments} FROM unnest({params}) AS v({names})"
        f" WHERE {match} AND {lookup}{guard}"
    )


def _pg_script(statements: tuple[tuple[_Statement, tuple[bool, ...]], ...]) -> str:
    """All statements as one: each becomes a data-modifying CTE (executed exactly once, to completion)."""

    def build() -> str:
        parts = []
        first = 1
        for statement, constant in statements:
            parts.append(_pg_statement(statement, constant, first))
            first += len(statement.cols)
        if len(parts) == 1:
            return parts[0]
        ctes = ", ".join(f"w{index} AS ({sql})" for index, sql in enumerate(parts))
        return f"WITH {ctes} SELECT 1"

    return _cached(("pg-script", statements), build)


def _sqlite_insert_sql(table: str, cols: tuple[Col, ...]) -> str:
    def build() -> str:
        names = ", ".join(c.name for c in cols)
        marks = ", ".join("?" for _ in cols)
        return f"INSERT INTO {table} ({names}) VALUES ({marks})"

    return _cached(("sqlite-insert", table, cols), build)


def _sqlite_update_sql(table: str, keys: tuple[Col, ...], sets: tuple[Col, ...], where: str) -> str:
    def build() -> str:
        assignments = ", ".join(f"{c.name} = ?" for c in sets)
        match = " AND ".join(f"{k.name} = ?" for k in keys)
        guard = f" AND ({where.replace('t.', '')})" if where else ""
        return f"UPDATE {table} SET {assignments} WHERE {match}{guard}"

    return _cached(("sqlite-update", table, keys, sets, where), build)


def _pg_arrays(cols: Sequence[Col], rows: Sequence[Sequence[Any]]) -> tuple[list[Any], ...]:
    """Rows as one list per column (JSON columns encoded)."""
    columns = [list(column) for column in zip(*rows, strict=True)]
    if len(columns) != len(cols):
        raise ValueError(f"rows have {len(columns)} values; {len(cols)} columns were named")
    for index, col in enumerate(cols):
        if col.kind == "json":
            columns[index] = [_json(v) for v in columns[index]]
    return tuple(columns)


def _sqlite_row(cols: Iterable[Col], row: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(_sqlite_value(col, value) for col, value in zip(cols, row, strict=True))

"""The hot path's plain-SQL column lists (store.tasks, store.agents) restate the schema (store.schema).
These checks keep the two from drifting apart: every listed column exists in its table with the kind the
list encodes it as, and the full-row lists name every column."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from controlplane.store import agents as agent_rows
from controlplane.store import schema
from controlplane.store import tasks as task_rows
from controlplane.store.bulk import Col
from controlplane.store.types import EpochTime

# Order matters: SmallInteger and BigInteger are Integers too. (JSONType is sa.JSON with a JSONB variant.)
_KINDS: list[tuple[type[Any], str]] = [
    (EpochTime, "time"),
    (sa.JSON, "json"),
    (sa.SmallInteger, "smallint"),
    (sa.BigInteger, "bigint"),
    (sa.Integer, "int"),
    (sa.Float, "float"),
    (sa.Boolean, "bool"),
    (sa.LargeBinary, "bytes"),
    (sa.String, "text"),
]


def _kind(column: sa.Column[Any]) -> str:
    for sa_type, kind in _KINDS:
        if isinstance(column.type, sa_type):
            return kind
    raise AssertionError(f"no hot-path kind for {column.table.name}.{column.name} ({column.type!r})")


LISTS: dict[str, tuple[sa.Table, tuple[Col, ...]]] = {
    "TASK_INSERT_COLS": (schema.tasks, task_rows.TASK_INSERT_COLS),
    "TASK_COLS": (schema.tasks, task_rows.TASK_COLS),
    "ASSIGN_SETS": (schema.tasks, task_rows.ASSIGN_SETS),
    "LIVE_SETS": (schema.tasks, task_rows.LIVE_SETS),
    "LIVE_WITH_OUTPUT_SETS": (schema.tasks, task_rows.LIVE_WITH_OUTPUT_SETS),
    "CLAIM_COLS": (schema.tasks, task_rows.CLAIM_COLS),
    "LIVE_COLS": (schema.tasks, task_rows.LIVE_COLS),
    "EVENT_COLS": (schema.task_events, task_rows.EVENT_COLS),
    "ATTEMPT_INSERT_COLS": (schema.task_attempts, task_rows.ATTEMPT_INSERT_COLS),
    "ATTEMPT_START_SETS": (schema.task_attempts, task_rows.ATTEMPT_START_SETS),
    "ATTEMPT_END_SETS": (schema.task_attempts, task_rows.ATTEMPT_END_SETS),
    "ATTEMPT_FULL_END_SETS": (schema.task_attempts, task_rows.ATTEMPT_FULL_END_SETS),
    "_AGENT_COLS": (schema.agents, agent_rows._AGENT_COLS),
    "_INSTANCE_COLS": (schema.agent_instances, agent_rows._INSTANCE_COLS),
}


@pytest.mark.parametrize("name", sorted(LISTS))
def test_every_listed_column_exists_with_the_kind_it_is_encoded_as(name: str) -> None:
    table, cols = LISTS[name]
    names = [col.name for col in cols]
    assert len(names) == len(set(names)), f"{name} lists a column twice"
    for col in cols:
        assert col.name in table.c, f"{name}: {table.name} has no column {col.name}"
        assert col.kind == _kind(table.c[col.name]), f"{name}: {table.name}.{col.name} is not {col.kind}"


@pytest.mark.parametrize("name", ["TASK_COLS", "_AGENT_COLS", "_INSTANCE_COLS"])
def test_full_row_lists_name_every_column_of_their_table(name: str) -> None:
    table, cols = LISTS[name]
    assert {col.name for col in cols} == set(table.c.keys())

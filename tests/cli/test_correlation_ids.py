"""Every call a CLI command makes carries a correlation id (`x-correlation-id`): one made for the invocation, or the
`--correlation-id` of `task submit`; the audit trail records it with what the command changed (and a task submitted
without its own takes it: see test_task_commands)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from controlplane.cli.common import CORRELATION_ID_KEY, client
from controlplane.cli.main import build_parser
from tests.cli.conftest import Mesh, lines
from tests.support.eventually import eventually

pytestmark = pytest.mark.timeout(120)

INVOCATION_ID = re.compile(r"cli-[0-9a-f]{32}")


def _audit_entries(mesh: Mesh, *filters: str) -> list[dict[str, Any]]:
    listed = mesh.cli("audit", "ls", *filters, "-o", "json")
    assert listed.returncode == 0, listed.stderr
    entries: list[dict[str, Any]] = json.loads(listed.stdout).get("entries", [])
    return entries


def test_each_command_s_changes_are_audited_with_its_own_correlation_id(mesh: Mesh) -> None:
    for value in ("1", "2"):
        put = mesh.cli("state", "put", "correlated", "k", "--value", value)
        assert put.returncode == 0, put.stderr
    assert mesh.cli("state", "rm", "correlated", "k").returncode == 0
    entries = _audit_entries(mesh, "--resource", "namespaces/correlated/states/k")
    assert [e["action"] for e in entries] == ["state.delete", "state.put", "state.put"]
    ids = [e.get("correlationId", "") for e in entries]
    assert all(INVOCATION_ID.fullmatch(i) for i in ids), ids
    assert len(set(ids)) == 3  # one per invocation

    by_id = mesh.cli("audit", "ls", "--correlation-id", ids[0])
    [_header, row] = lines(by_id.stdout)
    assert row.split()[2:5] == ["state.delete", "namespaces/correlated/states/k", ids[0]]


async def test_a_publish_is_audited_with_the_command_s_correlation_id(mesh: Mesh) -> None:
    published = mesh.cli("channel", "publish", "correlated-news", "--data", "1")
    assert published.returncode == 0, published.stderr
    [entry] = await eventually(
        lambda: _audit_entries(mesh, "--resource", "channels/correlated-news"), message="the publish's audit entry"
    )
    assert INVOCATION_ID.fullmatch(entry.get("correlationId", "")), entry


async def test_task_submit_sends_its_correlation_id_and_one_a_header_can_carry() -> None:
    """`task submit --correlation-id` is the task's and its call's; one no header can carry (not printable ASCII)
    stays the task's, and the call carries the invocation's."""
    parser = build_parser()
    for given, sent in (("order-7", re.compile("order-7")), ("commande-é", INVOCATION_ID)):
        args = parser.parse_args(["task", "submit", "x", "--correlation-id", given])
        async with client(args, correlation_id=args.correlation_id) as mesh:
            [value] = [v for k, v in mesh._connection.metadata if k == CORRELATION_ID_KEY]
        assert sent.fullmatch(value), value

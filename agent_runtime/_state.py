"""Key/value state in one namespace, with versions (compare-and-set) and TTLs, via StateService."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from google.protobuf import duration_pb2

from agent_runtime import _payload
from agent_runtime._errors import NotFound
from agent_runtime._rpc import Connection
from agent_runtime._types import Page, StateEntry
from meshplane.v1 import state_pb2, state_pb2_grpc

Seconds = float | timedelta

MAX_DURATION_SECONDS = 315_576_000_000  # what a protobuf Duration holds (10,000 years)


def duration(value: Seconds, name: str) -> duration_pb2.Duration:
    """``value`` (seconds, or a timedelta) as a Duration; a ValueError naming ``name`` if it is NaN, infinite,
    negative or longer than a Duration holds."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if not 0 <= seconds <= MAX_DURATION_SECONDS:  # NaN fails this too
        raise ValueError(f"{name} must be a number of seconds within 0..{MAX_DURATION_SECONDS}, got {value!r}")
    proto = duration_pb2.Duration()
    proto.FromNanoseconds(round(seconds * 1e9))
    return proto


def integer(value: int, name: str, bits: int) -> int:
    """``value`` if it fits in a signed integer of ``bits`` bits; otherwise a ValueError naming ``name``."""
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    if not low <= value <= high:
        raise ValueError(f"{name} must be within {low}..{high}, got {value}")
    return value


class StateStore:
    """State entries of one namespace (for an agent's tasks: the namespace named after the agent).

    ``put(..., expected_version=v)`` is compare-and-set: it raises :class:`VersionConflict` (and changes
    nothing) unless the stored version is ``v``; ``expected_version=0`` means "must not exist yet".
    """

    def __init__(self, connection: Connection, namespace: str) -> None:
        self._connection = connection
        self.namespace = namespace

    @property
    def _stub(self) -> Any:
        return self._connection.stub(state_pb2_grpc.StateServiceStub)

    async def get(self, key: str) -> StateEntry | None:
        """The entry, or None when it is absent (or expired)."""
        request = state_pb2.GetStateRequest(namespace=self.namespace, key=key)
        try:
            response = await self._connection.unary(self._stub.GetState, request)
        except NotFound:
            return None
        return StateEntry.from_proto(response.entry)

    async def get_value(self, key: str, default: Any = None) -> Any:
        """Just the value (``default`` when absent)."""
        entry = await self.get(key)
        return default if entry is None else entry.value

    async def put(
        self,
        key: str,
        value: Any,
        *,
        ttl: Seconds | None = None,
        expected_version: int | None = None,
    ) -> StateEntry:
        """Create or replace the entry; returns it as stored (with its new version)."""
        request = state_pb2.PutStateRequest(namespace=self.namespace, key=key, value=_payload.encode(value))
        if ttl is not None:
            request.ttl.CopyFrom(duration(ttl, "ttl"))
        if expected_version is not None:
            request.expected_version = integer(expected_version, "expected_version", 64)
        response = await self._connection.unary(self._stub.PutState, request)
        return StateEntry.from_proto(response.entry)

    async def delete(self, key: str, *, expected_version: int | None = None) -> bool:
        """Delete the entry; False if there was none. A version mismatch raises :class:`VersionConflict`."""
        request = state_pb2.DeleteStateRequest(namespace=self.namespace, key=key)
        if expected_version is not None:
            request.expected_version = integer(expected_version, "expected_version", 64)
        try:
            await self._connection.unary(self._stub.DeleteState, request)
        except NotFound:
            return False
        return True

    async def list(self, *, prefix: str = "", page_size: int = 0, page_token: str = "") -> Page[StateEntry]:
        """One page of the namespace's live entries, by key."""
        request = state_pb2.ListStatesRequest(
            namespace=self.namespace, key_prefix=prefix, page_size=page_size, page_token=page_token
        )
        response = await self._connection.unary(self._stub.ListStates, request)
        return Page([StateEntry.from_proto(e) for e in response.entries], response.next_page_token, response)

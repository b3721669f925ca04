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


def _duration(value: Seconds) -> duration_pb2.Duration:
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    proto = duration_pb2.Duration()
    proto.FromNanoseconds(round(seconds * 1e9))
    return proto


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
            request.ttl.CopyFrom(_duration(ttl))
        if expected_version is not None:
            request.expected_version = expected_version
        response = await self._connection.unary(self._stub.PutState, request)
        return StateEntry.from_proto(response.entry)

    async def delete(self, key: str, *, expected_version: int | None = None) -> bool:
        """Delete the entry; False if there was none. A version mismatch raises :class:`VersionConflict`."""
        request = state_pb2.DeleteStateRequest(namespace=self.namespace, key=key)
        if expected_version is not None:
            request.expected_version = expected_version
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

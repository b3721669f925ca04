"""Broadcast channel messages."""

from __future__ import annotations

from dataclasses import dataclass, field

from controlplane.domain.payload import Payload

# How much may wait for a subscriber that reads slower than its messages come (an agent's stream, a Subscribe
# stream): past either bound the oldest waiting message is dropped to make room (the newest always stays).
# Messages are at most once anyway; the plane must not grow without end for one slow reader.
MAX_WAITING_MESSAGES = 1000
MAX_WAITING_BYTES = 32 * 1024 * 1024


def must_make_room(waiting: int, waiting_bytes: int, incoming_bytes: int) -> bool:
    """Whether the oldest of `waiting` messages must go before one of `incoming_bytes` joins them."""
    return waiting > 0 and (waiting >= MAX_WAITING_MESSAGES or waiting_bytes + incoming_bytes > MAX_WAITING_BYTES)


@dataclass(frozen=True, slots=True)
class ChannelMessage:
    channel: str
    message_id: str
    payload: Payload
    publisher: str
    publish_time: float
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Channel:
    name: str
    create_time: float
    last_use_time: float

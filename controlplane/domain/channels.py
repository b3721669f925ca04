"""Broadcast channel messages."""

from __future__ import annotations

from dataclasses import dataclass, field

from controlplane.domain.payload import Payload


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

"""A channel message as it travels between replicas on NATS.

One version byte, the length of a JSON head (4 bytes, big-endian), the head (id, channel, content type,
headers, publisher, time), then the payload's bytes as they are. The payload is not base64'd into the JSON as
it once was: that made a message a third bigger than its payload, and a payload at the plane's limit (1 MiB)
over NATS's default `max_payload` (1 MB).

Messages in the earlier all-JSON form (from a replica not yet upgraded) are still read.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from controlplane.domain.channels import ChannelMessage
from controlplane.domain.payload import Payload

VERSION = b"\x01"
_HEAD_LENGTH = 4
_LEGACY_JSON = b"{"

# What the head can add to a payload: ids, a channel name, a content type, a publisher and headers. Headers
# are not bounded in number by the API, so this is a margin for NATS's `max_payload`, not a limit.
HEAD_ALLOWANCE = 256 * 1024
_NATS_LARGEST_MAX_PAYLOAD = 64 * 1024 * 1024  # nats-server refuses a max_payload above its max_pending (64 MB)


def nats_max_payload(max_payload_bytes: int) -> int:
    """The `max_payload` NATS needs for channel messages with payloads of up to `max_payload_bytes`."""
    return min(max_payload_bytes + HEAD_ALLOWANCE, _NATS_LARGEST_MAX_PAYLOAD)


def encode(message: ChannelMessage) -> bytes:
    head = json.dumps(
        {
            "id": message.message_id,
            "c": message.channel,
            "ct": message.payload.content_type,
            "h": message.headers,
            "p": message.publisher,
            "t": message.publish_time,
        },
        separators=(",", ":"),
    ).encode()
    return b"".join((VERSION, len(head).to_bytes(_HEAD_LENGTH, "big"), head, message.payload.data))


def decode(data: bytes) -> ChannelMessage:
    """Raises ValueError (or KeyError) for bytes that are not a channel message."""
    if data[:1] == _LEGACY_JSON:
        raw = json.loads(data)
        return _message(raw, base64.b64decode(raw["d"]))
    if data[:1] != VERSION or len(data) < 1 + _HEAD_LENGTH:
        raise ValueError("not a channel message")
    end = 1 + _HEAD_LENGTH + int.from_bytes(data[1 : 1 + _HEAD_LENGTH], "big")
    if end > len(data):
        raise ValueError("truncated channel message")
    return _message(json.loads(data[1 + _HEAD_LENGTH : end]), data[end:])


def _message(head: dict[str, Any], payload: bytes) -> ChannelMessage:
    return ChannelMessage(
        channel=head["c"],
        message_id=head["id"],
        payload=Payload(payload, head["ct"]),
        publisher=head["p"],
        publish_time=head["t"],
        headers=dict(head.get("h") or {}),
    )

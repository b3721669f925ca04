"""A channel's messages on their way to its handler: a bounded number run at once, a bounded number wait.

The control plane keeps at most 1,000 messages (32 MiB) waiting for an agent that reads slowly; an agent
reads its stream eagerly, so without a bound of its own a slow handler under a busy channel would grow it
instead. Past the bound the oldest waiting message is dropped (channel messages are at most once); the
newest always waits.
"""

from __future__ import annotations

from collections import deque
from typing import Any

HANDLERS_PER_CHANNEL = 64  # handler calls running at once for one channel
MAX_WAITING_MESSAGES = 1000
MAX_WAITING_BYTES = 32 * 1024 * 1024


class ChannelInbox:
    def __init__(self) -> None:
        self.running = 0
        self.dropped = 0
        self._waiting: deque[Any] = deque()  # agent_link ChannelMessage protos
        self._bytes = 0

    def has_room_to_run(self) -> bool:
        return self.running < HANDLERS_PER_CHANNEL

    def wait(self, message: Any) -> int:
        """Queue `message` for the next free handler; returns how many older ones it pushed out."""
        size = len(message.payload.data)
        before = self.dropped
        while self._waiting and (len(self._waiting) >= MAX_WAITING_MESSAGES or self._bytes + size > MAX_WAITING_BYTES):
            oldest = self._waiting.popleft()
            self._bytes -= len(oldest.payload.data)
            self.dropped += 1
        self._waiting.append(message)
        self._bytes += size
        return self.dropped - before

    def next(self) -> Any | None:
        if not self._waiting:
            return None
        message = self._waiting.popleft()
        self._bytes -= len(message.payload.data)
        return message

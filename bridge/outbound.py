"""The bounded outbound queue between event producers and the (possibly slow) transport.

Producers never wait: `put` and `put_text` return at once. Reply text deltas of one turn that
are queued back to back merge into one item (text is appended, never dropped), so a slow
transport sees fewer, larger `agent.text` envelopes instead of a growing backlog. Sequence
numbers are assigned when an item leaves the queue, so merging leaves no gaps.

Other events are kept in order. Only if the queue is past its hard limits (the transport is
effectively dead) is a non-text event refused; the caller reports that as an error envelope.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

_ITEM_OVERHEAD = 160  # rough bytes per queued item (object, slots, strings' headers)


class Outgoing:
    """One future envelope without its `seq` (assigned at send time)."""

    __slots__ = ("type", "turn", "ts", "data_json", "text")

    def __init__(self, type: str, turn: str | None, ts: int, data_json: str | None = None) -> None:
        self.type = type
        self.turn = turn
        self.ts = ts
        self.data_json = data_json
        self.text: bytearray | None = None
        """UTF-8 reply text for merged `agent.text` items (compact, O(1) append)."""

    @property
    def size(self) -> int:
        body = len(self.text) if self.text is not None else len(self.data_json or "")
        return body + _ITEM_OVERHEAD


@dataclass
class QueueStats:
    items: int = 0
    bytes: int = 0
    peak_items: int = 0
    peak_bytes: int = 0
    merged: int = 0
    refused: int = 0


class OutboundQueue:
    def __init__(self, max_items: int = 4096, max_bytes: int = 1 << 20) -> None:
        if max_items < 1 or max_bytes < 1:
            raise ValueError("queue limits must be positive")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._items: deque[Outgoing] = deque()
        self.stats = QueueStats()

    def __len__(self) -> int:
        return len(self._items)

    def _grew(self, nbytes: int, nitems: int) -> None:
        s = self.stats
        s.bytes += nbytes
        s.items += nitems
        if s.bytes > s.peak_bytes:
            s.peak_bytes = s.bytes
        if s.items > s.peak_items:
            s.peak_items = s.items

    def full(self) -> bool:
        return self.stats.items >= self.max_items or self.stats.bytes >= self.max_bytes

    def put(self, item: Outgoing, *, force: bool = False) -> bool:
        """Append a non-text item. False (refused) only when past the limits and not `force`d."""
        if not force and self.full():
            self.stats.refused += 1
            return False
        self._items.append(item)
        self._grew(item.size, 1)
        return True

    def put_text(self, turn: str | None, ts: int, delta: str) -> None:
        """Append reply text; merges into the last item when it is text of the same turn."""
        raw = delta.encode("utf-8", "replace")
        tail = self._items[-1] if self._items else None
        if tail is not None and tail.text is not None and tail.turn == turn:
            tail.text += raw
            self.stats.merged += 1
            self._grew(len(raw), 0)
            return
        item = Outgoing("agent.text", turn, ts)
        item.text = bytearray(raw)
        self._items.append(item)
        self._grew(item.size, 1)

    def pop(self) -> Outgoing | None:
        if not self._items:
            return None
        item = self._items.popleft()
        self.stats.items -= 1
        self.stats.bytes -= item.size
        return item

"""Bounded per-conversation memory, aware of replies cut off by the user."""

from __future__ import annotations

import json
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["user", "assistant", "tool"]


def well_formed(text: str) -> str:
    """`text` as valid Unicode for a request body: surrogate pairs that arrived in separate
    deltas become their character, lone surrogates (a tool's `surrogateescape`d bytes, a
    server's broken escape) become U+FFFD. The `openai` SDK cannot encode a lone surrogate,
    so one in memory would fail every later request of the conversation."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


INVALID_JSON = "__invalid_json__"
"""The key a call's arguments are put under when the model's text is not a JSON object (the tool
loop tells the model so instead of running the tool)."""


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]
    raw_arguments: str = ""
    """The model's argument text as received (kept so invalid JSON can be fed back)."""
    thought_signature: bytes | None = None
    """Gemini's opaque signature on a function call; it must be sent back with the call in history."""
    extra_content: dict[str, Any] | None = None
    """An OpenAI-compatible server's `extra_content` on the call, sent back with it in history
    (Gemini's endpoint signs calls there; Gemini 3 rejects a history without the signature)."""


@dataclass
class Message:
    role: Role
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None


@dataclass
class TurnRecord:
    turn_id: str
    messages: list[Message] = field(default_factory=list)
    spoken: str | None = None
    """Set when the reply was cut off: the only assistant text the user actually heard."""

    def add_text(self, text: str) -> None:
        last = self.messages[-1] if self.messages else None
        if last is not None and last.role == "assistant" and not last.tool_calls:
            last.content += text
        else:
            self.messages.append(Message("assistant", text))

    def render(self) -> list[Message]:
        if self.spoken is None:
            return list(self.messages)
        return _apply_spoken(self.messages, self.spoken)


def _apply_spoken(messages: list[Message], spoken: str) -> list[Message]:
    """Replace assistant text with what was heard, keeping tool calls and results."""
    texts = [m for m in messages if m.role == "assistant" and m.content]
    full = "".join(m.content for m in texts)
    out: list[Message] = []
    remaining = spoken if full.startswith(spoken) else None
    last_text = texts[-1] if texts else None
    for m in messages:
        if m.role != "assistant" or not m.content:
            out.append(m)
            continue
        if remaining is not None:
            kept, remaining = remaining[: len(m.content)], remaining[len(m.content) :]
        else:
            # not a clean prefix (TTS normalisation): all heard text goes on the last text message
            kept = spoken if m is last_text else ""
        if kept or m.tool_calls:
            out.append(Message("assistant", kept, list(m.tool_calls)))
    if last_text is None and spoken:
        out.append(Message("assistant", spoken))
    return out


def size_in_chars(messages: list[Message]) -> int:
    """What messages weigh against `ConversationMemory.max_chars`: their text, and each tool
    call's name and arguments as sent."""
    total = 0
    for m in messages:
        total += len(m.content)
        for c in m.tool_calls:
            total += len(c.name) + len(c.raw_arguments or json.dumps(c.arguments, ensure_ascii=False, default=str))
    return total


class ConversationMemory:
    """History per conversation id, bounded to the last `max_turns` turns and `max_conversations`.

    `max_chars` bounds a conversation's history by size as well (tool results can be thousands of
    characters each): the oldest whole turns are dropped until it fits, so a tool call never loses
    its result and the history still starts with a user message. The current turn (the last) is
    always kept, however large. The system prompt is not part of memory nor of this budget."""

    def __init__(self, max_turns: int = 20, max_conversations: int = 1000, max_chars: int = 48_000) -> None:
        if max_turns < 1:
            raise ValueError("max_turns must be >= 1")
        if max_chars < 1:
            raise ValueError("max_chars must be >= 1")
        self.max_turns = max_turns
        self.max_chars = max_chars
        self.max_conversations = max_conversations
        self._convs: OrderedDict[str, deque[TurnRecord]] = OrderedDict()

    def _conv(self, conversation_id: str) -> deque[TurnRecord]:
        conv = self._convs.get(conversation_id)
        if conv is None:
            conv = deque(maxlen=self.max_turns)
            self._convs[conversation_id] = conv
            while len(self._convs) > self.max_conversations:
                self._convs.popitem(last=False)
        else:
            self._convs.move_to_end(conversation_id)
        return conv

    def begin_turn(self, conversation_id: str, turn_id: str, transcript: str) -> TurnRecord:
        record = TurnRecord(turn_id, [Message("user", transcript)])
        self._conv(conversation_id).append(record)
        return record

    def find(self, conversation_id: str, turn_id: str) -> TurnRecord | None:
        for rec in self._convs.get(conversation_id, ()):
            if rec.turn_id == turn_id:
                return rec
        return None

    def set_spoken(self, conversation_id: str, turn_id: str, spoken: str) -> bool:
        rec = self.find(conversation_id, turn_id)
        if rec is None:
            return False
        rec.spoken = spoken
        return True

    def forget(self, conversation_id: str, turn_id: str) -> bool:
        """Remove a turn entirely (its user message is carried into the next turn instead)."""
        conv = self._convs.get(conversation_id)
        if conv is None:
            return False
        for rec in list(conv):
            if rec.turn_id == turn_id:
                conv.remove(rec)
                return True
        return False

    def shed(self, conversation_id: str, *, everything: bool = False) -> int:
        """The model refused the history as longer than its context: drop the oldest half (rounded
        up) of the turns before the current (last) one, or all of them with `everything`, for
        good, as whole turns. Returns how many went (0: only the current turn is left)."""
        conv = self._convs.get(conversation_id)
        if not conv:
            return 0
        past = len(conv) - 1
        count = past if everything else (past + 1) // 2
        for _ in range(count):
            conv.popleft()
        return count

    def history(self, conversation_id: str) -> list[Message]:
        """The conversation as the model is to see it. Turns that no longer fit `max_chars` (a
        turn grows with its tool results) are dropped here, oldest first, for good."""
        conv = self._convs.get(conversation_id)
        if not conv:
            return []
        turns = [rec.render() for rec in conv]
        sizes = [size_in_chars(t) for t in turns]
        total, dropped = sum(sizes), 0
        while total > self.max_chars and dropped < len(turns) - 1:  # never the current turn
            total -= sizes[dropped]
            dropped += 1
        for _ in range(dropped):
            conv.popleft()
        return [m for t in turns[dropped:] for m in t]

    def clear(self, conversation_id: str) -> None:
        self._convs.pop(conversation_id, None)

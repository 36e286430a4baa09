"""A deterministic, network-free model that still exercises tools and approvals.

Rules (on the latest user message): "weather" calls `get_weather`, "book"/"reserve"/"table"
calls `book_table` (which needs approval); both in one sentence call them in parallel.
Anything else gets a short spoken echo. After tool results it summarises them.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

from ..memory import Message, ToolCall
from ..tools import without_changed_arguments
from .base import ModelOutput, ModelRequest, TextChunk

_NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8}
_STOP = {"the", "a", "an", "please", "and", "today", "now", "tomorrow", "me", "us", "for"}


def _city(text: str) -> str:
    m = re.search(r"\b(?:in|at|for)\s+([A-Za-z][A-Za-z\-]+(?:\s+[A-Z][a-z]+)?)", text)
    if m and m.group(1).lower() not in _STOP:
        return m.group(1).strip().title()
    return "London"


def _party_size(text: str) -> int:
    m = re.search(r"\b(\d{1,2})\b", text)
    if m:
        return max(1, min(20, int(m.group(1))))
    for word, n in _NUMBERS.items():
        if re.search(rf"\b{word}\b", text, re.I):
            return n
    return 2


def _offer(tools: set[str]) -> str:
    """What the user may ask for: only what the configured tools can do."""
    offers = [offer for name, offer in (("get_weather", "about the weather"), ("book_table", "to book a table"))
              if name in tools]
    return "; ask me " + ", or ask me ".join(offers) + "." if offers else "."


class OfflineBackend:
    name = "offline"
    bounds_silence = True  # no network to wait for: its only pause is BRAIN_OFFLINE_TOKEN_DELAY

    def __init__(self, token_delay: float = 0.0) -> None:
        self.token_delay = token_delay
        self._calls = 0

    async def _words(self, text: str) -> AsyncIterator[ModelOutput]:
        words = text.split(" ")
        for i, w in enumerate(words):
            yield TextChunk(w if i == len(words) - 1 else w + " ")
            # yield control so consumers see real streaming, even with no delay
            await asyncio.sleep(self.token_delay)

    def _next_id(self) -> str:
        self._calls += 1
        return f"call_offline_{self._calls}"

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelOutput]:
        tool_names = {t.name for t in request.tools} if request.tool_choice == "auto" else set()
        last = request.messages[-1] if request.messages else Message("user", "")
        if last.role == "tool":
            async for out in self._words(self._summarise(request.messages)):
                yield out
            return
        text = last.content.strip()
        lower = text.lower()
        calls: list[ToolCall] = []
        if "weather" in lower and "get_weather" in tool_names:
            args: dict[str, Any] = {"city": _city(text)}
            calls.append(ToolCall(self._next_id(), "get_weather", args, json.dumps(args)))
        if re.search(r"\b(book|reserve|table)\b", lower) and "book_table" in tool_names:
            args = {"restaurant": "Luigi's", "party_size": _party_size(text), "time": "19:00"}
            calls.append(ToolCall(self._next_id(), "book_table", args, json.dumps(args)))
        if calls:
            async for out in self._words("One moment."):
                yield out
            for c in calls:
                yield c
            return
        if not text:
            reply = "Sorry, I didn't catch that."
        else:
            reply = f"You said: {text.rstrip('.!?')}. I'm the offline assistant" + _offer({t.name for t in request.tools})
        async for out in self._words(reply):
            yield out

    def _summarise(self, messages: list[Message]) -> str:
        results: list[str] = []
        for m in reversed(messages):
            if m.role != "tool":
                break
            results.append(self._sentence(m.name or "", m.content))
        return " ".join(reversed(results))

    @staticmethod
    def _sentence(name: str, content: str) -> str:
        content = without_changed_arguments(content)
        if content.startswith("REJECTED") or content.startswith("NOT APPROVED"):
            return "Okay, I won't do that."
        if content.startswith("ERROR"):
            return f"Sorry, {name.replace('_', ' ')} failed."
        try:
            data = json.loads(content)
        except json.JSONDecodeError:
            return f"Done: {content}."
        if name == "get_weather" and isinstance(data, dict):
            return f"It is {data.get('condition')} in {data.get('city')}, {data.get('temperature_c')} degrees."
        if name == "book_table" and isinstance(data, dict):
            return (
                f"Your table for {data.get('party_size')} at {data.get('restaurant')} is booked "
                f"for {data.get('time')}."
            )
        return f"Done: {content}."

    async def aclose(self) -> None:
        return None

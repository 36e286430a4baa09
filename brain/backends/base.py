"""What a model backend is: one streamed model call per tool-loop step."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from ..errors import ProtocolError
from ..memory import Message, ToolCall
from ..tools import Tool


@dataclass(frozen=True)
class ModelRequest:
    messages: list[Message]
    system_prompt: str
    model: str
    tools: list[Tool] = field(default_factory=list)
    temperature: float | None = None
    max_tokens: int | None = None
    tool_choice: Literal["auto", "none"] = "auto"
    """"none": the tools are declared (the history may call them) but the model must answer in words."""


@dataclass(frozen=True)
class TextChunk:
    text: str


ModelOutput = TextChunk | ToolCall


@runtime_checkable
class ModelBackend(Protocol):
    """Streams one model call: text chunks as they arrive, then complete tool calls.

    Implementations raise `brain.errors.BrainError` subclasses for provider failures, and must
    release the network stream when the iterator is closed early (that is how barge-in stops it).
    """

    name: str

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelOutput]: ...

    async def aclose(self) -> None: ...


log = logging.getLogger("brain")


def check_finish(
    reason: str,
    *,
    answered: bool,
    normal: Collection[str],
    provider: str,
    failed_call: Collection[str] = (),
    called: bool = False,
) -> None:
    """What a model call's finish reason means. A content filter, a safety block or a token
    limit that hit before any word or tool call leaves the user with silence: a
    `ProtocolError`, so the turn ends with the apology. After some words, the cut-short answer
    stands and is logged. A reason in `failed_call` (the model's tool call failed) with no call
    to run is a `ProtocolError` even after words: they were a preamble ("Let me check.") to an
    answer that is not coming."""
    if reason in normal:
        return
    if reason in failed_call and not called:
        raise ProtocolError(f"the model's tool call failed (finish reason {reason})", provider=provider)
    if not answered:
        raise ProtocolError(f"the model gave no answer (finish reason {reason})", provider=provider)
    log.warning("[%s] the model's answer was cut short (finish reason %s)", provider, reason)

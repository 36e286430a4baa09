"""What a model backend is: one streamed model call per tool-loop step."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

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

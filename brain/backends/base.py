"""What a model backend is: one streamed model call per tool-loop step."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar, runtime_checkable

from ..errors import BrainError, ProtocolError, ProviderTimeoutError
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


T = TypeVar("T")
_END = object()


class _Silence(Exception):
    """The model stayed silent past its deadline (our deadline, not the SDK's own timeout)."""


async def _within(deadline: float, step: Awaitable[T]) -> T:
    """`step` awaited until `deadline` (loop time): past it, the step is cancelled (which unwinds
    the SDK at its network read and closes the connection) and `_Silence` is raised."""
    timer = asyncio.timeout_at(deadline)
    try:
        async with timer:
            return await step
    except TimeoutError:
        if timer.expired():
            raise _Silence from None
        raise


async def bounded_stream(
    attempt: Callable[[], AsyncGenerator[T, None]],
    *,
    silence: float,
    first_silence: float,
    progress: Callable[[T], bool],
    map_error: Callable[[BaseException], BrainError],
    provider: str,
) -> AsyncGenerator[T, None]:
    """The chunks of one model call, with BRAIN_REQUEST_TIMEOUT enforced here rather than by
    the SDK: each chunk that carries the model's output (`progress`) must come within `silence`
    of the previous one (the first within `first_silence` of the request: the SDK's retries
    happen before it). Chunks that carry nothing
    (an OpenAI-compatible server's empty-choices chunks; its SSE keep-alive comments never reach
    us) do not count as output: a server that keeps the connection busy while its model says
    nothing would otherwise be waited for without end (httpx's read timeout sees bytes).
    The time the consumer spends on a chunk is not counted. Failures are mapped with `map_error`."""
    loop = asyncio.get_running_loop()
    progressed = False
    deadline = loop.time() + first_silence
    async with contextlib.aclosing(attempt()) as chunks:
        while True:
            try:
                chunk = await _within(deadline, anext(chunks, _END))
            except _Silence:
                waited = silence if progressed else first_silence
                raise ProviderTimeoutError(f"the model sent nothing for {waited:g} s", provider=provider) from None
            except BrainError:
                raise
            except Exception as exc:
                raise map_error(exc) from exc
            if chunk is _END:
                return
            yield chunk  # type: ignore[misc]
            if progress(chunk):  # type: ignore[arg-type]
                progressed = True
                deadline = loop.time() + silence

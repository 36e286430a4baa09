"""What a model backend is: one streamed model call per tool-loop step."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import math
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

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

    The brain bounds the silence of a backend's stream with BRAIN_REQUEST_TIMEOUT (before its
    first output and between two; `VoiceBrain`), unless the backend has a true `bounds_silence`
    attribute: it enforces that deadline itself, as the built-in ones do (`bounded_stream`).
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


def retry_after_header(headers: Any) -> float | None:
    """Seconds a response's `Retry-After` (or `retry-after-ms`) asks the client to wait, if any:
    a number of seconds or an HTTP date."""
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            try:
                seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError, IndexError, OverflowError):
                continue
        if math.isfinite(seconds):
            return max(seconds, 0.0)
    return None


def backoff(retry: int) -> float:
    """The wait before retry number `retry` (1, 2, ...) when the server gives no hint."""
    return min(0.5 * 2 ** (retry - 1), 8.0) * random.uniform(0.75, 1.0)


async def bounded_stream(
    attempt: Callable[[], AsyncGenerator[T, None]],
    *,
    silence: float,
    retries: int,
    progress: Callable[[T], bool],
    map_error: Callable[[BaseException], BrainError],
    retry_hint: Callable[[BaseException], float | None],
    provider: str,
) -> AsyncGenerator[T, None]:
    """The chunks of one model call, with BRAIN_REQUEST_TIMEOUT and BRAIN_MAX_RETRIES enforced
    here rather than by the SDK (its own retries are off), the same for every backend:

    - each chunk that carries the model's output (`progress`) must come within `silence` of the
      previous one. Chunks that carry nothing (an OpenAI-compatible server's empty-choices
      chunks; its SSE keep-alive comments never reach us) do not count: a server that keeps the
      connection busy while its model says nothing would otherwise be waited for without end
      (httpx's read timeout sees bytes). The time the consumer spends on a chunk is not counted;
    - an attempt that fails or stays silent before its first output is retried, up to `retries`
      times, after the server's hint (`retry_hint` of the SDK's exception: `Retry-After`, ...) or
      a short backoff (none after a silence); every attempt and wait fits in `silence` x
      (`retries` + 1) from the start. A wait that would not fit is not made: the error in hand
      (`rate_limited` for a 429) ends the turn at once, rather than after the minute a rate
      limit may ask for.

    Failures are mapped with `map_error`."""
    loop = asyncio.get_running_loop()
    first_by = loop.time() + silence * (retries + 1)
    tries = 0
    while True:
        tries += 1
        progressed = silent = False
        started = loop.time()
        deadline = min(first_by, started + silence)
        try:
            async with contextlib.aclosing(attempt()) as chunks:
                while True:
                    try:
                        chunk = await _within(deadline, anext(chunks, _END))
                    except _Silence:
                        silent = True
                        waited = silence if progressed else deadline - started
                        raise ProviderTimeoutError(f"the model sent nothing for {waited:.3g} s", provider=provider) from None
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
        except BrainError as err:
            if progressed or not err.retryable or tries > retries:
                raise
            hint = retry_hint(err.__cause__) if err.__cause__ is not None else None
            # after a silence, at once: it was waited already, and the next attempt needs the time
            wait = hint if hint is not None else 0.0 if silent else backoff(tries)
            if loop.time() + wait >= first_by:
                if wait > 0:
                    log.warning("[%s] %s; not retried: the wait asked for (%.3g s) would exceed "
                                "BRAIN_REQUEST_TIMEOUT x attempts", provider, err.code, wait)
                raise
            log.warning("[%s] %s: %s; retrying in %.3g s (attempt %d of %d)", provider, err.code, err.message,
                        wait, tries + 1, retries + 1)
            await asyncio.sleep(wait)

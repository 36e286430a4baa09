"""Deadlines on speech providers, which livekit-agents does not impose by itself.

livekit-agents retries a provider request that *fails*, but a request that simply stalls
(connected, then nothing) waits on the plugin's own read timeout (30 s for the OpenAI plugins),
or forever. Two guards turn a stall into a `timeout` failure after `AGENT_PROVIDER_TIMEOUT`:

- `DeadlineSTT` (`providers.deadlines`) wraps a non-streaming STT (local, openai, ...): one
  recognition that takes longer than the deadline plus the utterance's duration raises
  `APITimeoutError`, which livekit reports and retries like any other failure.
  Streaming STTs get `agent.stream_guard.StallGuardSTT` instead (a transcript owed after each
  speech segment the agent's VAD heard, and the unanswered speech replayed on reconnection).
- `guard_tts_frames` wraps a `tts_node`'s audio: no first audio within the deadline after text
  was sent, or no audio (nor end) within the deadline once all the text is in, is a stall; the
  node fails with `TTSStalled` and the caller is told (it reports the error and apologises).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Callable

from livekit import rtc
from livekit.agents import APITimeoutError, stt

from providers.deadlines import DeadlineSTT

from .stream_guard import StallGuardSTT

__all__ = ["DeadlineSTT", "guard_stt", "guard_tts_frames"]


def guard_stt(engine: stt.STT, timeout: float, *, end_of_speech_lag: float = 0.5) -> stt.STT:
    """`engine` under the stall deadline: per recognition if it is a non-streaming STT, per
    speech segment (`StallGuardSTT`) if it streams."""
    if isinstance(engine, (DeadlineSTT, StallGuardSTT)):
        return engine
    if engine.capabilities.streaming:
        return StallGuardSTT(engine, timeout, end_of_speech_lag=end_of_speech_lag)
    return DeadlineSTT(engine, timeout)


class TTSStalled(APITimeoutError):
    """The reply's audio stalled past the deadline (already reported through `on_stall`)."""


class _ReportedStalls(logging.Filter):
    """livekit logs a failed TTS node with its traceback; a stall was already logged (one line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], TTSStalled))


_REPORTED_STALLS = _ReportedStalls()


class _Watch:
    def __init__(self) -> None:
        self.first_text_at: float | None = None
        self.text_ended_at: float | None = None
        self.got_audio = False
        self.waiting_since: float | None = None
        """Set while the guard awaits the next frame (None while the consumer holds it)."""
        self.stalled = False


async def guard_tts_frames(
    text: AsyncIterable[str],
    synthesize: Callable[[AsyncIterable[str]], AsyncIterable[rtc.AudioFrame]],
    *,
    stall_after: float,
    on_stall: Callable[[str], None],
) -> AsyncIterator[rtc.AudioFrame]:
    """The audio of `synthesize(text)`, cut short (and `on_stall(reason)` called) on a stall.

    One lazily re-armed timer per reply (no per-frame task): when it finds the guard waiting
    past the deadline it cancels the consuming task, and the guard turns that cancellation into
    a `TTSStalled` failure of the audio.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    task_ref = weakref.ref(task) if task is not None else None  # a pending timer pins nothing
    watch = _Watch()
    timer: asyncio.TimerHandle | None = None

    def check() -> None:
        nonlocal timer
        timer = None
        deadline = _deadline(watch, stall_after)
        if deadline is None:
            return  # re-armed when the state changes
        consumer = task_ref() if task_ref is not None else None
        if loop.time() < deadline:
            timer = loop.call_later(deadline - loop.time(), check)
        elif consumer is not None:
            watch.stalled = True
            consumer.cancel()

    def arm() -> None:
        nonlocal timer
        if timer is None and (deadline := _deadline(watch, stall_after)) is not None:
            timer = loop.call_later(max(0.0, deadline - loop.time()), check)

    async def watched_text() -> AsyncIterator[str]:
        async for chunk in text:
            if watch.first_text_at is None and chunk.strip():
                watch.first_text_at = loop.time()
                arm()
            yield chunk
        watch.text_ended_at = loop.time()
        arm()

    frames = aiter(synthesize(watched_text()))
    try:
        while True:
            watch.waiting_since = loop.time()
            arm()
            try:
                frame = await anext(frames)
            except (StopAsyncIteration, asyncio.CancelledError) as exc:
                if not watch.stalled or task is None:
                    if isinstance(exc, StopAsyncIteration):
                        return
                    raise
                task.uncancel()  # our own cancellation (the synthesizer may have swallowed it)
                reason = (
                    f"no audio within {stall_after:g} s of the reply text"
                    if not watch.got_audio
                    else f"audio stopped for {stall_after:g} s before the reply ended"
                )
                on_stall(reason)
                # a failure, not an end: livekit then counts only the audio that played as heard
                # (an ended stream counts the whole reply text as said)
                logging.getLogger("livekit.agents").addFilter(_REPORTED_STALLS)  # once: a set
                raise TTSStalled(reason) from None
            finally:
                watch.waiting_since = None
            watch.got_audio = True
            yield frame
    finally:
        if timer is not None:
            timer.cancel()
        closer = getattr(frames, "aclose", None)
        if closer is not None:
            with contextlib.suppress(Exception):
                await closer()


def _deadline(watch: _Watch, timeout: float) -> float | None:
    """When waiting for the next frame becomes a stall (None: no audio is owed yet).

    Before the first audio the clock starts with the first text. After it, audio is owed only
    once all the text is in (while the reply is still being written, a pause in the audio may
    just mean the text has not arrived yet).
    """
    if watch.waiting_since is None:
        return None
    if not watch.got_audio:
        return None if watch.first_text_at is None else watch.first_text_at + timeout
    if watch.text_ended_at is None:
        return None
    return max(watch.text_ended_at, watch.waiting_since) + timeout

"""Short spoken apologies that do not depend on the provider that just failed.

When the TTS itself fails, the apology cannot go through it. `ApologyVoice` renders apology
texts once per process with the offline espeak-ng voice (`providers.LocalTTS`, no network) and
replays the cached audio through `AgentSession.say(text, audio=...)`, so the user hears it even
while the configured TTS is down. If espeak-ng is unavailable the apology is text only (it still
reaches clients in the `error` envelope's turn).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import AsyncIterator

from livekit import rtc

log = logging.getLogger("agent.apology")

_cache: dict[str, list[rtc.AudioFrame]] = {}
_rendering: dict[str, asyncio.Future[list[rtc.AudioFrame] | None]] = {}


async def _render(text: str) -> list[rtc.AudioFrame] | None:
    try:
        from providers import LocalTTS

        engine = LocalTTS()
        try:
            frames = [ev.frame async for ev in engine.synthesize(text)]
        finally:
            await engine.aclose()
    except Exception as exc:  # noqa: BLE001 - no offline voice: apologies are text only
        log.warning("cannot render the apology offline (%s: %s); it will not be spoken", type(exc).__name__, exc)
        return None
    _cache[text] = frames
    return frames


def prepare(text: str) -> asyncio.Future[list[rtc.AudioFrame] | None] | None:
    """Start rendering `text` in the background (idempotent); call with a running loop."""
    if not text or text in _cache:
        return None
    loop = asyncio.get_running_loop()
    fut = _rendering.get(text)
    if fut is None or fut.get_loop() is not loop:
        # a fresh context: the task must not keep the caller's (a job's, a session's) alive
        task = loop.create_task(_render(text), context=contextvars.Context())
        _rendering[text] = task
        task.add_done_callback(lambda t: _rendering.pop(text, None) if _rendering.get(text) is t else None)
        fut = task
    return fut


def cached(text: str) -> list[rtc.AudioFrame] | None:
    return _cache.get(text)


async def frames(text: str) -> list[rtc.AudioFrame] | None:
    """The rendered audio of `text` (rendering it now if needed); None if it cannot be."""
    if text in _cache:
        return _cache[text]
    fut = prepare(text)
    return await fut if fut is not None else _cache.get(text)


async def replay(audio: list[rtc.AudioFrame]) -> AsyncIterator[rtc.AudioFrame]:
    for frame in audio:
        yield frame

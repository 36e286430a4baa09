"""Start a free batch recognition at a short pause, before the VAD closes the speech segment.

A batch STT can only start when the VAD ends a segment (`TURN_VAD_MIN_SILENCE_DURATION` of
silence, 0.5 s by default), and the local pocketsphinx one then needs about 0.15-0.4x the
segment's length to decode it: on the offline default, transcription is most of the reply
latency. When the provider says recognitions cost nothing but CPU (`free_recognitions`, the
local STT), the segment's audio so far is recognised as soon as the VAD has heard
`EARLY_AFTER_SILENCE` of silence; if the segment then ends with no speech in between, that
result is the segment's transcript, `min_silence - EARLY_AFTER_SILENCE` sooner. If the user
speaks again, the early attempt is cancelled (the local STT then kills its decoder process and
starts a fresh one, so the next recognition does not wait behind it) and the whole segment is
recognised as usual at its end.

Bounded: only segments up to `EARLY_MAX_AUDIO` seconds, and one early attempt in flight at a
time. It runs the provider's implementation directly: a failed or dropped early attempt is not
the session's error (the normal recognition at the end of the segment reports its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from livekit import rtc
from livekit.agents import stt, vad

log = logging.getLogger("agent.stt")

EARLY_AFTER_SILENCE = 0.2
"""Seconds of VAD silence after which the segment so far is recognised."""
EARLY_MAX_AUDIO = 6.0
"""Segments longer than this (seconds, prefix padding included) wait for the VAD's end."""


def free_recognitions(engine: stt.STT) -> bool:
    """Whether `engine` (through the agent's wrappers) declares recognitions free to discard."""
    while not getattr(engine, "free_recognitions", False):
        inner = getattr(engine, "inner", None)
        if not isinstance(inner, stt.STT):
            return False
        engine = inner
    return True


@dataclass
class EarlyStats:
    """How often an early recognition became the transcript, and how often the user went on."""

    used: int = 0
    dropped: int = 0


Recognize = Callable[[list[rtc.AudioFrame]], Awaitable[stt.SpeechEvent]]


class EarlyRecognition:
    """The current segment's audio and, at most, one early recognition of it.

    Fed the VAD stream's events in order: START_OF_SPEECH (its frames: prefix padding and the
    first speech), INFERENCE_DONE (one window of audio each); at END_OF_SPEECH, `take()`
    returns the early transcript when it covers the whole segment's speech.
    """

    def __init__(self, recognize: Recognize, *, stats: EarlyStats | None = None,
                 after_silence: float = EARLY_AFTER_SILENCE, max_audio: float = EARLY_MAX_AUDIO) -> None:
        self._recognize = recognize
        self.stats = stats if stats is not None else EarlyStats()
        self._after_silence = after_silence
        self._max_audio = max_audio
        self._frames: list[rtc.AudioFrame] = []
        self._seconds = 0.0
        self._in_speech = False
        self._task: asyncio.Task[stt.SpeechEvent] | None = None
        self._valid = False
        """Whether `_task` recognises all the segment's speech so far."""
        self._started_at = 0.0

    def on_vad_event(self, event: vad.VADEvent) -> None:
        if event.type == vad.VADEventType.START_OF_SPEECH:
            self._begin(event.frames)
        elif event.type == vad.VADEventType.INFERENCE_DONE and self._in_speech:
            self._on_window(event)

    def _begin(self, frames: list[rtc.AudioFrame]) -> None:
        self._invalidate()
        self._in_speech = True
        self._frames = list(frames)
        self._seconds = sum(f.duration for f in frames)

    def _on_window(self, event: vad.VADEvent) -> None:
        if event.raw_accumulated_speech > 0:
            self._invalidate()  # the user went on: an early result would miss words
        if self._seconds > self._max_audio:
            return  # too long to try early; the VAD's END frames are the segment
        self._frames.extend(event.frames)
        self._seconds += sum(f.duration for f in event.frames)
        if self._seconds > self._max_audio:
            self._frames = []
            return
        if event.raw_accumulated_silence >= self._after_silence and not self._valid:
            self._start()

    def _start(self) -> None:
        if self._task is not None and not self._task.done():
            return  # a dropped one is still winding down: start at a later window, after it
        self._started_at = time.perf_counter()
        self._task = asyncio.ensure_future(self._recognize(list(self._frames)))
        self._task.add_done_callback(_retrieve)
        self._valid = True

    def _invalidate(self) -> None:
        if self._valid:
            self.stats.dropped += 1
            if self._task is not None and not self._task.done():
                # the provider may stop its work (the local STT stops its decoder process);
                # one that cannot still holds its decoder until it finishes
                self._task.cancel()
        self._valid = False

    async def take(self) -> tuple[stt.SpeechEvent, float] | None:
        """At END_OF_SPEECH: the early transcript (and the seconds since it was started) when it
        covers the segment, else None (recognise the END event's frames as usual)."""
        self._in_speech = False
        self._frames = []
        task, valid = self._task, self._valid
        self._valid = False
        if task is None or not valid:
            return None
        try:
            result = await task
        except Exception as exc:  # noqa: BLE001 - the normal recognition reports failures
            log.debug("early recognition failed (%s); recognising the segment", exc)
            return None
        self.stats.used += 1
        return result, time.perf_counter() - self._started_at

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


def _retrieve(task: asyncio.Task[stt.SpeechEvent]) -> None:
    if not task.cancelled():
        task.exception()  # so a dropped attempt's failure is not logged as never retrieved

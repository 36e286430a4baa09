"""`StallGuardSTT` on an in-process streaming STT: what is owed, when a stall is declared, and
exactly which audio the next connection is given."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import APIConnectOptions, stt, utils
from livekit.agents.types import NOT_GIVEN, NotGivenOr

from agent.stream_guard import PRE_ROLL, StallGuardSTT

RATE = 16000
FRAME = 0.1  # seconds per test frame


class ScriptedStream(stt.RecognizeStream):
    def __init__(self, owner: ScriptedSTT, conn_options: APIConnectOptions) -> None:
        super().__init__(stt=owner, conn_options=conn_options)
        self.frames: list[int] = []
        """The index carried by each frame this connection was given."""

    async def _run(self) -> None:
        async for item in self._input_ch:
            if isinstance(item, rtc.AudioFrame):
                self.frames.append(int(np.frombuffer(item.data, dtype=np.int16)[0]))

    def answer(self, text: str, *, final: bool = True) -> None:
        alt = stt.SpeechData(language="en", text=text)  # type: ignore[arg-type]
        kind = stt.SpeechEventType.FINAL_TRANSCRIPT if final else stt.SpeechEventType.INTERIM_TRANSCRIPT
        self._event_ch.send_nowait(stt.SpeechEvent(type=kind, alternatives=[alt]))


class ScriptedSTT(stt.STT):
    """A streaming STT whose connections answer only when the test says so."""

    def __init__(self) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=True, interim_results=False))
        self.streams: list[ScriptedStream] = []

    async def _recognize_impl(self, buffer: utils.AudioBuffer, *, language: NotGivenOr[str] = NOT_GIVEN,
                              conn_options: APIConnectOptions) -> stt.SpeechEvent:
        raise NotImplementedError

    def stream(self, *, language: NotGivenOr[str] = NOT_GIVEN, conn_options: Any = None) -> ScriptedStream:
        s = ScriptedStream(self, conn_options or APIConnectOptions())
        self.streams.append(s)
        return s


def _frame(index: int) -> rtc.AudioFrame:
    n = int(RATE * FRAME)
    return rtc.AudioFrame(np.full(n, index, dtype=np.int16).tobytes(), RATE, 1, n)


class Feed:
    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.index = 0

    async def seconds(self, s: float) -> None:
        for _ in range(round(s / FRAME)):
            self.index += 1
            self.stream.push_frame(_frame(self.index))
        # until the guard has taken them all: the VAD calls that follow are placed at its
        # position in the audio (a fixed sleep let a loaded machine put them frames early)
        await _until(lambda: self.stream._position >= self.index * FRAME - 1e-6)


def _finals(events: list[stt.SpeechEvent]) -> list[str]:
    return [e.alternatives[0].text for e in events if e.type == stt.SpeechEventType.FINAL_TRANSCRIPT]


async def test_replay_holds_exactly_the_unanswered_speech() -> None:
    inner = ScriptedSTT()
    guard = StallGuardSTT(inner, timeout=1.0)
    async with _running(guard, APIConnectOptions(max_retry=1, retry_interval=0.0)) as (stream, events, errors, feed):
        await feed.seconds(2.0)  # frames 1-20: quiet room
        guard.speech_started()  # utterance A: frames 21-30
        await feed.seconds(1.0)
        guard.speech_ended()
        inner.streams[0].answer("utterance a")  # answered: nothing owed, A is never replayed
        await _until(lambda: _finals(events) == ["utterance a"])
        await feed.seconds(0.5)  # frames 31-35
        guard.speech_started()  # utterance B: frames 36-45, never answered
        await feed.seconds(1.0)
        guard.speech_ended()
        await _until(lambda: len(inner.streams) == 2)  # the stall, once the deadline passed
        await _until(lambda: len(inner.streams[1].frames) >= 45 - (36 - round(PRE_ROLL / FRAME)) + 1)
        # B from PRE_ROLL before its start (frame 36 - 10 = 26) to the end, nothing of the
        # answered A before that
        first = 36 - round(PRE_ROLL / FRAME)
        assert inner.streams[1].frames[: 45 - first + 1] == list(range(first, 46))
        replayed = len(inner.streams[1].frames)
        await feed.seconds(0.3)  # the new connection gets the live audio after the replay
        await _until(lambda: len(inner.streams[1].frames) >= replayed + 3)
        assert inner.streams[1].frames[-3:] == [46, 47, 48]
        inner.streams[1].answer("utterance b")
        await _until(lambda: len(_finals(events)) == 2)
        assert _finals(events) == ["utterance a", "utterance b"]
        assert [type(e.error).__name__ for e in errors] == ["APITimeoutError"]
        assert errors[0].recoverable


async def test_an_answer_before_the_vad_closes_the_segment_counts() -> None:
    """Providers endpoint faster than the VAD's minimum silence: that answer settles the segment."""
    inner = ScriptedSTT()
    guard = StallGuardSTT(inner, timeout=0.2, end_of_speech_lag=0.5)
    stream = guard.stream(conn_options=APIConnectOptions(max_retry=1, retry_interval=0.0))
    events: list[stt.SpeechEvent] = []
    reader = asyncio.create_task(_read(stream, events))
    feed = Feed(stream)
    try:
        guard.speech_started()
        await feed.seconds(1.0)
        await feed.seconds(0.2)  # the speech ended; the provider answers at once
        inner.streams[0].answer("quick")
        await _until(lambda: _finals(events) == ["quick"])  # the guard has seen the answer
        await feed.seconds(0.3)
        guard.speech_ended()  # the VAD closes the segment 0.5 s after the speech
        assert stream.deadline is None  # nothing is owed
        # but an answer long before the end of a segment does not settle it
        guard.speech_started()
        await feed.seconds(0.5)
        inner.streams[0].answer("first half")
        await _until(lambda: _finals(events) == ["quick", "first half"])
        await feed.seconds(1.5)
        guard.speech_ended()
        assert stream.deadline is not None  # owed
        await _until(lambda: len(inner.streams) == 2)
    finally:
        reader.cancel()
        await stream.aclose()


async def test_interim_transcripts_restart_the_deadline_but_do_not_answer() -> None:
    """A provider that finalises only at the end of the user's turn shows progress with interim
    transcripts: each one moves the deadline; once they stop, the stall, and the segment (never
    finalised) is replayed."""
    inner = ScriptedSTT()
    guard = StallGuardSTT(inner, timeout=3.0)  # ample for the interim to arrive first, even on a loaded machine
    stream = guard.stream(conn_options=APIConnectOptions(max_retry=1, retry_interval=0.0))
    events: list[stt.SpeechEvent] = []
    reader = asyncio.create_task(_read(stream, events))
    feed = Feed(stream)
    try:
        await feed.seconds(1.0)  # frames 1-10
        guard.speech_started()  # frames 11-20
        await feed.seconds(1.0)
        guard.speech_ended()
        first = stream.deadline
        assert first is not None
        await asyncio.sleep(0.1)  # (only for the loop's clock to move on)
        inner.streams[0].answer("partial", final=False)
        await _until(lambda: any(e.type == stt.SpeechEventType.INTERIM_TRANSCRIPT for e in events))
        moved = stream.deadline
        assert moved is not None and moved > first  # restarted, and still owed
        await _until(lambda: len(inner.streams) == 2)  # no more progress: stalled
        await _until(lambda: len(inner.streams[1].frames) >= 20)
        assert inner.streams[1].frames[:20] == list(range(1, 21))  # pre-roll and the segment
    finally:
        reader.cancel()
        await stream.aclose()


async def _until(predicate: Any, within: float = 10.0) -> None:
    async def poll() -> None:
        while not predicate():  # noqa: ASYNC110 - polling a condition of several objects
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), within)


@contextlib.asynccontextmanager
async def _running(guard: StallGuardSTT, conn_options: APIConnectOptions) -> AsyncIterator[tuple[Any, list[stt.SpeechEvent], list[Any], Feed]]:
    """A stream of `guard` being read: (stream, its events, the guard's errors, its input)."""
    stream = guard.stream(conn_options=conn_options)
    events: list[stt.SpeechEvent] = []
    errors: list[Any] = []
    guard.on("error", errors.append)
    reader = asyncio.create_task(_read(stream, events))
    try:
        yield stream, events, errors, Feed(stream)
    finally:
        reader.cancel()
        await stream.aclose()


async def _read(stream: Any, out: list[stt.SpeechEvent]) -> None:
    async for ev in stream:
        out.append(ev)


async def test_stalls_give_up_after_the_retries_but_a_chain_tries_each_provider_first() -> None:
    """A stall the chain can move on from (another provider is available) does not count against
    the retries: with max_retry=1, the first two providers of a chain of three stall and the
    third answers. A stall with nowhere to go does: the second in a row gives up (not
    recoverable), where livekit-agents, whose retry count starts over after any attempt that
    outlived the connect timeout, would have retried it forever."""
    members = [ScriptedSTT(), ScriptedSTT(), ScriptedSTT()]
    guard = StallGuardSTT(stt.FallbackAdapter(list(members)), timeout=0.3)
    conn = APIConnectOptions(max_retry=1, retry_interval=0.0, timeout=0.1)
    try:
        async with _running(guard, conn) as (_stream, events, errors, feed):
            guard.speech_started()
            await feed.seconds(1.0)
            guard.speech_ended()
            await _until(lambda: members[2].streams)  # two stalls: the third provider's turn
            await asyncio.sleep(0.05)
            members[2].streams[-1].answer("at last")
            await _until(lambda: any(e.type == stt.SpeechEventType.FINAL_TRANSCRIPT for e in events))
            assert [e.recoverable for e in errors] == [True, True]
            # the third provider now stalls too, twice: nothing left to move on to
            guard.speech_started()
            await feed.seconds(1.0)
            guard.speech_ended()
            await _until(lambda: len(errors) == 4)
            assert [e.recoverable for e in errors[2:]] == [True, False]
    finally:
        await guard.aclose()

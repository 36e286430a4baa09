"""Room-less harness for the turn-latency benchmark.

Runs a real `AgentSession` (real VAD, real turn handling) with zero-latency stand-ins for
everything around it: a batch STT that returns a fixed transcript at once, an agent whose LLM
and TTS nodes answer at once with a short tone, an audio input that hands frames over when
their last sample would have been recorded, and an audio output that plays in real time and
records when each reply's first frame arrives.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import NOT_GIVEN, APIConnectOptions, NotGivenOr, llm, stt, tts
from livekit.agents.language import LanguageCode
from livekit.agents.utils import AudioBuffer
from livekit.agents.voice import Agent, AgentSession, ModelSettings
from livekit.agents.voice.io import AudioInput, AudioOutput, AudioOutputCapabilities

FRAME_MS = 20
REPLY_SECONDS = 0.2


class AudioClock:
    """Maps wall-clock time onto the recording's timeline (seconds of audio)."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.t0: float | None = None

    def start(self) -> None:
        if self.t0 is None:
            self.t0 = time.perf_counter()

    def now(self) -> float:
        if self.t0 is None:
            return 0.0
        return (time.perf_counter() - self.t0) * self.speed

    def wall_at(self, audio_t: float) -> float:
        assert self.t0 is not None
        return self.t0 + audio_t / self.speed


class PacedAudioInput(AudioInput):
    """Yields a recording in 20 ms frames, each when its last sample would have been recorded,
    then `trailing` seconds of silence, then ends."""

    def __init__(
        self, pcm: np.ndarray, sample_rate: int, clock: AudioClock, *, trailing: float
    ) -> None:
        super().__init__(label="paced-file")
        spf = sample_rate * FRAME_MS // 1000
        pad = int(trailing * sample_rate) + (-len(pcm)) % spf
        self._pcm = np.concatenate([pcm.astype(np.int16), np.zeros(pad, dtype=np.int16)])
        self._sr = sample_rate
        self._spf = spf
        self._clock = clock
        self._idx = 0
        self.finished = asyncio.Event()
        self.max_lateness = 0.0  # how far behind schedule a frame was handed over (audio s)

    @property
    def duration(self) -> float:
        return len(self._pcm) / self._sr

    async def __anext__(self) -> rtc.AudioFrame:
        self._clock.start()
        start = self._idx * self._spf
        if start >= len(self._pcm):
            self.finished.set()
            raise StopAsyncIteration
        end = start + self._spf
        due = self._clock.wall_at(end / self._sr)
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            self.max_lateness = max(self.max_lateness, -delay * self._clock.speed)
        self._idx += 1
        chunk = self._pcm[start:end]
        return rtc.AudioFrame(
            data=chunk.tobytes(),
            sample_rate=self._sr,
            num_channels=1,
            samples_per_channel=len(chunk),
        )


class RecordingAudioOutput(AudioOutput):
    """Plays each reply in real time (nothing is heard) and records when it started."""

    def __init__(self, clock: AudioClock, sample_rate: int) -> None:
        super().__init__(
            label="recording",
            capabilities=AudioOutputCapabilities(pause=False),
            sample_rate=sample_rate,
        )
        self._clock = clock
        self.reply_starts: list[float] = []  # audio-timeline seconds
        self._open = False  # a segment captured and not yet reported finished
        self._capturing = False
        self._started_wall = 0.0
        self._pushed = 0.0
        self._finish_handle: asyncio.TimerHandle | None = None

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        if not self._capturing:
            self._capturing = True
            self._open = True
            self._started_wall = time.perf_counter()
            self._pushed = 0.0
            self.reply_starts.append(self._clock.now())
            self.on_playback_started(created_at=time.time())
        self._pushed += frame.duration

    def flush(self) -> None:
        super().flush()
        if not self._capturing:
            return
        self._capturing = False
        remaining = self._started_wall + self._pushed / self._clock.speed - time.perf_counter()
        self._finish_handle = asyncio.get_running_loop().call_later(
            max(remaining, 0.0), self._finish, False
        )

    def clear_buffer(self) -> None:
        if self._finish_handle is not None:
            self._finish_handle.cancel()
            self._finish_handle = None
        self._capturing = False
        self._finish(True)

    def _finish(self, interrupted: bool) -> None:
        self._finish_handle = None
        if not self._open:
            return
        self._open = False
        played = (time.perf_counter() - self._started_wall) * self._clock.speed
        self.on_playback_finished(
            playback_position=min(played, self._pushed), interrupted=interrupted
        )


class StubSTT(stt.STT):
    """Batch STT that 'recognises' every segment instantly as the same words.

    Not streaming, so the session wraps it in a StreamAdapter driven by the VAD: the
    transcript arrives the moment the VAD closes a speech segment, as with a zero-latency
    batch recogniser.
    """

    def __init__(self, text: str = "so tell me more about that") -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self._text = text

    async def _recognize_impl(
        self,
        buffer: AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            alternatives=[
                stt.SpeechData(language=LanguageCode("en"), text=self._text, confidence=1.0)
            ],
        )


class PlaceholderLLM(llm.LLM):
    """Present so the session runs its reply pipeline; the agent's llm_node never calls it."""

    def chat(self, **kwargs: Any) -> llm.LLMStream:  # type: ignore[override]
        raise RuntimeError("the benchmark agent answers in llm_node; the LLM is a placeholder")


class PlaceholderTTS(tts.TTS):
    """Present so the session produces audio; the agent's tts_node never calls it."""

    def __init__(self, sample_rate: int) -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False),
            sample_rate=sample_rate,
            num_channels=1,
        )

    def synthesize(self, text: str, **kwargs: Any) -> tts.ChunkedStream:  # type: ignore[override]
        raise RuntimeError("the benchmark agent speaks in tts_node; the TTS is a placeholder")


def _tone(sample_rate: int, seconds: float) -> rtc.AudioFrame:
    n = int(sample_rate * seconds)
    t = np.arange(n) / sample_rate
    pcm = (0.1 * 32767 * np.sin(2 * math.pi * 440.0 * t)).astype(np.int16)
    return rtc.AudioFrame(
        data=pcm.tobytes(), sample_rate=sample_rate, num_channels=1, samples_per_channel=n
    )


class InstantAgent(Agent):
    """Answers every user turn at once with one short tone."""

    def __init__(self, sample_rate: int) -> None:
        super().__init__(instructions="benchmark agent")
        self._frame = _tone(sample_rate, REPLY_SECONDS)

    async def llm_node(  # type: ignore[override]
        self, chat_ctx: llm.ChatContext, tools: list[llm.Tool], model_settings: ModelSettings
    ) -> AsyncIterator[str]:
        yield "Okay."

    async def tts_node(  # type: ignore[override]
        self, text: AsyncIterable[str], model_settings: ModelSettings
    ) -> AsyncIterator[rtc.AudioFrame]:
        async for _ in text:
            pass
        yield self._frame


@dataclass
class RunResult:
    reply_starts: list[float]
    duration: float
    max_input_lateness: float
    user_turns_committed: list[float] = field(default_factory=list)


async def run_session(
    make_session: Callable[..., AgentSession],
    pcm: np.ndarray,
    sample_rate: int,
    *,
    speed: float = 1.0,
    trailing: float = 4.0,
) -> RunResult:
    """Play `pcm` into a fresh session built by `make_session(stt=, llm=, tts=)`."""
    clock = AudioClock(speed)
    audio_in = PacedAudioInput(pcm, sample_rate, clock, trailing=trailing)
    audio_out = RecordingAudioOutput(clock, sample_rate)
    session = make_session(stt=StubSTT(), llm=PlaceholderLLM(), tts=PlaceholderTTS(sample_rate))
    committed: list[float] = []

    @session.on("user_input_transcribed")
    def _on_transcribed(ev: Any) -> None:  # debugging aid: when transcripts land
        if ev.is_final:
            committed.append(clock.now())

    session.input.audio = audio_in
    session.output.audio = audio_out
    await session.start(InstantAgent(sample_rate))
    try:
        await audio_in.finished.wait()
        await asyncio.sleep(0.3 / speed)
    finally:
        await session.aclose()
    return RunResult(
        reply_starts=list(audio_out.reply_starts),
        duration=audio_in.duration,
        max_input_lateness=audio_in.max_lateness,
        user_turns_committed=committed,
    )

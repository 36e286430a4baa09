"""Room-less audio I/O for `AgentSession`: a paced microphone and a simulated speaker.

Both run on one `SimClock`, in audio seconds. With `speed` > 1 the microphone delivers audio
faster than real time and the speaker "plays" faster by the same factor, so what overlaps in the
recording overlaps in the simulation (the user barging in over a reply, for example).

`PlaybackSink` behaves like a real output device: playback starts with the first frame,
advances with the clock but never past the audio received (an underrun stalls it), `flush()`
ends a segment once it has played out, `clear_buffer()` stops it at once. It reports the
position reached, so livekit-agents can tell what part of a reply the user actually heard.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import AgentSession
from livekit.agents.voice import io
from livekit.agents.voice.transcription import TranscriptSynchronizer

from .audio_files import DEFAULT_FRAME_MS, frames_to_pcm, split_frames


class SimClock:
    """Audio time: seconds since `start()`, times `speed`."""

    def __init__(self, speed: float = 1.0) -> None:
        if not (speed > 0 and math.isfinite(speed)):
            raise ValueError(f"speed must be a positive number, got {speed}")
        self.speed = speed
        self._t0: float | None = None

    def start(self) -> None:
        if self._t0 is None:
            self._t0 = time.monotonic()

    @property
    def started(self) -> bool:
        return self._t0 is not None

    def now(self) -> float:
        if self._t0 is None:
            return 0.0
        return (time.monotonic() - self._t0) * self.speed

    async def sleep_until(self, t: float) -> None:
        """Wait until the clock reads `t` (returns at once if it already does)."""
        self.start()
        delay = (t - self.now()) / self.speed
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            await asyncio.sleep(0)

    async def sleep(self, seconds: float) -> None:
        await self.sleep_until(self.now() + seconds)


class PacedAudioInput(io.AudioInput):
    """A microphone fed from PCM: each frame is delivered once the clock has passed its end."""

    def __init__(self, clock: SimClock, sample_rate: int, *, frame_ms: int = DEFAULT_FRAME_MS) -> None:
        super().__init__(label="simulated-microphone")
        self.clock = clock
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        self._queue: asyncio.Queue[rtc.AudioFrame | None] = asyncio.Queue()
        self._cursor = 0.0
        self._closed = False
        self.on_progress: Callable[[float], None] | None = None

    @property
    def position(self) -> float:
        """Seconds of audio delivered so far."""
        return self._cursor

    async def play(self, pcm: bytes) -> None:
        """Deliver mono 16-bit PCM in real time (times the clock's speed)."""
        await self.play_frames(split_frames(pcm, self.sample_rate, self.frame_ms))

    async def play_frames(self, frames: Iterable[rtc.AudioFrame]) -> None:
        """Deliver frames as they are (any rate, channel count or size), each once the clock
        has passed its end: for inputs that do not come from a file."""
        self.clock.start()
        for frame in frames:
            end = self._cursor + frame.duration
            await self.clock.sleep_until(end)
            if self._closed:
                return
            self._queue.put_nowait(frame)
            self._cursor = end
            if self.on_progress is not None:
                self.on_progress(end)

    async def play_silence(self, seconds: float) -> None:
        await self.play(bytes(2 * int(seconds * self.sample_rate)))

    def close(self) -> None:
        """End the stream (the session sees the microphone go away)."""
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(None)

    async def __anext__(self) -> rtc.AudioFrame:
        frame = await self._queue.get()
        if frame is None:
            self._queue.put_nowait(None)  # stay closed for later readers
            raise StopAsyncIteration
        return frame


class MonoInput(io.AudioInput):
    """Normalises another input for livekit-agents: one channel, one sample rate, no empty frames.

    Silero VAD and the realtime plugins refuse multi-channel frames (they are mixed down) and a
    frame at another rate than the first (later rates are resampled to the first one). A
    LiveKit room already delivers such frames (RoomIO subscribes with one channel at a fixed
    rate); this is for the other inputs (simulations, custom sources), which
    `BaseVoiceSession.start` wraps.
    """

    def __init__(self, source: io.AudioInput) -> None:
        super().__init__(label=f"mono({source.label})", source=source)
        self.rate: int | None = None
        self._resamplers: dict[int, rtc.AudioResampler] = {}
        self._ready: list[rtc.AudioFrame] = []

    async def __anext__(self) -> rtc.AudioFrame:
        assert self.source is not None
        while not self._ready:
            frame = await self.source.__anext__()
            if frame.samples_per_channel == 0:
                continue
            if frame.num_channels != 1:
                frame = downmix(frame)
            if self.rate is None:
                self.rate = frame.sample_rate
            if frame.sample_rate == self.rate:
                return frame
            resampler = self._resamplers.get(frame.sample_rate)
            if resampler is None:
                resampler = self._resamplers[frame.sample_rate] = rtc.AudioResampler(frame.sample_rate, self.rate)
            self._ready.extend(f for f in resampler.push(frame) if f.samples_per_channel)
        return self._ready.pop(0)


QUIET_AFTER = 0.4
"""Seconds (wall time) without a frame after which a microphone counts as fallen quiet."""
QUIET_FILL = 2.0
"""Seconds of silence a microphone that fell quiet stands for (as livekit-agents pushes 2 s of
silence into the STT when it commits a turn whose audio input is detached)."""


class QuietFillInput(io.AudioInput):
    """A microphone that falls quiet is heard as silence, for a while.

    A muted LiveKit track sends no frames at all (nor does one being unpublished, once
    livekit-agents' 0.5 s tail has passed, or a microphone being switched): the VAD then never
    hears the silence that ends the user's speech, so a user who muted mid-sentence stayed
    `speaking` (their words never transcribed nor answered, the inactivity timeout never
    started) until they unmuted. When no frame has come for `after` seconds, this input delivers
    silence in the last frame's format, at real-time pace, `fill` seconds of it at most (a long
    mute costs nothing more); a frame from the source ends the fill. Nothing is filled while the
    input is detached (`session.input.set_audio_enabled(False)`) or before the first frame.
    `speed` > 1 is for a source on a `SimClock` running faster than real time: the waits shrink
    by that factor.
    """

    def __init__(
        self, source: io.AudioInput, *, after: float = QUIET_AFTER, fill: float = QUIET_FILL, speed: float = 1.0
    ) -> None:
        super().__init__(label=f"quiet-fill({source.label})", source=source)
        self.after = after
        self.fill = fill
        self.speed = speed
        self.filled = 0.0
        """Seconds of silence delivered since the source's last frame."""
        self._next: asyncio.Future[rtc.AudioFrame] | None = None
        self._silence: rtc.AudioFrame | None = None
        self._attached = True

    def on_attached(self) -> None:
        self._attached = True
        super().on_attached()

    def on_detached(self) -> None:
        self._attached = False
        super().on_detached()

    async def __anext__(self) -> rtc.AudioFrame:
        assert self.source is not None
        if self._next is None:  # kept across calls: a cancelled read loses no frame
            self._next = asyncio.ensure_future(self.source.__anext__())
            self._next.add_done_callback(_retrieve)
        silence = self._silence
        timeout: float | None = None
        if silence is not None and self._attached and self.filled + silence.duration <= self.fill + 1e-6:
            timeout = (self.after if self.filled == 0 else silence.duration) / self.speed
        # (asyncio.wait never cancels the read, even when this call is cancelled)
        done, _ = await asyncio.wait({self._next}, timeout=timeout)
        if not done:
            assert silence is not None
            self.filled += silence.duration
            return rtc.AudioFrame(
                bytes(2 * silence.samples_per_channel * silence.num_channels),
                silence.sample_rate,
                silence.num_channels,
                silence.samples_per_channel,
            )
        next_frame, self._next = self._next, None
        frame = next_frame.result()  # StopAsyncIteration once the source has ended
        self.filled = 0.0
        if frame.samples_per_channel > 0:
            self._silence = frame  # its format: a fresh silent frame is delivered each time
        return frame


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """A read left pending when the session closed ends with the source: nothing to report."""
    if not fut.cancelled():
        fut.exception()


def downmix(frame: rtc.AudioFrame) -> rtc.AudioFrame:
    """The average of the channels, as a mono frame at the same rate."""
    data = np.frombuffer(frame.data, dtype=np.int16).reshape(-1, frame.num_channels)
    mono = data.mean(axis=1).round().astype(np.int16)
    return rtc.AudioFrame(mono.tobytes(), frame.sample_rate, 1, frame.samples_per_channel)


@dataclass
class PlayedSegment:
    """One reply segment as it reached the (simulated) speaker."""

    start: float
    """Clock time (audio seconds) at which its first frame played."""
    started_at: float
    """Wall time (time.time()) of the same moment."""
    pushed: float = 0.0
    """Seconds of audio received."""
    played: float = 0.0
    """Seconds actually played."""
    interrupted: bool = False
    finished: bool = False
    frames: list[rtc.AudioFrame] = field(default_factory=list)
    _last: float = 0.0

    @property
    def end(self) -> float:
        return self.start + self.played


class PlaybackSink(io.AudioOutput):
    """A speaker that plays on a `SimClock` and records what it played."""

    def __init__(self, clock: SimClock, *, sample_rate: int | None = None, label: str = "simulated-speaker") -> None:
        super().__init__(
            label=label,
            capabilities=io.AudioOutputCapabilities(pause=True),
            sample_rate=sample_rate,
        )
        self.clock = clock
        self.segments: list[PlayedSegment] = []
        self._current: PlayedSegment | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._out_rate: int | None = sample_rate
        self._paused = False
        self._resumed = asyncio.Event()
        self._resumed.set()

    # -- what tests and simulate read ---------------------------------------------------------

    @property
    def playing(self) -> bool:
        return self._current is not None

    def current_played(self) -> float:
        """Seconds of the current segment played so far (0 when nothing is playing)."""
        seg = self._current
        if seg is None:
            return 0.0
        self._advance(seg)
        return seg.played

    @property
    def output_rate(self) -> int | None:
        """Sample rate of the audio received (the TTS rate unless the sink asked for one)."""
        return self._out_rate

    def timeline_pcm(self, sample_rate: int, duration: float | None = None) -> bytes:
        """Everything played, placed at the clock time it played (silence elsewhere), mono 16-bit."""
        end = max([s.end for s in self.segments] + [duration or 0.0])
        buf = bytearray(2 * int(math.ceil(end * sample_rate)))
        for seg in self.segments:
            pcm = frames_to_pcm(seg.frames, sample_rate)[: 2 * int(seg.played * sample_rate)]
            at = 2 * int(seg.start * sample_rate)
            buf[at : at + len(pcm)] = pcm
        return bytes(buf)

    def played_pcm(self, sample_rate: int) -> bytes:
        """Only the audio that played, back to back."""
        out = bytearray()
        for seg in self.segments:
            out += frames_to_pcm(seg.frames, sample_rate)[: 2 * int(seg.played * sample_rate)]
        return bytes(out)

    # -- AudioOutput ----------------------------------------------------------------------------

    def _advance(self, seg: PlayedSegment) -> None:
        now = self.clock.now()
        if not self._paused:
            seg.played = min(seg.pushed, seg.played + max(0.0, now - seg._last))
        seg._last = now

    def pause(self) -> None:
        """Hold playback (livekit-agents pauses on possible barge-in, resumes if it was noise)."""
        super().pause()
        if self._current is not None:
            self._advance(self._current)
        self._paused = True
        self._resumed.clear()

    def resume(self) -> None:
        super().resume()
        if self._current is not None:
            self._advance(self._current)
        self._paused = False
        self._resumed.set()

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        self._out_rate = self._out_rate or frame.sample_rate
        seg = self._current
        if seg is None:
            self.clock.start()
            seg = PlayedSegment(start=self.clock.now(), started_at=time.time())
            seg._last = seg.start
            self._current = seg
            self.segments.append(seg)
            self.on_playback_started(created_at=seg.started_at)
        else:
            self._advance(seg)  # an underrun stalls playback: catch up before adding audio
        seg.frames.append(frame)
        seg.pushed += frame.duration

    def flush(self) -> None:
        super().flush()
        seg = self._current
        if seg is None or self._drain_task is not None:
            return
        self._drain_task = asyncio.create_task(self._play_out(seg), name="PlaybackSink.play_out")

    async def _play_out(self, seg: PlayedSegment) -> None:
        while True:
            await self._resumed.wait()
            self._advance(seg)
            remaining = seg.pushed - seg.played
            if remaining <= 1e-6:
                break
            await self.clock.sleep(remaining)
        self._finish(seg, interrupted=False)

    def clear_buffer(self) -> None:
        seg = self._current
        if seg is None:
            return
        self._advance(seg)
        if self._drain_task is not None and self._drain_task is not asyncio.current_task():
            self._drain_task.cancel()
        # a segment cut before its playout was reported is interrupted, even if all the audio
        # that had come has played (a TTS slower than playback: livekit flushes the output and
        # clears it in the same step), as on livekit's room output. Reported as finished,
        # livekit counted the whole reply as heard.
        self._finish(seg, interrupted=True)

    def _finish(self, seg: PlayedSegment, *, interrupted: bool) -> None:
        if seg.finished:
            return
        seg.finished = True
        seg.interrupted = interrupted
        self._current = None
        self._drain_task = None
        self.on_playback_finished(playback_position=seg.played, interrupted=interrupted)

    async def aclose(self) -> None:
        if self._drain_task is not None:
            self._drain_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain_task


class TranscriptCollector(io.TextOutput):
    """The end of the transcription chain: keeps the agent's text per segment, as displayed."""

    def __init__(self) -> None:
        super().__init__(label="simulated-transcript", next_in_chain=None)
        self.segments: list[str] = []
        self._current: list[str] | None = None

    async def capture_text(self, text: str) -> None:
        if self._current is None:
            self._current = []
        self._current.append(str(text))

    def flush(self) -> None:
        if self._current is not None:
            self.segments.append("".join(self._current))
            self._current = None


@dataclass
class SimulatedIO:
    clock: SimClock
    mic: PacedAudioInput
    sink: PlaybackSink
    transcript: TranscriptCollector
    synchronizer: TranscriptSynchronizer

    async def aclose(self) -> None:
        self.mic.close()
        await self.synchronizer.aclose()
        await self.sink.aclose()


def attach_simulated_io(session: AgentSession, clock: SimClock, *, input_rate: int = 16_000) -> SimulatedIO:
    """Give a room-less `AgentSession` a paced microphone and a simulated speaker.

    The speaker sits behind livekit's `TranscriptSynchronizer`, as in a room, so an interrupted
    reply is stored as the text that was actually played. The synchronizer paces words in wall
    time: with `clock.speed` > 1 it lags and under-reports what was heard.
    """
    mic = PacedAudioInput(clock, input_rate)
    sink = PlaybackSink(clock)
    transcript = TranscriptCollector()
    sync = TranscriptSynchronizer(next_in_chain_audio=sink, next_in_chain_text=transcript)
    session.input.audio = QuietFillInput(MonoInput(mic), speed=clock.speed)
    session.output.audio = sync.audio_output
    session.output.transcription = sync.text_output
    return SimulatedIO(clock, mic, sink, transcript, sync)

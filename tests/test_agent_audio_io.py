"""File decoding and the room-less audio I/O (paced microphone, simulated speaker)."""

from __future__ import annotations

import asyncio
import wave

import numpy as np
import pytest
from livekit import rtc
from livekit.agents.voice import io

from agent.audio_files import AudioFileError, decode_file, frames_to_pcm, split_frames, write_wav
from agent.audio_io import PacedAudioInput, PlaybackSink, QuietFillInput, SimClock

from .agent_fakes import AUDIO


@pytest.mark.parametrize(
    ("name", "rate", "channels", "duration"),
    [
        ("jfk_16k_mono.wav", 16_000, 1, 11.0),
        ("multi_utterance_16k.opus", 48_000, 1, 8.06),
        ("multi_utterance_44k_stereo.mp3", 44_100, 2, 2.53),
    ],
)
def test_decode_any_format_to_mono_16k(name: str, rate: int, channels: int, duration: float) -> None:
    audio = decode_file(AUDIO / name, 16_000)
    assert (audio.source_rate, audio.source_channels) == (rate, channels)
    assert audio.sample_rate == 16_000
    assert audio.duration == pytest.approx(duration, abs=0.05)
    samples = np.frombuffer(audio.pcm, dtype=np.int16)
    assert samples.std() > 100  # real audio, not silence


def test_decode_keeps_the_source_rate_when_asked() -> None:
    audio = decode_file(AUDIO / "multi_utterance_44k_stereo.mp3", None)
    assert audio.sample_rate == 44_100
    frames = audio.frames(20)
    assert all(f.num_channels == 1 and f.sample_rate == 44_100 for f in frames)
    assert sum(f.samples_per_channel for f in frames) == audio.num_samples


def test_decode_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(AudioFileError, match="not found"):
        decode_file(tmp_path / "missing.wav")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(AudioFileError, match="junk.wav"):
        decode_file(junk)


def test_frames_to_pcm_mixes_down_and_resamples(tmp_path) -> None:
    stereo = np.zeros((2205, 2), dtype=np.int16)
    stereo[:, 0] = 1000
    stereo[:, 1] = 3000
    frame = rtc.AudioFrame(stereo.tobytes(), 22_050, 2, 2205)
    pcm = frames_to_pcm([frame], 16_000)
    out = np.frombuffer(pcm, dtype=np.int16)
    assert abs(len(out) - 1600) < 40
    assert abs(int(np.median(out)) - 2000) < 50
    path = write_wav(tmp_path / "a" / "b.wav", pcm, 16_000)
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getnframes()) == (16_000, 1, len(out))


def _tone(seconds: float, rate: int = 16_000) -> list[rtc.AudioFrame]:
    t = np.arange(int(seconds * rate)) / rate
    pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16).tobytes()
    return list(split_frames(pcm, rate, 20))


async def test_microphone_delivers_paced_frames_then_ends() -> None:
    clock = SimClock(speed=50)
    mic = PacedAudioInput(clock, 16_000)
    got: list[rtc.AudioFrame] = []

    async def read() -> None:
        async for f in mic:
            got.append(f)

    reader = asyncio.create_task(read())
    await mic.play(b"\x00\x00" * 8000)
    assert mic.position == pytest.approx(0.5)
    assert clock.now() >= 0.5  # not ahead of the clock
    mic.close()
    await asyncio.wait_for(reader, 5)
    assert sum(f.duration for f in got) == pytest.approx(0.5)


class _QueueInput(io.AudioInput):
    """A microphone fed by hand; None ends it."""

    def __init__(self) -> None:
        super().__init__(label="queue")
        self.queue: asyncio.Queue[rtc.AudioFrame | None] = asyncio.Queue()

    async def __anext__(self) -> rtc.AudioFrame:
        frame = await self.queue.get()
        if frame is None:
            raise StopAsyncIteration
        return frame


async def test_a_microphone_that_falls_quiet_is_heard_as_some_silence() -> None:
    """A muted track sends no frames: after `after` seconds the input delivers silence in the
    last frame's format, `fill` seconds of it and no more; real frames pass as they are, a read
    cancelled while waiting loses no frame, and nothing is filled while the input is detached."""
    src = _QueueInput()
    mic = QuietFillInput(src, after=0.01, fill=0.1)
    stereo = rtc.AudioFrame(np.full(2 * 960, 3000, np.int16).tobytes(), 48_000, 2, 960)  # 20 ms
    src.queue.put_nowait(stereo)
    assert await mic.__anext__() is stereo
    silence = [await mic.__anext__() for _ in range(5)]  # the mute: 5 x 20 ms = `fill`
    assert all((f.sample_rate, f.num_channels, f.samples_per_channel) == (48_000, 2, 960) for f in silence)
    assert all(not np.frombuffer(f.data, np.int16).any() for f in silence)
    assert mic.filled == pytest.approx(0.1)
    waiting = asyncio.ensure_future(mic.__anext__())
    await asyncio.sleep(0.05)  # 5 x `after`: a fill without bound would have answered
    assert not waiting.done()
    src.queue.put_nowait(stereo)  # unmuted
    assert await waiting is stereo and mic.filled == 0.0
    # a cancelled read (the session swapping its forwarding task) keeps the frame for the next
    mic.on_detached()  # (and detached, nothing is filled)
    waiting = asyncio.ensure_future(mic.__anext__())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    waiting.cancel()
    src.queue.put_nowait(stereo)
    assert await mic.__anext__() is stereo
    mic.on_attached()
    src.queue.put_nowait(None)  # the source ends: so does the input
    with pytest.raises(StopAsyncIteration):
        await mic.__anext__()


async def test_speaker_plays_out_a_segment_at_clock_speed() -> None:
    clock = SimClock(speed=20)
    sink = PlaybackSink(clock)
    started: list[float] = []
    sink.on("playback_started", lambda ev: started.append(ev.created_at))
    for f in _tone(1.0):
        await sink.capture_frame(f)
    sink.flush()
    ev = await asyncio.wait_for(sink.wait_for_playout(), 5)
    assert not ev.interrupted
    assert ev.playback_position == pytest.approx(1.0, abs=0.01)
    assert len(started) == 1
    seg = sink.segments[0]
    assert seg.played == pytest.approx(1.0, abs=0.01) and not seg.interrupted


class ManualClock(SimClock):
    """A clock only the test moves (`advance`): positions are exact, whatever the machine's load.
    A sleep ends within `EPS` of its target (sums of frame durations are not exact floats)."""

    EPS = 1e-9

    def __init__(self) -> None:
        super().__init__(1.0)
        self.t = 0.0
        self._waiters: list[tuple[float, asyncio.Future[None]]] = []

    def start(self) -> None:
        pass

    @property
    def started(self) -> bool:
        return True

    def now(self) -> float:
        return self.t

    async def sleep_until(self, t: float) -> None:
        if self.t >= t - self.EPS:
            await asyncio.sleep(0)
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((t, fut))
        await fut

    def advance(self, seconds: float) -> None:
        self.t += seconds
        due = [(t, f) for t, f in self._waiters if t <= self.t + self.EPS]
        self._waiters = [(t, f) for t, f in self._waiters if t > self.t + self.EPS]
        for _, fut in due:
            if not fut.done():
                fut.set_result(None)


async def test_speaker_clear_buffer_stops_part_way_and_pause_holds() -> None:
    clock = ManualClock()
    sink = PlaybackSink(clock)
    for f in _tone(2.0):
        await sink.capture_frame(f)
    sink.flush()
    clock.advance(0.5)
    assert sink.current_played() == pytest.approx(0.5)
    sink.pause()
    clock.advance(0.5)
    await asyncio.sleep(0)
    assert sink.current_played() == pytest.approx(0.5)  # paused: the clock moves, playback does not
    sink.resume()
    clock.advance(0.3)
    await asyncio.sleep(0)
    assert sink.playing and not sink.segments[0].finished
    sink.clear_buffer()
    ev = await asyncio.wait_for(sink.wait_for_playout(), 5)  # a deadlock guard only
    assert ev.interrupted
    assert ev.playback_position == pytest.approx(0.8)  # 0.5 before the pause, 0.3 after it
    assert sink.segments[0].interrupted and sink.segments[0].played == pytest.approx(0.8)
    assert not sink.playing


async def test_speaker_cut_during_an_underrun_is_an_interruption() -> None:
    """The TTS is slower than playback: everything pushed has played, but the segment was not
    complete. A cut then is an interruption; reported as a finished playback, livekit counted the
    whole reply as heard."""
    clock = ManualClock()
    sink = PlaybackSink(clock)
    for f in _tone(0.5):
        await sink.capture_frame(f)
    clock.advance(1.0)  # the half second played long ago; the rest of the reply has not come
    assert sink.current_played() == pytest.approx(0.5) and sink.playing
    sink.flush()  # livekit flushes the output as the reply's audio stream ends, then clears it
    sink.clear_buffer()
    ev = await asyncio.wait_for(sink.wait_for_playout(), 5)  # a deadlock guard only
    assert ev.interrupted and ev.playback_position == pytest.approx(0.5)
    assert sink.segments[0].interrupted


async def test_speaker_plays_out_a_flushed_segment_when_the_clock_reaches_its_end() -> None:
    clock = ManualClock()
    sink = PlaybackSink(clock)
    for f in _tone(1.0):
        await sink.capture_frame(f)
    sink.flush()
    playout = asyncio.ensure_future(sink.wait_for_playout())
    clock.advance(0.99)
    for _ in range(5):
        await asyncio.sleep(0)
    assert not playout.done() and sink.current_played() == pytest.approx(0.99)
    clock.advance(0.01)
    ev = await asyncio.wait_for(playout, 5)  # a deadlock guard only
    assert not ev.interrupted and ev.playback_position == pytest.approx(1.0)
    assert sink.segments[0].end == pytest.approx(1.0)


async def test_speaker_timeline_places_audio_where_it_played() -> None:
    clock = ManualClock()
    sink = PlaybackSink(clock)
    clock.advance(1.0)
    for f in _tone(0.5):
        await sink.capture_frame(f)
    sink.flush()
    clock.advance(0.5)
    await asyncio.wait_for(sink.wait_for_playout(), 5)  # a deadlock guard only
    assert sink.segments[0].start == pytest.approx(1.0)
    pcm = np.frombuffer(sink.timeline_pcm(16_000, duration=2.0), dtype=np.int16)
    assert len(pcm) == 32_000
    loud = np.flatnonzero(np.abs(pcm) > 1000)
    assert loud[0] / 16_000 == pytest.approx(1.0, abs=0.001)  # the tone starts where it played
    assert loud[-1] / 16_000 == pytest.approx(1.5, abs=0.001)  # and lasts the 0.5 s it played
    assert np.abs(pcm[:16_000]).max() == 0 and np.abs(pcm[24_000:]).max() == 0

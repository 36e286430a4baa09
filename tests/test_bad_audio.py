"""Bad audio into the agent's real session: odd rates, stereo, silence, clipped noise, a
5-minute monologue, frames of odd sizes. No crash, memory bounded, and the turns of the real
speech in ../shared/audio are still detected.

Every variant is built at test time from the recordings (livekit's `rtc.AudioResampler`,
numpy) and played as the user's microphone into `agent.simulate.Simulation` (Silero VAD, the
offline brain, the offline TTS), faster than real time. The STT is a stand-in that records
what it was given (so the test can check the audio that reached it) and answers at once.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import APIConnectOptions, stt
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.agents.utils import AudioBuffer

from agent.audio_files import decode_file
from agent.simulate import INPUT_RATE, Simulation
from agent.worker import load_vad

from .agent_fakes import AUDIO, TURNS, settings
from .faults_kit import LoopErrors

pytestmark = pytest.mark.timeout(120)

SOURCE = "multi_utterance_16k_mono.wav"


class RecordingSTT(stt.STT):
    """A batch STT that answers every segment at once and keeps what it was given."""

    def __init__(self) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self.segments: list[tuple[int, int, float]] = []
        """(sample rate, channels, seconds) of each recognised segment."""

    async def _recognize_impl(
        self, buffer: AudioBuffer, *, language: NotGivenOr[str] = NOT_GIVEN, conn_options: APIConnectOptions
    ) -> stt.SpeechEvent:
        frames = buffer if isinstance(buffer, list) else [buffer]
        frame = rtc.combine_audio_frames(frames)
        self.segments.append((frame.sample_rate, frame.num_channels, frame.duration))
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            alternatives=[stt.SpeechData(language="en", text="tell me more")],  # type: ignore[arg-type]
        )


# -- building the variants --------------------------------------------------------------------------


def _speech(start: float, end: float) -> np.ndarray:
    pcm = decode_file(AUDIO / SOURCE, INPUT_RATE).slice(start, end).pcm
    return np.frombuffer(pcm, dtype="<i2").copy()


def two_turns() -> np.ndarray:
    """Two utterances of the recording, each followed by a pause that ends the turn (16 kHz)."""
    pause = np.zeros(int(1.6 * INPUT_RATE), dtype="<i2")
    return np.concatenate([_speech(0.0, 2.1), pause, _speech(9.3, 13.4), pause])


def resample(samples: np.ndarray, rate: int) -> np.ndarray:
    if rate == INPUT_RATE:
        return samples
    resampler = rtc.AudioResampler(INPUT_RATE, rate, num_channels=1)
    out = [*resampler.push(rtc.AudioFrame(samples.tobytes(), INPUT_RATE, 1, len(samples))), *resampler.flush()]
    return np.concatenate([np.frombuffer(f.data, dtype="<i2") for f in out])


def frames(samples: np.ndarray, rate: int, *, channels: int = 1, sizes: Iterator[int] | None = None) -> list[rtc.AudioFrame]:
    """Interleaved frames (`channels` copies, the right one slightly quieter), 20 ms or `sizes`."""
    if channels == 2:
        data = np.stack([samples, (samples.astype(np.int32) * 7 // 8).astype("<i2")], axis=1).reshape(-1)
    else:
        data = samples
    out, i, n = [], 0, len(samples)
    while i < n:
        size = next(sizes) if sizes is not None else rate // 50
        size = max(1, min(size, n - i))
        chunk = np.ascontiguousarray(data[i * channels : (i + size) * channels], dtype="<i2")
        out.append(rtc.AudioFrame(chunk.tobytes(), rate, channels, size))
        i += size
    return out


def odd_sizes() -> Iterator[int]:
    """1 sample, primes, 7 ms, a 100 ms burst ... cycling."""
    while True:
        yield from (1, 17, 331, 7 * 48, 2, 4801, 960, 3, 113)


def clipped_noise(seconds: float, rate: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    noise = rng.normal(0, 20_000, int(seconds * rate))
    return np.clip(noise, -32768, 32767).astype("<i2")  # hard-clipped, mostly at full scale


@dataclass
class Variant:
    name: str
    frames: list[rtc.AudioFrame]
    turns: int | tuple[int, int]
    """Expected user turns (exact, or a range when the noise may count as one)."""
    rate: int
    channels: int = 1
    speed: float = 6.0
    notes: list[str] = field(default_factory=list)


def variants() -> list[Variant]:
    base = two_turns()
    s48 = resample(base, 48_000)
    return [
        Variant("8k_mono", frames(resample(base, 8_000), 8_000), 2, 8_000),
        Variant("44k1_mono", frames(resample(base, 44_100), 44_100), 2, 44_100),
        Variant("48k_mono", frames(s48, 48_000), 2, 48_000),
        Variant("48k_stereo", frames(s48, 48_000, channels=2), 2, 48_000, channels=2),
        Variant("silence", frames(np.zeros(10 * 48_000, dtype="<i2"), 48_000), 0, 48_000, speed=10.0),
        Variant(
            "clipped_noise_then_speech",
            frames(np.concatenate([clipped_noise(3.0, 48_000), np.zeros(48_000, dtype="<i2"), s48]), 48_000),
            (2, 3),
            48_000,
        ),
        Variant("odd_frame_sizes", frames(s48, 48_000, sizes=odd_sizes()), 2, 48_000),
    ]


@pytest.fixture(scope="module")
def vad():
    return load_vad(settings())


async def _run(vad, variant: Variant) -> tuple[Simulation, RecordingSTT, LoopErrors]:
    engine = RecordingSTT()
    errors = LoopErrors()
    errors.install()
    sim = Simulation(settings(), vad=vad, stt=engine, speed=variant.speed, conversation_id=variant.name)
    try:
        await sim.start()
        await sim.io.mic.play_frames(variant.frames)
        assert await sim.settle(limit=120)
        assert not sim.voice.closed.is_set(), "the session closed"
    finally:
        await sim.aclose()
        errors.uninstall()
    return sim, engine, errors


@pytest.mark.parametrize("variant", variants(), ids=lambda v: v.name)
async def test_bad_audio_variant(vad, variant: Variant) -> None:
    sim, engine, errors = await _run(vad, variant)
    assert not errors.items, errors.items
    turns = len(sim.result.user_turns)
    print(f"\n{variant.name}: {turns} turn(s), STT got {engine.segments}, reply {sim.result.reply_seconds:.1f} s")
    lo, hi = (variant.turns, variant.turns) if isinstance(variant.turns, int) else variant.turns
    assert lo <= turns <= hi, (turns, engine.segments)
    if not turns:
        assert engine.segments == [] and sim.result.reply_seconds == 0
        return
    assert sim.result.reply_seconds > 0.5  # the agent answered
    # what reached the STT is the real speech at a sane rate, whatever came in
    for rate, channels, seconds in engine.segments:
        assert rate in (8_000, 16_000, 24_000, 44_100, 48_000) and channels in (1, 2)
        assert 0.3 < seconds < 12, engine.segments
    # the two utterances (2.0 s and 4.1 s of speech), as the VAD cut them: with its prefix
    # padding and the silence that ended them (about 1 s more)
    first, second = (seconds for _, _, seconds in engine.segments[-2:])
    assert 1.5 < first < 3.6 and 3.6 < second < 5.7, engine.segments


def monologue(seconds: float) -> np.ndarray:
    """The recording's speech segments back to back (pauses cut to 0.2 s), repeated to `seconds`."""
    gap = np.zeros(int(0.2 * INPUT_RATE), dtype="<i2")
    pcm = np.frombuffer(decode_file(AUDIO / SOURCE, INPUT_RATE).pcm, dtype="<i2")
    pieces = []
    for a, b in TURNS[SOURCE]["speech"]:
        pieces += [pcm[int(a * INPUT_RATE) : int(b * INPUT_RATE)], gap]
    one = np.concatenate(pieces)
    reps = int(np.ceil(seconds * INPUT_RATE / len(one)))
    return np.tile(one, reps)[: int(seconds * INPUT_RATE)]


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


async def test_five_minute_monologue_keeps_memory_bounded(vad) -> None:
    samples = monologue(300.0)
    tail = np.zeros(int(2.0 * INPUT_RATE), dtype="<i2")
    engine = RecordingSTT()
    errors = LoopErrors()
    errors.install()
    sim = Simulation(settings(), vad=vad, stt=engine, speed=30.0, conversation_id="monologue")
    gc.collect()
    rss = [_rss_mb()]
    try:
        await sim.start()
        chunk = 10 * INPUT_RATE
        for i in range(0, len(samples), chunk):
            await sim.io.mic.play_frames(frames(samples[i : i + chunk], INPUT_RATE))
            rss.append(_rss_mb())
        await sim.io.mic.play_frames(frames(tail, INPUT_RATE))
        # the VAD may lag far behind a 30x input on a loaded machine: let it catch up (settle
        # returns once all is quiet, so the generous limit costs nothing when it keeps up)
        settled = await sim.settle(limit=900)
        alive = not sim.voice.closed.is_set()
    finally:
        await sim.aclose()
        errors.uninstall()
    print(f"\nmonologue: turns {sim.result.user_turns!r}, STT got {engine.segments}, RSS MB {[round(x) for x in rss]}")
    assert alive and settled and not errors.items, errors.items
    # the user held the floor for 5 minutes: the turn ended with the silence, the agent answered
    assert len(sim.result.user_turns) == 1 and sim.result.reply_seconds > 0
    # the whole monologue reaches the STT (TURN_VAD_MAX_BUFFERED_SPEECH = 300 s by default,
    # livekit's own 60 s would drop four minutes of it); memory grows by that buffer only
    [(rate, _, seconds)] = engine.segments
    assert 299 < seconds < 303, engine.segments
    assert max(rss) - rss[0] < 60, [round(x) for x in rss]

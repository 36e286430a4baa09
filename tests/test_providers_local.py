"""Offline providers: pocketsphinx STT on real speech, espeak-ng TTS (batch and streaming)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import APIConnectionError, APIConnectOptions, stt, tts
from livekit.agents.types import USERDATA_TIMED_TRANSCRIPT

from providers import LocalSTT, LocalTTS

AUDIO = Path(__file__).resolve().parents[1].parent / "shared" / "audio"
JFK = (
    "and so my fellow americans ask not what your country can do for you "
    "ask what you can do for your country"
)
# What pocketsphinx (fast profile) reliably gets from the JFK sample, checked over repeated
# runs. rtc.AudioResampler dithers (its output differs by +-2 LSB from run to run) and the
# decoder is sensitive to that, so resampled input only reliably yields "fellow america ...".
JFK_WORDS_16K = ("fellow", "america", "country")
JFK_WORDS_RESAMPLED = ("fellow", "america")


def _reference_hits(text: str) -> int:
    return len(set(text.split()) & set(JFK.split()))


def _wav_frames(path: Path, frame_ms: int = 100) -> list[rtc.AudioFrame]:
    with wave.open(str(path)) as w:
        rate, channels = w.getframerate(), w.getnchannels()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    step = rate * frame_ms // 1000 * channels
    return [
        rtc.AudioFrame(
            pcm[i : i + step].tobytes(), rate, channels, len(pcm[i : i + step]) // channels
        )
        for i in range(0, len(pcm), step)
    ]


def _to_48k_stereo(frames: list[rtc.AudioFrame]) -> list[rtc.AudioFrame]:
    resampler = rtc.AudioResampler(16000, 48000, quality=rtc.AudioResamplerQuality.HIGH)
    up = [f for frame in frames for f in resampler.push(frame)] + resampler.flush()
    out = []
    for f in up:
        mono = np.frombuffer(f.data, dtype=np.int16)
        out.append(rtc.AudioFrame(np.repeat(mono, 2).tobytes(), 48000, 2, len(mono)))
    return out


def _samples(frames: list[rtc.AudioFrame]) -> np.ndarray:
    return np.frombuffer(rtc.combine_audio_frames(frames).data, dtype=np.int16)


@pytest.fixture(scope="module")
def local_stt() -> LocalSTT:
    return LocalSTT()


@pytest.fixture(scope="module")
def jfk() -> list[rtc.AudioFrame]:
    return _wav_frames(AUDIO / "jfk_16k_mono.wav")


async def test_local_stt_transcribes_real_speech(
    local_stt: LocalSTT, jfk: list[rtc.AudioFrame]
) -> None:
    assert local_stt.capabilities.streaming is False
    assert local_stt.capabilities.interim_results is False
    event = await local_stt.recognize(jfk)
    assert event.type == stt.SpeechEventType.FINAL_TRANSCRIPT
    data = event.alternatives[0]
    assert data.language == "en"
    for word in JFK_WORDS_16K:
        assert word in data.text.split()
    assert data.end_time == pytest.approx(11.0, abs=0.05)


async def test_local_stt_resamples_and_mixes_down_48k_stereo(
    local_stt: LocalSTT, jfk: list[rtc.AudioFrame]
) -> None:
    stereo = _to_48k_stereo(jfk)
    assert (stereo[0].sample_rate, stereo[0].num_channels) == (48000, 2)
    event = await local_stt.recognize(stereo)
    text = event.alternatives[0].text
    for word in JFK_WORDS_RESAMPLED:
        assert word in text.split()
    assert _reference_hits(text) >= 7, text  # most of the sentence's words, not noise


async def test_local_stt_empty_and_silent_audio(local_stt: LocalSTT) -> None:
    """pocketsphinx hears a word in half a second or more of digital silence ("dog", "it", "and"),
    and in silence with a stray LSB in it: audio with no signal is "" without decoding."""
    stray = np.zeros(16000, dtype=np.int16)
    stray[::1000] = 1
    buffers: list[list[rtc.AudioFrame] | rtc.AudioFrame] = [
        [],
        rtc.AudioFrame(b"\0\0" * 1600, 16000, 1, 1600),
        [rtc.AudioFrame(b"\0\0" * 1600, 16000, 1, 1600)] * 10,
        rtc.AudioFrame(stray.tobytes(), 16000, 1, len(stray)),
    ]
    for buffer in buffers:
        event = await local_stt.recognize(buffer)
        assert event.type == stt.SpeechEventType.FINAL_TRANSCRIPT
        assert event.alternatives[0].text == ""


async def test_local_stt_serves_concurrent_requests(jfk: list[rtc.AudioFrame]) -> None:
    """Two requests at once get two decoder processes: with the prewarmed one frozen mid-request
    (SIGSTOP), the other request is still answered, by a second process; nothing is serialised."""
    short = jfk[:20]  # 2 s: enough to exercise the decoder pool, cheap to decode
    engine = LocalSTT(max_decoders=2)
    engine.prewarm()  # builds the first decoder in the background
    assert engine._prewarm_task is not None
    await engine._prewarm_task
    (frozen,) = engine._pool._all
    os.kill(frozen._proc.pid, signal.SIGSTOP)
    try:
        requests = [asyncio.ensure_future(engine.recognize(short)) for _ in range(2)]
        # the bound is a deadlock guard only: a pool that serialises never answers either
        done, pending = await asyncio.wait(requests, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        assert len(done) == 1 and len(pending) == 1, "the second request waited for the busy decoder"
        workers = list(engine._pool._all)
        assert len(workers) == 2 and frozen in workers
    finally:
        os.kill(frozen._proc.pid, signal.SIGCONT)
    try:
        first, second = await asyncio.gather(*requests)  # the frozen one answers too
        texts = [first.alternatives[0].text, second.alternatives[0].text]
        for text in texts:
            assert "fellow" in text.split() and _reference_hits(text) >= 3, texts  # "and so my fellow"
        assert texts[0] == texts[1]  # same input, same answer
        assert all(w.alive() for w in workers) and len({w._proc.pid for w in workers}) == 2
    finally:
        await engine.aclose()


@pytest.mark.parametrize("decoders", [1, 2])
async def test_requests_while_the_prewarmed_decoder_starts_stay_within_the_pool(jfk: list[rtc.AudioFrame], decoders: int) -> None:
    """Requests that arrived while the prewarmed decoder was still starting each started one
    of their own beside it: max_decoders + 1 processes, kept for the whole job."""
    engine = LocalSTT(max_decoders=decoders)
    engine.prewarm()  # not awaited: the requests find it starting
    try:
        results = await asyncio.gather(*(engine.recognize(jfk[:20]) for _ in range(decoders)))
        assert all("fellow" in r.alternatives[0].text.split() for r in results)
        assert engine._prewarm_task is not None
        await engine._prewarm_task
        assert len(engine._pool._all) <= decoders
    finally:
        await engine.aclose()


async def test_local_stt_decodes_in_another_process_and_survives_its_death(
    jfk: list[rtc.AudioFrame],
) -> None:
    """pocketsphinx holds the GIL while decoding, so it runs in a worker process, not a thread."""
    short = jfk[:20]
    engine = LocalSTT()
    try:
        first = await engine.recognize(short)
        workers = list(engine._pool._all)
        assert len(workers) == 1
        pid = workers[0]._proc.pid
        assert pid != os.getpid() and workers[0].alive()

        workers[0]._proc.kill()  # the worker dies between two turns (OOM killer, a signal)
        workers[0]._proc.wait()
        # no retry needed: the dead idle worker is replaced before the user's words reach it
        again = await engine.recognize(short, conn_options=APIConnectOptions(max_retry=0))
        assert again.alternatives[0].text == first.alternatives[0].text
        assert len(engine._pool._all) == 1 and engine._pool._all[0]._proc.pid != pid
    finally:
        await engine.aclose()
    assert all(not w.alive() for w in workers)


async def test_closing_the_local_stt_stops_a_decode_in_progress(jfk: list[rtc.AudioFrame]) -> None:
    """aclose() used to wait for a long decode to finish (80 s for 220 s of audio) and leave the
    pool holding a closed worker; now the decode is stopped and the closed STT says so."""
    engine = LocalSTT()
    await engine.recognize(jfk[:20])
    busy = engine._pool._all[0]
    task = asyncio.ensure_future(engine.recognize(jfk * 6, conn_options=APIConnectOptions(max_retry=0)))
    while engine._pool._idle.qsize():  # noqa: ASYNC110 - until the decoder has the long buffer
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    await engine.aclose()
    with pytest.raises(APIConnectionError):
        await task  # stopped, not finished
    assert busy._proc.returncode == -9
    assert engine._pool._all == [] and engine._pool._idle.qsize() == 0
    with pytest.raises(APIConnectionError, match="the local STT is closed"):
        await engine.recognize(jfk[:20], conn_options=APIConnectOptions(max_retry=0))


async def test_a_cancelled_recognition_stops_its_decoder_and_a_fresh_one_takes_over(
    jfk: list[rtc.AudioFrame],
) -> None:
    """A recognition nobody waits for (a dropped early recognition) does not keep the session's
    only decoder busy: its process is killed and replaced, and the next recognition runs."""
    engine = LocalSTT()
    long = jfk * 4  # 44 s of speech: seconds of decoding
    try:
        await engine.recognize(jfk[:20])
        busy = engine._pool._all[0]
        task = asyncio.ensure_future(engine.recognize(long))
        while engine._pool._idle.qsize():  # noqa: ASYNC110 - until the decoder has the long buffer
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        event = await engine.recognize(jfk)
        for word in JFK_WORDS_16K:
            assert word in event.alternatives[0].text.split()
        with contextlib.suppress(subprocess.TimeoutExpired):
            busy._proc.wait(timeout=30)  # a bound for a broken abort, not a timing goal
        assert busy._proc.returncode == -9  # killed mid-decode, not left to finish
        assert engine._pool._all and engine._pool._all[0] is not busy
    finally:
        await engine.aclose()


SENTENCES = [
    "The first sentence is spoken right away.",
    "A second sentence follows after it.",
    "And the third one ends the reply.",
]


def _assert_speech(frames: list[rtc.AudioFrame], min_seconds: float) -> None:
    assert {(f.sample_rate, f.num_channels) for f in frames} == {(22050, 1)}
    samples = _samples(frames)
    seconds = len(samples) / 22050
    assert min_seconds < seconds < 30
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    assert rms > 300  # speech, not silence


def _sentences_of(frames: list[rtc.AudioFrame]) -> list[str]:
    return [str(t) for f in frames for t in f.userdata.get(USERDATA_TIMED_TRANSCRIPT, [])]


async def test_local_tts_synthesize() -> None:
    engine = LocalTTS()
    assert engine.capabilities.streaming is True
    assert (engine.sample_rate, engine.num_channels) == (22050, 1)
    frames = [ev.frame async for ev in engine.synthesize(" ".join(SENTENCES))]
    _assert_speech(frames, min_seconds=4.0)
    # audio is emitted sentence by sentence; each sentence's first frame names it
    assert _sentences_of(frames) == SENTENCES


async def test_local_tts_speaks_past_control_characters_and_broken_unicode() -> None:
    """A NUL used to end espeak's text there (the rest silently unspoken, though the transcript
    said it was), and a lone surrogate failed the synthesis with an error no one reported."""
    from providers._espeak import EspeakEngine, VoiceParams

    engine, params = EspeakEngine.shared(), VoiceParams(voice="en-us", rate=175, pitch=50)
    short = await engine.synthesize("Hello.", params)
    with_nul = await engine.synthesize("Hello\0 there, this is the rest of the answer.", params)
    assert len(with_nul) > 3 * len(short)
    broken = await engine.synthesize("Here is some text \udc80 with a lone surrogate.", params)
    assert len(broken) > 3 * len(short)
    frames = [ev.frame async for ev in LocalTTS().synthesize("Fine \ud83d then.")]
    _assert_speech(frames, min_seconds=0.3)


def test_espeak_aborts_a_synthesis_whose_caller_is_gone() -> None:
    """The stop flag ends espeak at its first audio block: a cancelled long sentence does not
    hold the engine's one thread for the seconds it would take."""
    import threading

    from providers._espeak import EspeakEngine, VoiceParams

    engine, params = EspeakEngine.shared(), VoiceParams(voice="en-us", rate=175, pitch=50)
    long_text = "This sentence goes on and on. " * 200
    stopped = threading.Event()
    stopped.set()
    assert engine._call(engine._synthesize, long_text, params, stopped).result() == b""
    assert len(engine.synthesize_blocking("Still working.", params)) > 10_000


async def test_local_tts_stream_emits_first_sentence_before_the_rest_is_pushed() -> None:
    engine = LocalTTS()
    events: list[str] = []
    frames: list[rtc.AudioFrame] = []
    async with engine.stream() as stream:
        # a sentence plus the start of the next: the tokenizer can close the first one
        stream.push_text(SENTENCES[0] + " A second")
        events.append("pushed first")

        first = await asyncio.wait_for(stream.__anext__(), timeout=60)  # deadlock guard only
        events.append("audio")
        frames.append(first.frame)

        stream.push_text(" sentence follows after it. " + SENTENCES[2])
        events.append("pushed last")
        stream.end_input()
        async for ev in stream:
            frames.append(ev.frame)

    assert events == ["pushed first", "audio", "pushed last"]
    assert _sentences_of([first.frame]) == [SENTENCES[0]]
    assert _sentences_of(frames) == SENTENCES
    _assert_speech(frames, min_seconds=4.0)


async def test_local_tts_voice_and_rate_are_configurable() -> None:
    text = "Configuration changes how fast this is spoken."
    slow = await LocalTTS(rate=120).synthesize(text).collect()
    fast = await LocalTTS(rate=300).synthesize(text).collect()
    assert slow.duration > 1.5 * fast.duration
    german = await LocalTTS(voice="de").synthesize("Guten Tag, wie geht es Ihnen?").collect()
    assert german.duration > 0.5
    with pytest.raises(ValueError, match="voice not found"):
        LocalTTS(voice="xx-nope")


async def test_local_tts_empty_text_gives_no_audio() -> None:
    frames = [ev.frame async for ev in LocalTTS().synthesize("   ")]
    assert sum(f.samples_per_channel for f in frames) == 0


def test_local_tts_is_a_livekit_tts() -> None:
    assert isinstance(LocalTTS(), tts.TTS)

"""Offline STT `local`: CMU pocketsphinx with the English model its wheel ships.

Non-streaming (one `recognize()` per VAD-delimited utterance). Input of any rate / channel
count is mixed down to mono and resampled to 16 kHz with `rtc.AudioResampler`; decoding runs
in a worker thread. Decoders are not thread-safe and cost ~0.3 s and ~100 MB each to build
(measured on the 2-core dev box), so each STT keeps a small pool, built lazily or by
`prewarm()`. Decoding with the default "fast" profile runs at ~0.2x real time.

Accuracy is rough (it is a 2010s HMM model): on the JFK sample it gets the content words
("fellow", "country") but not every function word.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
import pocketsphinx
from livekit import rtc
from livekit.agents import LanguageCode, stt, utils
from livekit.agents.types import NOT_GIVEN, APIConnectOptions, NotGivenOr
from livekit.agents.utils import AudioBuffer

SAMPLE_RATE = 16_000
LANGUAGE = "en"

Profile = Literal["fast", "accurate"]
# "fast" trades a little accuracy for ~2x speed (fewer active HMMs, fewer Gaussians);
# "accurate" is pocketsphinx's own default configuration.
PROFILES: dict[str, dict[str, Any]] = {
    "fast": {"maxhmmpf": 3000, "topn": 2, "pl_window": 10},
    "accurate": {},
}


class _DecoderPool:
    """Up to `size` decoders; a caller blocks (in its worker thread) while all are busy."""

    def __init__(self, options: dict[str, Any], size: int) -> None:
        self._options = options
        self._slots = threading.BoundedSemaphore(size)
        self._idle: queue.SimpleQueue[pocketsphinx.Decoder] = queue.SimpleQueue()
        self._size = size
        self._built = 0
        self._lock = threading.Lock()

    def warm(self) -> None:
        """Build one decoder now, if none exists yet."""
        with self._lock:
            if self._built:
                return
            self._built += 1
        self._idle.put(pocketsphinx.Decoder(**self._options))

    @contextmanager
    def decoder(self) -> Iterator[pocketsphinx.Decoder]:
        with self._slots:
            try:
                dec = self._idle.get_nowait()
            except queue.Empty:
                with self._lock:
                    self._built += 1
                dec = pocketsphinx.Decoder(**self._options)
            try:
                yield dec
            finally:
                self._idle.put(dec)


def to_mono_16k(frames: list[rtc.AudioFrame]) -> bytes:
    """Mix down to mono and resample to 16 kHz; 16-bit PCM bytes."""
    frames = [f for f in frames if f.samples_per_channel > 0]
    if not frames:
        return b""
    frame = rtc.combine_audio_frames(frames)
    if frame.num_channels > 1:
        samples = np.frombuffer(frame.data, dtype=np.int16).reshape(-1, frame.num_channels)
        mono = samples.mean(axis=1).round().astype(np.int16)
        frame = rtc.AudioFrame(mono.tobytes(), frame.sample_rate, 1, len(mono))
    if frame.sample_rate == SAMPLE_RATE:
        return bytes(frame.data)
    resampler = rtc.AudioResampler(
        frame.sample_rate, SAMPLE_RATE, num_channels=1, quality=rtc.AudioResamplerQuality.HIGH
    )
    out = resampler.push(frame) + resampler.flush()
    return b"".join(bytes(f.data) for f in out)


class LocalSTT(stt.STT):
    """pocketsphinx speech recognition, fully offline, English only."""

    def __init__(self, *, profile: Profile = "fast", max_decoders: int = 1) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        if profile not in PROFILES:
            raise ValueError(
                f"unknown pocketsphinx profile {profile!r}; use one of {list(PROFILES)}"
            )
        if max_decoders < 1:
            raise ValueError("max_decoders must be at least 1")
        self._profile = profile
        # pocketsphinx logs every empty utterance as an ERROR on stderr; keep it quiet
        self._pool = _DecoderPool({"loglevel": "FATAL", **PROFILES[profile]}, max_decoders)
        self._prewarm_task: asyncio.Future[None] | None = None

    @property
    def model(self) -> str:
        return f"pocketsphinx-en-us-{self._profile}"

    @property
    def provider(self) -> str:
        return "local"

    def prewarm(self) -> None:
        """Build the first decoder now: in the background inside an event loop, else inline."""
        if self._prewarm_task is not None:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self._pool.warm()
            return
        self._prewarm_task = asyncio.ensure_future(asyncio.to_thread(self._pool.warm))

    def recognize_pcm(self, pcm: bytes) -> str:
        """Blocking: decode 16 kHz mono 16-bit PCM to text ("" for silence / no audio)."""
        if not pcm:
            return ""
        with self._pool.decoder() as dec:
            dec.reinit_feat()  # reset CMN / noise estimates so results do not drift per call
            dec.start_utt()
            dec.process_raw(pcm, full_utt=True)
            dec.end_utt()
            hyp = dec.hyp()
        return hyp.hypstr.strip() if hyp is not None else ""

    def _transcribe(self, frames: list[rtc.AudioFrame]) -> tuple[str, float]:
        pcm = to_mono_16k(frames)
        return self.recognize_pcm(pcm), len(pcm) / 2 / SAMPLE_RATE

    async def _recognize_impl(
        self,
        buffer: AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        frames = buffer if isinstance(buffer, list) else [buffer]
        text, duration = await asyncio.to_thread(self._transcribe, frames)
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            request_id=utils.shortuuid(),
            alternatives=[
                stt.SpeechData(
                    language=LanguageCode(LANGUAGE), text=text, start_time=0.0, end_time=duration
                )
            ],
        )

    async def aclose(self) -> None:
        if self._prewarm_task is not None:
            await asyncio.gather(self._prewarm_task, return_exceptions=True)

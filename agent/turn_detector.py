"""Adaptive end-of-turn detector on the local audio end-of-turn model.

livekit-agents' own local detector (``inference.TurnDetector(version="v1-mini")``) asks the
model once, about 0.2 s into a pause, and then either takes the turn after the minimum
endpointing delay or waits the maximum delay. A single look is noisy: on the shared
recordings the model gives mid-sentence pauses 0.7-0.8 as often as real turn ends.

This detector keeps asking while the pause grows and takes the turn once
``P(turn ended) >= required_probability(silence)``: a confident model answers early, a doubtful
one has to wait for more silence, and after ``max_silence`` the turn is taken whatever the model
says (a turn end the model misjudges costs at most ``max_silence`` of silence).

It plugs into ``AgentSession(turn_handling={"turn_detection": ...})`` as a streaming turn
detector: the session streams every input frame to it, asks for a prediction once the VAD
has heard 0.2 s of silence, and commits the turn when the returned future resolves (not
before the VAD's own end of speech and the minimum endpointing delay).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import numpy as np
from livekit import rtc
from livekit.agents.language import LanguageCode
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions
from livekit.agents.voice.turn import TurnDetectionEvent

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
WINDOW_SAMPLES = 19200  # the model's receptive field: 1.2 s at 16 kHz
REQUEST_SILENCE = 0.2  # silence the session has heard when it asks (MIN_SILENCE_DURATION_MS)
SILENCE_BELOW = 0.35  # Silero P(speech) under which a window counts as silence


@dataclass(frozen=True)
class EouPolicy:
    """When to take the turn, given the model's P(turn ended) after `silence` seconds."""

    fast_threshold: float = 0.85
    """Probability needed right at the start of a pause."""
    slow_threshold: float = 0.7
    """Probability needed just before `max_silence`; the requirement falls linearly."""
    max_silence: float = 0.86
    """Silence after which the turn is taken regardless of the model."""
    step: float = 0.06
    """Seconds of new audio between two looks at the model."""

    def __post_init__(self) -> None:
        if not 0.0 < self.slow_threshold <= self.fast_threshold <= 1.0:
            raise ValueError("need 0 < slow_threshold <= fast_threshold <= 1")
        if self.max_silence <= REQUEST_SILENCE:
            raise ValueError(f"max_silence must exceed {REQUEST_SILENCE} s")
        if self.step <= 0:
            raise ValueError("step must be > 0")

    def required_probability(self, silence: float) -> float:
        if silence >= self.max_silence:
            return 0.0
        frac = max(0.0, silence - REQUEST_SILENCE) / (self.max_silence - REQUEST_SILENCE)
        return self.fast_threshold - frac * (self.fast_threshold - self.slow_threshold)

    def turn_ended(self, probability: float, silence: float) -> bool:
        return probability >= self.required_probability(silence)


class AdaptiveEouDetector:
    """Streaming turn detector for ``TurnHandlingOptions(turn_detection=...)``."""

    def __init__(self, policy: EouPolicy | None = None) -> None:
        self.policy = policy or EouPolicy()
        from livekit.local_inference import init_eot

        init_eot()  # load the weights (~100 MB) now, not on the first pause

    @property
    def model(self) -> str:
        return "turn-detector-v1-mini/adaptive"

    @property
    def provider(self) -> str:
        return "livekit-local-inference"

    def stream(
        self, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> AdaptiveEouStream:
        return AdaptiveEouStream(self)


class AdaptiveEouStream:
    """One session's audio and its pending end-of-turn question.

    Silence is measured here, on the audio, with the bundled Silero model (~0.1 ms per 32 ms
    window): the session asks for a prediction some VAD-processing lag after 0.2 s of
    silence, so counting from the request would under-estimate the pause.
    """

    def __init__(self, detector: AdaptiveEouDetector) -> None:
        from livekit.local_inference import EOT, VAD, VAD_WINDOW_SAMPLES

        self._detector = detector
        self._policy = detector.policy
        self._eot = EOT()
        self._vad = VAD()
        self._vad_window = int(VAD_WINDOW_SAMPLES)
        self._vad_pending = np.zeros(0, dtype=np.int16)
        self._trailing_silence = 0  # samples since the last window that sounded like speech
        self._buf = np.zeros(WINDOW_SAMPLES, dtype=np.int16)
        self._filled = 0  # valid samples at the end of _buf
        self._resampler: rtc.AudioResampler | None = None
        self._in_format: tuple[int, int] | None = None
        self._closed = False
        self._request: asyncio.Future[TurnDetectionEvent] | None = None
        self._since_request = 0  # samples pushed since the pending request began
        self._last_probability = 0.0
        self._looks = 0  # model evaluations for the pending request
        self._new_audio = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- properties the session reads ------------------------------------------------------
    @property
    def model(self) -> str:
        return self._detector.model

    @property
    def provider(self) -> str:
        return self._detector.provider

    @property
    def is_fallback(self) -> bool:
        return False

    @property
    def prediction_timeout(self) -> float:
        # the session waits this long for our answer; we answer by max_silence
        return self._policy.max_silence + 2.0

    async def unlikely_threshold(self, language: LanguageCode | None) -> float | None:
        return 0.0  # the future resolves only once the turn has ended: never "unlikely"

    async def backchannel_threshold(self, language: LanguageCode | None) -> float | None:
        return None

    async def supports_language(self, language: LanguageCode | None) -> bool:
        return True

    @property
    def looks(self) -> int:
        """How many times the model has been asked about the current (or last) pause."""
        return self._looks

    @property
    def last_probability(self) -> float:
        return self._last_probability

    # -- audio -----------------------------------------------------------------------------
    @property
    def silence(self) -> float:
        """Seconds of trailing silence (at least what the session had heard when it asked)."""
        own = self._trailing_silence / SAMPLE_RATE
        if self._request is None:
            return own
        return max(own, REQUEST_SILENCE + self._since_request / SAMPLE_RATE)

    def push_audio(self, frame: rtc.AudioFrame) -> None:
        if self._closed:
            return
        for f in self._to_16k(frame):
            pcm = np.frombuffer(f.data, dtype=np.int16)
            if f.num_channels > 1:
                pcm = pcm.reshape(-1, f.num_channels).mean(axis=1).astype(np.int16)
            self._append(pcm)

    def _to_16k(self, frame: rtc.AudioFrame) -> list[rtc.AudioFrame]:
        fmt = (frame.sample_rate, frame.num_channels)
        if self._in_format != fmt:
            self._in_format = fmt
            self._resampler = (
                None
                if frame.sample_rate == SAMPLE_RATE
                else rtc.AudioResampler(
                    input_rate=frame.sample_rate,
                    output_rate=SAMPLE_RATE,
                    num_channels=frame.num_channels,
                    quality=rtc.AudioResamplerQuality.QUICK,
                )
            )
        return [frame] if self._resampler is None else self._resampler.push(frame)

    def _append(self, pcm: np.ndarray) -> None:
        n = len(pcm)
        if n == 0:
            return
        if n >= WINDOW_SAMPLES:
            self._buf[:] = pcm[-WINDOW_SAMPLES:]
        else:
            self._buf[:-n] = self._buf[n:]
            self._buf[-n:] = pcm
        self._filled = min(WINDOW_SAMPLES, self._filled + n)
        self._track_silence(pcm)
        if self._request is not None:
            self._since_request += n
            if self.silence >= self._policy.max_silence:
                self._resolve(self._last_probability, inference_duration=None)
            else:
                self._new_audio.set()

    def _track_silence(self, pcm: np.ndarray) -> None:
        pending = np.concatenate([self._vad_pending, pcm])
        w = self._vad_window
        whole = len(pending) // w * w
        for i in range(0, whole, w):
            if self._vad.predict(pending[i : i + w]) >= SILENCE_BELOW:
                self._trailing_silence = 0
            else:
                self._trailing_silence += w
        self._vad_pending = pending[whole:]

    def _snapshot(self) -> np.ndarray:
        return self._buf[WINDOW_SAMPLES - self._filled :].copy()

    # -- requests --------------------------------------------------------------------------
    def predict(self) -> asyncio.Future[TurnDetectionEvent]:
        fut: asyncio.Future[TurnDetectionEvent] = asyncio.get_running_loop().create_future()
        if self._closed:
            fut.set_result(_event(1.0))
            return fut
        self.cancel_inference()
        self._request = fut
        self._since_request = 0
        self._last_probability = 0.0
        self._looks = 0
        self._new_audio.clear()
        if self.silence >= self._policy.max_silence:
            self._resolve(0.0, inference_duration=None)
        else:
            self._task = asyncio.create_task(self._watch(fut))
        return fut

    def cancel_inference(self, *, timed_out: bool = False) -> None:
        fut, self._request = self._request, None
        if fut is not None and not fut.done():
            fut.set_result(_event(0.0))
        self._stop_watch()

    def _stop_watch(self) -> None:
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
        self._task = None

    def _resolve(self, probability: float, *, inference_duration: float | None) -> None:
        fut, self._request = self._request, None
        logger.debug(
            "turn ended",
            extra={
                "probability": round(probability, 3),
                "silence": round(self._trailing_silence / SAMPLE_RATE, 3),
                "inference": inference_duration,
            },
        )
        if fut is not None and not fut.done():
            fut.set_result(_event(probability, inference_duration=inference_duration))
        self._stop_watch()

    def flush(self, reason: str | None = None) -> None:
        self.cancel_inference()
        self._filled = 0
        self._since_request = 0

    def end_input(self) -> None:
        self.flush()
        self._closed = True

    async def aclose(self) -> None:
        task = self._task
        self.end_input()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._eot.close()
        self._vad.close()

    async def _watch(self, fut: asyncio.Future[TurnDetectionEvent]) -> None:
        """Ask the model every `step` of new audio until the policy takes the turn."""
        step_samples = max(1, int(self._policy.step * SAMPLE_RATE))
        next_look = 0
        while self._request is fut:
            if self._since_request < next_look:
                self._new_audio.clear()
                await self._new_audio.wait()
                continue
            silence = self.silence
            snapshot = self._snapshot()
            t0 = time.perf_counter()
            probability = float(await asyncio.to_thread(self._eot.predict, snapshot))
            spent = time.perf_counter() - t0
            if self._request is not fut:
                return
            self._last_probability = probability
            self._looks += 1
            if self._policy.turn_ended(probability, silence):
                self._resolve(probability, inference_duration=spent)
                return
            next_look = self._since_request + step_samples


def _event(probability: float, *, inference_duration: float | None = None) -> TurnDetectionEvent:
    return TurnDetectionEvent(
        type="eot_prediction",
        end_of_turn_probability=probability,
        last_speaking_time=time.time(),
        inference_duration=inference_duration,
    )

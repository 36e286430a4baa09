"""Offline STT `local`: CMU pocketsphinx with the English model its wheel ships.

Non-streaming (one `recognize()` per VAD-delimited utterance). Input of any rate / channel
count is mixed down to mono and resampled to 16 kHz with `rtc.AudioResampler`; decoding runs
in worker processes, because pocketsphinx holds the GIL while it decodes and would otherwise
stall the event loop (VAD included). A decoder costs ~0.3 s and ~100 MB to build (measured on
the 2-core dev box), so each STT keeps a small pool of processes, started lazily or by
`prewarm()`. Decoding with the default "fast" profile runs at ~0.2x real time.

Accuracy is rough (it is a 2010s HMM model): on the JFK sample it gets the content words
("fellow", "country") but not every function word.
"""

from __future__ import annotations

import asyncio
import json
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Literal

import numpy as np
from livekit import rtc
from livekit.agents import APIConnectionError, LanguageCode, stt, utils
from livekit.agents.types import NOT_GIVEN, APIConnectOptions, NotGivenOr
from livekit.agents.utils import AudioBuffer

from . import _sphinx_worker

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])
SAMPLE_RATE = 16_000
LANGUAGE = "en"

SILENT_PEAK = 2
"""Audio whose samples never exceed this (|x| <= 2 of 32767, below -80 dBFS) has no signal:
pocketsphinx would hear a word in it ("dog", "it"), so it is not decoded."""

Profile = Literal["fast", "accurate"]
# "fast" trades a little accuracy for ~2x speed (fewer active HMMs, fewer Gaussians);
# "accurate" is pocketsphinx's own default configuration.
PROFILES: dict[str, dict[str, Any]] = {
    "fast": {"maxhmmpf": 3000, "topn": 2, "pl_window": 10},
    "accurate": {},
}


class _WorkerProcess:
    """One decoder process; calls are blocking and serialised (run them in a thread)."""

    def __init__(self, options: dict[str, Any]) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "providers._sphinx_worker", json.dumps(options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=_PACKAGE_ROOT,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._stdin, self._stdout = self._proc.stdin, self._proc.stdout
        if _sphinx_worker.read_frame(self._stdout) != b"ready":
            self.close()
            raise APIConnectionError("the pocketsphinx worker process failed to start")

    def decode(self, pcm: bytes) -> str:
        try:
            _sphinx_worker.write_frame(self._stdin, pcm)
            reply = _sphinx_worker.read_frame(self._stdout)
        except (OSError, ValueError) as exc:  # ValueError: a pipe closed by shutdown
            raise APIConnectionError("the pocketsphinx worker process died") from exc
        if reply is None:
            raise APIConnectionError("the pocketsphinx worker process died")
        return reply.decode()

    def alive(self) -> bool:
        return self._proc.poll() is None

    def kill(self) -> None:
        """Stop a decode in progress (the blocked `decode()` then raises APIConnectionError)."""
        self._proc.kill()

    def close(self) -> None:
        for pipe in (self._stdin, self._stdout):
            try:
                pipe.close()
            except OSError:
                pass
        try:
            self._proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


class DecodeJob:
    """One decode, abortable from another thread: `abort()` kills the process decoding it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._worker: _WorkerProcess | None = None
        self.aborted = False

    def attach(self, worker: _WorkerProcess | None) -> bool:
        with self._lock:
            self._worker = worker
            return not self.aborted

    def abort(self) -> None:
        with self._lock:
            self.aborted = True
            if self._worker is not None:
                self._worker.kill()


class _DecoderProcesses:
    """Up to `size` worker processes, started on demand; a caller blocks while all are busy."""

    def __init__(self, options: dict[str, Any], size: int) -> None:
        self._options = options
        self._size = size
        self._slots = threading.BoundedSemaphore(size)
        self._idle: queue.SimpleQueue[_WorkerProcess] = queue.SimpleQueue()
        self._all: list[_WorkerProcess] = []
        self._count = 0
        """Workers running or starting: never more than `size` (a decode that arrived while the
        prewarmed one was still starting used to start another one beside it)."""
        self._lock = threading.Lock()
        self._closed = False

    def _reserve(self, *, only_first: bool = False) -> bool:
        with self._lock:
            if self._closed:
                raise APIConnectionError("the local STT is closed")
            if self._count >= (1 if only_first else self._size):
                return False
            self._count += 1
            return True

    def _new(self) -> _WorkerProcess:
        """Start a worker for a reservation (`_reserve`)."""
        try:
            worker = _WorkerProcess(self._options)
        except BaseException:
            with self._lock:
                self._count -= 1
            raise
        with self._lock:
            if not self._closed:
                self._all.append(worker)
                return worker
        worker.close()  # shut down while this one started
        raise APIConnectionError("the local STT is closed")

    def warm(self) -> None:
        """Start one worker now, if none exists (or is starting) yet."""
        if self._reserve(only_first=True):
            self._idle.put(self._new())

    def _take(self) -> _WorkerProcess:
        """An idle worker; else a new one while the pool may grow; else the one that becomes
        idle next (with a slot held, some worker is idle or starting, not busy)."""
        while True:
            worker = self._idle_worker()
            if worker is not None:
                return worker
            if self._reserve():
                return self._new()
            try:
                worker = self._idle.get(timeout=0.2)
            except queue.Empty:
                continue  # (re-checks closed and the count: a worker may have died meanwhile)
            if worker.alive():
                return worker
            self._discard(worker)

    def decode(self, pcm: bytes, job: DecodeJob | None = None) -> str:
        job = job or DecodeJob()
        with self._slots:
            if self._closed:
                raise APIConnectionError("the local STT is closed")
            worker = self._take()
            if not job.attach(worker):
                self._idle.put(worker)
                raise APIConnectionError("decode aborted")
            try:
                text = worker.decode(pcm)
            except APIConnectionError:
                text = None
            job.attach(None)
            if text is not None and not job.aborted:
                if self._closed:  # shut down meanwhile: the pool no longer owns it
                    worker.close()
                else:
                    self._idle.put(worker)
                return text
            self._discard(worker)  # died, or killed by abort() (maybe just after it answered)
            if job.aborted:
                if not self._closed and self._reserve():
                    # the replacement starts now, while this slot is held: the next call waits
                    # for it rather than spawning one itself
                    self._idle.put(self._new())
                raise APIConnectionError("decode aborted")
            raise APIConnectionError("the pocketsphinx worker process died")

    def _idle_worker(self) -> _WorkerProcess | None:
        """An idle worker that is still running; one that died while idle (OOM killer, a signal)
        is replaced instead of failing the user's next words."""
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                return None
            if worker.alive():
                return worker
            self._discard(worker)

    def _discard(self, worker: _WorkerProcess) -> None:
        with self._lock:
            if worker in self._all:
                self._all.remove(worker)
                self._count -= 1
        worker.close()

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            workers, self._all = self._all, []
            self._count = 0
        while True:
            try:
                self._idle.get_nowait()
            except queue.Empty:
                break
        for worker in workers:
            # kill, not wait: a decode in progress (seconds for a long segment) has no caller to
            # answer any more; its blocked read then fails and the decode ends at once
            worker.kill()
            worker.close()


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


    def __init__(self, *, profile: Profile = "fast", max_decoders: int = 1, early: bool = True) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        if profile not in PROFILES:
            raise ValueError(
                f"unknown pocketsphinx profile {profile!r}; use one of {list(PROFILES)}"
            )
        if max_decoders < 1:
            raise ValueError("max_decoders must be at least 1")
        self._profile = profile
        self.free_recognitions = early
        """A recognition costs only local CPU, so the agent may start one at a short pause and
        drop it if the user goes on (`agent.early_recognition`)."""
        # pocketsphinx logs every empty utterance as an ERROR on stderr; keep it quiet
        self._pool = _DecoderProcesses({"loglevel": "FATAL", **PROFILES[profile]}, max_decoders)
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

    def recognize_pcm(self, pcm: bytes, job: DecodeJob | None = None) -> str:
        """Blocking: decode 16 kHz mono 16-bit PCM to text ("" for silence / no audio)."""
        samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype=np.int16)
        if not samples.size or int(np.abs(samples.astype(np.int32)).max()) <= SILENT_PEAK:
            return ""
        return self._pool.decode(pcm, job)

    async def _recognize_impl(
        self,
        buffer: AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        frames = buffer if isinstance(buffer, list) else [buffer]
        pcm = await asyncio.to_thread(to_mono_16k, frames)
        duration = len(pcm) / 2 / SAMPLE_RATE
        text = await self._decode(pcm) if pcm else ""
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            request_id=utils.shortuuid(),
            alternatives=[
                stt.SpeechData(
                    language=LanguageCode(LANGUAGE), text=text, start_time=0.0, end_time=duration
                )
            ],
        )

    async def _decode(self, pcm: bytes) -> str:
        job = DecodeJob()
        try:
            return await asyncio.to_thread(self.recognize_pcm, pcm, job)
        except asyncio.CancelledError:
            # nobody wants this transcript any more (e.g. a dropped early recognition): stop the
            # decoder instead of keeping it busy; a fresh one replaces it
            job.abort()
            raise

    async def aclose(self) -> None:
        if self._prewarm_task is not None:
            await asyncio.gather(self._prewarm_task, return_exceptions=True)
        await asyncio.to_thread(self._pool.shutdown)

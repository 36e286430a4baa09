"""Room-less audio I/O for an AgentSession: a queue-fed input and a sink that 'plays' in real time.

`QueueAudioInput.push_wav(...)` feeds a recording faster than real time (frames go to the
session as fast as it takes them). `ClockedAudioSink` accepts frames instantly, reports
playback as if a speaker played them at 1x (so interruptions land mid-playback), and stops
at the position reached when `clear_buffer()` is called.
"""

from __future__ import annotations

import asyncio
import time
import wave
from pathlib import Path

import numpy as np
from livekit import rtc
from livekit.agents.voice import io

FRAME_MS = 20


def read_wav(path: Path, start_s: float = 0.0, end_s: float | None = None) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1
        rate = w.getframerate()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    lo = int(start_s * rate)
    hi = len(data) if end_s is None else int(end_s * rate)
    return data[lo:hi], rate


def frames_of(samples: np.ndarray, rate: int, frame_ms: int = FRAME_MS) -> list[rtc.AudioFrame]:
    n = rate * frame_ms // 1000
    out = []
    for i in range(0, len(samples) - n + 1, n):
        chunk = np.ascontiguousarray(samples[i : i + n], dtype="<i2")
        out.append(rtc.AudioFrame(chunk.tobytes(), rate, 1, n))
    return out


class QueueAudioInput(io.AudioInput):
    def __init__(self) -> None:
        super().__init__(label="test-input")
        self._q: asyncio.Queue[rtc.AudioFrame | None] = asyncio.Queue()

    def push(self, frames: list[rtc.AudioFrame]) -> None:
        for f in frames:
            self._q.put_nowait(f)

    def push_speech(self, samples: np.ndarray, rate: int, *, trailing_silence_s: float = 1.0) -> None:
        silence = np.zeros(int(rate * trailing_silence_s), dtype="<i2")
        self.push(frames_of(np.concatenate([samples, silence]), rate))

    def close(self) -> None:
        self._q.put_nowait(None)

    async def __anext__(self) -> rtc.AudioFrame:
        frame = await self._q.get()
        if frame is None:
            raise StopAsyncIteration
        return frame


class ClockedAudioSink(io.AudioOutput):
    def __init__(self) -> None:
        super().__init__(label="test-sink", capabilities=io.AudioOutputCapabilities(pause=False))
        self.frames: list[rtc.AudioFrame] = []
        self.segments: list[tuple[float, bool]] = []
        """(playback_position, interrupted) per finished segment."""
        self._pushed = 0.0
        self._started_at: float | None = None
        self._finish: asyncio.TimerHandle | None = None

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        if self._started_at is None:
            self._started_at = time.monotonic()
            self.on_playback_started(created_at=time.time())
        self.frames.append(frame)
        self._pushed += frame.duration

    def _played(self) -> float:
        if self._started_at is None:
            return 0.0
        return min(self._pushed, time.monotonic() - self._started_at)

    def flush(self) -> None:
        super().flush()
        if self._started_at is None:
            return
        remaining = max(0.0, self._pushed - self._played())
        self._finish = asyncio.get_running_loop().call_later(remaining, self._finished, False)

    def clear_buffer(self) -> None:
        if self._started_at is None:
            return
        if self._finish is not None:
            self._finish.cancel()
        self._finished(True)

    def _finished(self, interrupted: bool) -> None:
        position = self._played()
        self._started_at, self._pushed, self._finish = None, 0.0, None
        self.segments.append((position, interrupted))
        self.on_playback_finished(playback_position=position, interrupted=interrupted)

"""Reading audio files into `rtc.AudioFrame`s and writing WAVs.

Decoding is PyAV's (WAV, MP3, Opus, Ogg/Vorbis, FLAC, ... anything FFmpeg reads); PyAV also
converts the sample format and mixes down to mono. Sample-rate conversion is livekit's
`rtc.AudioResampler`, the same resampler the rest of the pipeline uses.
"""

from __future__ import annotations

import os
import wave
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from livekit import rtc

DEFAULT_FRAME_MS = 20


class AudioFileError(ValueError):
    """The file is missing, unreadable or holds no audio stream."""


@dataclass(frozen=True)
class DecodedAudio:
    """Mono 16-bit PCM at `sample_rate`, as one contiguous buffer."""

    pcm: bytes
    sample_rate: int
    source_rate: int
    source_channels: int

    @property
    def num_samples(self) -> int:
        return len(self.pcm) // 2

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate

    def frames(self, frame_ms: int = DEFAULT_FRAME_MS) -> list[rtc.AudioFrame]:
        return list(split_frames(self.pcm, self.sample_rate, frame_ms))

    def slice(self, start: float, end: float | None = None) -> DecodedAudio:
        """The part between `start` and `end` seconds."""
        a = max(0, int(start * self.sample_rate)) * 2
        b = len(self.pcm) if end is None else max(a, int(end * self.sample_rate) * 2)
        return DecodedAudio(self.pcm[a:b], self.sample_rate, self.source_rate, self.source_channels)


def split_frames(pcm: bytes, sample_rate: int, frame_ms: int = DEFAULT_FRAME_MS) -> Iterator[rtc.AudioFrame]:
    """Cut mono 16-bit PCM into frames of `frame_ms` (the last one may be shorter)."""
    step = max(1, sample_rate * frame_ms // 1000) * 2
    for i in range(0, len(pcm), step):
        chunk = pcm[i : i + step]
        yield rtc.AudioFrame(chunk, sample_rate, 1, len(chunk) // 2)


def silence(seconds: float, sample_rate: int) -> bytes:
    return bytes(2 * int(seconds * sample_rate))


def decode_file(path: str | Path, sample_rate: int | None = 16_000) -> DecodedAudio:
    """Decode any audio file to mono 16-bit PCM; `sample_rate` None keeps the file's rate."""
    p = Path(path)
    if p.is_dir():
        raise AudioFileError(f"{p} is a directory, not an audio file")
    if not p.is_file():
        raise AudioFileError(f"audio file not found: {p}")
    try:
        container = av.open(str(p))
    except av.FFmpegError as exc:
        raise AudioFileError(f"cannot open {p} as audio: {exc}") from exc
    with container:
        if not container.streams.audio:
            raise AudioFileError(f"{p} has no audio stream")
        stream = container.streams.audio[0]
        source_rate = int(stream.codec_context.sample_rate or stream.rate or 0)
        source_channels = int(stream.codec_context.channels or 1)
        # PyAV converts the format and mixes down to mono at the source rate
        mixer = av.AudioResampler(format="s16", layout="mono", rate=source_rate or None)
        chunks: list[bytes] = []
        try:
            for frame in container.decode(stream):
                for out in mixer.resample(frame):
                    chunks.append(out.to_ndarray().astype(np.int16, copy=False).tobytes())
            for out in mixer.resample(None):
                chunks.append(out.to_ndarray().astype(np.int16, copy=False).tobytes())
        except av.FFmpegError as exc:
            raise AudioFileError(f"cannot decode {p}: {exc}") from exc
    pcm = b"".join(chunks)
    if not pcm:
        raise AudioFileError(f"{p} decoded to no audio")
    target = sample_rate or source_rate
    if target != source_rate:
        pcm = resample_pcm(pcm, source_rate, target)
    return DecodedAudio(pcm, target, source_rate, source_channels)


def resample_pcm(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """Mono 16-bit PCM from one rate to another (livekit's resampler, high quality)."""
    if from_rate == to_rate or not pcm:
        return pcm
    resampler = rtc.AudioResampler(from_rate, to_rate, num_channels=1, quality=rtc.AudioResamplerQuality.HIGH)
    out: list[bytes] = []
    for frame in split_frames(pcm, from_rate, 100):
        out.extend(bytes(f.data) for f in resampler.push(frame))
    out.extend(bytes(f.data) for f in resampler.flush())
    return b"".join(out)


def frames_to_pcm(frames: Iterable[rtc.AudioFrame], sample_rate: int) -> bytes:
    """Concatenate frames as mono 16-bit PCM at `sample_rate` (mixing down / resampling as needed)."""
    out = bytearray()
    resampler: rtc.AudioResampler | None = None
    rate: int | None = None
    for frame in frames:
        data = np.frombuffer(frame.data, dtype=np.int16)
        if frame.num_channels > 1:
            data = data.reshape(-1, frame.num_channels).mean(axis=1).round().astype(np.int16)
        mono = rtc.AudioFrame(data.tobytes(), frame.sample_rate, 1, len(data))
        if frame.sample_rate == sample_rate:
            out += data.tobytes()
            continue
        if resampler is None or rate != frame.sample_rate:
            if resampler is not None:
                out += b"".join(bytes(f.data) for f in resampler.flush())
            resampler = rtc.AudioResampler(frame.sample_rate, sample_rate, num_channels=1)
            rate = frame.sample_rate
        out += b"".join(bytes(f.data) for f in resampler.push(mono))
    if resampler is not None:
        out += b"".join(bytes(f.data) for f in resampler.flush())
    return bytes(out)


def write_wav(path: str | Path, pcm: bytes, sample_rate: int, channels: int = 1) -> Path:
    """Write 16-bit PCM to a WAV file (parent folders are created)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    # the file is opened here, not by `wave`: a path that cannot be written then fails with
    # the OSError alone (wave.open leaves a half-built writer that complains when collected)
    with open(p, "wb") as f, wave.open(f, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm)
    return p


def check_writable(path: str | Path, what: str, example: str = "out/reply.wav") -> Path:
    """Fail now, naming `what` (e.g. "--out"), if a file cannot be written at `path` later."""
    p = Path(path)
    if str(path) in ("", ".") or p.is_dir():
        raise ValueError(f"{what} {str(path)!r} is a directory; give a file name such as {example}")
    parent = p.parent
    while not parent.exists():  # the nearest folder that exists must let us create the rest
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{what} {str(path)!r}: {parent} is a file, not a folder")
    target = p if p.exists() else parent
    if not os.access(target, os.W_OK):
        raise ValueError(f"{what} {str(path)!r}: {target} is not writable")
    return p

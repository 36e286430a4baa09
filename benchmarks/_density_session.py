"""One measured session for the density benchmark, and the probes around it.

The session is the agent's own (`build_agent_session` + `VoiceSession`: turn handling from
`agent.turns`, `BrainAgent` with an offline brain, the event bridge on a `MemoryTransport`)
with the process's Silero VAD, the stub STT / TTS of `_density_stubs`, a real recording paced
in real time as the microphone and the simulated speaker of `agent.audio_io` as the output.

Measured here: turn latency (reference turn end -> first reply audio, scored like
benchmarks/turn_latency.py, on a clip of four real user turns each followed by 2.5 s of silence), frame lag (how late each microphone frame reaches the session,
against the time its last sample was recorded) and event-loop lag (oversleep of 10 ms sleeps).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _density_stubs import FixedSTT, InstantTTS
from _turn_scoring import Turn, score, turns_from_reference
from livekit import rtc

from agent.audio_io import PacedAudioInput, SimClock, attach_simulated_io

ROOT = Path(__file__).resolve().parents[1]
AUDIO = ROOT.parent / "shared" / "audio"
# the microphone as livekit-agents' RoomIO delivers it by default (AudioInputOptions): 24 kHz,
# 50 ms frames; the VAD resamples to 16 kHz itself, as in a room
RATE = 24_000
"""Default microphone rate (RoomIO's); `--input-rate 16000` measures asking RoomIO for 16 kHz."""
FRAME_MS = 50
SERVED = "user"
# whole user turns cut from the recordings (in pauses), each followed by GAP_S of silence in
# which the agent answers: (file, start, end); every piece ends with one reference turn end
PIECES = (
    ("multi_utterance_16k_mono.wav", 0.0, 6.9),
    ("multi_utterance_16k_mono.wav", 39.8, 46.83),
    ("multi_utterance_16k_mono.wav", 48.8, 50.0),
    ("jfk_16k_mono.wav", 0.0, 10.65),  # one turn with two ~1 s pauses inside; applause cut off
)
GAP_S = 2.5
FADE_S = 0.01


@dataclass(frozen=True)
class Clip:
    pcm: bytes
    turns: list[Turn]
    duration: float
    rate: int = RATE


def load_clip(rate: int = RATE) -> Clip:
    """~36 s: four real user turns (four reference turn ends), each followed by 2.5 s of silence."""
    from agent.audio_files import decode_file

    ref = json.loads((AUDIO / "turns.json").read_text())
    parts: list[np.ndarray] = []
    speech: list[list[float]] = []
    ends: list[float] = []
    offset = 0.0
    fade = int(FADE_S * rate)
    ramp = np.linspace(0.0, 1.0, fade)
    for name, a, b in PIECES:
        audio = decode_file(AUDIO / name, rate)
        x = np.frombuffer(audio.slice(a, b).pcm, dtype=np.int16).astype(np.float32)
        x[:fade] *= ramp  # no clicks at the cuts
        x[-fade:] *= ramp[::-1]
        parts += [x, np.zeros(int(GAP_S * rate), dtype=np.float32)]
        speech += [[s - a + offset, e - a + offset] for s, e in ref[name]["speech"] if a <= s and e <= b]
        ends += [t - a + offset for t in ref[name]["turn_ends"] if a < t <= b]
        offset += (b - a) + GAP_S
    pcm = np.concatenate(parts).astype(np.int16).tobytes()
    return Clip(pcm, turns_from_reference(speech, ends), len(pcm) / 2 / rate, rate)


def save_clip(clip: Clip, directory: Path) -> None:
    """For job processes: decoding twice per job would be set-up work on 64 processes."""
    (directory / "clip.pcm").write_bytes(clip.pcm)
    (directory / "clip.json").write_text(json.dumps({"rate": clip.rate, "turns": [[t.start, t.end] for t in clip.turns]}))


def read_clip(directory: Path) -> Clip:
    pcm = (directory / "clip.pcm").read_bytes()
    meta = json.loads((directory / "clip.json").read_text())
    turns = [Turn(a, b) for a, b in meta["turns"]]
    return Clip(pcm, turns, len(pcm) / 2 / meta["rate"], meta["rate"])


# -- probes -----------------------------------------------------------------------------------


class LagMic(PacedAudioInput):
    """The paced microphone, recording how late each frame reaches its reader (ms)."""

    def __init__(self, clock: SimClock, rate: int = RATE) -> None:
        super().__init__(clock, rate, frame_ms=FRAME_MS)
        self.lag_ms: list[float] = []
        self._consumed = 0.0

    async def __anext__(self) -> rtc.AudioFrame:
        frame = await super().__anext__()
        self._consumed += frame.duration
        if self.clock.started:
            self.lag_ms.append(max(0.0, (self.clock.now() - self._consumed) * 1000 / self.clock.speed))
        return frame


class LoopLag:
    """Oversleep of back-to-back 10 ms sleeps: how long ready callbacks wait for the loop."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.lag_ms: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._tick(), name="density-loop-lag")

    async def _tick(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(self.interval)
            self.lag_ms.append((time.perf_counter() - t - self.interval) * 1000)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def memory_mb(pid: int | str = "self") -> dict[str, float]:
    """Resident and proportional set size (PSS splits shared pages among the processes mapping them)."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Rss", "Pss", "Pss_Anon", "Pss_File", "Shared_Clean", "Private_Dirty"):
                out[key.lower()] = int(rest.split()[0]) / 1024
    return out


def _stat_cpu(path: str) -> float:
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | str = "self") -> float:
    """user + system CPU time of a process, all threads (from /proc/<pid>/stat)."""
    return _stat_cpu(f"/proc/{pid}/stat")


def loop_thread_cpu_seconds() -> float:
    """CPU time of this process's main thread (the event loop); the rest is other threads'
    (Silero's ONNX inference runs in the loop's default executor)."""
    return _stat_cpu(f"/proc/self/task/{os.getpid()}/stat")


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


# -- the session ------------------------------------------------------------------------------


@dataclass
class SessionResult:
    index: int
    latencies: list[float] = field(default_factory=list)
    premature: int = 0
    missed: int = 0
    replies: int = 0
    premature_at: list[float] = field(default_factory=list)
    missed_at: list[float] = field(default_factory=list)
    frame_lag_ms: list[float] = field(default_factory=list)
    envelopes: int = 0
    error: str | None = None

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        lag = d.pop("frame_lag_ms")
        d["frame_lag_p50_ms"], d["frame_lag_p99_ms"] = pct(lag, 50), pct(lag, 99)
        d["frame_lag_max_ms"] = max(lag) if lag else None
        return d


ENV_VAD_ENGINE = "DENSITY_VAD_ENGINE"
"""Set by the benchmark when it asks for a VAD engine other than the default (job processes
inherit it)."""


def density_settings() -> Any:
    """The project's defaults (no .env): turn handling, bridge; offline brain, no greeting.
    The VAD engine is the default unless `DENSITY_VAD_ENGINE` names one."""
    from agent.config import AgentSettings
    from agent.turns import TurnSettings
    from brain import BrainConfig
    from bridge import BridgeConfig
    from providers import SpeechSettings

    for var in [v for v in os.environ if v.startswith(("TURN_", "BRAIN_", "BRIDGE_", "AGENT_"))]:
        del os.environ[var]  # measure the code's defaults, not this shell's
    engine = {"vad_engine": os.environ[ENV_VAD_ENGINE]} if os.environ.get(ENV_VAD_ENGINE) else {}
    return AgentSettings(
        _env_file=None,  # type: ignore[call-arg]
        brain=BrainConfig(_env_file=None, backend="offline"),  # type: ignore[call-arg]
        speech=SpeechSettings(_env_file=None),  # type: ignore[call-arg]
        turn=TurnSettings(_env_file=None, **engine),  # type: ignore[call-arg]
        bridge=BridgeConfig(_env_file=None),  # type: ignore[call-arg]
        greeting_mode="off",
        inactivity_timeout=0,
    )


STACKS = ("ours", "bare")
# what the offline brain answers to FixedSTT's words; the bare stack says the same
BARE_REPLY = (
    "You said: so tell me more about that. I'm the offline assistant; "
    "ask me about the weather, or ask me to book a table."
)


class _WordsAgent:
    """`bare` stack: a plain livekit Agent answering every turn with BARE_REPLY, word by word."""

    @staticmethod
    def build() -> Any:
        from livekit.agents import Agent

        class WordsAgent(Agent):
            def __init__(self) -> None:
                super().__init__(instructions="density benchmark (bare livekit-agents)")

            async def llm_node(self, chat_ctx: Any, tools: Any, model_settings: Any) -> Any:  # type: ignore[override]
                for i, w in enumerate(BARE_REPLY.split(" ")):
                    yield w if i == 0 else " " + w
                    await asyncio.sleep(0)

        return WordsAgent()


class DensitySession:
    """Build, `start()`, then `play()` when told to go; `result()` scores it.

    `stack` "ours": the agent's `VoiceSession` (BrainAgent + offline brain, turn tracking,
    latency metrics) with the event bridge on a `MemoryTransport`. "bare": the same
    `AgentSession` (same turn handling, VAD, STT, TTS, audio I/O) with a plain livekit `Agent`
    saying the same words: no brain, no bridge; the difference is what ours costs.
    """

    def __init__(self, index: int, vad: Any, settings: Any, clip: Clip, *, stack: str = "ours") -> None:
        from agent.voice_session import VoiceSession, build_agent_session
        from brain import create_voice_brain
        from bridge import MemoryTransport

        if stack not in STACKS:
            raise ValueError(f"stack must be one of {STACKS}, got {stack!r}")
        self.index = index
        self.clip = clip
        self.stack = stack
        # the replies are ~20 words: 0.05 s per word keeps them ~1 s long
        self.session = build_agent_session(
            settings, vad=vad, stt=FixedSTT(), tts=InstantTTS(seconds_per_word=0.05), simulated=True
        )
        self.clock = SimClock(1.0)
        self.io = attach_simulated_io(self.session, self.clock, input_rate=clip.rate)
        self.mic = LagMic(self.clock, clip.rate)
        self.session.input.audio = self.mic
        self.brain: Any = None
        self.voice: Any = None
        self.transport = MemoryTransport([SERVED])
        if stack == "ours":
            self.brain = create_voice_brain(settings.brain)
            self.voice = VoiceSession(
                settings, brain=self.brain, session=self.session, conversation_id=f"density-{index}", user_id=SERVED
            )
        self.error: str | None = None

    async def start(self) -> None:
        if self.voice is None:
            await self.session.start(_WordsAgent.build())
            return
        self.voice.attach_bridge(self.transport, served_identity=SERVED)
        await self.voice.start(greet=False, **self.voice.start_options())

    async def play(self) -> None:
        try:
            await self.mic.play(self.clip.pcm)
        except Exception as exc:  # noqa: BLE001 - reported, the other sessions go on
            self.error = f"{type(exc).__name__}: {exc}"

    def result(self) -> SessionResult:
        starts = [seg.start for seg in self.io.sink.segments]
        s = score(starts, self.clip.turns, self.clip.duration)
        return SessionResult(
            index=self.index,
            latencies=[round(x, 4) for x in s.latencies],
            premature=s.premature,
            missed=s.missed,
            replies=len(starts),
            premature_at=[round(x, 2) for x in s.premature_at],
            missed_at=[round(x, 2) for x in s.missed_at],
            frame_lag_ms=self.mic.lag_ms,
            envelopes=len(self.transport.sent),
            error=self.error,
        )

    async def aclose(self) -> None:
        if self.voice is not None:
            await self.voice.aclose()
            self.voice.tracker.close()
        else:
            await self.session.aclose()
        await self.io.aclose()
        if self.brain is not None:
            await self.brain.aclose()


def stagger(index: int, k: int, spread: float) -> float:
    """Start offset of session `index` of `k`: starts spread evenly over `spread` seconds, so
    the sessions' turn ends do not all fall on the same instant."""
    return spread * index / k if k > 1 else 0.0

"""Soak: many simulated sessions in one process, N at a time; leaks and memory growth.

A simulated session is what the worker runs per job, without a room: a brain of its own
(offline backend, example tools), the agent's `VoiceSession` (`AgentSession` + `BrainAgent`,
Silero VAD shared by the process), the event bridge on a `MemoryTransport`, the simulated
speaker and paced microphone of `agent.audio_io` (SPEED x real time) and the zero-latency stub
STT / TTS of `_density_stubs`. The user types to it through the bridge, as a web client would,
and talks over it once:

1. `user.text` "book a table for two" -> the brain calls `book_table`, which needs approval;
   the client answers the `hitl.request` with `hitl.respond` (approve) as the served identity;
   the tool runs and the confirmation is spoken to the end (the microphone is muted meanwhile);
2. `user.text` "tell me about the sea. ..." -> as soon as the reply plays, the user unmutes and
   speaks over it (2 s of a real recording): livekit-agents' VAD interruption
   (TURN_MIN_INTERRUPTION_DURATION) pauses the playback, and once the speech is transcribed the
   reply is stopped and the brain turn cancelled (`turn.done` interrupted);
3. that speech is a user turn of its own (the stub STT hears SPOKEN), answered to the end; the
   microphone delivers silence, 0.1 s at a time, until the session is quiet, so the session's
   VAD and STT streams see speech, its end and silence;
4. `agent.interrupt` once all is quiet: acknowledged, nothing else happens.

    .venv/bin/python benchmarks/soak.py                     # 1,000 sessions, 8 at a time (~7 min)
    .venv/bin/python benchmarks/soak.py --sessions 200 --json out/soak.json
    .venv/bin/python benchmarks/soak.py --tracemalloc       # + top allocation growth 100 -> end

Resources are sampled after a `gc.collect()`: asyncio tasks, open file descriptors
(/proc/self/fd), threads, resident memory (/proc/self/statm), every `--every` sessions.
tests/test_soak.py runs a shorter soak with the same code and asserts no leaks.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import logging
import os
import sys
import threading
import time
import tracemalloc
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _density_stubs import FixedSTT, InstantTTS  # noqa: E402

AUDIO = ROOT.parent / "shared" / "audio"
INPUT_RATE = 16_000
"""The simulated microphone's rate (`attach_simulated_io`'s default), the VAD's own."""
MIC_FRAME_MS = 50
"""Microphone frames as livekit-agents' RoomIO delivers them by default."""
SERVED = "user"
BOOK = "book a table for two"
CHAT = (
    "tell me about the sea. About the ships on it, the ports they sail from, the storms they meet "
    "on the way, the people who work on them by day and by night, the fish they bring home, the "
    "lighthouses that guide them and the songs they sing when the wind turns"
)
# what the offline brain answers to CHAT, in full; it is cut off by the barge-in while the brain
# is still streaming it (the first sentence plays as the rest streams in)
CHAT_REPLY = (
    f"You said: {CHAT}. I'm the offline assistant; ask me about the weather, or ask me to book a table."
)
# the barge-in: the first utterance of the recording (speech 0.032-2.016 s, turns.json), then the
# short pause after it; the stub STT "recognises" it as SPOKEN (no tool in the answer)
BARGE_IN = ("multi_utterance_16k_mono.wav", 0.0, 2.0)
SPOKEN = "thanks, that is enough"

SPEED = 4.0
"""Simulated time runs this many times faster than real time."""
CONCURRENCY = 8
# From turn 2 on, every session's microphone feeds two Silero streams (the turn detection's and
# the batch STT's) and the audio pipeline: about 0.55 s of CPU per session (the rest of it takes
# 0.05 s). SPEED * CONCURRENCY is what the process must keep up with (a VAD falling behind hears
# the barge-in late, when the brain has finished the reply); 4 x 8 fits on two shared cores.
TOKEN_DELAY = 0.025
"""The offline brain's delay per word (wall time): at SPEED, CHAT's reply streams for 6 s of
audio after its first sentence, so the brain is still writing it when the barge-in's transcript
comes in (2.6 s of audio after the reply started to play)."""
SECONDS_PER_WORD = 0.1
"""The stub TTS's pace: shorter replies, less silence to feed while they play."""


# thread pools: bounded, their threads started on demand and reused (a plain-function tool's
# thread, "brain-tool-<name>", is its own and ends with the call: not counted here)
_POOL_PREFIXES = ("asyncio_", "ThreadPoolExecutor-")


# -- resources --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resources:
    tasks: int
    fds: int
    threads: int
    pool_threads: int
    """Of `threads`, workers of thread pools (the loop's default executor): bounded, reused."""
    rss_mb: float
    py_blocks: int
    """Memory blocks Python's own allocator holds (`sys.getallocatedblocks`): Python objects,
    without the buffers of numpy, ONNX Runtime or the libraries' native code."""

    @classmethod
    def sample(cls, *, collect: bool = True) -> Resources:
        if collect:
            gc.collect()
        try:
            tasks = len(asyncio.all_tasks())
        except RuntimeError:
            tasks = 0
        threads = threading.enumerate()
        with open("/proc/self/statm") as f:
            rss_pages = int(f.read().split()[1])
        return cls(
            tasks=tasks,
            fds=len(os.listdir("/proc/self/fd")),
            threads=len(threads),
            pool_threads=sum(t.name.startswith(_POOL_PREFIXES) for t in threads),
            rss_mb=rss_pages * os.sysconf("SC_PAGE_SIZE") / 2**20,
            py_blocks=sys.getallocatedblocks(),
        )


@functools.cache
def barge_in_speech() -> bytes:
    """The user's words over the reply, mono 16-bit PCM at INPUT_RATE (decoded once per process)."""
    from agent.audio_files import decode_file

    name, start, end = BARGE_IN
    return decode_file(AUDIO / name, INPUT_RATE).slice(start, end).pcm


def _session_kinds() -> tuple[type, ...]:
    from livekit.agents import AgentSession

    from agent.voice_session import VoiceSession
    from brain import VoiceBrain
    from bridge import EventBridge, MemoryTransport

    return (AgentSession, VoiceSession, VoiceBrain, EventBridge, MemoryTransport)


def _session_objects() -> list[Any]:
    kinds = _session_kinds()
    gc.collect()
    # the type's MRO, not isinstance: isinstance reads `obj.__class__`, which on the openai
    # SDK's lazy proxies imports their modules, growing the memory this soak measures
    return [obj for obj in gc.get_objects() if any(k in type(obj).__mro__ for k in kinds)]


def existing_session_objects() -> weakref.WeakSet[Any]:
    """The per-session objects alive now (before a soak: the process's earlier work, e.g. a test
    that ran the worker's entrypoint on livekit's mock room, whose job context keeps its session)."""
    return weakref.WeakSet(_session_objects())


def live_session_objects(exclude: weakref.WeakSet[Any] | None = None) -> dict[str, int]:
    """How many per-session objects are still alive (after a collection), leaving out those in
    `exclude`: should be 0 between sessions."""
    counts = {k.__name__: 0 for k in _session_kinds()}
    for obj in _session_objects():
        if exclude is not None and obj in exclude:
            continue
        for k in _session_kinds():
            if k in type(obj).__mro__:
                counts[k.__name__] += 1
    return counts


# -- one session ------------------------------------------------------------------------------


class BridgeClient:
    """The web client's view: every envelope the bridge sends."""

    def __init__(self) -> None:
        self.envelopes: list[dict[str, Any]] = []

    def on_send(self, envelope_json: str) -> None:
        self.envelopes.append(json.loads(envelope_json))

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.envelopes if e["type"] == kind]


@dataclass
class SessionReport:
    index: int
    approval_ack: bool = False
    tool_ok: bool = False
    interrupt_ack: bool = False
    turn_reasons: list[str] = field(default_factory=list)
    """`turn.done` reasons from the bridge, in order."""
    outcomes: list[str] = field(default_factory=list)
    """The agent's view of each turn's speech (completed / interrupted ...)."""
    user_texts: list[str] = field(default_factory=list)
    """Each turn's user text: typed, typed, then what the STT heard in the barge-in."""
    played_cut: bool = False
    """The spoken barge-in stopped the reply's audio before all of it had played."""
    answer_played: bool = False
    """The answer to the barge-in played to the end."""
    seqs_ok: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.approval_ack
            and self.tool_ok
            and self.interrupt_ack
            and self.turn_reasons == ["completed", "interrupted", "completed"]
            and self.outcomes == ["completed", "interrupted", "completed"]
            and self.user_texts == [BOOK, CHAT, SPOKEN]
            and self.played_cut
            and self.answer_played
            and self.seqs_ok
        )


def soak_settings(token_delay: float = TOKEN_DELAY) -> Any:
    """AgentSettings from defaults only (no .env): offline brain, bridge on, no greeting."""
    from agent.config import AgentSettings
    from agent.turns import TurnSettings
    from brain import BrainConfig
    from bridge import BridgeConfig
    from providers import SpeechSettings

    return AgentSettings(
        _env_file=None,  # type: ignore[call-arg]
        brain=BrainConfig(_env_file=None, backend="offline", offline_token_delay=token_delay),  # type: ignore[call-arg]
        speech=SpeechSettings(_env_file=None),  # type: ignore[call-arg]
        turn=TurnSettings(_env_file=None),  # type: ignore[call-arg]
        bridge=BridgeConfig(_env_file=None),  # type: ignore[call-arg]
        greeting_mode="off",
        inactivity_timeout=0,
    )


def _msg(kind: str, mid: str, data: dict[str, Any] | None = None) -> str:
    body: dict[str, Any] = {"v": 1, "id": mid, "type": kind}
    if data is not None:
        body["data"] = data
    return json.dumps(body)


async def run_session(
    index: int, vad: Any, settings: Any, *, speed: float = SPEED, within: float = 30.0
) -> SessionReport:
    """One session as the worker runs it (brain per session), driven through the bridge."""
    from agent.audio_io import PacedAudioInput, SimClock, attach_simulated_io
    from agent.voice_session import VoiceSession, build_agent_session
    from brain import create_voice_brain
    from bridge import MemoryTransport

    report = SessionReport(index)
    started = time.perf_counter()
    speech = barge_in_speech()
    brain = create_voice_brain(settings.brain)
    tts = InstantTTS(seconds_per_word=SECONDS_PER_WORD)
    stt = FixedSTT(SPOKEN)
    session = build_agent_session(settings, vad=vad, stt=stt, tts=tts, time_scale=speed, simulated=True)
    clock = SimClock(speed)
    io = attach_simulated_io(session, clock, input_rate=INPUT_RATE)
    # the user's microphone, in RoomIO's frames, is muted (delivers nothing) until turn 2: its audio
    # time starts with its first frame, on a clock of the same speed as the speaker's, so what it
    # plays overlaps the reply as it would
    io.mic = session.input.audio = PacedAudioInput(SimClock(speed), INPUT_RATE, frame_ms=MIC_FRAME_MS)
    voice = VoiceSession(settings, brain=brain, session=session, conversation_id=f"soak-{index}", user_id=SERVED)
    client = BridgeClient()
    transport = MemoryTransport([SERVED], on_send=client.on_send)
    try:
        voice.attach_bridge(transport, served_identity=SERVED)
        await voice.start(greet=False, **voice.start_options())
        clock.start()

        # 1. a tool call that needs approval, approved by the served participant over the bridge
        reply = json.loads(await transport.deliver(SERVED, _msg("user.text", "t1", {"text": BOOK})))
        assert reply["type"] == "ack", reply
        await _until(lambda: client.of_type("hitl.request"), within)
        rid = client.of_type("hitl.request")[0]["data"]["request_id"]
        reply = json.loads(await transport.deliver(SERVED, _msg("hitl.respond", "a1", {"request_id": rid, "decision": "approve"})))
        report.approval_ack = reply["type"] == "ack"
        await _until(lambda: client.of_type("turn.done"), within)
        finished = client.of_type("tool.finished")
        report.tool_ok = bool(finished) and finished[0]["data"]["status"] == "ok"
        await _until(lambda: _settled(voice, io, 1), within)

        # 2. spoken barge-in: as soon as the next reply plays (the brain is still streaming it), the
        # user unmutes and talks over it; livekit's VAD interruption cuts it off
        cut = len(io.sink.segments)
        reply = json.loads(await transport.deliver(SERVED, _msg("user.text", "t2", {"text": CHAT})))
        assert reply["type"] == "ack", reply
        await _until(lambda: len(io.sink.segments) > cut, within)
        async with asyncio.timeout(within):
            await io.mic.play(speech)

        # 3. the speech is a turn of its own, answered to the end; silence until all is quiet
        await _listen(io, lambda: len(client.of_type("turn.done")) >= 3 and _settled(voice, io, 3), within)

        # 4. a client interrupt with nothing playing is still answered
        reply = json.loads(await transport.deliver(SERVED, _msg("agent.interrupt", "i1")))
        report.interrupt_ack = reply["type"] == "ack"
        await _listen(io, lambda: _settled(voice, io, 3), within)

        report.turn_reasons = [e["data"]["reason"] for e in client.of_type("turn.done")]
        report.outcomes = [t.outcome for t in voice.tracker.turns]
        report.user_texts = [t.user_text for t in voice.tracker.turns]
        # (the sink's own `interrupted` flag is not enough: on a busy loop the audio of the first
        # sentence may have played out, waiting for the next, when the speech is heard)
        full_reply = len(CHAT_REPLY.split()) * tts.seconds_per_word
        segments = io.sink.segments[cut:]
        report.played_cut = bool(segments) and segments[0].finished and segments[0].played < full_reply - 0.1
        report.answer_played = len(segments) >= 2 and segments[-1].finished and not segments[-1].interrupted
    finally:
        await voice.aclose()
        await io.aclose()
        await brain.aclose()
        voice.tracker.close()
    seqs = [e["seq"] for e in client.envelopes]
    report.seqs_ok = seqs == list(range(1, len(seqs) + 1))
    report.seconds = time.perf_counter() - started
    return report


def _settled(voice: Any, io: Any, turns: int) -> bool:
    tracked = voice.tracker.turns
    return (
        len(tracked) >= turns
        and all(t.outcome != "pending" for t in tracked)
        and not io.sink.playing
        and voice.session.agent_state == "listening"
        and voice.session.user_state != "speaking"
    )


async def _until(predicate: Callable[[], Any], within: float, step: float = 0.01) -> None:
    """Poll session state (spread over livekit-agents, the tracker, the sink and the bridge: no
    one event to wait for)."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(step)


async def _listen(io: Any, predicate: Callable[[], Any], within: float, step: float = 0.1) -> None:
    """`_until`, the microphone delivering silence meanwhile (the user is quiet)."""
    async with asyncio.timeout(within):
        while not predicate():
            await io.mic.play_silence(step)


# -- many sessions ----------------------------------------------------------------------------


@dataclass
class Sample:
    sessions: int
    seconds: float
    resources: Resources


@dataclass
class SoakResult:
    reports: list[SessionReport]
    samples: list[Sample]
    baseline: Resources
    final: Resources
    live: dict[str, int]
    """Per-session objects still alive at the end."""

    @property
    def failures(self) -> list[SessionReport]:
        return [r for r in self.reports if not r.ok]

    def rss_at(self, sessions: int) -> float:
        return min(self.samples, key=lambda s: abs(s.sessions - sessions)).resources.rss_mb


async def run_soak(
    total: int,
    *,
    concurrency: int = CONCURRENCY,
    every: int = 50,
    vad: Any = None,
    settings: Any = None,
    speed: float = SPEED,
    on_sample: Callable[[Sample], None] | None = None,
    warmup: int | None = None,
) -> SoakResult:
    """Run `total` sessions, `concurrency` at a time; sample resources every `every` sessions.

    `warmup` sessions (default: one batch of `concurrency`) run first and are not counted, so
    the baseline includes what is created once per process (imports, caches, executor threads).
    """
    from agent.worker import load_vad

    settings = settings or soak_settings()
    vad = vad or load_vad(settings)
    earlier = existing_session_objects()  # not this soak's: left out of its `live` count
    warm = concurrency if warmup is None else warmup
    if warm:
        await asyncio.gather(*(run_session(-1 - i, vad, settings, speed=speed) for i in range(warm)))
    baseline = Resources.sample()
    samples = [Sample(0, 0.0, baseline)]
    if on_sample is not None:
        on_sample(samples[0])
    reports: list[SessionReport] = []
    started = time.perf_counter()
    next_index = 0
    sem = asyncio.Semaphore(concurrency)
    done = 0
    sampling = asyncio.Lock()

    async def one(i: int) -> None:
        nonlocal done
        async with sem:
            reports.append(await run_session(i, vad, settings, speed=speed))
        done += 1
        if done % every == 0 or done == total:
            async with sampling:
                s = Sample(done, time.perf_counter() - started, Resources.sample())
                samples.append(s)
                if on_sample is not None:
                    on_sample(s)

    # tasks are created as slots free up, so at most `concurrency` sessions (and tasks) exist
    pending: set[asyncio.Task[None]] = set()
    while next_index < total or pending:
        while next_index < total and len(pending) < concurrency:
            pending.add(asyncio.create_task(one(next_index)))
            next_index += 1
        finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for t in finished:
            t.result()
    for _ in range(5):
        await asyncio.sleep(0)
    live = live_session_objects(earlier)
    final = Resources.sample()
    reports.sort(key=lambda r: r.index)
    return SoakResult(reports, samples, baseline, final, live)


# -- the command ------------------------------------------------------------------------------


class WarningCounter(logging.Handler):
    """Counts log warnings by message instead of printing them (one per session adds up)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        key = f"{record.name}: {record.msg}"
        self.counts[key] = self.counts.get(key, 0) + 1


def _top_growth(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, n: int = 15) -> list[str]:
    stats = after.compare_to(before, "lineno")
    return [str(s) for s in stats[:n]]


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    snapshots: dict[int, tracemalloc.Snapshot] = {}

    def on_sample(s: Sample) -> None:
        r = s.resources
        print(f"{s.sessions:5d} sessions {s.seconds:7.1f} s  rss {r.rss_mb:7.1f} MB  tasks {r.tasks:3d}  "
              f"fds {r.fds:3d}  threads {r.threads:2d} ({r.pool_threads} pooled)  py blocks {r.py_blocks}", flush=True)
        # the first sample from session 100 on (--every need not divide 100), and the last
        if args.tracemalloc and ((s.sessions >= 100 and not snapshots) or s.sessions == args.sessions):
            snapshots[s.sessions] = tracemalloc.take_snapshot()

    if args.tracemalloc:
        tracemalloc.start(5)
    if not args.default_allocator:
        from agent.allocator import pin_mmap_threshold

        pin_mmap_threshold()  # as the worker's setup does in each job process
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    result = await run_soak(args.sessions, concurrency=args.concurrency, every=args.every,
                            speed=args.speed, on_sample=on_sample)
    wall = time.perf_counter() - t0
    r100, rend = result.rss_at(100), result.final.rss_mb
    out: dict[str, Any] = {
        "sessions": args.sessions,
        "concurrency": args.concurrency,
        "allocator": "default" if args.default_allocator else "mmap threshold pinned (agent.allocator)",
        "speed": args.speed,
        "wall_s": round(wall, 1),
        "load1": [round(load, 2), round(os.getloadavg()[0], 2)],
        "failures": [asdict(r) for r in result.failures],
        "baseline": asdict(result.baseline),
        "final": asdict(result.final),
        "live_session_objects": result.live,
        "curve": [{"sessions": s.sessions, "seconds": round(s.seconds, 1), **asdict(s.resources)} for s in result.samples],
        # a run of 100 sessions or fewer has no sample after session 100: no growth to report
        "rss_growth_100_to_end_pct": round(100 * (rend - r100) / r100, 2) if args.sessions > 100 else None,
        "py_blocks_growth_pct": round(100 * (result.final.py_blocks / result.baseline.py_blocks - 1), 2),
        "session_seconds_p50": sorted(r.seconds for r in result.reports)[len(result.reports) // 2],
    }
    if args.tracemalloc:
        if len(snapshots) == 2:
            first, last = sorted(snapshots)
            out["tracemalloc_growth"] = {f"{first} -> {last}": _top_growth(snapshots[first], snapshots[last])}
        else:
            out["tracemalloc_growth"] = "not measured: needs more than 100 sessions"
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=CONCURRENCY)
    p.add_argument("--every", type=int, default=50, help="sample resources every N sessions")
    p.add_argument("--speed", type=float, default=SPEED, help="simulated playback speed")
    p.add_argument("--tracemalloc", action="store_true", help="diff allocations between session 100 and the end")
    p.add_argument("--json", type=Path, help="write the result here")
    p.add_argument("--default-allocator", action="store_true",
                   help="leave glibc's mmap threshold dynamic (the worker pins it: agent/allocator.py)")
    args = p.parse_args()
    counter = WarningCounter()
    logging.basicConfig(level=logging.WARNING, handlers=[counter])
    out = asyncio.run(_main(args))
    out["log_warnings"] = counter.counts
    print(json.dumps({k: v for k, v in out.items() if k != "curve"}, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

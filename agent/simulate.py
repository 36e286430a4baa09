"""`python -m agent simulate [AUDIO_FILE]`: the real voice pipeline on a file, without a room.

The file (WAV / MP3 / Opus / Ogg ..., any rate or channel count) plays into a real
`AgentSession` as the user's microphone: Silero VAD, the configured STT, the brain, the
configured TTS. It is paced in real time (`--speed` to go faster); the agent's audio is recorded
on the same timeline and written to a WAV. Printed: the transcript of each turn, the bridge's
envelopes as JSON lines (what a web client would receive), and a per-turn latency table.

With no file, a user utterance is synthesised with the local espeak-ng TTS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

from livekit.agents.utils import http_context
from livekit.agents.voice.events import ConversationItemAddedEvent

from brain import (
    ApprovalDecision,
    ApprovalRequest,
    ApprovalRequested,
    ApprovalResolved,
    InProcessApprovalGate,
    VoiceBrain,
    auto_approve,
    auto_reject,
    create_voice_brain,
)
from bridge import JsonLinesTransport

from .audio_files import (
    DecodedAudio,
    check_writable,
    decode_file,
    frames_to_pcm,
    silence,
    write_wav,
)
from .audio_io import SimClock, SimulatedIO, attach_simulated_io
from .config import AgentSettings
from .latency import TurnLatency, format_table
from .shared_vad import SegmentedSTT
from .turn_tracker import TrackedTurn
from .voice_session import VoiceSession, build_agent_session

log = logging.getLogger("agent.simulate")

INPUT_RATE = 16_000
COMMIT_GRACE = 3.0
"""Audio seconds (beyond the endpointing delay) a final transcript may take to become a turn."""
MAX_SPEED = 10.0
"""Fastest --speed: beyond it the simulated clock runs ahead of recognition and replies (the
local STT needs 0.15-0.4x the audio's length), so turns come too late or not at all."""
DEFAULT_OUT = Path("out/simulate_reply.wav")
DEFAULT_UTTERANCE = "What's the weather in Paris? Please reserve a table."
# a voice / rate the offline recogniser (pocketsphinx) understands well, distinct from the agent's
USER_VOICE = {"voice": "en-us+f2", "rate": 150, "pitch": 50}

Approval = Literal["approve", "reject", "ask"]


async def synthesize_utterance(text: str, *, sample_rate: int = INPUT_RATE) -> DecodedAudio:
    """The user's words, spoken by the local espeak-ng TTS, as mono PCM at `sample_rate`."""
    from providers import LocalTTS

    tts = LocalTTS(**USER_VOICE)  # type: ignore[arg-type]
    try:
        frames = [ev.frame async for ev in tts.synthesize(text)]
    finally:
        await tts.aclose()
    pcm = frames_to_pcm(frames, sample_rate)
    return DecodedAudio(pcm, sample_rate, tts.sample_rate, tts.num_channels)


def approval_policy(mode: Approval, *, stream: TextIO = sys.stdout) -> Callable[[ApprovalRequest], Any]:
    """`approve` / `reject` everything, or `ask` on the terminal."""
    if mode == "approve":
        return auto_approve
    if mode == "reject":
        return auto_reject

    async def ask(request: ApprovalRequest) -> ApprovalDecision:
        prompt = f"approval needed: {request.prompt} [y/N] "
        try:
            answer = await asyncio.to_thread(input, prompt)
        except EOFError:
            answer = ""
        if answer.strip().lower() in ("y", "yes"):
            return ApprovalDecision.approve(by="console")
        return ApprovalDecision.reject("declined on the console", by="console")

    return ask


@dataclass
class SimulationResult:
    user_turns: list[str] = field(default_factory=list)
    """Each user turn's text, when livekit-agents decided the turn was over."""
    latency: list[TurnLatency] = field(default_factory=list)
    turns: list[TrackedTurn] = field(default_factory=list)
    reply_seconds: float = 0.0
    output_rate: int | None = None
    """The rate the agent's audio played at (None when it played none)."""
    wav: Path | None = None
    wav_rate: int | None = None
    """The rate the reply WAV was written at (the TTS's own when nothing played)."""


class Simulation:
    """A room-less voice session on a simulated clock (see `agent.audio_io`)."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        vad: Any,
        stt: Any = None,
        tts: Any = None,
        brain: VoiceBrain | None = None,
        approval: Approval = "approve",
        speed: float = 1.0,
        conversation_id: str = "simulate",
        events: TextIO | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        from providers import create_stt, create_tts

        self.settings = settings
        self.clock = SimClock(speed)
        self.stt = stt or create_stt(settings.speech, vad=vad)
        self.tts = tts or create_tts(settings.speech)
        self._owned = [x for x, given in ((self.stt, stt), (self.tts, tts)) if given is None]
        """The providers this simulation built, and closes."""
        self.brain = brain or create_voice_brain(
            settings.brain, approvals=InProcessApprovalGate(policy=approval_policy(approval))
        )
        self.session = build_agent_session(settings, vad=vad, stt=self.stt, tts=self.tts, time_scale=speed, simulated=True)
        self.io: SimulatedIO = attach_simulated_io(self.session, self.clock, input_rate=INPUT_RATE)
        self.voice = VoiceSession(settings, brain=self.brain, session=self.session, conversation_id=conversation_id)
        self.result = SimulationResult()
        self._say = say
        self._events = events
        self._user_pending = False
        self._final_at: float | None = None
        """Audio position of a final transcript not yet committed as a user turn (batch STTs)."""
        self._http = contextlib.AsyncExitStack()
        self.voice.agent.user_turn_callbacks.append(self._on_user_turn)
        self.voice.tracker.on_outcome(self._on_outcome)
        self.session.on("conversation_item_added", self._on_item)
        self.session.on("user_state_changed", self._on_user_state)
        self.session.on("user_input_transcribed", self._on_transcribed)
        self.session.on("error", self._on_error)
        self.brain.subscribe(self._on_brain_event)

    # -- running ----------------------------------------------------------------------------

    async def start(self, *, greet: bool = False) -> None:
        # plugins that share livekit's HTTP session (deepgram, ...) need one outside a job
        await self._http.enter_async_context(http_context.open())
        self.stt.prewarm()
        if self._events is not None:
            self.voice.attach_bridge(JsonLinesTransport(self._events), served_identity="user")
        await self.voice.start(greet=False, **self.voice.start_options())
        self.clock.start()
        if greet:
            handle = self.voice.greet()
            if handle is not None:
                waiter = asyncio.ensure_future(handle.wait_for_playout())
                while not waiter.done():  # the microphone keeps delivering silence meanwhile
                    await self.io.mic.play_silence(0.1)

    async def play(self, audio: DecodedAudio, *, progress: Callable[[float], None] | None = None) -> None:
        self.io.mic.on_progress = progress
        try:
            await self.io.mic.play(audio.pcm if audio.sample_rate == INPUT_RATE else _resample(audio))
        finally:
            self.io.mic.on_progress = None

    def _user_turn_pending(self) -> bool:
        """Whether the user's words may still become a turn."""
        segmented = self.session.stt
        if isinstance(segmented, SegmentedSTT):
            # a batch STT: segments still being recognised
            # (an empty recognition ends nothing, so it must not leave the simulation waiting)
            if segmented.pending > 0:
                return True
        elif self._user_pending:
            return True  # a streaming STT: from the user going quiet to the next final
        # a transcript not committed yet (a streaming provider's final can come after an earlier
        # turn was committed); livekit may also drop one (a short phrase said over the agent,
        # TURN_MIN_INTERRUPTION_WORDS): then it stops counting after a while
        t = self.settings.turn
        grace = COMMIT_GRACE + max(t.min_endpointing_delay, t.max_endpointing_delay)
        return self._final_at is not None and self.io.mic.position - self._final_at < grace

    def busy(self) -> bool:
        s = self.session
        return (
            self._user_turn_pending()
            or s.user_state == "speaking"
            or s.agent_state in ("thinking", "speaking")
            or s.current_speech is not None
            or self.io.sink.playing
            or any(t.outcome == "pending" for t in self.voice.tracker.turns)
        )

    async def settle(self, *, quiet: float | None = None, limit: float = 60.0) -> bool:
        """Feed silence until nothing has happened for `quiet` seconds of audio; False at `limit`."""
        if quiet is None:
            t = self.settings.turn
            quiet = 1.0 + (t.max_endpointing_delay if t.mode != "vad" else t.min_endpointing_delay)
        start = self.io.mic.position
        calm_since: float | None = None
        while self.io.mic.position - start < limit:
            await self.io.mic.play_silence(0.1)
            if self.busy():
                calm_since = None
            elif calm_since is None:
                calm_since = self.io.mic.position
            elif self.io.mic.position - calm_since >= quiet:
                return True
        return False

    async def aclose(self) -> None:
        self.result.latency = list(self.voice.latency.rows)
        self.result.turns = list(self.voice.tracker.turns)
        self.result.reply_seconds = sum(s.played for s in self.io.sink.segments)
        self.result.output_rate = self.io.sink.output_rate
        await self.voice.aclose()
        await self.io.aclose()
        await self.brain.aclose()
        for provider in self._owned:
            await provider.aclose()
        await self._http.aclose()

    def write_wav(self, path: Path, *, duration: float | None = None) -> Path:
        rate = self.io.sink.output_rate or self.tts.sample_rate
        pcm = self.io.sink.timeline_pcm(rate, duration or self.io.mic.position)
        self.result.wav = write_wav(path, pcm, rate)
        self.result.wav_rate = rate
        return self.result.wav

    # -- printing ---------------------------------------------------------------------------

    def _line(self, text: str) -> None:
        if self._say is not None:
            self._say(f"[{self.clock.now():6.1f}s] {text}")

    def _on_item(self, ev: ConversationItemAddedEvent) -> None:
        item = ev.item
        if getattr(item, "type", None) != "message" or item.role not in ("user", "assistant"):  # type: ignore[union-attr]
            return
        text = item.text_content or ""  # type: ignore[union-attr]
        if item.role == "assistant":  # type: ignore[union-attr]
            self._line(f"agent: {text}" + ("  [interrupted]" if item.interrupted else ""))  # type: ignore[union-attr]

    def _on_outcome(self, tracked: TrackedTurn) -> None:
        if tracked.outcome == "merged":
            self._line(f"(reply to {tracked.user_text!r} cut off before any audio: merged into the next turn)")

    def _on_user_turn(self, text: str) -> None:
        self._user_pending = False
        self._final_at = None
        self.result.user_turns.append(text)
        self._line(f"user : {text}")

    def _on_user_state(self, ev: Any) -> None:
        if ev.old_state == "speaking" and ev.new_state == "listening":
            self._user_pending = True  # a turn may end once the transcript is in

    def _on_error(self, ev: Any) -> None:
        error = getattr(ev, "error", None)
        if getattr(error, "type", None) == "stt_error" and not getattr(error, "recoverable", True):
            self._user_pending = False  # that user turn is lost (the agent apologises)
            self._final_at = None

    def _on_transcribed(self, ev: Any) -> None:
        if ev.is_final and not ev.transcript.strip():
            self._user_pending = False
        elif ev.is_final:
            self._final_at = self.io.mic.position

    def _on_brain_event(self, ev: Any) -> None:
        if isinstance(ev, ApprovalRequested):
            self._line(f"approval requested: {ev.prompt}")
        elif isinstance(ev, ApprovalResolved):
            by = f" by {ev.decided_by}" if ev.decided_by else ""
            self._line(f"approval {ev.outcome}{by}: {ev.name}")


def _resample(audio: DecodedAudio) -> bytes:
    from .audio_files import resample_pcm

    return resample_pcm(audio.pcm, audio.sample_rate, INPUT_RATE)


# -- the command ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m agent simulate",
        description="Run the voice pipeline (VAD, STT, brain, TTS) on an audio file, without a room.",
    )
    p.add_argument("audio", nargs="?", type=Path, help="WAV / MP3 / Opus / Ogg file; default: a synthesised question")
    p.add_argument("--say", default=None, help="what the synthesised user says (without an AUDIO file; "
                   f"default {DEFAULT_UTTERANCE!r})")
    p.add_argument("--speed", type=float, default=1.0, help="pace: 1 = real time (default), 2 = twice as fast ...")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"reply audio WAV (default {DEFAULT_OUT})")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--approve", dest="approval", action="store_const", const="approve", help="approve tool calls (default)")
    mode.add_argument("--reject", dest="approval", action="store_const", const="reject", help="reject tool calls")
    mode.add_argument("--ask", dest="approval", action="store_const", const="ask", help="ask on the terminal")
    p.set_defaults(approval="approve")
    p.add_argument("--greeting", action=argparse.BooleanOptionalAction, default=None,
                   help="speak the greeting first (default: on for the synthesised demo, off for a file)")
    p.add_argument("--events", default="-", help="where the bridge's JSON lines go: '-' stdout (default), a file, or 'off'")
    p.add_argument("--tail", type=float, default=60.0, help="max seconds to keep listening after the audio ends")
    return p


async def run(args: argparse.Namespace, *, settings: AgentSettings | None = None, out: TextIO = sys.stdout) -> int:
    from providers import create_stt, create_tts

    from .startup_checks import check_tools
    from .worker import load_vad

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    if not (0 < args.speed <= MAX_SPEED):
        raise ValueError(f"--speed must be above 0 and at most {MAX_SPEED:g}, got {args.speed:g} (beyond that "
                         "the simulated clock outruns the recogniser and the brain, and turns are lost)")
    if not (0 <= args.tail < float("inf")):
        raise ValueError(f"--tail must be 0 or more seconds, got {args.tail:g}")
    if args.audio is not None and args.say is not None:  # one of them would be silently ignored
        raise ValueError("--say gives the words of a synthesised user, AUDIO_FILE a recorded one: give one of them")
    _check_outputs(args)
    settings = settings or AgentSettings()
    check_tools(settings)  # as the worker does before it registers: a misspelt report override is refused
    if args.audio is not None:
        audio = decode_file(args.audio, INPUT_RATE)
        say(f"simulate: {args.audio} ({audio.duration:.1f} s, {audio.source_rate} Hz, "
            f"{audio.source_channels} channel(s)) at {args.speed:g}x")
        conversation = f"simulate-{args.audio.stem}"
    else:
        words = DEFAULT_UTTERANCE if args.say is None else args.say
        audio = await synthesize_utterance(words)
        audio = DecodedAudio(silence(0.5, INPUT_RATE) + audio.pcm, INPUT_RATE, audio.source_rate, 1)
        say(f"simulate: the user says {words!r} (espeak-ng, {audio.duration:.1f} s) at {args.speed:g}x")
        conversation = "simulate-demo"
    greet = args.greeting if args.greeting is not None else args.audio is None
    if settings.mode != "pipeline":
        say(f"simulate: AGENT_MODE={settings.mode} is not simulated (it needs the model's server); "
            "running the pipeline instead")
    say(f"simulate: brain={settings.brain.backend} stt={','.join(settings.speech.stt_providers)} "
        f"tts={','.join(settings.speech.tts_providers)} turn mode={settings.turn.mode}")
    say({"approve": "simulate: tool approvals are granted automatically (--reject / --ask to change)",
         "reject": "simulate: tool approvals are rejected automatically",
         "ask": "simulate: tool approvals are asked on this terminal"}[args.approval])

    events: TextIO | None
    events_file: TextIO | None = None
    if args.events == "off":
        events = None
    elif args.events == "-":
        events = out
    else:
        Path(args.events).parent.mkdir(parents=True, exist_ok=True)
        events = events_file = await asyncio.to_thread(open, args.events, "w", encoding="utf-8")

    if events is not None and not settings.bridge.enabled:
        say("simulate: BRIDGE_ENABLED=false: no event lines are printed (they are the bridge's envelopes)")

    vad = load_vad(settings)
    sim = Simulation(
        settings,
        vad=vad,
        stt=create_stt(settings.speech, vad=vad),
        tts=create_tts(settings.speech),
        approval=args.approval,
        speed=args.speed,
        conversation_id=conversation,
        events=events,
        say=say,
    )
    progress = _progress(audio.duration, args.speed)
    started = time.monotonic()
    try:
        await sim.start(greet=greet)
        await sim.play(audio, progress=progress)
        settled = await sim.settle(limit=args.tail)
        if not settled:
            say(f"simulate: still busy {args.tail:g} s after the audio ended; stopping")
        try:
            wav: Path | OSError = sim.write_wav(args.out)
        except OSError as exc:  # reported after the table, which is kept
            wav = exc
    finally:
        await sim.aclose()
        if events_file is not None:
            events_file.close()
    r = sim.result
    say("")
    say(format_table(r.latency, speed=args.speed) if r.latency else "no user turn was detected")
    failed = not r.latency  # nothing was heard and answered: a script must not read success
    if isinstance(wav, OSError):
        say(f"\nsimulate: could not write --out {args.out}: {wav.strerror or wav}")
        return 1
    say(f"\nwrote {wav} ({r.reply_seconds:.1f} s of reply audio on a {sim.io.mic.position:.1f} s timeline, "
        f"{r.wav_rate} Hz mono) in {time.monotonic() - started:.1f} s")
    if r.reply_seconds == 0:
        say("simulate: warning: the agent produced no reply audio")
    if failed:
        say("simulate: no user turn was detected (no speech in the input, or a --speed the recogniser "
            "could not keep up with on this machine)")
        return 1
    return 0


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def _check_outputs(args: argparse.Namespace) -> None:
    """--out and --events can be written, and neither replaces the input or the other."""
    out = check_writable(args.out, "--out")
    events = None if args.events in ("-", "off") else check_writable(args.events, "--events", "out/events.jsonl")
    for flag, path in (("--out", out), ("--events", events)):
        if path is not None and args.audio is not None and _same_file(path, args.audio):
            raise ValueError(f"{flag} is the input file {str(args.audio)!r}; write the output elsewhere")
    if events is not None and _same_file(events, out):
        raise ValueError(f"--events and --out name the same file ({str(out)!r})")


def _progress(duration: float, speed: float) -> Callable[[float], None] | None:
    """Progress on stderr for inputs that take a while (> 15 s of wall time)."""
    if duration / speed < 15:
        return None
    step = max(5.0, round(duration / 10))
    next_mark = step

    def report(position: float) -> None:
        nonlocal next_mark
        if position >= next_mark:
            print(f"simulate: {position:5.1f} / {duration:.1f} s of audio", file=sys.stderr, flush=True)
            next_mark += step

    return report


def simulate_command(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return asyncio.run(run(args))

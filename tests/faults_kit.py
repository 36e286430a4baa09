"""Fault injection for the agent's two modes, offline (used by tests/test_faults_*.py).

Pipeline mode runs the agent's real `AgentSession` (agent.simulate.Simulation: Silero VAD on
real recorded speech, fed faster than real time) with the real livekit-plugins-openai STT / TTS
and the brain's real OpenAI backend, all pointed at one fake OpenAI server on 127.0.0.1 that
fails on command. Realtime mode runs `RealtimeVoiceSession` on livekit-plugins-openai's realtime
model against `FakeRealtimeServer` with extra scripted failures. The bridge publishes on a
`FaultTransport` that records what a client receives and fails on command.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import web

from agent.audio_files import DecodedAudio, decode_file
from agent.simulate import INPUT_RATE, Simulation
from brain import BrainConfig, InProcessApprovalGate, create_voice_brain
from bridge import BridgeOptions, MemoryTransport
from bridge.transport import Sent
from providers import SpeechSettings, create_stt, create_tts
from providers.realtime import RealtimeSettings, create_realtime_model
from tests.fakes.openai_server import FakeOpenAIServer, text_reply
from tests.fakes.scripted import Close, HttpError, Sleep, Stream
from tests.fakes_realtime import ClockedAudioSink, QueueAudioInput, Say, read_wav
from tests.fakes_realtime.gemini_live_server import FakeGeminiLiveServer, GeminiFault
from tests.fakes_realtime.openai_realtime_server import (
    CHUNK_MS,
    SAMPLE_RATE,
    Fail,
    FakeRealtimeServer,
    tone,
)

from .agent_fakes import AUDIO, settings

FAULTS = ("start", "mid_stream", "stall", "rate_limit", "disconnect")
FAULT_TITLES = {
    "start": "exception at start",
    "mid_stream": "exception mid-stream",
    "stall": "stall past the timeout",
    "rate_limit": "rate limit",
    "disconnect": "abrupt disconnect",
}
EXPECTED_CODE = {"start": "unavailable", "mid_stream": "unavailable", "stall": "timeout",
                 "rate_limit": "rate_limited", "disconnect": "unavailable"}

USER_SAYS = "what is the weather in paris"
ANSWER = "It is sunny and twenty degrees in Paris."
STT_APOLOGY = "Sorry, I did not catch that."
APOLOGY = "Sorry, something went wrong on my side."
TIMEOUT = 0.8
"""AGENT_PROVIDER_TIMEOUT / BRAIN_REQUEST_TIMEOUT in the matrix: a stall costs under a second."""

log = logging.getLogger("tests.faults")


# -- the bridge's transport ------------------------------------------------------------------------


class FaultTransport(MemoryTransport):
    """Records what the served client receives; `arm(fault)` makes one envelope undeliverable.

    start: the turn's first envelope (the user's final transcript) is refused on every attempt;
    mid_stream: the transcript went out, then the reply's text breaks the pipe; stall: sending
    the reply's text hangs past the bridge's send timeout on every attempt; rate_limit: the
    reply's text is refused with a 429-style error; disconnect: the connection resets for the
    turn's first envelope and all its retries. Everything else is delivered.
    """

    def __init__(self) -> None:
        super().__init__(participants=["user"])
        self.envelopes: list[dict[str, Any]] = []
        self.fault: str | None = None
        self._target_seq: int | None = None

    def arm(self, fault: str) -> None:
        self.fault, self._target_seq = fault, None

    def _is_target(self, env: dict[str, Any]) -> bool:
        if self.fault is None:
            return False
        if self._target_seq is not None:
            return bool(env["seq"] == self._target_seq)
        kind = env["type"]
        if self.fault in ("start", "disconnect"):
            hit = kind == "user.transcript" and env["data"].get("final", True)
        else:
            hit = kind == "agent.text"
        if hit:
            self._target_seq = env["seq"]
        return hit

    async def send(self, envelope_json: str, destination: list[str] | None) -> None:
        self.attempts += 1
        env = json.loads(envelope_json)
        if self._is_target(env):
            if self.fault == "stall":
                await asyncio.sleep(3600)  # the bridge's watchdog gives up on us
            if self.fault == "rate_limit":
                raise RuntimeError("429 Too Many Requests: data publish rate limit exceeded")
            if self.fault == "disconnect":
                raise ConnectionResetError("connection reset by peer")
            if self.fault == "mid_stream":
                raise BrokenPipeError("broken pipe while streaming")
            raise ConnectionError("publish refused by the server")
        self.sent.append(Sent(envelope_json, None if destination is None else list(destination)))
        self.envelopes.append(env)


BRIDGE_OPTIONS = BridgeOptions(send_attempts=3, retry_base_delay=0.02, retry_max_delay=0.1, send_timeout=0.25)


# -- one fake OpenAI server for STT, brain and TTS -------------------------------------------------


async def local_seconds(text: str) -> float:
    """How long the local voice takes to say `text` (what a chain's fallback says instead)."""
    from providers import LocalTTS

    engine = LocalTTS()
    try:
        return (await engine.synthesize(text).collect()).duration
    finally:
        await engine.aclose()


def pcm_tone(seconds: float, rate: int = 24_000) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (6000 * np.sin(2 * np.pi * 220 * t)).astype("<i2").tobytes()


class FakeOpenAI(FakeOpenAIServer):
    """Chat completions (scripted, see tests/fakes) plus `/v1/audio/transcriptions` and
    `/v1/audio/speech`, each failing once per queued fault (`ok` in a queue: that request works)."""

    def __init__(self) -> None:
        super().__init__(default=text_reply(ANSWER), strict=True)
        self.stt_faults: deque[str] = deque()
        self.tts_faults: deque[str] = deque()
        self.stt_requests = 0
        self.tts_requests: list[str] = []

    def routes(self, app: web.Application) -> None:
        super().routes(app)
        app.router.add_post("/v1/audio/transcriptions", self._transcriptions)
        app.router.add_post("/v1/audio/speech", self._speech)

    async def _fail(self, request: web.Request, fault: str, partial: bytes, content_type: str) -> web.StreamResponse:
        if fault == "start":
            return web.json_response({"error": {"message": "The server had an error", "type": "server_error",
                                                "param": None, "code": None}}, status=500)
        if fault == "rate_limit":
            return web.json_response({"error": {"message": "Rate limit reached", "type": "requests",
                                                "param": None, "code": "rate_limit_exceeded"}}, status=429)
        if fault == "disconnect":
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        resp = web.StreamResponse(headers={"Content-Type": content_type})
        await resp.prepare(request)
        if fault == "stall":
            await asyncio.sleep(3600)
        await resp.write(partial)  # mid_stream: part of the body, then the connection dies
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.abort()
        return resp

    async def _transcriptions(self, request: web.Request) -> web.StreamResponse:
        await request.post()
        self.stt_requests += 1
        fault = self.stt_faults.popleft() if self.stt_faults else "ok"
        if fault != "ok":
            if fault == "stall":
                await asyncio.sleep(3600)  # nothing at all, not even headers
            return await self._fail(request, fault, b'{"text": "what is the', "application/json")
        return web.json_response({"text": USER_SAYS})

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.tts_requests.append(str(body.get("input", "")))
        audio = pcm_tone(min(0.8, 0.02 * len(str(body.get("input", ""))) + 0.2))
        fault = self.tts_faults.popleft() if self.tts_faults else "ok"
        if fault != "ok":
            return await self._fail(request, fault, audio[: len(audio) // 3], "audio/pcm")
        resp = web.StreamResponse(headers={"Content-Type": "audio/pcm"})
        await resp.prepare(request)
        for i in range(0, len(audio), 9600):
            await resp.write(audio[i : i + 9600])
        await resp.write_eof()
        return resp

    def brain_fault(self, fault: str) -> None:
        if fault == "start":
            self.push(HttpError(500, "The server had an error"))
        elif fault == "rate_limit":
            self.push(HttpError(429, "Rate limit reached for requests"))
        elif fault == "stall":
            self.push(Stream([Sleep(30)]))
        elif fault == "mid_stream":
            partial = text_reply("It is sunny", pieces=2).actions[:-1]  # no finish chunk
            self.push(Stream([*partial, Close()], finish=False))
        elif fault == "disconnect":
            self.push(Stream([Close()], finish=False))


def user_utterance() -> DecodedAudio:
    """The first utterance of the multi-utterance recording (speech 0.03-2.02 s)."""
    return decode_file(AUDIO / "multi_utterance_16k_mono.wav", INPUT_RATE).slice(0.0, 2.3)


# -- what a cell observed -----------------------------------------------------------------------------


@dataclass
class Observed:
    envelopes: list[dict[str, Any]]
    heard: list[str]
    """Text of what the agent said (the transcript of its played speech) during the turn."""
    audio_seconds: float
    session_alive: bool
    loop_errors: list[str]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.envelopes if e["type"] == kind]

    def error_codes(self) -> list[str]:
        return [e["data"]["code"] for e in self.of_type("error")]

    def turn_dones(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for e in self.of_type("turn.done"):
            out.setdefault(e["turn"], []).append(e)
        return out


@dataclass
class CellResult:
    mode: str
    stage: str
    fault: str
    expected: str
    passed: bool = False
    code: str = ""
    detail: str = ""
    problems: list[str] = field(default_factory=list)


def check_turn(obs: Observed, *, expected_code: str, heard_any: tuple[str, ...]) -> list[str]:
    """The matrix's assertions for the turn that met the fault (empty list: all good)."""
    problems: list[str] = []
    if not obs.session_alive:
        problems.append("the session closed")
    if obs.loop_errors:
        problems.append(f"unhandled errors: {obs.loop_errors[:2]}")
    errors = obs.of_type("error")
    matching = [e for e in errors if e["data"]["code"] == expected_code]
    if not matching:
        problems.append(f"no error envelope with code {expected_code!r} (got {obs.error_codes()})")
    if any(e["data"].get("fatal") for e in errors):
        problems.append("an error was reported as fatal")
    dones = obs.turn_dones()
    if not dones:
        problems.append("no turn.done")
    for turn, items in dones.items():
        if len(items) != 1:
            problems.append(f"turn {turn}: {len(items)} turn.done envelopes")
    for e in matching:
        turn = e.get("turn")
        if turn is not None and len(dones.get(turn, [])) != 1:
            problems.append(f"the error's turn {turn} has {len(dones.get(turn, []))} turn.done")
    if not any(any(h.lower() in said.lower() for h in heard_any) for said in obs.heard):
        problems.append(f"the user heard none of {heard_any} (heard {obs.heard})")
    if obs.audio_seconds <= 0:
        problems.append("no audio played")
    return problems


def check_next_turn(obs: Observed, answer: str) -> list[str]:
    problems: list[str] = []
    if not obs.session_alive:
        problems.append("next turn: the session closed")
    completed = [e for e in obs.of_type("turn.done") if e["data"]["reason"] == "completed"]
    if not any(answer.lower() in e["data"]["text"].lower() for e in completed):
        problems.append(f"next turn: no completed turn.done with the answer (got {[e['data'] for e in obs.of_type('turn.done')]})")
    if obs.error_codes():
        problems.append(f"next turn: errors {obs.error_codes()}")
    if not any(answer.lower() in said.lower() for said in obs.heard) or obs.audio_seconds <= 0:
        problems.append(f"next turn: the answer was not heard (heard {obs.heard})")
    return problems


class LoopErrors:
    """Exceptions nobody handled (what would crash or poison a worker process)."""

    IGNORED = (
        "Unclosed",
        "was destroyed but it is pending",
        # livekit-agents' OpenAI realtime session sets a failed response's `_done_fut` exception
        # and nothing ever awaits it: asyncio logs it when the future is collected (harmless)
        "Future exception was never retrieved: RealtimeError: response failed",
    )

    def __init__(self) -> None:
        self.items: list[str] = []
        self._previous: Any = None

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        self._previous = loop.get_exception_handler()

        def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            message = str(context.get("message", ""))
            exc = context.get("exception")
            text = f"{message}: {type(exc).__name__}: {exc}" if exc else message
            if not any(s in text for s in self.IGNORED):
                self.items.append(text)
            loop.default_exception_handler(context)

        loop.set_exception_handler(handler)

    def uninstall(self) -> None:
        asyncio.get_running_loop().set_exception_handler(self._previous)


# -- pipeline mode ------------------------------------------------------------------------------------


class PipelineRig:
    """The agent's pipeline session on the fake OpenAI server, driven by recorded speech."""

    def __init__(
        self,
        vad: Any,
        *,
        speed: float = 4.0,
        tools: list[Any] | None = None,
        stt_providers: str = "openai",
        tts_providers: str = "openai",
        speech: dict[str, Any] | None = None,
        agent: dict[str, Any] | None = None,
    ) -> None:
        self.vad = vad
        self.speech_extra = speech or {}
        """More speech settings (e.g. another fake provider's base URL)."""
        self.agent_extra = agent or {}
        """More agent settings (e.g. AGENT_INACTIVITY_TIMEOUT)."""
        self.speed = speed
        self.tools = tools or []
        self.chains = {"STT_PROVIDERS": stt_providers, "TTS_PROVIDERS": tts_providers}
        """The STT / TTS chains (a chain's other providers are `local`, which the fake does not serve)."""
        self.server = FakeOpenAI()
        self.transport = FaultTransport()
        self.loop_errors = LoopErrors()
        self.utterance = user_utterance()

    async def __aenter__(self) -> PipelineRig:
        await self.server.start()
        base = self.server.base_url
        brain_cfg = BrainConfig(  # type: ignore[call-arg]
            _env_file=None, backend="openai", openai_api_key="sk-test", openai_base_url=base, tools=[],
            request_timeout=TIMEOUT, max_retries=0, apology=APOLOGY,
        )
        speech = SpeechSettings(
            _env_file=None, OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=base, OPENAI_TTS_RESPONSE_FORMAT="pcm",
            FALLBACK_ATTEMPT_TIMEOUT=TIMEOUT, **self.chains, **self.speech_extra,
        )
        self.settings = settings(
            brain=brain_cfg, speech=speech, provider_timeout=TIMEOUT, provider_max_retry=0,
            provider_retry_interval=0.1, stt_apology=STT_APOLOGY, **self.agent_extra,
        )
        self.loop_errors.install()
        from agent import apology

        await apology.frames(APOLOGY)  # rendered once per process
        self.brain = create_voice_brain(brain_cfg, tools=self.tools, approvals=InProcessApprovalGate())
        self.sim = Simulation(
            self.settings, vad=self.vad, stt=create_stt(speech, vad=self.vad), tts=create_tts(speech),
            brain=self.brain, speed=self.speed, conversation_id="faults",
        )
        self.sim.voice.attach_bridge(self.transport, served_identity="user", options=BRIDGE_OPTIONS)
        await self.sim.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.sim.aclose()
        finally:
            self.loop_errors.uninstall()
            await self.server.close()

    def arm(self, stage: str, fault: str) -> None:
        if stage == "stt":
            self.server.stt_faults.append(fault)
        elif stage == "tts":
            self.server.tts_faults.append(fault)
        elif stage == "brain":
            self.server.brain_fault(fault)
        elif stage == "bridge":
            self.transport.arm(fault)
        else:
            raise ValueError(stage)

    async def turn(self, *, limit: float = 30.0) -> Observed:
        """The user says one utterance; everything until the agent is quiet again (at most
        `limit` seconds of audio after it)."""
        first_env = len(self.transport.envelopes)
        first_seg = len(self.sim.io.transcript.segments)
        first_audio = len(self.sim.io.sink.segments)
        await self.sim.play(self.utterance)
        await self.sim.settle(quiet=1.5, limit=limit)
        bridge = self.sim.voice.bridge
        for _ in range(100):  # the microphone keeps pace with the clock while the bridge catches up
            if bridge is None or await bridge.flush(0.02):
                break
            await self.sim.io.mic.play_silence(0.1)
        self.transport.fault = None
        return Observed(
            envelopes=self.transport.envelopes[first_env:],
            heard=self.sim.io.transcript.segments[first_seg:],
            audio_seconds=sum(s.played for s in self.sim.io.sink.segments[first_audio:]),
            session_alive=not self.sim.voice.closed.is_set(),
            loop_errors=list(self.loop_errors.items),
        )


# -- realtime mode ------------------------------------------------------------------------------------


@dataclass
class SayThenFail:
    """Part of an answer (text and audio), then the response fails server-side."""

    text: str
    chunks: int = 2


@dataclass
class Stall:
    """`response.created`, then nothing until the client cancels."""


class FaultyRealtimeServer(FakeRealtimeServer):
    """`FakeRealtimeServer` plus replies that fail half-way or stall."""

    async def _respond(self, conn: Any, reply: Any, metadata: dict[str, Any] | None) -> None:
        if not isinstance(reply, SayThenFail | Stall):
            await super()._respond(conn, reply, metadata)
            return
        response_id = f"resp_{id(reply):x}"
        conn.response_id = response_id
        base = {"response_id": response_id, "output_index": 0}
        await self._send(conn, {"type": "response.created", "response": {
            "id": response_id, "object": "realtime.response", "status": "in_progress", "output": [], "metadata": metadata}})
        if isinstance(reply, Stall):
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                await self._done(conn, response_id, "cancelled", [])
            return
        item = {"id": f"item_{id(reply):x}", "type": "message", "role": "assistant", "status": "in_progress", "content": []}
        part = {**base, "item_id": item["id"], "content_index": 0}
        await self._send(conn, {"type": "response.output_item.added", **base, "item": item})
        await self._add_item(conn, dict(item))
        await self._send(conn, {"type": "response.content_part.added", **part, "part": {"type": "audio", "transcript": ""}})
        audio = tone(CHUNK_MS * reply.chunks)
        step = SAMPLE_RATE * 2 * CHUNK_MS // 1000
        await self._send(conn, {"type": "response.output_audio_transcript.delta", **part, "delta": reply.text})
        for i in range(0, len(audio), step):
            await self._send(conn, {"type": "response.output_audio.delta", **part,
                                    "delta": base64.b64encode(audio[i : i + step]).decode()})
        error = {"type": "server_error", "code": "server_error", "message": "The server had an error while processing your request"}
        await self._done(conn, response_id, "failed", [], {"type": "failed", "error": error})


def realtime_reply_fault(fault: str) -> Any:
    """The scripted realtime reply that fails the way `fault` says."""
    if fault == "start":
        return Fail(type="server_error", code="server_error", message="The server had an error while processing your request")
    if fault == "mid_stream":
        return SayThenFail("It is sunny")
    if fault == "stall":
        return Stall()
    if fault == "rate_limit":
        return Fail()
    if fault == "disconnect":
        return Say("It is sunny and warm and", audio_ms=1200, drop_connection_after_chunks=2)
    raise ValueError(fault)


def gemini_reply_fault(fault: str) -> GeminiFault:
    """The scripted Gemini Live reply that fails the way `fault` says. Gemini reports failures
    by closing the socket (1011 with the status in the reason), not with an error event."""
    if fault == "start":
        return GeminiFault("close", chunks=0, reason="Internal error encountered.")
    if fault == "mid_stream":
        return GeminiFault("close", chunks=2, reason="Internal error encountered.")
    if fault == "stall":
        return GeminiFault("stall")
    if fault == "rate_limit":
        return GeminiFault("close", chunks=0, reason="RESOURCE_EXHAUSTED: You exceeded your current quota.")
    if fault == "disconnect":
        return GeminiFault("drop", chunks=2)
    raise ValueError(fault)


class RealtimeRig:
    """`RealtimeVoiceSession` (agent layer) on a real realtime plugin (livekit-plugins-openai or
    livekit-plugins-google) and its fake server."""

    def __init__(
        self,
        *,
        provider: str = "openai-realtime",
        tools: list[Any] | None = None,
        approval_policy: Any = None,
        bridge_options: BridgeOptions | None = BRIDGE_OPTIONS,
        greeting: str | None = None,
    ) -> None:
        self.provider = provider
        self.greeting = greeting
        """Spoken (generated by the model) as the session starts, as the worker does; None: no greeting."""
        self.server: Any = FaultyRealtimeServer() if provider == "openai-realtime" else FakeGeminiLiveServer()
        self._saved_cert_env: str | None = None
        self.transport = FaultTransport()
        self.loop_errors = LoopErrors()
        self.tools = tools or []
        self.approval_policy = approval_policy
        self.bridge_options = bridge_options
        self.input = QueueAudioInput()
        self.sink = ClockedAudioSink()
        self.samples, self.rate = read_wav(AUDIO / "multi_utterance_16k_mono.wav", 0.0, 2.1)
        self.faulty_reply: Any = None
        self.scripted_apology: Say | None = None

    async def __aenter__(self) -> RealtimeRig:
        from agent.realtime_session import RealtimeVoiceSession, build_realtime_session

        await self.server.start()
        if self.provider == "openai-realtime":
            keys: dict[str, Any] = {"openai_api_key": "test-key", "openai_base_url": self.server.base_url}
        else:
            keys = {"gemini_api_key": "test-key", "gemini_base_url": self.server.base_url}
            # google-genai always dials wss:// and reads SSL_CERT_FILE when it builds its client
            self._saved_cert_env = os.environ.get("SSL_CERT_FILE")
            os.environ["SSL_CERT_FILE"] = str(self.server.cert_file)
        rt = RealtimeSettings(
            _env_file=None, provider=self.provider, max_retry=3, retry_interval=0.1, connect_timeout=5.0, **keys,
        )
        brain_cfg = BrainConfig(_env_file=None, backend="offline", tools=[], apology=APOLOGY, hitl_timeout=10.0)  # type: ignore[call-arg]
        greeting: dict[str, Any] = {"greeting_mode": "say", "greeting": self.greeting} if self.greeting else {}
        self.settings = settings(mode="realtime", realtime=rt, brain=brain_cfg, provider_timeout=TIMEOUT, **greeting)
        self.loop_errors.install()
        self.model = create_realtime_model(rt)
        self.brain = create_voice_brain(brain_cfg, tools=self.tools, approvals=InProcessApprovalGate(policy=self.approval_policy))
        self.brain_events: list[Any] = []
        self.brain.subscribe(self.brain_events.append)
        self.session = build_realtime_session(self.settings, self.model, simulated=True)
        self.voice = RealtimeVoiceSession(
            self.settings, brain=self.brain, session=self.session, model=self.model,
            conversation_id="room-1", user_id="user", instructions="You are a test assistant.",
        )
        self.voice.attach_bridge(self.transport, served_identity="user", options=self.bridge_options)
        self.session.input.audio = self.input
        self.session.output.audio = self.sink
        await self.voice.start(greet=self.greeting is not None)
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            self.input.close()
            await self.voice.aclose()
            await self.server.aclose()
        finally:
            self.loop_errors.uninstall()
            if self.provider != "openai-realtime":
                if self._saved_cert_env is None:
                    os.environ.pop("SSL_CERT_FILE", None)
                else:
                    os.environ["SSL_CERT_FILE"] = self._saved_cert_env

    def arm(self, stage: str, fault: str) -> None:
        if stage == "realtime":
            self.faulty_reply = realtime_reply_fault(fault) if self.provider == "openai-realtime" else gemini_reply_fault(fault)
            # the fake plays this next whatever it is asked: `apology_problems` checks that the
            # agent did ask for the apology
            self.scripted_apology = Say(APOLOGY, audio_ms=300)
            self.server.script.extend([self.faulty_reply, self.scripted_apology])
        elif stage == "bridge":
            self.transport.arm(fault)
            self.script_answer()
        else:
            raise ValueError(stage)

    def script_answer(self) -> None:
        self.server.script.append(Say(ANSWER, audio_ms=400))

    def apology_problems(self, apology: str = APOLOGY) -> list[str]:
        """After a realtime-model fault: the agent itself requested the apology (empty list: it did).

        The scripted apology must have been started by a `response.create` from the agent whose
        instructions contain `apology`, sent after the faulty reply started; the faulty reply was
        started by the server (the user's turn), not by a request.
        """
        assert self.faulty_reply is not None and self.scripted_apology is not None, "arm('realtime', ...) first"
        started = [id(reply) for reply, _ in self.server.started]  # by identity: Say compares by value
        if id(self.faulty_reply) not in started or id(self.scripted_apology) not in started:
            return [f"the faulty reply and the apology were not both played (played {self.server.started})"]
        if started.index(id(self.scripted_apology)) <= started.index(id(self.faulty_reply)):
            return ["the apology was played before the fault"]
        if self.server.started_by(self.faulty_reply) is not None:
            return ["the faulty reply was requested by the agent, not started by the user's turn"]
        request = self.server.started_by(self.scripted_apology)
        if request is None:
            return ["the agent never requested the apology: the server started the scripted one itself"]
        if self.provider == "openai-realtime":
            instructions = str((request.get("response") or {}).get("instructions") or "")
            asked_for = self.server.requested_instructions()
        else:  # Gemini: the request is a `clientContent` turn carrying the instructions
            instructions = " ".join(p.get("text", "") for t in request.get("turns", []) for p in t.get("parts", []))
            asked_for = self.server.requested_texts()
        if apology not in instructions:
            return [f"the request after the fault did not ask for {apology!r} (instructions {instructions!r})"]
        asked = [i for i in asked_for if apology in i]
        if len(asked) != 1:
            return [f"the apology was requested {len(asked)} times"]
        return []

    async def wait(self, predicate: Callable[[], bool], within: float = 15.0) -> None:
        async def poll() -> None:
            while not predicate():  # noqa: ASYNC110
                await asyncio.sleep(0.02)

        await asyncio.wait_for(poll(), within)

    async def turn(self, *, expect_turns: int = 1) -> Observed:
        first_env = len(self.transport.envelopes)
        first_frames = len(self.sink.frames)
        dones_before = sum(1 for e in self.brain_events if e.type == "turn.done")
        self.server.transcripts.append(USER_SAYS)
        self.input.push_speech(self.samples, self.rate, trailing_silence_s=1.0)
        await self.wait(lambda: sum(1 for e in self.brain_events if e.type == "turn.done") >= dones_before + expect_turns, 20)
        await self.wait(lambda: self.session.agent_state != "speaking" and not self._open_turns(), 20)
        if self.voice.bridge is not None:
            await self.voice.bridge.flush(2.0)
        self.transport.fault = None
        frames = self.sink.frames[first_frames:]
        dones = [e for e in self.brain_events if e.type == "turn.done"][dones_before:]
        heard = [e.text for e in dones if e.text]
        return Observed(
            envelopes=self.transport.envelopes[first_env:],
            heard=heard,
            audio_seconds=sum(f.duration for f in frames),
            session_alive=not self.voice.closed.is_set(),
            loop_errors=list(self.loop_errors.items),
        )

    def _open_turns(self) -> bool:
        return bool(self.voice.tracker._open)

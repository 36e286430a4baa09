"""One conversation: the `AgentSession` wired to the brain, plus greeting and inactivity handling.

Used by the worker (with a room) and by `simulate` (with file audio); both go through here so
they behave the same.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable
from typing import Any

from livekit.agents import AgentSession, stt, tts, vad
from livekit.agents.voice.events import (
    AgentStateChangedEvent,
    CloseEvent,
    ErrorEvent,
    UserInputTranscribedEvent,
    UserStateChangedEvent,
)

from brain import VoiceBrain
from bridge import EventBridge, attach_event_bridge

from .brain_agent import BrainAgent, BrainLLM
from .config import AgentSettings
from .latency import LatencyCollector
from .turn_tracker import TrackedTurn, TurnTracker
from .turns import session_turn_kwargs

log = logging.getLogger("agent.session")

DEFAULT_FALSE_INTERRUPTION_TIMEOUT = 2.0  # livekit-agents' default (voice/turn.py)


def build_agent_session(
    settings: AgentSettings,
    *,
    vad: vad.VAD,
    stt: stt.STT,
    tts: tts.TTS,
    time_scale: float = 1.0,
    simulated: bool = False,
) -> AgentSession:
    """An `AgentSession` with the configured turn handling and the brain placeholder LLM.

    `time_scale` > 1 is for simulations running faster than real time: the wall-clock delays
    (endpointing, inactivity) shrink by that factor so they stay the same in audio time.
    VAD timings are measured on the audio itself and need no scaling. `simulated` input carries
    no echo of the agent, so livekit-agents' echo-cancellation warm-up (user audio ignored for the
    first 3 s the agent speaks) is turned off, as livekit-agents does for its own simulations.
    """
    kwargs = session_turn_kwargs(settings.turn, stt_streaming=stt.capabilities.streaming)
    if time_scale != 1.0:
        kwargs = _scaled(kwargs, time_scale, settings.turn.vad_min_silence_duration)
    away = settings.inactivity_timeout / time_scale if settings.inactivity_timeout > 0 else None
    if simulated:
        kwargs["aec_warmup_duration"] = None
    return AgentSession(vad=vad, stt=stt, tts=tts, llm=BrainLLM(), user_away_timeout=away, **kwargs)


def _scaled(kwargs: dict[str, Any], factor: float, vad_silence: float) -> dict[str, Any]:
    """Wall-clock delays for a clock running `factor` times faster than real time.

    livekit-agents dates the end of speech as "now - the VAD's silence duration", mixing wall
    time with audio time; the endpointing delays are corrected for that so a turn still ends
    `min_delay` seconds of audio after the speech.
    """
    out = copy.deepcopy(kwargs)
    skew = vad_silence * (1.0 - 1.0 / factor)
    handling = out.get("turn_handling", {})
    endpointing = handling.get("endpointing")
    if isinstance(endpointing, dict):
        for key in ("min_delay", "max_delay"):
            if isinstance(endpointing.get(key), int | float):
                endpointing[key] = endpointing[key] / factor + skew
    interruption = handling.get("interruption")
    if isinstance(interruption, dict):
        timeout = interruption.get("false_interruption_timeout", DEFAULT_FALSE_INTERRUPTION_TIMEOUT)
        if isinstance(timeout, int | float):
            interruption["false_interruption_timeout"] = timeout / factor
    return out


class VoiceSession:
    """The brain agent in an `AgentSession`, with the session-life rules from `AgentSettings`.

    It is also the bridge's `BridgeControls`: clients may interrupt the agent or type a message.
    """

    def __init__(
        self,
        settings: AgentSettings,
        *,
        brain: VoiceBrain,
        session: AgentSession,
        conversation_id: str,
        user_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.brain = brain
        self.session = session
        self.conversation_id = conversation_id
        self.tracker = TurnTracker(brain, conversation_id, user_id)
        self.agent = BrainAgent(brain, self.tracker)
        self.latency = LatencyCollector()
        self.latency.attach(session)
        self.closed = asyncio.Event()
        self.close_reason: str | None = None
        self._close_callbacks: list[Callable[[str], None]] = []
        self._goodbye_task: asyncio.Task[None] | None = None
        self.bridge: EventBridge | None = None
        self._bridge_closing: asyncio.Future[None] | None = None
        session.on("agent_state_changed", self._on_agent_state)
        session.on("user_state_changed", self._on_user_state)
        session.on("user_input_transcribed", self._on_transcribed)
        session.on("error", self._on_error)
        session.on("close", self._on_close)
        self.tracker.on_outcome(self._on_turn_outcome)

    def attach_bridge(self, room_or_transport: Any, *, served_identity: str | None) -> EventBridge | None:
        """Publish brain and session events to clients (a room, or e.g. a JsonLinesTransport)."""
        if not self.settings.bridge.enabled:
            return None
        self.bridge = attach_event_bridge(
            room_or_transport,
            brain=self.brain,
            agent_name=self.settings.name,
            served_identity=served_identity,
            controls=self,
            conversation_id=self.conversation_id,
            **self.settings.bridge.attach_kwargs(),
        )
        return self.bridge

    def start_options(self) -> dict[str, Any]:
        """Extra `AgentSession.start` arguments (livekit's `lk.agent.session` host off, unless asked)."""
        return dict(self.settings.bridge.session_start_options())

    # -- BridgeControls -----------------------------------------------------------------------

    async def interrupt(self, sender: str) -> None:
        log.info("interrupt requested by %s", sender)
        self.session.interrupt()

    async def user_text(self, sender: str, text: str) -> None:
        log.info("typed message from %s", sender)
        self.session.interrupt()
        self.session.generate_reply(user_input=text)

    def on_close(self, callback: Callable[[str], None]) -> None:
        """Called once with the reason when the session ends."""
        self._close_callbacks.append(callback)

    async def start(self, *, greet: bool = True, **start_kwargs: Any) -> None:
        await self.session.start(self.agent, **start_kwargs)
        if greet:
            self.greet()

    def greet(self) -> Any | None:
        """Speak the greeting (verbatim, or generated by the brain); returns the SpeechHandle."""
        s = self.settings
        if s.greeting_mode == "say" and s.greeting:
            return self.session.say(s.greeting)
        if s.greeting_mode == "generate" and s.greeting_prompt:
            self.agent.script_next_reply(s.greeting_prompt)
            return self.session.generate_reply()
        return None

    def end(self, reason: str, *, drain: bool = False) -> None:
        """Close the session (e.g. the last participant left)."""
        if self.close_reason is None:
            self.close_reason = reason
        log.info("ending session %s: %s", self.conversation_id, reason)
        self.session.shutdown(drain=drain)

    async def aclose(self) -> None:
        """Close the session (if still open) and the bridge (pending approvals -> cancelled)."""
        if not self.closed.is_set():
            await self.session.aclose()
        if self._bridge_closing is not None:
            await self._bridge_closing
        elif self.bridge is not None:
            await self.bridge.aclose()

    # -- events -------------------------------------------------------------------------------

    def _on_agent_state(self, ev: AgentStateChangedEvent) -> None:
        if ev.new_state == "speaking":
            self.tracker.audio_started(self.session.current_speech)

    def _on_user_state(self, ev: UserStateChangedEvent) -> None:
        if ev.new_state == "away" and self._goodbye_task is None and not self.closed.is_set():
            self._goodbye_task = asyncio.create_task(self._say_goodbye(), name="agent-inactivity-goodbye")

    async def _say_goodbye(self) -> None:
        log.info("no activity for %.0f s in %s; saying goodbye", self.settings.inactivity_timeout, self.conversation_id)
        self.close_reason = "inactivity timeout"
        try:
            if self.settings.goodbye:
                handle = self.session.say(self.settings.goodbye, allow_interruptions=False)
                await handle.wait_for_playout()
        finally:
            self.session.shutdown(drain=True)

    def _on_transcribed(self, ev: UserInputTranscribedEvent) -> None:
        if self.bridge is not None and ev.transcript:
            self.bridge.publish_transcript(ev.transcript, ev.is_final)

    def _on_error(self, ev: ErrorEvent) -> None:
        if self.bridge is None:
            return
        err = ev.error
        code = str(getattr(err, "type", "session_error"))  # stt_error, tts_error, llm_error, ...
        recoverable = bool(getattr(err, "recoverable", True))
        detail = getattr(err, "error", err)
        self.bridge.publish_error(code, f"{type(detail).__name__}: {detail}", fatal=not recoverable)

    def _on_turn_outcome(self, tracked: TrackedTurn) -> None:
        row = self.latency.claim(tracked.turn.turn_id) if tracked.audio_started else None
        if row is not None and self.bridge is not None:
            self.bridge.publish_metrics(tracked.turn.turn_id, row.metrics_ms())

    def _on_close(self, ev: CloseEvent) -> None:
        if self.closed.is_set():
            return
        reason = str(self.close_reason or getattr(ev.reason, "value", ev.reason))
        self.close_reason = reason
        self.closed.set()
        if self.bridge is not None:
            self._bridge_closing = asyncio.ensure_future(self.bridge.aclose())
        for cb in list(self._close_callbacks):
            try:
                cb(reason)
            except Exception:  # noqa: BLE001
                log.exception("close callback failed")

"""One conversation: the `AgentSession` wired to the brain, plus greeting and inactivity handling.

Used by the worker (with a room) and by `simulate` (with file audio); both go through here so
they behave the same. `VoiceSession` is pipeline mode (STT -> brain -> TTS),
`RealtimeVoiceSession` (agent.realtime_session) realtime mode; they share the session life,
the bridge wiring and the provider-error handling of `BaseVoiceSession`.

Provider failures: every session `error` event becomes one log line and one `error` envelope
(code from `providers.provider_errors`, `fatal` only if the session closes because of it), and
the user hears something: the brain's own apology when the brain fails, `AGENT_STT_APOLOGY`
when the user's speech could not be transcribed (a turn of its own, ending with `turn.done`
`error`), `BRAIN_APOLOGY` in the offline voice (agent.apology) when the TTS failed.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from livekit.agents import AgentSession, APIConnectOptions, stt, tts, vad
from livekit.agents.voice.agent_session import SessionConnectOptions
from livekit.agents.voice.events import (
    AgentStateChangedEvent,
    CloseEvent,
    CloseReason,
    ErrorEvent,
    UserInputTranscribedEvent,
    UserStateChangedEvent,
)
from livekit.agents.voice.room_io import RoomOptions, TextInputEvent, TextInputOptions
from livekit.agents.voice.speech_handle import SpeechHandle

from brain import TextDelta, TurnDone, TurnStarted, VoiceBrain
from brain.turn import new_turn_id
from bridge import BridgeOptions, ControlRefused, EventBridge, attach_event_bridge
from bridge.protocol import USER_TEXT_MAX_CHARS, SessionEndReason
from providers.deadlines import WrappedSTT, time_budget
from providers.provider_errors import (
    ProviderErrorReport,
    classify_provider_error,
    log_provider_error,
    provider_name,
    safe_message,
    unwrap_provider_error,
)
from providers.tts_chains import SentenceChainTTS

from . import apology
from .audio_io import MonoInput, QuietFillInput
from .brain_agent import BrainAgent, BrainLLM
from .config import AgentSettings
from .guards import guard_stt
from .latency import LatencyCollector, NoReply
from .session_errors import ErrorBudget, error_kind, report_for
from .shared_vad import SegmentedSTT, SharedVAD
from .stream_guard import StallGuardSTT
from .turn_tracker import TrackedTurn, TurnTracker
from .turns import session_turn_kwargs

log = logging.getLogger("agent.session")

SETTLE_WAIT = 3.0
"""Seconds a typed message waits for the interrupted reply to settle before it goes on anyway."""
_CAUSE_MAX_AGE = 30.0
"""Seconds a chain member's error explains its dropping out of the chain (livekit fails over
within its retries, seconds after the error)."""

DEFAULT_FALSE_INTERRUPTION_TIMEOUT = 2.0  # livekit-agents' default (voice/turn.py)
DEFAULT_CLOSE_TRANSCRIPT_TIMEOUT = 2.0  # livekit-agents' default (AgentSession)


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
    if time_scale != 1.0:  # on close, livekit waits this long (wall time) for a last transcript
        kwargs["session_close_transcript_timeout"] = DEFAULT_CLOSE_TRANSCRIPT_TIMEOUT / time_scale
    engine = guard_stt(stt, settings.provider_timeout, end_of_speech_lag=settings.turn.vad_min_silence_duration)
    if not engine.capabilities.streaming:  # one Silero pass: the batch STT gets the session's segments
        shared = SharedVAD(vad)
        vad, engine = shared, SegmentedSTT(engine, shared)
    return AgentSession(
        vad=vad,
        stt=engine,
        tts=tts,
        llm=BrainLLM(),
        user_away_timeout=away,
        conn_options=session_conn_options(settings),
        **kwargs,
    )


def session_conn_options(settings: AgentSettings) -> SessionConnectOptions:
    """Retries and connect timeout of the session's STT / TTS requests (AGENT_PROVIDER_*)."""
    opts = APIConnectOptions(
        max_retry=settings.provider_max_retry,
        retry_interval=settings.provider_retry_interval,
        timeout=settings.provider_timeout,
    )
    return SessionConnectOptions(stt_conn_options=opts, llm_conn_options=opts, tts_conn_options=opts)


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


_ENDED_BY: dict[Any, SessionEndReason] = {
    CloseReason.ERROR: "error",
    CloseReason.PARTICIPANT_DISCONNECTED: "participant_left",
}
"""What clients are told of a session livekit closed for a reason of its own (else `shutdown`)."""


class BaseVoiceSession:
    """An agent in an `AgentSession`, with the session-life rules from `AgentSettings`.

    It is also the bridge's `BridgeControls`: clients may interrupt the agent or type a message.
    Subclasses provide `agent` and the mode's greeting / goodbye / failure handling.
    """

    agent: Any

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
        self.user_id = user_id
        self.latency = LatencyCollector()
        self.latency.attach(session)
        self.closed = asyncio.Event()
        self.close_reason: str | None = None
        self.ended: SessionEndReason | None = None
        """Why the session ended, as clients are told (`session.ended`); set when it starts ending."""
        self.errors: list[ProviderErrorReport] = []
        """Every provider failure reported in this session (for tests and diagnostics)."""
        self._budget = ErrorBudget(session)
        self._last_member_error: dict[int, Any] = {}
        """The last error event of each provider inside a fallback chain, by id()."""
        self._hand_over: dict[int, str] = {}
        """What happens when a provider inside a fallback chain fails, by id() (see
        `_watch_fallback_chains`)."""
        self._close_callbacks: list[Callable[[str], None]] = []
        self._goodbye_task: asyncio.Task[None] | None = None
        self.bridge: EventBridge | None = None
        self._bridge_closing: asyncio.Future[None] | None = None
        session.on("agent_state_changed", self._on_agent_state)
        session.on("user_state_changed", self._on_user_state)
        session.on("user_input_transcribed", self._on_transcribed)
        session.on("error", self._on_error)
        session.on("close", self._on_close)
        self._watch_fallback_chains()

    def attach_bridge(
        self,
        room_or_transport: Any,
        *,
        served_identity: str | None,
        options: BridgeOptions | None = None,
    ) -> EventBridge | None:
        """Publish brain and session events to clients (a room, or e.g. a JsonLinesTransport).

        `options` replaces the bridge options BRIDGE_* would give (tests tune timeouts with it).
        """
        if not self.settings.bridge.enabled:
            return None
        kwargs = self.settings.bridge.attach_kwargs()
        if options is not None:
            kwargs["options"] = options
        self.bridge = attach_event_bridge(
            room_or_transport,
            brain=self.bridge_source(),
            agent_name=self.settings.name,
            served_identity=served_identity,
            controls=self,
            conversation_id=self.conversation_id,
            **kwargs,
        )
        return self.bridge

    def bridge_source(self) -> Any:
        """What the bridge subscribes to for brain events (the brain itself by default)."""
        return self.brain

    def start_options(self) -> dict[str, Any]:
        """Extra `AgentSession.start` arguments (livekit's `lk.agent.session` host off, unless asked)."""
        return dict(self.settings.bridge.session_start_options())

    def room_options(self, identity: str) -> RoomOptions:
        """livekit's room I/O for the served participant: the session outlives a dropped
        connection (`room_life` decides), and LiveKit's own chat topic (`lk.chat`, which livekit
        reads from that participant only) is taken as the bridge's `user.text` is."""
        return RoomOptions(
            participant_identity=identity,
            close_on_disconnect=False,
            text_input=TextInputOptions(text_input_cb=self._chat_text),
        )

    async def _chat_text(self, session: Any, event: TextInputEvent) -> None:
        """A message on LiveKit's chat topic. livekit's own handler answered any text, megabytes
        included, and raised into its log during the goodbye; this is `user_text`'s path, with
        its length limit."""
        sender = event.participant.identity if event.participant is not None else (self.user_id or "")
        text = event.text
        if not text.strip():
            return
        if len(text) > USER_TEXT_MAX_CHARS:
            log.warning("chat message from %s refused: %d characters (at most %d)", sender, len(text), USER_TEXT_MAX_CHARS)
            if self.bridge is not None:
                self.bridge.publish_error(
                    "too_large", f"a typed message of {len(text)} characters was not sent to the agent "
                    f"(at most {USER_TEXT_MAX_CHARS})")
            return
        try:
            await self.user_text(sender, text)
        except ControlRefused as e:
            log.warning("chat message from %s not taken: %s", sender, e)
            if self.bridge is not None:
                self.bridge.publish_error("unsupported", f"a typed message was not taken: {e}")

    # -- BridgeControls -----------------------------------------------------------------------

    async def _interrupt(self) -> None:
        """Interrupt the current reply and wait until livekit has settled it (its speech done,
        the brain told what was heard, an unheard turn merged): the next turn must not start
        before that, or the model is sent the unheard reply and a merge is lost. The wait is
        bounded below the bridge's control timeout: a reply slow to settle (livekit forces it
        after 5 s) must not cost the user's typed message."""
        try:
            settled = self.session.interrupt()
        except RuntimeError as e:  # the goodbye (allow_interruptions=False), or a closed session
            raise ControlRefused(f"the agent cannot be interrupted now ({e})") from e
        limit = self.bridge.options.control_timeout if self.bridge is not None else SETTLE_WAIT + 1.0
        bound = max(0.1, min(SETTLE_WAIT, limit - 1.0))
        try:
            await asyncio.wait_for(asyncio.shield(settled), bound)
        except TimeoutError:
            log.warning("the interrupted reply did not settle within %.1f s; going on", bound)

    async def interrupt(self, sender: str) -> None:
        log.info("interrupt requested by %s", sender)
        self.stop_requested()
        await self._interrupt()

    def stop_requested(self) -> None:
        """An explicit stop is not a barge-in: what was cut off is not carried into the next turn."""

    async def user_text(self, sender: str, text: str) -> None:
        log.info("typed message from %s", sender)
        await self._interrupt()
        self.session.generate_reply(user_input=text)

    def on_close(self, callback: Callable[[str], None]) -> None:
        """Called once with the reason when the session ends."""
        self._close_callbacks.append(callback)

    async def start(self, *, greet: bool = True, **start_kwargs: Any) -> None:
        audio_in = self.session.input.audio
        if start_kwargs.get("room") is None and audio_in is not None and not isinstance(audio_in, MonoInput | QuietFillInput):
            self.session.input.audio = QuietFillInput(MonoInput(audio_in))  # a custom input may be stereo
        try:
            await self.session.start(self.agent, **start_kwargs)
        except Exception as e:
            # the bridge may already have greeted clients (`session.hello`): they would see only
            # the agent leave. Its type only: the text (raised on, the job's log) is the operator's
            self.ended = self.ended or "error"
            if self.bridge is not None:
                self.bridge.publish_error("internal", f"the session could not start ({type(e).__name__})", fatal=True)
            raise
        audio_in = self.session.input.audio
        if audio_in is not None and not isinstance(audio_in, QuietFillInput):  # the room's input
            # a muted (or unpublished) microphone sends no frames: heard as silence, so the
            # user's speech ends, as it would with the microphone open
            self.session.input.audio = QuietFillInput(audio_in)
        if greet:
            self.greet()

    def greet(self) -> Any | None:
        raise NotImplementedError

    def say_goodbye(self, text: str) -> Any:
        """Start speaking the goodbye; returns its SpeechHandle."""
        raise NotImplementedError

    def end(self, reason: str, *, drain: bool = False, ended: SessionEndReason = "participant_left") -> None:
        """Close the session (e.g. the last participant left); clients are told `ended`."""
        if self.close_reason is None:
            self.close_reason = reason
        if self.ended is None:
            self.ended = ended
        log.info("ending session %s: %s", self.conversation_id, reason)
        if self.bridge is not None:  # before livekit interrupts the turn waiting for them (`by: null`)
            self.bridge.cancel_pending("system:session_closed")
        self.session.shutdown(drain=drain)

    async def _cancel_pending_approvals(self) -> None:
        """Before the session stops its tasks: pending approvals end as cancelled by
        `system:session_closed` (not as an interrupted turn's, `by: null`), and the model is told."""
        if self.bridge is not None and self.bridge.cancel_pending("system:session_closed"):
            for _ in range(5):  # let the brain's waiting calls observe it and emit their events
                await asyncio.sleep(0)

    async def _close_session(self, within: float | None = None) -> None:
        """Close the livekit session (pending approvals first, as cancelled by the session)."""
        if self.closed.is_set():
            return
        await self._cancel_pending_approvals()
        try:
            await asyncio.wait_for(self.session.aclose(), within)
        except Exception as e:  # noqa: BLE001 - livekit-agents 1.8 re-raises a realtime model's
            # fatal failure (already reported) from aclose, without emitting `close`: close our
            # side as that event would (held turn.done, close callbacks, the bridge)
            log.warning("closing the session of %s failed: %r", self.conversation_id, e)
            self._on_close(CloseEvent(reason=CloseReason.ERROR))

    async def deliver_last_events(self) -> None:
        """Close the bridge, if the session's end has not, and wait until it has sent its last
        envelopes (the cancelled approvals, `session.ended`), within its flush timeout. The
        worker awaits it when livekit has closed the session (or the session never started),
        before livekit disconnects the room: envelopes sent after that reach nobody."""
        if self._bridge_closing is None and self.bridge is not None:
            self._bridge_closing = asyncio.ensure_future(self.bridge.aclose(self.ended or "shutdown"))
        if self._bridge_closing is not None:
            await asyncio.shield(self._bridge_closing)

    async def aclose(self) -> None:
        """Close the session (if still open) and the bridge (pending approvals -> cancelled)."""
        await self._close_session()
        if self._bridge_closing is not None:
            await self._bridge_closing
        elif self.bridge is not None:
            await self.bridge.aclose(self.ended)  # never started (`error`): no `close` event

    # -- provider failures ----------------------------------------------------------------------

    def publish_report(self, report: ProviderErrorReport, *, fatal: bool = False, turn_id: str | None = None) -> None:
        """One provider failure to clients (the caller has logged it)."""
        self.errors.append(report)
        if self.bridge is not None:
            self.bridge.publish_error(report.code, report.client_message, fatal=fatal, turn_id=turn_id)

    def _watch_fallback_chains(self) -> None:
        """livekit's fallback adapters hand over to the next provider without a session error;
        clients and the log still hear which provider failed and why (the turn carries on)."""
        stt_chain = self.session.stt
        while isinstance(stt_chain, WrappedSTT):  # the agent's guards wrap a chain
            stt_chain = stt_chain.inner
        chains: list[tuple[Any, str, str]] = []
        if isinstance(stt_chain, stt.FallbackAdapter):
            chains.append((stt_chain, "stt_availability_changed", "_stt_instances"))
        if isinstance(self.session.tts, tts.FallbackAdapter):
            chains.append((self.session.tts, "tts_availability_changed", "_tts_instances"))
        for chain, event, members in chains:
            chain.on(event, self._on_availability_changed)
            listed = list(getattr(chain, members, ()))  # livekit-agents 1.x keeps them there
            for i, member in enumerate(listed):
                remember = functools.partial(self._remember_member_error, member)
                member.on("error", remember)
                wrapped = getattr(member, "wrapped_stt", None)  # a VAD adapter around a batch STT:
                if wrapped is not None:  # `BatchFallbackSTT` asks the provider itself, which reports
                    wrapped.on("error", remember)
                self._hand_over[id(member)] = _hand_over(chain, last=i == len(listed) - 1)

    def _remember_member_error(self, member: Any, ev: Any) -> None:
        self._last_member_error[id(member)] = ev

    def _on_availability_changed(self, ev: Any) -> None:
        member = getattr(ev, "stt", None) or getattr(ev, "tts", None)
        provider = provider_name(member)
        cause = self._last_member_error.pop(id(member), None)
        if cause is not None and time.time() - getattr(cause, "timestamp", 0.0) > _CAUSE_MAX_AGE:
            cause = None  # an old, retried error: not why the provider dropped out now (a stall)
        if ev.available:
            log.info("provider %s is available again", provider)
            return
        # the member's own last error says why (a bad key reads `auth`, not just `unavailable`)
        code, retryable = classify_provider_error(cause) if cause is not None else ("unavailable", True)
        why = f" ({safe_message(unwrap_provider_error(cause))})" if cause is not None else ""
        report = ProviderErrorReport(
            provider=provider,
            code=code,
            message=f"{provider} failed{why}; {self._hand_over.get(id(member), _TAKES_OVER)}",
            recoverable=True,
            retryable=retryable,
        )
        log_provider_error(report, log)
        self.publish_report(report)

    def _on_error(self, ev: ErrorEvent) -> None:
        try:
            report = report_for(ev)
            kind = error_kind(ev)
            fatal = self._budget.closes_session(kind, report.recoverable)
            self.handle_failure(report, kind=kind, fatal=fatal)
        except Exception:  # noqa: BLE001 - error handling must never break the session
            log.exception("could not handle a session error")

    def handle_failure(self, report: ProviderErrorReport, *, kind: str, fatal: bool) -> None:
        self.publish_report(report, fatal=fatal)

    # -- events -------------------------------------------------------------------------------

    def _on_agent_state(self, ev: AgentStateChangedEvent) -> None:
        pass

    def _on_user_state(self, ev: UserStateChangedEvent) -> None:
        guard = self.session.stt
        if isinstance(guard, StallGuardSTT):  # a streaming STT owes a transcript per segment
            if ev.new_state == "speaking":
                guard.speech_started()
            elif ev.old_state == "speaking":
                guard.speech_ended()
        if ev.new_state == "away" and self._goodbye_task is None and not self.closed.is_set():
            self._goodbye_task = asyncio.create_task(self._say_goodbye(), name="agent-inactivity-goodbye")

    async def _say_goodbye(self) -> None:
        log.info("no activity for %.0f s in %s; saying goodbye", self.settings.inactivity_timeout, self.conversation_id)
        self.close_reason = "inactivity timeout"
        self.ended = self.ended or "inactivity"
        try:
            if self.settings.goodbye:
                handle = self.say_goodbye(self.settings.goodbye)
                await handle.wait_for_playout()
        finally:
            self.session.shutdown(drain=True)

    def _on_transcribed(self, ev: UserInputTranscribedEvent) -> None:
        if self.bridge is not None and ev.transcript:
            self.bridge.publish_transcript(ev.transcript, ev.is_final)

    def _on_close(self, ev: CloseEvent) -> None:
        if self.closed.is_set():
            return
        reason = str(self.close_reason or getattr(ev.reason, "value", ev.reason))
        self.close_reason = reason
        if self.ended is None:
            # not ended by us (the user gone, the goodbye, a fatal error we saw): livekit's own
            # reason; the job closing the session (the worker shutting down or restarting, its
            # drain timeout over) is `aclose()`, i.e. user_initiated
            self.ended = _ENDED_BY.get(ev.reason, "shutdown")
        self.closed.set()
        if self.bridge is not None:
            self._bridge_closing = asyncio.ensure_future(self.bridge.aclose(self.ended))
        for cb in list(self._close_callbacks):
            try:
                cb(reason)
            except Exception:  # noqa: BLE001
                log.exception("close callback failed")


class VoiceSession(BaseVoiceSession):
    """Pipeline mode: the brain answers in `BrainAgent.llm_node`, the configured STT / TTS listen and speak."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        brain: VoiceBrain,
        session: AgentSession,
        conversation_id: str,
        user_id: str | None = None,
    ) -> None:
        super().__init__(settings, brain=brain, session=session, conversation_id=conversation_id, user_id=user_id)
        self.tracker = TurnTracker(brain, conversation_id, user_id)
        # a TTS chain first gives each of its providers its own deadline (providers.chains)
        tts_timeout = settings.provider_timeout + time_budget(session.tts)
        self.agent = BrainAgent(brain, self.tracker, tts_timeout=tts_timeout, on_tts_stall=self._on_tts_stall)
        self.tracker.on_outcome(self._on_turn_outcome)
        self.tracker.on_commit(self._on_turn_committed)
        self._user_spoke = False  # since the last transcript: an STT failure lost their words
        self._tts_failed: set[str] = set()  # turn ids whose reply audio failed
        self._greeting: tuple[Any, str] | None = None  # a greeting said as is: (its speech, its turn id)
        self._held: dict[str, list[tuple[TurnDone, Callable[[Any], None]]]] = {}
        self._uncommitted: dict[str, list[tuple[Any, Callable[[Any], None]]]] = {}
        """Brain events of preemptive generations livekit has not kept yet, by turn id."""
        self._said_over: SpeechHandle | None = None
        """The reply (SpeechHandle) the user's last transcribed words were said over, while it played."""
        self.on_close(lambda _reason: self._release_all())
        if _has_loop():
            apology.prepare(settings.brain.apology)  # ready before the TTS can fail

    def bridge_source(self) -> Any:
        return _HeldTurnDone(self)

    def relay(self, event: Any, deliver: Callable[[Any], None]) -> None:
        """A reply's `TurnDone` reaches clients once its speech has ended, not when the brain has
        finished writing it: so a TTS failure can still mark it `error`, and it follows the
        reply's `error` envelope (as in realtime mode, where the turn ends with the speech).

        The events of a reply begun before the user's turn was over (preemptive generation) wait
        until livekit keeps it, then go out in order; those of one it throws away never go out
        (clients would see a turn, its text and its end for a reply nobody hears)."""
        turn_id = getattr(event, "turn_id", None)
        tracked = self.tracker.find(turn_id) if isinstance(turn_id, str) else None
        if tracked is not None and not tracked.committed:
            if tracked.outcome == "pending":
                self._uncommitted.setdefault(tracked.turn.turn_id, []).append((event, deliver))
            return  # thrown away: dropped
        if isinstance(event, TurnDone):
            tracked = self.tracker.find(event.turn_id)
            if tracked is not None and tracked.speech_id is not None and tracked.outcome == "pending":
                self._held.setdefault(event.turn_id, []).append((event, deliver))
                return
            event = self._as_heard(event, tracked)  # its speech already ended (e.g. forced done)
        deliver(event)

    def _on_turn_committed(self, tracked: TrackedTurn) -> None:
        for event, deliver in self._uncommitted.pop(tracked.turn.turn_id, []):
            self.relay(event, deliver)

    def _release(self, turn_id: str) -> None:
        tracked = self.tracker.find(turn_id)
        for event, deliver in self._held.pop(turn_id, []):
            deliver(self._as_heard(event, tracked))

    def _as_heard(self, event: TurnDone, tracked: TrackedTurn | None) -> TurnDone:
        """The turn as the user experienced it: a reply whose audio failed is an `error`; one cut
        off (after some audio, or before any: merged / discarded) is `interrupted` with the text
        that was heard, whatever the brain had written by then (a failed turn cut off stays an
        `error`, with the text heard: not the unheard rest, nor an apology never played)."""
        if event.turn_id in self._tts_failed and event.reason == "completed":
            heard = tracked.spoken if tracked is not None and tracked.spoken is not None else event.text
            return event.model_copy(update={"reason": "error", "text": heard})
        if tracked is not None and tracked.outcome in ("interrupted", "merged", "discarded"):
            reason = "error" if event.reason == "error" else "interrupted"
            return event.model_copy(update={"reason": reason, "text": tracked.spoken or ""})
        return event

    def _release_all(self) -> None:
        self._uncommitted.clear()  # the session closed before livekit kept them
        for turn_id in list(self._held):
            self._release(turn_id)

    def greet(self) -> Any | None:
        """Speak the greeting (verbatim, or generated by the brain); returns the SpeechHandle."""
        s = self.settings
        if s.greeting_mode == "say" and s.greeting:
            handle = self.session.say(s.greeting)
            # the brain did not write it, so it would not know what it asked: remembered now (before
            # any user turn), cut to what was heard once it has played
            turn_id = self.brain.remember_greeting(self.conversation_id, s.greeting)
            self._greeting = (handle, turn_id)
            handle.add_done_callback(lambda h: self._greeting_heard(h, turn_id))
            return handle
        if s.greeting_mode == "generate" and s.greeting_prompt:
            self.agent.script_next_reply(s.greeting_prompt)
            return self.session.generate_reply()
        return None

    def _greeting_heard(self, handle: Any, turn_id: str) -> None:
        # cut off, or its audio failed (the user heard the apology instead of the rest; livekit
        # then records none of it as said): memory keeps only what was heard
        if not handle.interrupted and turn_id not in self._tts_failed:
            return
        heard = " ".join(
            item.text_content for item in handle.chat_items
            if getattr(item, "role", None) == "assistant" and item.text_content
        ).strip()
        if heard:
            self.brain.record_spoken(self.conversation_id, turn_id, heard)
        else:  # cut off before any of it played (or failed): nobody heard it
            self.brain.forget_turn(self.conversation_id, turn_id)

    def say_goodbye(self, text: str) -> Any:
        return self.session.say(text, allow_interruptions=False)

    def stop_requested(self) -> None:
        self.tracker.stop()

    # -- provider failures ----------------------------------------------------------------------

    def _current_turn(self) -> TrackedTurn | None:
        turns = self.tracker.turns
        return turns[-1] if turns and turns[-1].outcome == "pending" else None

    def handle_failure(self, report: ProviderErrorReport, *, kind: str, fatal: bool) -> None:
        final = not report.recoverable  # this request gave up (a recoverable one is being retried)
        if kind == "tts_error" and not final:
            return  # logged; one envelope per request, from its last attempt (or none if a retry works)
        if kind == "stt_error":
            if final and self._user_spoke and self.settings.stt_apology and not fatal:
                self._user_spoke = False
                self._apology_turn(report, self.settings.stt_apology)
                return
            self.publish_report(report, fatal=fatal)
            return
        current = self._current_turn()
        turn_id = current.turn.turn_id if current is not None else None
        self.publish_report(report, fatal=fatal, turn_id=turn_id)
        if kind == "tts_error" and final and not fatal:
            self._tts_apology(turn_id)

    def _on_tts_stall(self, reason: str) -> None:
        """The TTS produced no audio in time (agent.guards): a `timeout` failure of the TTS."""
        report = ProviderErrorReport(
            provider=provider_name(self.session.tts),
            code="timeout",
            message=reason,
            recoverable=True,
            retryable=True,
        )
        log_provider_error(report, log)
        current = self._current_turn()
        turn_id = current.turn.turn_id if current is not None else None
        self.publish_report(report, turn_id=turn_id)
        self._tts_apology(turn_id)

    def _tts_apology(self, turn_id: str | None) -> None:
        """Apologise in the offline voice: the configured TTS is what just failed."""
        if turn_id is None and self._greeting is not None and not self._greeting[0].done():
            turn_id = self._greeting[1]  # the greeting was playing (no user turn yet)
        if turn_id is not None:
            if turn_id in self._tts_failed:
                return  # once per reply
            self._tts_failed.add(turn_id)
        text = self.settings.brain.apology
        if not text or self.closed.is_set():
            return
        audio = apology.cached(text)
        if audio is None:
            log.warning("apology audio not ready; the apology is not spoken")
            return
        try:
            self.session.say(text, audio=apology.replay(audio), add_to_chat_ctx=False)
        except RuntimeError as exc:  # the session is closing
            log.debug("no apology: %s", exc)

    def _apology_turn(self, report: ProviderErrorReport, text: str) -> None:
        """The user's words were lost: a short turn of our own, apologising (with its turn.done)."""
        conv, turn_id = self.conversation_id, new_turn_id()
        emit = self.brain.events.emit
        emit(TurnStarted(conversation_id=conv, turn_id=turn_id, transcript=""))
        self.publish_report(report, turn_id=turn_id)
        emit(TextDelta(conversation_id=conv, turn_id=turn_id, text=text))

        def done(_: Any = None) -> None:
            emit(TurnDone(conversation_id=conv, turn_id=turn_id, reason="error", text=text))

        try:
            handle = self.session.say(text, add_to_chat_ctx=False)
        except RuntimeError as exc:  # the session is closing
            log.debug("no apology: %s", exc)
            done()
            return
        handle.add_done_callback(done)

    # -- events -------------------------------------------------------------------------------

    def _on_agent_state(self, ev: AgentStateChangedEvent) -> None:
        if ev.new_state == "speaking":
            self.tracker.audio_started(self.session.current_speech)

    def _on_user_state(self, ev: UserStateChangedEvent) -> None:
        if ev.new_state == "speaking":
            self._user_spoke = True
        super()._on_user_state(ev)

    def _on_transcribed(self, ev: UserInputTranscribedEvent) -> None:
        if ev.is_final:
            self._user_spoke = False
            if ev.transcript.strip():
                self._words_said_over_reply()
        super()._on_transcribed(ev)

    def _words_said_over_reply(self) -> None:
        """Words were transcribed while a reply played. If they cut it off, they are the user's
        next turn. If the reply plays on (fewer than TURN_MIN_INTERRUPTION_WORDS: "uh-huh",
        "right"), livekit-agents 1.8 keeps them pending and, when the user next speaks, answers
        them as a turn of their own or glues them to the new words: they are dropped instead,
        once that reply has played to its end (`_drop_words_said_over`)."""
        if self.settings.turn.min_interruption_words <= 0:
            return  # any words cut the reply off
        speech = self.session.current_speech
        if self.session.agent_state != "speaking" or speech is None or speech.interrupted:
            return
        if not speech.allow_interruptions:
            return  # livekit takes them as the next turn, after this reply
        if self._said_over is not speech:
            self._said_over = speech
            speech.add_done_callback(self._drop_words_said_over)

    def _drop_words_said_over(self, speech: SpeechHandle) -> None:
        if self._said_over is not speech:
            return
        self._said_over = None
        if speech.interrupted or self.closed.is_set():
            return  # the words cut the reply off: they are the next turn
        if self.session.user_state == "speaking":
            return  # the user is talking again: leave their turn alone
        log.info("words said over a reply too short to interrupt it are dropped, not kept for the next turn")
        try:
            self.session.clear_user_turn()
        except RuntimeError as exc:  # the session is closing
            log.debug("could not drop them: %s", exc)

    def _on_turn_outcome(self, tracked: TrackedTurn) -> None:
        turn_id = tracked.turn.turn_id
        self._uncommitted.pop(turn_id, None)  # a generation thrown away: its events never go out
        if turn_id in self._tts_failed and tracked.spoken is None:
            # the reply's audio failed: what was heard, if any (cut off before any audio, merged
            # or discarded, nothing); the brain must not think the unheard rest was said (the
            # tracker already settled the memory of a merged or discarded turn)
            tracked.spoken = (tracked.heard or "") if tracked.audio_started else ""
            if tracked.outcome in ("pending", "completed"):
                self.brain.record_spoken(self.conversation_id, turn_id, tracked.spoken)
        self._release(turn_id)
        why = _no_reply(tracked, tts_failed=turn_id in self._tts_failed)
        if why is not None:  # (a no-op when livekit recorded the reply)
            self.latency.no_reply(why)
        row = self.latency.claim(turn_id) if tracked.audio_started else None
        if row is not None and self.bridge is not None:
            self.bridge.publish_metrics(turn_id, row.metrics_ms())


class _HeldTurnDone:
    """The brain as the bridge sees it in pipeline mode: events pass through `VoiceSession.relay`."""

    def __init__(self, voice: VoiceSession) -> None:
        self._voice = voice

    def __getattr__(self, name: str) -> Any:
        return getattr(self._voice.brain, name)

    def subscribe(self, callback: Callable[[Any], None]) -> Callable[[], None]:
        voice = self._voice
        return voice.brain.subscribe(lambda event: voice.relay(event, callback))


def _no_reply(tracked: TrackedTurn, *, tts_failed: bool) -> NoReply | None:
    """Why a brain turn would leave its user turn unanswered if livekit recorded no reply for it
    (None: it answered no user turn, e.g. a preemptive generation livekit discarded, whose user
    turn the next generation answers, or a generated greeting)."""
    if tracked.scripted:
        return None
    if tracked.stopped and tracked.outcome in ("interrupted", "discarded"):
        return "stopped"
    if tracked.outcome == "merged":
        return "merged"
    if tts_failed:  # livekit records no reply whose audio failed, even part-way
        return "tts_failed"
    if tracked.outcome == "interrupted":
        return "cut_off"
    if tracked.outcome == "completed":
        return "empty"
    return None  # discarded: never scheduled


_TAKES_OVER = "the next provider in the chain takes over"


def _hand_over(chain: Any, *, last: bool) -> str:
    """What the chain does when one of its providers fails, as clients are told."""
    if last:
        return "it is the last provider in the chain"
    if isinstance(chain, tts.FallbackAdapter) and not isinstance(chain, SentenceChainTTS):
        # livekit's adapter streams a reply to one provider and hands over only what that
        # provider had not begun to say: the rest of a begun reply is dropped (docs/errors.md)
        return f"{_TAKES_OVER} (a reply it had begun to speak is not finished)"
    return _TAKES_OVER


def _has_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True

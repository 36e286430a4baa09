"""Realtime mode: a speech-to-speech model with the brain's tools, approvals and events.

    agent = RealtimeBrainAgent(brain, conversation_id=room.name)
    session = AgentSession(llm=create_realtime_model(RealtimeSettings()), vad=None)
    await session.start(agent=agent, room=room)

What carries over from pipeline mode:

* Tools: every brain `Tool` becomes a raw function tool of the realtime session (same name,
  description and JSON schema). Calls run through `VoiceBrain.run_tool_call`, i.e. the same
  validation, approval gate, timeout and ToolStarted / Approval* / ToolFinished events, with the
  realtime `call_id` as call id.
* Turns: each agent reply (a livekit SpeechHandle, including its tool calls and the follow-up
  reply) is one brain turn: TurnStarted when the reply is created, TextDelta for each transcript
  chunk of the model's audio, TurnDone exactly once when the reply ends, or as soon as its
  calls are cancelled if it is interrupted while they run (`interrupted` if the user barged in,
  `error` if a provider error hit it, else `completed`). A model that answers tool results in
  a reply of its own (Gemini Live) has that reply folded into the same turn. They
  go to `brain.events`, so the bridge needs no special case.
* Errors: the session's `error` events become brain `ErrorEvent`s with stable codes (see
  providers.provider_errors) and one log line each; a reply broken by a recoverable provider
  failure is followed by a short spoken apology, and the session goes on.
* Stalls: with `stall_timeout`, a reply that makes no progress (no transcript, no audio, no
  tool running) for that long while the model owes output is a `timeout` failure: it is
  reported, the reply is interrupted (`turn.done` `error`) and the apology is asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from livekit import rtc
from livekit.agents import Agent, AgentSession, RunContext, llm
from livekit.agents.voice import ModelSettings
from livekit.agents.voice.events import ErrorEvent as SessionErrorEvent
from livekit.agents.voice.events import EventTypes, SpeechCreatedEvent, UserInputTranscribedEvent
from livekit.agents.voice.speech_handle import SpeechHandle

from brain import (
    BrainError,
    Cutoff,
    ErrorEvent,
    EventHub,
    TextDelta,
    Tool,
    ToolCall,
    ToolFinished,
    ToolStarted,
    Turn,
    TurnDone,
    TurnStarted,
    VoiceBrain,
)
from brain.memory import INVALID_JSON
from brain.turn import new_turn_id
from brain.voice_brain import TURN_FAILED_RESULT
from providers.provider_errors import (
    ProviderErrorReport,
    describe_session_error,
    log_provider_error,
    provider_name,
)
from providers.realtime import RealtimeSettings

from .brain_agent import session_closing

log = logging.getLogger("agent.realtime")

DEFAULT_APOLOGY = "Sorry, I lost the connection for a moment. Could you say that again?"
CONTINUATION_TIMEOUT = 15.0
"""Seconds a turn waits for a model's self-generated answer to tool results before it ends."""


def realtime_session_kwargs(settings: RealtimeSettings) -> dict[str, Any]:
    """`AgentSession(...)` keyword arguments for realtime mode (add `llm=` the realtime model).

    The model detects turns server-side, so no local VAD is loaded; barge-in comes from the
    server's `speech_started`. There is no false-interruption resume: the server has already
    cancelled its reply by then. livekit's own interruptions stay on whatever
    REALTIME_ALLOW_INTERRUPTIONS says (livekit-agents refuses to start a session with server-side
    turn detection otherwise): the server decides (Gemini's NO_INTERRUPTION), see
    `providers.realtime.create_realtime_model`.
    """
    from livekit.agents.voice.turn import InterruptionOptions, TurnHandlingOptions

    return {
        "vad": None,
        "turn_handling": TurnHandlingOptions(
            turn_detection="realtime_llm",
            interruption=InterruptionOptions(
                enabled=True,
                mode="vad",
                false_interruption_timeout=None,
                resume_false_interruption=False,
            ),
        ),
    }


# -- turns ------------------------------------------------------------------------------------


@dataclass
class _RealtimeTurn:
    turn: Turn
    speech_id: str
    text: list[str] = field(default_factory=list)
    spoken: list[str] = field(default_factory=list)
    error: bool = False
    apology: bool = False
    done: bool = False
    continues: bool = False
    """Tool results went back to a model that answers them on its own (Gemini Live): the
    answer comes as a new reply, which belongs to this turn."""
    handle: SpeechHandle | None = None
    tools_running: int = 0
    watchdog: asyncio.TimerHandle | None = None
    awaiting_answer: bool = False
    """Taken back from hold by a reply that has said nothing yet: it may answer the tool
    results, or new input (then it becomes a turn of its own, see `_split_off`)."""
    refused: bool = False
    """The server refused a request while this reply ran (`bad_request`, maybe about another
    one), or a recoverable failure hit while the turn waited for its tools: an error of the
    reply only if the reply then says nothing."""
    failed: bool = False
    """The brain failed the turn (e.g. its approval gate raised; already reported): it ends
    `error` whatever follows, but the model still answers the call (told the turn failed)."""


class RealtimeTurnTracker:
    """Maps a realtime AgentSession's replies (speech handles) onto brain turn events."""

    def __init__(
        self,
        events: EventHub,
        conversation_id: str,
        *,
        user_id: str | None = None,
        apology: str | None = DEFAULT_APOLOGY,
        report_errors: bool = True,
        stall_timeout: float | None = None,
    ) -> None:
        self.events = events
        self.conversation_id = conversation_id
        self.user_id = user_id
        self.apology = apology or None
        self.report_errors = report_errors
        self.stall_timeout = stall_timeout
        self.stall_callbacks: list[Callable[[ProviderErrorReport, str | None], None]] = []
        """Told about each stall (report, turn id): with `report_errors` off, the caller
        publishes these itself (session `error` events it sees on its own)."""
        self._unsubscribe_events: Callable[[], None] | None = None
        self._by_speech: dict[str, _RealtimeTurn] = {}
        self._open: list[_RealtimeTurn] = []  # oldest first
        self.stopped = False
        """Set by `stop()` after a fatal model error: no stall deadlines any more."""
        self.known_tools: set[str] | None = None
        """The tools the model may call (set by the agent); calls to others get tool events too."""
        self._pending_transcript: list[str] = []
        self._apology_speech_ids: set[str] = set()
        self._held: _RealtimeTurn | None = None
        self._held_timer: asyncio.TimerHandle | None = None
        self._session: AgentSession | None = None
        self._handlers: list[tuple[EventTypes, Callable[..., Any]]] = []

    # -- wiring --

    def attach(self, session: AgentSession) -> None:
        if self._session is session:
            return
        self.detach()
        self._session = session
        self._unsubscribe_events = self.events.subscribe(self._on_brain_event)
        self._handlers = [
            ("speech_created", self._on_speech_created),
            ("user_input_transcribed", self._on_user_input_transcribed),
            ("function_tools_executed", self._on_function_tools_executed),
            ("error", self._on_error),
        ]
        for name, handler in self._handlers:
            session.on(name, handler)

    def detach(self) -> None:
        self._release_held()
        for t in list(self._by_speech.values()):
            self._disarm(t)
        if self._unsubscribe_events is not None:
            self._unsubscribe_events()
            self._unsubscribe_events = None
        if self._session is not None:
            for name, handler in self._handlers:
                with contextlib.suppress(Exception):
                    self._session.off(name, handler)
        self._session = None
        self._handlers = []

    # -- lookups --

    def current(self, speech_id: str | None = None) -> _RealtimeTurn | None:
        """The turn of that reply, else the newest reply still open."""
        if speech_id is not None and (t := self._by_speech.get(speech_id)) is not None:
            return t
        return self._open[-1] if self._open else None

    def turn_hit(self) -> _RealtimeTurn | None:
        """The turn a provider failure hits now: the newest reply still open, else a turn waiting
        for the model's answer to its tool results (Gemini), which the failure may lose."""
        return self._open[-1] if self._open else self._held

    def turn_for_speech(self, speech_id: str | None) -> Turn:
        """The brain Turn a tool call of that reply belongs to."""
        t = self.current(speech_id)
        if t is not None:
            return t.turn
        # a call outside any known reply (should not happen): give it a turn of its own
        return Turn("", self.conversation_id, new_turn_id(), user_id=self.user_id)

    # -- session events --

    def _on_speech_created(self, ev: SpeechCreatedEvent) -> None:
        self.open_turn(ev.speech_handle, user_initiated=ev.user_initiated)

    def open_turn(self, handle: SpeechHandle, *, user_initiated: bool = False) -> _RealtimeTurn:
        """The turn of a new reply. `user_initiated`: asked for by the agent (`generate_reply`:
        a typed message, the greeting, an apology), so never the model's answer to tool results."""
        existing = self._by_speech.get(handle.id)
        if existing is not None:
            return existing
        if user_initiated:
            self._release_held()  # new input: the old turn's answer is not what comes next
        held = None if user_initiated else self._take_held()
        if held is not None:  # the model's own answer to the tool results of that turn, likely
            held.speech_id, held.done, held.continues, held.handle = handle.id, False, False, handle
            held.awaiting_answer = True
            self._by_speech[handle.id] = held
            self._open.append(held)
            handle.add_done_callback(self._on_speech_done)
            self._arm(held)
            return held
        rt = self._new_turn(handle)
        handle.add_done_callback(self._on_speech_done)
        return rt

    def _new_turn(self, handle: SpeechHandle) -> _RealtimeTurn:
        transcript = " ".join(self._pending_transcript)
        self._pending_transcript.clear()
        rt = _RealtimeTurn(
            turn=Turn(transcript, self.conversation_id, new_turn_id(), user_id=self.user_id),
            speech_id=handle.id,
            apology=handle.id in self._apology_speech_ids,
            handle=handle,
        )
        self._by_speech[handle.id] = rt
        self._open.append(rt)
        self.events.emit(
            TurnStarted(conversation_id=self.conversation_id, turn_id=rt.turn.turn_id, transcript=transcript)
        )
        self._arm(rt)
        return rt

    def _split_off(self) -> None:
        """The user's words arrived for a reply that took a held turn back before saying anything:
        it answers them, not the tool results (Gemini reports the transcript of what the user
        said only once the reply to it has begun). The held turn ends as it was; the reply gets
        a turn of its own."""
        for t in list(self._open):
            if not t.awaiting_answer or t.handle is None:
                continue
            handle = t.handle
            t.awaiting_answer = False
            self._open.remove(t)
            self._by_speech.pop(handle.id, None)
            t.done = True
            self._end_held(t)
            self._new_turn(handle)  # its done callback is already registered

    def _on_user_input_transcribed(self, ev: UserInputTranscribedEvent) -> None:
        text = ev.transcript.strip()
        if text:
            self._split_off()
        if not ev.is_final or not text:
            return
        self._release_held()  # the user spoke again: no answer to the old tool results is coming
        # OpenAI transcribes the user's audio in parallel with the reply: a transcript that
        # arrives while the reply to it is open belongs to that reply
        t = self.current()
        if t is not None and not t.turn.transcript:
            t.turn = replace(t.turn, transcript=text)
        else:
            self._pending_transcript.append(text)

    def on_text(self, speech_id: str | None, text: str) -> None:
        if not text:
            return
        t = self.current(speech_id)
        if t is None or t.done:
            return
        t.text.append(text)
        t.awaiting_answer = False
        self._arm(t)
        self.events.emit(TextDelta(conversation_id=self.conversation_id, turn_id=t.turn.turn_id, text=text))

    def on_audio(self, speech_id: str | None) -> None:
        """A frame of the model's audio arrived (progress)."""
        t = self.current(speech_id)
        if t is not None and not t.done:
            t.awaiting_answer = False
            self._arm(t)

    def on_output_end(self, speech_id: str | None) -> None:
        """One generated message of the reply is complete: no output is owed until more starts."""
        t = self.current(speech_id)
        if t is not None:
            self._disarm(t)

    def _on_function_tools_executed(self, ev: Any) -> None:
        self._report_unknown_tools(ev)
        session = self._session
        model = session.llm if session is not None else None
        if not isinstance(model, llm.RealtimeModel) or not model.capabilities.auto_tool_reply_generation:
            return  # the reply to tool results comes in the same speech (OpenAI Realtime)
        if not getattr(ev, "has_tool_reply", False):
            return
        t = self.current(_current_speech_id(session))
        if t is not None:
            t.continues = True

    def _report_unknown_tools(self, ev: Any) -> None:
        """livekit answers a call to a tool it does not have ("Unknown function") itself; clients
        still see it, as in pipeline mode: tool.started, then tool.finished with an error."""
        if self.known_tools is None:
            return
        t = self.current(_current_speech_id(self._session))
        turn_id = t.turn.turn_id if t is not None else ""
        outputs = {o.call_id: o for o in getattr(ev, "function_call_outputs", []) or []}
        for call in getattr(ev, "function_calls", []) or []:
            if call.name in self.known_tools:
                continue
            output = outputs.get(call.call_id)
            error = f"unknown tool {call.name!r}; available: {', '.join(sorted(self.known_tools)) or 'none'}"
            common = {"conversation_id": self.conversation_id, "turn_id": turn_id, "call_id": call.call_id, "name": call.name}
            self.events.emit(ToolStarted(**common, arguments={}, report="name"))
            self.events.emit(ToolFinished(**common, status="error", error=error if output is None or output.is_error else None,
                                          report="name"))

    def call_cut(self, speech_id: str) -> None:
        """A call of that reply was cancelled because the reply was interrupted (a barge-in,
        `agent.interrupt`). Once none of its calls runs any more the turn is over: nothing else
        of that reply is played or generated. livekit ends the reply itself only much later (on
        OpenAI it sends the cancelled calls' output, and marks the reply done, after the next
        reply has played), so the turn ends now, with its approvals and calls already cancelled;
        the reply stays known until then, so anything late from it is not taken for another's."""
        t = self._by_speech.get(speech_id)
        if t is None or t.done or t.tools_running or t.handle is None or not t.handle.interrupted:
            return
        if not _generation_over(t.handle):
            # cut while still generating: livekit records what was played, then ends the reply
            # without waiting for another one; the turn ends then, with that text
            return
        self._close(t, t.handle)
        self._finish(t, interrupted=True)

    def _close(self, t: _RealtimeTurn, handle: SpeechHandle) -> None:
        t.done = True
        self._disarm(t)
        with contextlib.suppress(ValueError):
            self._open.remove(t)
        if spoken := _spoken_text(handle):
            t.spoken.append(spoken)

    def _on_speech_done(self, handle: SpeechHandle) -> None:
        t = self._by_speech.pop(handle.id, None)
        if t is None or t.done:
            return  # (a reply whose turn ended when a call of it was cut: see `call_cut`)
        self._close(t, handle)
        if handle.id in self._apology_speech_ids:
            self._apology_speech_ids.discard(handle.id)
            t.apology = True  # a failed apology is not followed by another one
        failed = handle.exception() if handle.done() else None
        # a turn whose answer comes in a reply of its own (Gemini) is judged when that ends
        refused = t.refused and _said_nothing(t) and not t.continues
        if not t.error and not handle.interrupted and (failed is not None or refused):
            # the reply never happened (e.g. "pending response discarded due to session
            # reconnection", or a refused request): an error turn, not an empty completed one
            log.info("reply %s failed: %s", handle.id, failed or "the server refused it")
            t.error = True
            if not t.apology and self.apology and not self.stopped:
                self._apologise()
        if t.continues and not t.error and not handle.interrupted:
            self._hold(t)
            return
        self._finish(t, interrupted=handle.interrupted)

    # -- a turn waiting for the model's answer to its tool results --

    def _hold(self, t: _RealtimeTurn) -> None:
        self._release_held()
        self._held = t
        self._held_timer = asyncio.get_running_loop().call_later(
            CONTINUATION_TIMEOUT, self._release_held
        )

    def _take_held(self) -> _RealtimeTurn | None:
        held, self._held = self._held, None
        if self._held_timer is not None:
            self._held_timer.cancel()
            self._held_timer = None
        return held

    def _release_held(self) -> None:
        held = self._take_held()
        if held is not None:
            self._end_held(held)

    def _end_held(self, t: _RealtimeTurn) -> None:
        """A held turn ends without the model's answer to its tool results: an error only if a
        refused request or a dropped connection kept it from saying anything."""
        if t.refused and _said_nothing(t):
            t.error = True
        self._finish(t, interrupted=False)

    def fail_turn(self, turn_id: str) -> None:
        """The brain failed that turn while running one of its calls (and reported it)."""
        for t in [*self._open, *([self._held] if self._held is not None else [])]:
            if t.turn.turn_id == turn_id:
                t.failed = True

    def _finish(self, t: _RealtimeTurn, *, interrupted: bool) -> None:
        self._disarm(t)
        if t.error or t.failed:
            reason = "error"
        elif interrupted:
            reason = "interrupted"
        else:
            reason = "completed"
        self.events.emit(
            TurnDone(
                conversation_id=self.conversation_id,
                turn_id=t.turn.turn_id,
                reason=reason,  # type: ignore[arg-type]
                text=" ".join(t.spoken) or "".join(t.text).strip(),
            )
        )

    def _on_error(self, ev: SessionErrorEvent) -> None:
        report = describe_session_error(ev)
        self.handle_error(report)

    def handle_error(self, report: ProviderErrorReport, turn: _RealtimeTurn | None = None) -> None:
        t = turn or self.turn_hit()
        if self.report_errors:
            log_provider_error(report, log)
            self.events.emit(
                ErrorEvent(
                    conversation_id=self.conversation_id,
                    turn_id=t.turn.turn_id if t is not None else "",
                    code=report.code,
                    message=report.client_message,
                    provider=report.provider,
                    fatal=not report.recoverable,
                )
            )
        # a dropped malformed frame does not break the reply; anything else that hits an open
        # reply ends it as an error, and (once) the user hears a short apology
        if report.code == "protocol" or t is None:
            return
        if t is self._held:
            self._held_failed(t, report)
            return
        if t.done:
            return
        if report.code == "auth" and report.recoverable:
            # a rejected key, retried by livekit: no reply can run until an attempt succeeds
            # (then nothing was lost), and an apology could not be heard either; the last
            # attempt is fatal and ends the session
            return
        if report.code == "bad_request" and not t.error:
            # e.g. `conversation_already_has_active_response` about some other client event:
            # judged when the reply ends (an error only if it said nothing)
            t.refused = True
            return
        if t.tools_running and report.code in ("unavailable", "timeout") and report.recoverable and not t.error:
            # the turn waits for its tools (an approval, a slow call) and owes no output: a
            # connection that drops and recovers meanwhile cut nothing; the answer to the tools
            # comes on the new connection and the turn is judged when it ends (or stalls)
            t.refused = True
            return
        already = t.error
        t.error = True
        if report.recoverable and not already and not t.apology and self.apology:
            self._apologise()

    def _held_failed(self, t: _RealtimeTurn, report: ProviderErrorReport) -> None:
        """A failure while the turn waits for the model's answer to its tool results: a dropped
        connection loses that answer (the model does not answer again on the new one), so the turn
        ends now as an error, with the apology, as a reply the failure cut would. A refused
        request (about another event) or a rejected key being retried takes nothing from it."""
        if report.code == "bad_request" or (report.code == "auth" and report.recoverable):
            t.refused = report.code == "bad_request" or t.refused
            return
        self._take_held()
        t.error = True
        self._finish(t, interrupted=False)
        if report.recoverable and not t.apology and self.apology and not self.stopped:
            self._apologise()

    # -- stalls --

    def _arm(self, t: _RealtimeTurn) -> None:
        """(Re)start the turn's stall deadline: the model owes output from now on."""
        self._disarm(t)
        if self.stall_timeout is None or t.done or t.tools_running or self.stopped:
            return
        t.watchdog = asyncio.get_running_loop().call_later(self.stall_timeout, self._stalled, t)

    def stop(self) -> None:
        """The model is gone (a fatal error): no reply owes anything any more."""
        self.stopped = True
        for t in self._open:
            self._disarm(t)

    def _disarm(self, t: _RealtimeTurn) -> None:
        if t.watchdog is not None:
            t.watchdog.cancel()
            t.watchdog = None

    def _on_brain_event(self, event: object) -> None:
        if not isinstance(event, ToolStarted | ToolFinished):
            return
        t = next((x for x in self._open if x.turn.turn_id == event.turn_id), None)
        if t is None:
            return
        if isinstance(event, ToolStarted):
            t.tools_running += 1  # a tool (or its approval) may take long: not a stall
            t.awaiting_answer = False
            self._disarm(t)
        else:
            t.tools_running = max(0, t.tools_running - 1)
            self._arm(t)  # the model answers the results next

    def _stalled(self, t: _RealtimeTurn) -> None:
        t.watchdog = None
        if t.done:
            return
        authorized_at = getattr(t.handle, "_authorized_at", 0.0) if t.handle is not None else 0.0
        if authorized_at is None:
            # still queued behind another reply (e.g. the apology behind a stalled reply that
            # Gemini cannot cancel): the model owes nothing until this one runs
            self._arm(t)
            return
        ran = time.perf_counter() - authorized_at  # livekit's clock for `_authorized_at`
        if self.stall_timeout is not None and 0.0 <= ran < self.stall_timeout:
            # let run after the deadline was set (while it waited in the queue): its clock
            # starts then, not at the check that found it running
            t.watchdog = asyncio.get_running_loop().call_later(self.stall_timeout - ran, self._stalled, t)
            return
        session = self._session
        report = ProviderErrorReport(
            provider=provider_name(session.llm if session is not None else None),
            code="timeout",
            message=f"the model sent nothing for {self.stall_timeout:g} s in the middle of a reply",
            recoverable=True,
            retryable=True,
        )
        if not self.report_errors:
            log_provider_error(report, log)  # else handle_error logs it
        for cb in list(self.stall_callbacks):
            try:
                cb(report, t.turn.turn_id)
            except Exception:  # noqa: BLE001
                log.exception("stall callback failed")
        self.handle_error(report, t)
        if t.handle is not None and not t.handle.done():
            t.handle.interrupt(force=True)  # ends the reply (turn.done error); the apology follows

    def _apologise(self) -> None:
        session = self._session
        if session is None or self.apology is None:
            return
        try:
            handle = session.generate_reply(
                instructions=f'Say exactly this, in the user\'s language, and nothing else: "{self.apology}"',
                tool_choice="none",
            )
        except RuntimeError as e:  # the session is closing
            log.debug("no apology: %s", e)
            return
        self._apology_speech_ids.add(handle.id)
        if (t := self._by_speech.get(handle.id)) is not None:
            t.apology = True


def _said_nothing(t: _RealtimeTurn) -> bool:
    return not t.spoken and not "".join(t.text).strip()


def _generation_over(handle: SpeechHandle) -> bool:
    """livekit has ended the reply's current generation, and so recorded what it played."""
    generations: list[asyncio.Future[None]] = getattr(handle, "_generations", [])
    return bool(generations) and generations[-1].done()


def _spoken_text(handle: SpeechHandle) -> str:
    """The assistant text livekit recorded for the reply (what was played, if interrupted)."""
    parts: list[str] = []
    for item in handle.chat_items:
        if isinstance(item, llm.ChatMessage) and item.role == "assistant":
            text = item.text_content
            if text:
                parts.append(text.strip())
    return " ".join(parts)


# -- tools ------------------------------------------------------------------------------------


def _current_speech_id(session: AgentSession | None) -> str | None:
    """The reply whose task we run in (livekit keeps it in a context variable)."""
    try:
        from livekit.agents.voice.agent_activity import _SpeechHandleContextVar

        return _SpeechHandleContextVar.get().id
    except (ImportError, LookupError):
        pass
    if session is not None and session.current_speech is not None:
        return session.current_speech.id
    return None


def brain_function_tools(brain: VoiceBrain, tracker: RealtimeTurnTracker) -> list[llm.Tool]:
    """The brain's tools as realtime function tools that run through the brain's tool runner."""
    return [_function_tool(brain, tracker, t) for t in brain.tools]


def _json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text or "{}"), dict)
    except ValueError:
        return False


INTERRUPTED_OUTPUT = "CANCELLED: the user interrupted before this finished; the action was not completed."
CLOSED_OUTPUT = "CANCELLED: the session ended before this finished; the action was not completed."
FAILED_OUTPUT = "CANCELLED: the turn failed before this finished; the action was not completed."


def _why_cut(tracker: RealtimeTurnTracker, session: AgentSession, cutoff: Cutoff) -> str:
    """Set `cutoff` to why a call of this reply is being cancelled; returns what the model is told.
    The model failed for good (a fatal error): the turn failed; the session is closing (the user
    left, the agent shuts down): neither; else the reply was interrupted (a barge-in, `agent.interrupt`)."""
    if tracker.stopped:
        cutoff.failed = True
        return FAILED_OUTPUT
    if session_closing(session):
        cutoff.closed = True
        return CLOSED_OUTPUT
    return INTERRUPTED_OUTPUT


def _function_tool(brain: VoiceBrain, tracker: RealtimeTurnTracker, t: Tool) -> llm.Tool:
    async def run(raw_arguments: dict[str, object], context: RunContext) -> str:
        fc = context.function_call
        arguments: dict[str, Any] = dict(raw_arguments)
        sent = getattr(context.session.llm, "raw_arguments", {}).get(fc.call_id)
        if isinstance(sent, str) and not _json_object(sent):
            # livekit repaired it (a cut-off `{"amount": 10`); like pipeline mode, the model is
            # told its arguments were not JSON, and the tool does not run on a guess
            arguments = {INVALID_JSON: sent[:200]}
        call = ToolCall(id=fc.call_id, name=t.name, arguments=arguments, raw_arguments=sent or fc.arguments)
        handle = context.speech_handle
        turn = tracker.turn_for_speech(handle.id)
        notes: dict[str, str] = {}  # what to tell the model if interrupted mid-run (a thread tool)
        cutoff = Cutoff()
        told = INTERRUPTED_OUTPUT
        task = asyncio.ensure_future(brain.run_tool_call(turn, call, notes=notes, cutoff=cutoff))
        try:
            # a barge-in ends the reply; like in pipeline mode it also cancels the call (and a
            # pending approval), instead of leaving it waiting for a turn that is over. So does
            # the end of the session, or of the model (then the call says so, not "interrupted")
            await handle.wait_if_not_interrupted([task])
        finally:
            if not task.done():
                told = _why_cut(tracker, context.session, cutoff)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                if told == INTERRUPTED_OUTPUT:
                    # the call's events are out; the turn may end now, not when livekit ends the reply
                    tracker.call_cut(handle.id)
        if task.cancelled():
            return notes.get(call.id, told)
        try:
            return task.result()
        except BrainError:
            # reported by the brain (`error`, as a failed pipeline turn): the turn ends `error`;
            # the model, told so, answers the user itself
            tracker.fail_turn(turn.turn_id)
            return TURN_FAILED_RESULT

    run.__name__ = f"brain_tool_{t.name}"
    schema = {"name": t.name, "description": t.description, "parameters": t.parameters or {"type": "object", "properties": {}}}
    return llm.function_tool(run, raw_schema=schema)


# -- the agent --------------------------------------------------------------------------------


class RealtimeBrainAgent(Agent):
    """A realtime-mode Agent: the brain's instructions and tools, brain-style turn events.

    `conversation_id` keys the brain's events and approvals (the room name); `user_id` is who
    approvals are addressed to (default: the brain's `user_id` setting).
    `apology`: spoken after a recoverable provider failure broke a reply (None: stay silent).
    `report_errors`: turn the session's `error` events into brain ErrorEvents (+ a log line);
    turn it off if the caller reports session errors itself.
    `stall_timeout`: seconds a reply may make no progress before it is treated as a `timeout`
    failure (None: wait for the model forever).
    """

    def __init__(
        self,
        brain: VoiceBrain,
        *,
        conversation_id: str,
        instructions: str | None = None,
        user_id: str | None = None,
        apology: str | None = DEFAULT_APOLOGY,
        report_errors: bool = True,
        extra_tools: list[llm.Tool] | None = None,
        stall_timeout: float | None = None,
    ) -> None:
        self.brain = brain
        self.tracker = RealtimeTurnTracker(
            brain.events,
            conversation_id,
            user_id=user_id or brain.settings.user_id,
            apology=apology,
            report_errors=report_errors,
            stall_timeout=stall_timeout,
        )
        tools: list[llm.Tool | llm.Toolset] = [*brain_function_tools(brain, self.tracker), *(extra_tools or [])]
        super().__init__(
            instructions=instructions if instructions is not None else brain.settings.system_prompt or "You are a helpful voice assistant.",
            tools=tools,
        )
        self.tracker.known_tools = {getattr(getattr(t, "info", None), "name", "") for t in tools} | set(brain.tools.names())

    async def on_enter(self) -> None:
        self.tracker.attach(self.session)

    async def on_exit(self) -> None:
        self.tracker.detach()

    async def transcription_node(  # type: ignore[override]
        self, text: AsyncIterable[Any], model_settings: ModelSettings
    ) -> AsyncGenerator[Any, None]:
        speech_id = _current_speech_id(self.session)
        async for chunk in text:
            self.tracker.on_text(speech_id, str(chunk))
            yield chunk
        self.tracker.on_output_end(speech_id)

    async def realtime_audio_output_node(  # type: ignore[override]
        self, audio: AsyncIterable[rtc.AudioFrame], model_settings: ModelSettings
    ) -> AsyncGenerator[rtc.AudioFrame, None]:
        speech_id = _current_speech_id(self.session)
        async for frame in Agent.default.realtime_audio_output_node(self, audio, model_settings):
            self.tracker.on_audio(speech_id)
            yield frame
        self.tracker.on_output_end(speech_id)

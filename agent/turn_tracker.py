"""Bookkeeping between livekit-agents speeches and brain turns.

Each `llm_node` call starts one brain turn for one livekit `SpeechHandle`. When that speech ends
we know how it went and tell the brain:

- some reply audio played, then the user cut in: `record_spoken(...)` with the text that was
  heard (livekit's synchronized transcript, i.e. the interrupted assistant message);
- interrupted before any reply audio played ("no audio yet" = the agent never entered the
  `speaking` state during this speech): the user's words are not lost, they are merged into the
  user's next turn (`previous + " " + new`), and the empty brain turn is dropped from memory;
- a preemptive generation livekit discarded (never scheduled): dropped, nothing merged, since the
  final transcript of the same user turn comes in the next `llm_node` call anyway. It is dropped
  from memory as soon as the next turn begins (its speech may end later), and it never ran a tool:
  a turn whose speech is not scheduled yet gets a `Turn.go_ahead` that waits until livekit keeps
  it (schedules it: the user's turn is over and the transcript is what it answered) or throws it
  away, so its tools and approvals wait for that;
- stopped on request (a client's `agent.interrupt`, see `stop`) before any reply audio: dropped,
  nothing merged: the user asked the agent to stop, not to wait for more words.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from brain import ToolFinished, Turn, VoiceBrain
from brain.voice_brain import TOOL_MAY_HAVE_RUN

log = logging.getLogger("agent.turns")

Outcome = Literal["pending", "completed", "interrupted", "merged", "discarded"]


@dataclass
class TrackedTurn:
    turn: Turn
    user_text: str
    """What the user said in this turn alone (the turn's transcript may carry a merged prefix)."""
    speech_id: str | None = None
    audio_started: bool = False
    outcome: Outcome = "pending"
    spoken: str | None = None
    """What the user heard when the reply was cut off."""
    heard: str | None = None
    """The reply's text as livekit counted it heard when its speech ended (all of it unless the
    audio was cut off or failed)."""
    tool_ran: bool = False
    """A tool of this turn finished (ok or error), or was cut off while running in a thread that
    cannot be stopped: it may have had effects."""
    scripted: bool = False
    """Started by the agent (a generated greeting's prompt), not by the user's words."""
    stopped: bool = False
    """A client asked the agent to stop while this turn was pending (`TurnTracker.stop`)."""
    committed: bool = True
    """livekit kept the turn's speech (scheduled it). False while a preemptive generation waits
    for the user's turn to end; one thrown away never becomes True."""
    speech: Any = field(default=None, repr=False)
    """livekit's `SpeechHandle`, until it is done."""


class TurnTracker:
    def __init__(self, brain: VoiceBrain, conversation_id: str, user_id: str | None = None) -> None:
        self.brain = brain
        self.conversation_id = conversation_id
        self.user_id = user_id
        self.pending_merge: str | None = None
        self.turns: list[TrackedTurn] = []
        self._by_speech: dict[str, TrackedTurn] = {}
        self._listeners: list[Callable[[TrackedTurn], None]] = []
        self._commit_listeners: list[Callable[[TrackedTurn], None]] = []
        self._unsubscribe = brain.subscribe(self._on_brain_event)

    def close(self) -> None:
        self._unsubscribe()

    def _on_brain_event(self, event: object) -> None:
        if isinstance(event, ToolFinished) and (event.status != "cancelled" or TOOL_MAY_HAVE_RUN in (event.error or "")):
            tracked = self.find(event.turn_id)
            if tracked is not None:
                tracked.tool_ran = True

    def on_outcome(self, callback: Callable[[TrackedTurn], None]) -> None:
        """Called once per turn when its speech ends (completed / interrupted / merged / discarded)."""
        self._listeners.append(callback)

    def on_commit(self, callback: Callable[[TrackedTurn], None]) -> None:
        """Called when livekit keeps a turn begun before its user turn was over (preemptive)."""
        self._commit_listeners.append(callback)

    # -- turn start ---------------------------------------------------------------------------

    def begin(self, user_text: str, speech: Any | None = None, *, scripted: bool = False) -> TrackedTurn:
        """A new brain turn for `user_text`, tied to livekit's `SpeechHandle` when known.
        `scripted`: the agent's own prompt (a generated greeting), never merged into the user's words."""
        self._drop_thrown_away()
        user_text = user_text.strip()
        merge = self.pending_merge if not scripted else None
        transcript = f"{merge} {user_text}".strip() if merge else user_text
        scheduled = _scheduled_future(speech) if speech is not None else None
        waits = scheduled is not None and not scheduled.done()
        go_ahead = functools.partial(_wait_until_kept, speech) if waits else None
        tracked = TrackedTurn(
            turn=Turn(transcript, conversation_id=self.conversation_id, user_id=self.user_id, go_ahead=go_ahead),
            user_text=user_text,
            scripted=scripted,
            committed=not waits,
            speech=speech,
        )
        self.turns.append(tracked)
        if speech is not None:
            tracked.speech_id = speech.id
            self._by_speech[speech.id] = tracked
            speech.add_done_callback(self._speech_done)
        if waits:
            assert scheduled is not None
            scheduled.add_done_callback(lambda f: None if f.cancelled() else self._committed(tracked))
        return tracked

    def _committed(self, tracked: TrackedTurn) -> None:
        if tracked.committed or tracked.outcome != "pending":
            return
        tracked.committed = True
        for cb in list(self._commit_listeners):
            try:
                cb(tracked)
            except Exception:  # noqa: BLE001 - bookkeeping must never break the session
                log.exception("turn commit bookkeeping failed")

    def _drop_thrown_away(self) -> None:
        """Forget, now, the turns of preemptive generations livekit has thrown away: the next turn's
        request must not carry them (their speech may end, and `finish` run, only after it began)."""
        for tracked in self.turns:
            speech = tracked.speech
            if tracked.outcome == "pending" and not tracked.committed and speech is not None and speech.interrupted:
                if not tracked.tool_ran:
                    self.brain.forget_turn(self.conversation_id, tracked.turn.turn_id)

    def find(self, turn_id: str) -> TrackedTurn | None:
        for t in reversed(self.turns):
            if t.turn.turn_id == turn_id:
                return t
        return None

    def stop(self) -> None:
        """A client asked the agent to stop (`agent.interrupt`): the turns pending now, if cut off
        before any audio, are dropped rather than merged into the user's next words, and words
        already waiting to be merged are dropped too (the user wants that request cancelled)."""
        for tracked in self.turns:
            if tracked.outcome == "pending":
                tracked.stopped = True
        self.pending_merge = None

    # -- speech progress ----------------------------------------------------------------------

    def audio_started(self, speech: Any | None) -> None:
        """The agent started speaking this speech (first reply audio played)."""
        tracked = self._by_speech.get(speech.id) if speech is not None else None
        if tracked is not None:
            tracked.audio_started = True

    def _speech_done(self, speech: Any) -> None:
        tracked = self._by_speech.pop(speech.id, None)
        if tracked is None:
            return
        tracked.speech = None  # settled below: no need to keep the handle (and its items) alive
        tracked.heard = _assistant_text(speech)
        try:
            self.finish(
                tracked,
                interrupted=bool(speech.interrupted),
                scheduled=bool(speech.scheduled),
                spoken=_assistant_text(speech),
            )
        except Exception:  # noqa: BLE001 - bookkeeping must never break the session
            log.exception("turn bookkeeping failed")

    def finish(self, tracked: TrackedTurn, *, interrupted: bool, scheduled: bool, spoken: str | None) -> None:
        """Apply the outcome of a turn's speech (see the module docstring)."""
        conv, tid = self.conversation_id, tracked.turn.turn_id
        if tracked.audio_started:
            if interrupted:
                tracked.outcome = "interrupted"
                tracked.spoken = spoken or ""
                self.brain.record_spoken(conv, tid, tracked.spoken)
            else:
                tracked.outcome = "completed"
            self.pending_merge = None
        elif interrupted and scheduled and not tracked.scripted and not tracked.tool_ran and not tracked.stopped:
            tracked.outcome = "merged"
            self.pending_merge = tracked.turn.transcript
            self._forget(tracked)
        elif interrupted and scheduled and tracked.tool_ran:
            # kept in memory with its tool call (which may have had effects): the user's words
            # are there already, so merging them into the next turn would say them twice
            tracked.outcome = "interrupted"
            tracked.spoken = ""
            self.pending_merge = None
            self._forget(tracked)
        elif interrupted:
            tracked.outcome = "discarded"
            self._forget(tracked)
        else:
            tracked.outcome = "completed"  # a reply with no audio (empty, or the TTS failed)
            self.pending_merge = None
        for cb in list(self._listeners):
            cb(tracked)

    def _forget(self, tracked: TrackedTurn) -> None:
        """Drop a turn nobody heard from the brain's memory, unless a tool ran in it.

        (A tool that ran may have had effects the model must keep knowing about; then only the
        reply text is dropped.)
        """
        turn_id = tracked.turn.turn_id
        if tracked.tool_ran:
            self.brain.record_spoken(self.conversation_id, turn_id, "")
            return
        self.brain.forget_turn(self.conversation_id, turn_id)


def _scheduled_future(speech: Any) -> asyncio.Future[None] | None:
    """The future livekit resolves when it schedules `speech` (keeps a preemptive generation).

    livekit-agents 1.8 keeps it private (its own reply task waits on it); None if that ever
    moves, and turns then start their tools without waiting, as before.
    """
    fut = getattr(speech, "_scheduled_fut", None)
    return fut if isinstance(fut, asyncio.Future) else None


async def _wait_until_kept(speech: Any) -> bool:
    """`Turn.go_ahead` for a preemptive generation: True once livekit schedules its speech, False
    if it is thrown away (interrupted) first."""
    scheduled = _scheduled_future(speech)
    if scheduled is not None and not scheduled.done() and not speech.interrupted:
        await speech.wait_if_not_interrupted([scheduled])
    return bool(speech.scheduled)


def _assistant_text(speech: Any) -> str | None:
    texts = [
        item.text_content or ""
        for item in getattr(speech, "chat_items", [])
        if getattr(item, "type", None) == "message" and getattr(item, "role", None) == "assistant"
    ]
    return " ".join(t for t in texts if t) if texts else None

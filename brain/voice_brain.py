"""The brain: one streamed reply per user turn, with memory, the tool loop and HITL approvals."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import time
import traceback
import uuid
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from .approvals import (
    ApprovalCancelled,
    ApprovalDecision,
    ApprovalGate,
    ApprovalRequest,
    InProcessApprovalGate,
    Outcome,
    new_request_id,
)
from .backends.base import ModelBackend, ModelRequest, TextChunk, bounded_stream
from .errors import (
    BrainError,
    ContextTooLongError,
    InternalError,
    ProtocolError,
    UnavailableError,
    redact_secrets,
)
from .events import (
    ApprovalRequested,
    ApprovalResolved,
    ErrorEvent,
    EventHub,
    TextDelta,
    ToolFinished,
    ToolStarted,
    TurnDone,
    TurnStarted,
)
from .memory import INVALID_JSON, ConversationMemory, Message, ToolCall, TurnRecord
from .tools import Tool, ToolContext, ToolSet, jsonable, result_to_text, with_changed_arguments
from .turn import Turn

log = logging.getLogger("brain")

TOOL_MAY_HAVE_RUN = "the tool was already running and may still complete"
"""In `ToolFinished.error` when a plain-function tool was cut off (barge-in or timeout): its
thread cannot be stopped, so its effects may happen (the agent keeps such a turn in memory)."""


@contextlib.asynccontextmanager
async def _closing(stream: AsyncIterator[Any]) -> AsyncIterator[AsyncIterator[Any]]:
    """Close the backend's stream when the step ends (barge-in closes the model stream *now*,
    not at GC); a custom backend may return any async iterator, with or without `aclose`."""
    try:
        yield stream
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


TURN_FAILED_RESULT = "ERROR: the turn failed before this finished."
"""What the model is told about a call the turn's failure left unanswered (or cut off)."""

GREETING_CUE = "[The user joined the call.]"
"""The user side of a greeting said as is, in memory (`VoiceBrain.remember_greeting`)."""


@dataclass
class Cutoff:
    """Why the calls of a tool step still running are cancelled (set before the cancel reaches
    them); neither flag: a barge-in (or the caller's cancel)."""

    failed: bool = False
    """The turn failed (another call of the step, or the model behind it)."""
    closed: bool = False
    """The session is closing (the user left, the agent shuts down)."""

    @property
    def why(self) -> str:
        return "turn failed" if self.failed else "session closed" if self.closed else "turn interrupted"

    @property
    def cut(self) -> str:
        """What the model is told about a call this cut off, before `; ...` saying what became of it."""
        if self.failed:
            return "ERROR: the turn failed while this was running"
        if self.closed:
            return "INTERRUPTED: the session ended while this was running"
        return "INTERRUPTED: the user interrupted while this was running"

    @property
    def unanswered(self) -> str:
        """What the model is told about a call cancelled before it ran (the turn failing aside)."""
        if self.closed:
            return "CANCELLED: the session ended before this finished."
        return "CANCELLED: the user interrupted before this finished."


@dataclass(frozen=True)
class BrainSettings:
    """The knobs the tool loop needs (a subset of BrainConfig, so tests can build brains directly)."""

    model: str = "offline"
    system_prompt: str = ""
    temperature: float | None = None
    max_tokens: int | None = None
    user_id: str | None = None
    hitl_timeout: float = 30.0
    tool_timeout: float = 20.0
    max_tool_steps: int = 5
    apology: str = ""
    request_timeout: float | None = None
    """Seconds a backend that does not bound its own silence (a custom one) may stay silent,
    before its first output and between two (BRAIN_REQUEST_TIMEOUT); None: no bound."""


def _changes(tool: Tool, proposed: dict[str, Any], edited: dict[str, Any] | None) -> bool:
    """Whether an approver's arguments differ from the call's (both as validated: the request's
    arguments sent back as shown, defaults filled in and "4" as 4, are no change)."""
    if edited is None:
        return False
    try:
        return tool.validate(edited) != proposed
    except ValueError:  # not valid: certainly not the call's (and it does not run)
        return True

class VoiceBrain:
    """Transport-independent: runs in any asyncio program.

    `stream_reply(turn)` yields non-empty text deltas as soon as the model produces them.
    Closing the generator (or cancelling its consumer) is barge-in: the model stream is closed,
    tools and approvals are cancelled and `turn.done` reports `interrupted`.
    """

    def __init__(
        self,
        backend: ModelBackend,
        *,
        tools: ToolSet | None = None,
        approvals: ApprovalGate | None = None,
        memory: ConversationMemory | None = None,
        settings: BrainSettings | None = None,
    ) -> None:
        self.backend = backend
        self.tools = tools or ToolSet()
        self.approvals: ApprovalGate = approvals or InProcessApprovalGate()
        self.memory = memory or ConversationMemory()
        self.settings = settings or BrainSettings()
        self.events = EventHub()
        self._active: dict[str, str] = {}  # turn_id -> conversation_id, for turns in flight
        # conversation_id -> its turns, one at a time; a lock nobody holds or waits for goes away
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    # -- public API -------------------------------------------------------------------------

    def subscribe(self, callback: Callable[[Any], None]) -> Callable[[], None]:
        """Receive every brain event synchronously; returns an unsubscribe function."""
        return self.events.subscribe(callback)

    def record_spoken(self, conversation_id: str, turn_id: str, spoken_text: str) -> bool:
        """Barge-in: only `spoken_text` of that turn's reply reached the user; memory keeps just that."""
        return self.memory.set_spoken(conversation_id, turn_id, spoken_text)

    def forget_turn(self, conversation_id: str, turn_id: str) -> bool:
        """Drop a turn nobody heard (barge-in before any audio): the agent merges its user text
        into the next turn, so keeping it would tell the model the same thing twice."""
        return self.memory.forget(conversation_id, turn_id)

    def remember_greeting(self, conversation_id: str, text: str) -> str:
        """The agent opened the call with `text`, said as is (not generated by the model): memory
        keeps it, so the model knows what it asked ("Shall I book your usual table?" - "Yes
        please."). Kept as a turn of its own behind `GREETING_CUE` from the user's side (a history
        starts with a user message; Gemini requires it). Returns its turn id, for `record_spoken`
        or `forget_turn` when the greeting was cut off."""
        turn_id = "greeting_" + uuid.uuid4().hex[:12]
        self.memory.begin_turn(conversation_id, turn_id, GREETING_CUE).add_text(text)
        return turn_id

    def history(self, conversation_id: str) -> list[Message]:
        return self.memory.history(conversation_id)

    async def aclose(self) -> None:
        closing: Any = self.backend.aclose()
        if inspect.isawaitable(closing):  # a custom backend's plain `def aclose` is fine too
            await closing

    async def run_tool_call(
        self, turn: Turn, call: ToolCall, notes: dict[str, str] | None = None, cutoff: Cutoff | None = None
    ) -> str:
        """Run one tool call the brain's own loop did not produce (e.g. a realtime model's).

        Same path as the tool loop: validation, the approval gate, the per-tool timeout and the
        ToolStarted / Approval* / ToolFinished events (with `call.id` as call id). Returns what
        the model should be told; cancelling the caller cancels the approval or the tool. If it
        is cancelled while a plain-function tool runs (which cannot be stopped), `notes[call.id]`
        says what to tell the model instead: the action may or may not have happened. The caller
        sets `cutoff` before it cancels, to say why (`tool.finished` and that note say so; no
        cutoff, or one with no flag set: the user interrupted).

        An unexpected exception (e.g. a custom approval gate that raises) fails the turn as in
        the tool loop: it is logged with its traceback, reported (`ErrorEvent` `internal` for
        `turn`) and raised as the `InternalError` reported; the caller ends the turn as an error
        and tells the model `TURN_FAILED_RESULT`.
        """
        try:
            return result_to_text(await self._run_call(turn, call, notes, cutoff=cutoff))
        except BrainError as exc:
            self._report_error(turn, exc)
            raise
        except Exception as exc:
            failure, cause = _internal_error(exc)
            self._report_error(turn, failure, cause=cause)
            raise failure from cause

    async def stream_reply(self, turn: Turn, cutoff: Cutoff | None = None) -> AsyncGenerator[str, None]:
        """The reply to `turn`, as text deltas (see the class). The caller may pass `cutoff` and
        set it before it closes the stream, to say why the turn's running calls are cut off
        (`closed`: the session is ending); otherwise closing it is a barge-in."""
        # one turn at a time per conversation: a second turn started while one is in flight
        # (e.g. waiting for an approval) would send the model a history with an unanswered tool
        # call, and the first turn's continuation would follow the second's messages
        lock = self._locks.get(turn.conversation_id)
        if lock is None:
            lock = self._locks[turn.conversation_id] = asyncio.Lock()
        async with lock, contextlib.aclosing(self._stream_reply(turn, cutoff or Cutoff())) as deltas:
            async for delta in deltas:
                yield delta

    async def _stream_reply(self, turn: Turn, cutoff: Cutoff) -> AsyncGenerator[str, None]:
        emit = self.events.emit
        conv, tid = turn.conversation_id, turn.turn_id
        record = self.memory.begin_turn(conv, tid, turn.transcript)
        self._active[tid] = conv
        emit(TurnStarted(conversation_id=conv, turn_id=tid, transcript=turn.transcript))
        reason: str = "interrupted"
        try:
            # aclosing: closing this generator closes the model stream *now* (barge-in), not at GC
            async with contextlib.aclosing(self._run_turn(turn, record, cutoff)) as deltas:
                async for delta in deltas:
                    yield delta
            reason = "completed"
        except (asyncio.CancelledError, GeneratorExit):
            reason = "interrupted"
            raise
        except _Withdrawn:
            reason = "interrupted"
            log.info("turn %s: no go-ahead for its tools; ended without running them", tid)
        except Exception as exc:
            reason = "error"
            if isinstance(exc, BrainError):
                self._report_error(turn, exc, cause=exc.__cause__ if isinstance(exc, _BackendFailed) else None)
            else:
                # a bug (a tool, a custom approval gate, the brain): fail this turn like any other,
                # so the caller still gets one error, an apology and turn.done, and the session goes on
                failure, cause = _internal_error(exc)
                self._report_error(turn, failure, cause=cause)
            apology = self.settings.apology
            if apology:
                # after the last thing said (a tool step's text may precede the tool results)
                said = next((m.content for m in reversed(record.messages) if m.role == "assistant" and m.content), "")
                sep = " " if said and not said[-1].isspace() else ""
                # the separator travels with the delta, so speech and memory read the same
                record.add_text(sep + apology)
                emit(TextDelta(conversation_id=conv, turn_id=tid, text=sep + apology))
                yield sep + apology
        finally:
            self._active.pop(tid, None)
            text = " ".join(m.content.strip() for m in record.render() if m.role == "assistant" and m.content)
            emit(TurnDone(conversation_id=conv, turn_id=tid, reason=reason, text=text))  # type: ignore[arg-type]

    # -- the tool loop ----------------------------------------------------------------------

    async def _run_turn(self, turn: Turn, record: TurnRecord, cutoff: Cutoff) -> AsyncGenerator[str, None]:
        s = self.settings
        tools = list(self.tools)
        seen_ids: set[str] = set()
        said = ""  # the turn's text so far (its last characters are what matter)
        acted: set[str] = set()  # ids of calls whose action happened (or may have)
        cleared = False  # the turn's go-ahead was given
        for step in range(s.max_tool_steps + 1):
            # the last step may not call tools (tool_choice "none"), so the model answers in words;
            # the tools stay declared because the history already contains calls to them
            final = step == s.max_tool_steps

            def request(final: bool = final) -> ModelRequest:  # the history as it is when asked
                return ModelRequest(
                    messages=self.memory.history(turn.conversation_id),
                    system_prompt=s.system_prompt,
                    model=s.model,
                    tools=tools,
                    temperature=s.temperature,
                    max_tokens=s.max_tokens,
                    tool_choice="none" if final and tools else "auto",
                )

            calls: list[ToolCall] = []
            step_text = ""
            try:
                async with contextlib.aclosing(self._model_outputs(turn, request)) as stream:
                    async for out in stream:
                        if isinstance(out, TextChunk):
                            if out.text:
                                text = out.text
                                if not step_text and said and not said[-1].isspace() and not text[0].isspace():
                                    # a step's text after the previous step's ("One moment." then
                                    # "It is sunny."): the separator travels with the delta, so
                                    # speech, events and memory read the same
                                    text = " " + text
                                step_text += text
                                said = (said + text)[-1:]
                                record.add_text(text)
                                self.events.emit(
                                    TextDelta(conversation_id=turn.conversation_id, turn_id=turn.turn_id, text=text)
                                )
                                yield text
                        elif isinstance(out, ToolCall):
                            if not isinstance(out.arguments, dict):  # e.g. the model's JSON text, unparsed
                                raise ProtocolError(
                                    f"backend yielded a ToolCall for {out.name!r} whose arguments are "
                                    f"{type(out.arguments).__name__}, not a dict",
                                    provider=self.backend.name,
                                )
                            calls.append(out)
                        else:
                            raise ProtocolError(
                                f"backend yielded {type(out).__name__}, not a TextChunk or ToolCall",
                                provider=self.backend.name,
                            )
            except BrainError:
                raise
            except (asyncio.CancelledError, GeneratorExit):
                raise
            except Exception as exc:  # a custom backend raised something untyped
                raise _BackendFailed(self.backend.name, exc) from exc
            if not calls:
                if not said and not acted:
                    # silence, and nothing was done (no call, or every call failed or was refused):
                    # the apology. A turn whose action happened may end without words (an apology
                    # would invite the user to repeat it).
                    why = "no text, no tool call" if step == 0 else "no text after tool calls that all failed"
                    raise ProtocolError(f"the model gave no answer ({why})", provider=self.backend.name)
                return
            if final:
                # the step cap: a model that still asks for tools is not obeyed (nor remembered)
                log.warning("turn %s: tool step cap (%d) reached; ignoring %d call(s)", turn.turn_id, s.max_tool_steps, len(calls))
                if not step_text:  # it said nothing either: the user would hear silence
                    raise ProtocolError(
                        f"the model still asked for tools after {s.max_tool_steps} tool steps and gave no answer",
                        provider=self.backend.name,
                    )
                return
            if turn.go_ahead is not None and not cleared:
                # a reply begun before the user's turn was over: no tool runs (nor approval is
                # asked) until it is known to be kept
                if not await turn.go_ahead():
                    raise _Withdrawn()
                cleared = True
            calls = [self._unique_id(c, seen_ids) for c in calls]
            last = record.messages[-1]
            if last.role == "assistant" and not last.tool_calls:
                last.tool_calls = calls  # text spoken before the calls belongs to the same message
            else:
                record.messages.append(Message("assistant", "", tool_calls=calls))
            results: dict[str, str] = {}
            failed = False
            try:
                await self._run_calls(turn, calls, results, acted, cutoff)
            except Exception:
                failed = True
                raise
            finally:
                # every call gets a result message, even when interrupted: providers reject a
                # history where a tool call is not followed by its result
                unanswered = TURN_FAILED_RESULT if failed else cutoff.unanswered
                for call in calls:
                    content = results.get(call.id, unanswered)
                    record.messages.append(Message("tool", content, tool_call_id=call.id, name=call.name))

    async def _model_outputs(self, turn: Turn, request: Callable[[], ModelRequest]) -> AsyncGenerator[Any, None]:
        """The backend's outputs for one step of the tool loop. Refused as longer than the model's
        context before any output (`ContextTooLongError`), the request is made again without the
        oldest half of the conversation's earlier turns, then without any: they are dropped from
        memory for good, or every later turn would be refused the same way. The current turn is
        always sent; alone too long, it fails (and is dropped by the next turn's retry)."""
        sheds = 0
        while True:
            produced = False
            try:
                async with _closing(self._model_stream(request())) as stream:
                    async for out in stream:
                        produced = True
                        yield out
                return
            except ContextTooLongError as exc:
                dropped = 0 if produced else self.memory.shed(turn.conversation_id, everything=sheds > 0)
                if not dropped:
                    raise
                sheds += 1
                log.warning("turn %s: the model refused the history as too long (%s); dropped the %d oldest "
                            "turn(s) of the conversation, asking again", turn.turn_id, exc.message, dropped)

    def _model_stream(self, request: ModelRequest) -> AsyncIterator[Any]:
        """One model call. A backend that does not enforce BRAIN_REQUEST_TIMEOUT itself (a custom
        one: `bounds_silence`, see `ModelBackend`) gets it here: a stream that says nothing for
        that long (an empty `TextChunk` is not the model speaking) is cancelled and the turn
        fails with `timeout`, as a built-in backend's would. Not retried: that is its own choice."""
        backend = self.backend
        timeout = self.settings.request_timeout
        if timeout is None or getattr(backend, "bounds_silence", False) is True:
            return backend.stream(request)

        async def attempt() -> AsyncGenerator[Any, None]:
            async with _closing(backend.stream(request)) as outputs:
                async for out in outputs:
                    yield out

        def progress(out: Any) -> bool:
            return isinstance(out, ToolCall) or (isinstance(out, TextChunk) and bool(out.text))

        return bounded_stream(
            attempt,
            silence=timeout,
            retries=0,
            progress=progress,
            map_error=lambda exc: _BackendFailed(backend.name, exc),
            retry_hint=lambda exc: None,
            provider=backend.name,
        )

    @staticmethod
    def _unique_id(call: ToolCall, seen: set[str]) -> ToolCall:
        """Call ids must be unique within a turn (events and results are keyed by them)."""
        if not call.id or call.id in seen:
            call = dataclasses.replace(call, id="call_" + uuid.uuid4().hex[:16])
        seen.add(call.id)
        return call

    async def _run_calls(
        self,
        turn: Turn,
        calls: list[ToolCall],
        results: dict[str, str],
        acted: set[str] | None = None,
        cutoff: Cutoff | None = None,
    ) -> None:
        """Run the calls of one step concurrently; fills `results` (call id -> text) as they finish
        and `acted` with the ids of calls whose action happened or may have. `cutoff`: the
        turn's (the caller may mark it `closed` before it cancels)."""

        async def one(call: ToolCall) -> None:
            # every text for the model is cut (errors and echoed arguments too, not only results):
            # it is resent with each later request of the conversation
            results[call.id] = result_to_text(await self._run_call(turn, call, results, acted, cutoff))

        cutoff = cutoff or Cutoff()
        tasks = [asyncio.ensure_future(one(c)) for c in calls]
        try:
            await asyncio.gather(*tasks)
        except Exception:
            cutoff.failed = True  # the calls still running end because of this error, not the user
            raise
        finally:
            for t in tasks:
                if not t.done():
                    t.cancel()
            if any(not t.done() for t in tasks):
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _run_call(
        self,
        turn: Turn,
        call: ToolCall,
        results: dict[str, str] | None = None,
        acted: set[str] | None = None,
        cutoff: Cutoff | None = None,
    ) -> str:
        """Run one call; returns what the model is told. Emits started/approval/finished events.

        `results`: where to leave what the model is told when the call is interrupted while a
        plain-function tool runs (its thread cannot be stopped, so the action may still happen).
        `cutoff`: why the call would be cancelled (a barge-in unless it says otherwise)."""
        cutoff = cutoff or Cutoff()
        emit = self.events.emit
        conv, tid = turn.conversation_id, turn.turn_id
        tool = self.tools.get(call.name)
        report = tool.report if tool else "name"
        emit(
            ToolStarted(
                conversation_id=conv, turn_id=tid, call_id=call.id, name=call.name, arguments=call.arguments, report=report
            )
        )

        def finished(status: str, result: Any = None, error: str | None = None) -> None:
            if acted is not None and (status == "ok" or (error is not None and TOOL_MAY_HAVE_RUN in error)):
                acted.add(call.id)
            emit(
                ToolFinished(
                    conversation_id=conv,
                    turn_id=tid,
                    call_id=call.id,
                    name=call.name,
                    status=status,  # type: ignore[arg-type]
                    result=result,
                    error=error,
                    report=report,
                )
            )

        if tool is None:
            msg = f"unknown tool {call.name!r}; available: {', '.join(self.tools.names()) or 'none'}"
            finished("error", error=msg)
            return f"ERROR: {msg}"
        if INVALID_JSON in call.arguments:
            msg = "arguments were not valid JSON"
            finished("error", error=msg)
            return f"ERROR: {msg}: {call.arguments[INVALID_JSON]}"
        try:
            arguments = tool.validate(call.arguments)
        except ValueError as exc:
            finished("error", error=str(exc))
            return f"ERROR: {exc}"

        if tool.requires_approval:
            try:
                outcome, decision = await self._approve(turn, call, tool, arguments)
            except asyncio.CancelledError:
                finished("cancelled", error=f"{cutoff.why} before approval")
                raise
            except Exception as exc:  # the gate failed: the turn fails, but the call still finishes
                # its text goes where the tool's report level lets the details go (tool.finished
                # at `full`) and to the log; a gate's message may name the call's arguments
                finished("error", error=redact_secrets(f"approval failed: {type(exc).__name__}: {exc}"))
                raise _ApprovalFailed(tool.name, exc) from exc
            if decision is None:  # timed out
                finished("cancelled", error="no decision before the deadline")
                return f"NOT APPROVED: the user did not answer within {self.settings.hitl_timeout:g} s; the action was not taken."
            if outcome == "cancelled":  # withdrawn (the user left, the session closed): nobody said no
                finished("cancelled", error=decision.reason)
                by = f" ({decision.decided_by})" if decision.decided_by else ""
                return f"NOT APPROVED: the request was withdrawn before anyone answered{by}; the action was not taken."
            if not decision.approved:
                finished("cancelled", error=decision.reason or "rejected by the user")
                why = f": {decision.reason}" if decision.reason else ""
                return f"REJECTED by the user{why}. The action was not taken."
            if decision.arguments is not None:
                proposed = arguments
                try:
                    arguments = tool.validate(decision.arguments)
                except ValueError as exc:
                    finished("error", error=f"modified arguments invalid: {exc}")
                    return f"ERROR: the user's modified arguments were invalid: {exc}"
                # the model must learn what actually ran: the validated arguments ("6" as 6, the
                # defaults filled in), not the approver's as sent; the request's arguments sent
                # back as shown are the same call, not a change to tell it of
                if arguments != proposed:
                    told = await self._invoke(turn, call, tool, arguments, finished, results, cutoff, changed=arguments)
                    return with_changed_arguments(arguments, told)
        return await self._invoke(turn, call, tool, arguments, finished, results, cutoff)

    async def _invoke(
        self,
        turn: Turn,
        call: ToolCall,
        tool: Tool,
        arguments: dict[str, Any],
        finished: Callable[..., None],
        results: dict[str, str] | None,
        cutoff: Cutoff,
        changed: dict[str, Any] | None = None,
    ) -> str:
        """Run an approved call under its timeout; returns what the model is told.

        `changed`: the arguments the approver replaced the model's with (the note left in
        `results` for an interrupted plain-function tool says so too)."""
        # the per-tool timeout starts only now, after approval
        timeout = tool.timeout or self.settings.tool_timeout
        task = asyncio.current_task()
        cancelling = task.cancelling() if task is not None else 0
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                result = await tool.invoke(arguments, self._context(turn, call))
        except asyncio.CancelledError:
            if task is not None and task.cancelling() <= cancelling:
                # the tool raised it itself (e.g. its own task was cancelled): a tool error
                finished("error", error="CancelledError raised by the tool")
                return "ERROR: the tool failed (CancelledError)"
            if tool.runs_in_thread:
                finished("cancelled", error=f"{cutoff.why}; {TOOL_MAY_HAVE_RUN}")
                if results is not None:
                    note = f"{cutoff.cut}; it could not be stopped, so the action may or may not have been carried out."
                    # with the approver's arguments, the action that may happen is not the call in history
                    results[call.id] = note if changed is None else with_changed_arguments(changed, note)
            else:
                finished("cancelled", error=cutoff.why)
            raise
        except TimeoutError as exc:
            if not deadline.expired():  # the tool's own timeout, not ours
                why = redact_secrets(f"{type(exc).__name__}: {exc}".rstrip(": "))
                finished("error", error=why)
                return f"ERROR: {why}"
            if tool.runs_in_thread:
                finished("error", error=f"timed out after {timeout:g} s; {TOOL_MAY_HAVE_RUN}")
                return (f"ERROR: {call.name} did not finish within {timeout:g} s; it could not be stopped, "
                        "so the action may or may not have been carried out.")
            finished("error", error=f"timed out after {timeout:g} s")
            return f"ERROR: {call.name} timed out after {timeout:g} s"
        except (Exception, SystemExit, KeyboardInterrupt) as exc:  # noqa: BLE001 - tool errors are fed back to the model
            # a tool's sys.exit() (a CLI library's usage error) or KeyboardInterrupt is its own
            # failure: raised on, asyncio ended the event loop with it, and the worker's sessions
            why = redact_secrets(f"{type(exc).__name__}: {exc}")  # nor are secrets sent to the model
            finished("error", error=why)
            return f"ERROR: {why}"
        finished("ok", result=jsonable(result))
        return result_to_text(result, limit=None)  # cut once, with everything else told (`_run_calls`)

    def _context(self, turn: Turn, call: ToolCall) -> ToolContext:
        """What a tool's `ToolContext` parameter gets; the user as approvals address them."""
        return ToolContext(
            conversation_id=turn.conversation_id,
            turn_id=turn.turn_id,
            call_id=call.id,
            user_id=turn.user_id or self.settings.user_id,
        )

    async def _approve(
        self, turn: Turn, call: ToolCall, tool: Tool, arguments: dict[str, Any]
    ) -> tuple[Outcome, ApprovalDecision | None]:
        """Ask for approval: the outcome, and the decision (None when the deadline passed; a
        withdrawal, `ApprovalDecision.withdrawn`, when the request was withdrawn, outcome `cancelled`)."""
        s = self.settings
        deadline_ms = int((time.time() + s.hitl_timeout) * 1000)
        request = ApprovalRequest(
            request_id=new_request_id(),
            call_id=call.id,
            conversation_id=turn.conversation_id,
            turn_id=turn.turn_id,
            tool_name=tool.name,
            arguments=arguments,
            prompt=tool.describe_request(arguments),
            deadline_ms=deadline_ms,
            user_id=turn.user_id or s.user_id,
            report=tool.report,
        )
        future = self.approvals.register(request)  # waiter first, then publish
        self.events.emit(
            ApprovalRequested(
                conversation_id=turn.conversation_id,
                turn_id=turn.turn_id,
                request_id=request.request_id,
                call_id=call.id,
                name=tool.name,
                prompt=request.prompt,
                arguments=arguments,
                report=tool.report,
                user_id=request.user_id,
                deadline_ms=deadline_ms,
            )
        )
        outcome: Outcome = "cancelled"
        decision: ApprovalDecision | None = None
        decided_by: str | None = None
        try:
            answer: object = await asyncio.wait_for(asyncio.shield(future), s.hitl_timeout)
            if not isinstance(answer, ApprovalDecision):  # e.g. `policy=lambda r: True`: a bug, not a yes
                raise TypeError(f"the approval gate answered {type(answer).__name__}, not an ApprovalDecision")
            decision = answer
            # withdrawn through `resolve` (a transport, for a gate without `cancel_all`): as cancel_all
            outcome = "cancelled" if decision.withdrawn else "approved" if decision.approved else "rejected"
            decided_by = decision.decided_by
            return outcome, decision
        except TimeoutError:
            outcome = "timeout"
            return outcome, None
        except ApprovalCancelled as exc:
            outcome = "cancelled"
            decided_by = exc.by
            decision = ApprovalDecision.withdraw(by=exc.by)
            return outcome, decision
        finally:
            try:
                self.approvals.finish(request.request_id, outcome)
            finally:  # a gate that fails here must not leave the request unresolved for clients
                self.events.emit(
                    ApprovalResolved(
                        conversation_id=turn.conversation_id,
                        turn_id=turn.turn_id,
                        request_id=request.request_id,
                        call_id=call.id,
                        name=tool.name,
                        outcome=outcome,
                        decided_by=decided_by,
                        reason=decision.reason if decision else None,
                        modified=decision is not None and _changes(tool, arguments, decision.arguments),
                    )
                )

    def _report_error(self, turn: Turn, exc: BrainError, *, cause: BaseException | None = None) -> None:
        """`cause`: the unexpected exception behind an InternalError, logged with its traceback."""
        if cause is None:
            log.warning("turn %s failed: %s", turn.turn_id, exc)
        else:
            # the traceback as text, redacted: exception messages and locals' reprs echo secrets
            trace = redact_secrets("".join(traceback.format_exception(cause)).rstrip())
            log.error("turn %s failed: %s\n%s", turn.turn_id, exc, trace)
        self.events.emit(
            ErrorEvent(
                conversation_id=turn.conversation_id,
                turn_id=turn.turn_id,
                code=exc.code,
                message=exc.message,
                provider=exc.provider,
            )
        )


class _Withdrawn(Exception):
    """The turn's go-ahead was refused before its first tool call (`Turn.go_ahead`)."""


class _ApprovalFailed(Exception):
    """The approval step of a call raised (a custom gate or policy, the tool's prompt)."""

    def __init__(self, tool: str, error: Exception) -> None:
        super().__init__(tool, error)
        self.tool = tool
        self.error = error


class _BackendFailed(UnavailableError):
    """A custom backend raised something other than a `BrainError`: `unavailable`, named by its
    type only (its message, which may quote the conversation or a call's arguments, is logged)."""

    def __init__(self, backend: str, error: BaseException) -> None:
        super().__init__(f"the {backend} backend failed ({type(error).__name__})", provider=backend)


def _internal_error(exc: Exception) -> tuple[InternalError, Exception]:
    """What clients are told of an unexpected exception (the `internal` error), and the
    exception the log shows with its traceback. Its type only, never its text: the `error`
    envelope goes to every client whatever the tools' report levels, and the text of a failing
    gate, tool, backend or brain bug may quote the user's words or a call's arguments (a failed
    approval's text is in `tool.finished` at the `full` report level; the log has it always)."""
    if isinstance(exc, _ApprovalFailed):
        return InternalError(f"the approval of {exc.tool} failed ({type(exc.error).__name__})"), exc.error
    return InternalError(f"the turn failed ({type(exc).__name__})"), exc

"""EventBridge: brain and session events out to web clients, their decisions back in.

Producers (brain subscriber, `publish_*`) only enqueue: the voice pipeline never waits. One
sender task drains the queue in order, numbers envelopes (`seq`) and retries failed publishes
with bounded backoff; an envelope that still fails becomes an `error` envelope and a log line.
Client messages are parsed, authorised and answered (ack / error) to their sender only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel

from brain.approvals import ApprovalDecision, ResolveStatus
from brain.events import (
    ApprovalRequested,
    ApprovalResolved,
    ErrorEvent,
    TextDelta,
    ToolFinished,
    ToolStarted,
    TurnDone,
)

from .inbound import Rejected, ack_json, error_json, parse_client_message
from .outbound import OutboundQueue, Outgoing
from .protocol import (
    DEFAULT_CONTROL_METHOD,
    PROTOCOL_VERSION,
    Ack,
    AckData,
    AgentInterrupt,
    ControlInfo,
    ErrorData,
    HitlRequestData,
    HitlResolvedData,
    HitlRespond,
    PendingRequestData,
    SessionEndedData,
    SessionEndReason,
    SessionHelloData,
    SessionSync,
    ToolFinishedData,
    ToolStartedData,
    TurnDoneData,
    UserText,
    UserTranscriptData,
)
from .redact import (
    ReportPolicy,
    scrub,
    scrub_text,
    short_reason,
    shows_args,
    shows_name,
    shows_result,
)
from .transport import Inbound, Transport

log = logging.getLogger("bridge")


class ControlRefused(Exception):
    """Raised by a `BridgeControls` method that cannot do what was asked right now (e.g. the agent
    is saying goodbye, which may not be interrupted): the client gets `unsupported` with this
    message, not `internal`."""


class BridgeControls(Protocol):
    """Implemented by the agent layer. Return once the action is accepted (not when a reply ends)."""

    async def interrupt(self, sender: str) -> None: ...

    async def user_text(self, sender: str, text: str) -> None: ...


class BrainLike(Protocol):
    """The part of `brain.VoiceBrain` the bridge uses."""

    approvals: Any

    def subscribe(self, callback: Callable[[Any], None]) -> Callable[[], None]: ...


@dataclass(frozen=True)
class BridgeOptions:
    """Tuning knobs; the defaults suit a LiveKit room."""

    control_method: str = DEFAULT_CONTROL_METHOD
    max_message_bytes: int = 8192
    max_queue_items: int = 4096
    max_queue_bytes: int = 1 << 20
    send_attempts: int = 4
    retry_base_delay: float = 0.05
    retry_max_delay: float = 1.0
    send_timeout: float = 10.0
    control_timeout: float = 5.0
    flush_timeout: float = 2.0
    broadcast: bool = False
    """False: envelopes go to the served participant and allowed identities only. True: to everyone."""
    memory: int = 1024
    """How many finished turn ids / request ids are remembered (for exactly-once and scoping)."""
    max_reply_bytes: int = 15 * 1024
    """The largest reply to a client message (LiveKit refuses RPC responses over 15 KiB): a
    `session.sync` ack that would be larger lists less and says `truncated`."""


@dataclass
class BridgeStats:
    sent: int = 0
    failed: int = 0
    retries: int = 0
    refused: int = 0


class _Lru:
    def __init__(self, size: int) -> None:
        self.size = size
        self._d: OrderedDict[str, Any] = OrderedDict()

    def __contains__(self, key: str) -> bool:
        return key in self._d

    def get(self, key: str) -> Any:
        return self._d.get(key)

    def put(self, key: str, value: Any = None) -> None:
        self._d[key] = value
        self._d.move_to_end(key)
        while len(self._d) > self.size:
            self._d.popitem(last=False)


def _now_ms() -> int:
    return int(time.time() * 1000)


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _dumps(value: Any) -> str:
    return _ENCODER.encode(value)


def _data_json(data: BaseModel | dict[str, Any]) -> str:
    """`data` as JSON. Text that is not valid Unicode (a lone surrogate: half an emoji from a
    model, a file name decoded with `surrogateescape`) is sent with those characters replaced
    rather than losing the envelope, which may be a `hitl.request` or `turn.done`."""
    try:
        return data.model_dump_json() if isinstance(data, BaseModel) else _dumps(data)
    except (UnicodeEncodeError, ValueError):
        plain = data.model_dump(mode="json") if isinstance(data, BaseModel) else data
        return _dumps(_valid_unicode(plain))


def _valid_unicode(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {_valid_unicode(k): _valid_unicode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_valid_unicode(v) for v in value]
    return value


class EventBridge:
    def __init__(
        self,
        transport: Transport,
        *,
        brain: BrainLike | None,
        agent_name: str,
        served_identity: str | None,
        allowed_identities: Iterable[str] = (),
        report_overrides: Mapping[str, str] | None = None,
        controls: BridgeControls | None = None,
        conversation_id: str | None = None,
        options: BridgeOptions | None = None,
    ) -> None:
        self.transport = transport
        self.brain = brain
        self.agent_name = agent_name
        self._served = served_identity
        self.allowed_identities = tuple(dict.fromkeys(i for i in allowed_identities if i))
        self.reports = ReportPolicy(report_overrides)
        self.controls = controls
        self.conversation_id = conversation_id
        self.options = options or BridgeOptions()
        self.stats = BridgeStats()
        self._queue = OutboundQueue(self.options.max_queue_items, self.options.max_queue_bytes)
        self._seq = 0
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._present: set[str] = set()
        self._served_gone = False
        self._done_turns = _Lru(self.options.memory)
        self._requests = _Lru(self.options.memory)  # request id -> conversation id, for scoping
        self._pending: dict[str, str] = {}  # unresolved request id -> conversation id
        self._open: dict[str, PendingRequestData] = {}  # answerable request id -> what a hello lists
        self._overflowing = False
        self._closed = False
        self._ended = False  # session.ended is queued
        self._unsubscribe: Callable[[], None] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._send_started: float | None = None  # loop time the current send began
        self._send_timed_out = False  # the watchdog cancelled the sender for a hung send
        self._audience_cache: list[str] | None = None
        self._turn_json: tuple[str | None, str] = (None, "null")

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> EventBridge:
        loop = asyncio.get_running_loop()
        self._sender = loop.create_task(self._send_loop(), name="bridge-sender")
        self._watchdog = loop.create_task(self._watch_sends(), name="bridge-send-watchdog")
        present = self.transport.start(
            Inbound(on_message=self.handle_message, on_join=self._on_join, on_leave=self._on_leave,
                    on_closed=self._on_closed)
        )
        if self.brain is not None:
            self._unsubscribe = self.brain.subscribe(self.publish_event)
        for identity in present:
            self._present.add(identity)
            if self._in_audience(identity):
                self._hello(identity)
        return self

    async def aclose(self, ended: SessionEndReason | None = None) -> None:
        """End of session: pending approvals resolve as cancelled, `session.ended` with `ended`
        (the last envelope; none without it), queued envelopes are flushed."""
        if self._closed:
            return
        self.cancel_pending("system:session_closed")
        for _ in range(5):  # let the brain's tasks observe the cancellation and emit their events
            await asyncio.sleep(0)
        if ended is not None:
            self._put("session.ended", None, _now_ms(), SessionEndedData(reason=ended), force=True)
            self._ended = True  # the last envelope: whatever comes later is not published
        await self.flush(self.options.flush_timeout)
        self._closed = True
        if self._pending:
            # the gate could not cancel them (it logged why): nobody can answer them through this
            # bridge any more, and their resolution will not be published
            log.warning("bridge closed with %d approval request(s) its gate did not resolve", len(self._pending))
        self._pending.clear()
        self._open.clear()
        if self._unsubscribe is not None:
            self._unsubscribe()
        self.transport.stop()
        for task in (self._watchdog, self._sender):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def flush(self, within: float | None = None) -> bool:
        """Wait until everything queued so far was handed to the transport; False after `within` s."""
        try:
            async with asyncio.timeout(within):
                while not (self._drained.is_set() and len(self._queue) == 0):
                    await self._drained.wait()
                    await asyncio.sleep(0)
            return True
        except TimeoutError:
            return False

    # -- identities -----------------------------------------------------------------------------

    @property
    def served_identity(self) -> str | None:
        return self._served

    @served_identity.setter
    def served_identity(self, identity: str | None) -> None:
        """The agent layer may learn the served participant after attaching."""
        self._served = identity
        self._served_gone = False
        self._audience_cache = None
        if identity and identity in self._present:
            self._hello(identity)

    def audience(self) -> list[str] | None:
        """Who envelopes are addressed to: None means every participant."""
        if self.options.broadcast:
            return None
        if self._audience_cache is None:
            ids = [self._served] if self._served else []
            ids.extend(i for i in self.allowed_identities if i != self._served)
            self._audience_cache = ids
        return list(self._audience_cache)

    def _in_audience(self, identity: str) -> bool:
        return self.options.broadcast or identity == self._served or identity in self.allowed_identities

    def may_control(self, identity: str) -> bool:
        return identity == self._served or identity in self.allowed_identities

    # -- outbound: session events ---------------------------------------------------------------

    def publish_transcript(self, text: str, final: bool, turn_id: str | None = None) -> None:
        self._put("user.transcript", turn_id, _now_ms(), UserTranscriptData(text=text, final=final))

    def publish_metrics(self, turn_id: str | None, data: Mapping[str, Any]) -> None:
        flat: dict[str, Any] = {}
        for k, v in scrub(dict(data), mask_numbers=False).items():
            flat[k] = v if v is None or isinstance(v, str | int | float | bool) else scrub_text(_dumps(v))
        self._put("metrics", turn_id, _now_ms(), flat)

    def publish_error(self, code: str, message: str, fatal: bool = False, turn_id: str | None = None) -> None:
        msg = short_reason(message, 300) or code
        self._put("error", turn_id, _now_ms(), ErrorData(code=code, message=msg, fatal=fatal), force=True)

    def publish_event(self, event: Any) -> None:
        """Forward one brain event (the brain subscriber; the agent layer may call it too)."""
        try:
            self._map_event(event)
        except Exception:  # noqa: BLE001 - the voice pipeline must never see bridge failures
            log.exception("bridge could not map %s", type(event).__name__)

    def _map_event(self, ev: Any) -> None:
        if self._closed or self._ended or (self.conversation_id is not None and getattr(ev, "conversation_id", None) != self.conversation_id):
            return
        if type(ev) is TextDelta or isinstance(ev, TextDelta):
            if ev.text and ev.turn_id not in self._done_turns:
                self._queue.put_text(ev.turn_id, ev.ts, ev.text)
                self._signal()
        elif isinstance(ev, ToolStarted):
            level = self.reports.level(ev.name, ev.report)
            if shows_name(level):
                args = scrub(ev.arguments) if shows_args(level) else None
                self._put("tool.started", ev.turn_id, ev.ts, ToolStartedData(call_id=ev.call_id, tool=ev.name, arguments=args))
        elif isinstance(ev, ToolFinished):
            level = self.reports.level(ev.name, ev.report)
            if shows_name(level):
                full = shows_result(level)
                self._put("tool.finished", ev.turn_id, ev.ts, ToolFinishedData(
                    call_id=ev.call_id, tool=ev.name, status=ev.status,
                    result=scrub(ev.result) if full else None,
                    error=short_reason(ev.error) if full else None,
                ))
        elif isinstance(ev, ApprovalRequested):
            self._on_approval_requested(ev)
        elif isinstance(ev, ApprovalResolved):
            if ev.request_id not in self._pending and ev.request_id not in self._requests:
                return  # not one of ours (addressed to someone outside this session)
            self._pending.pop(ev.request_id, None)
            self._open.pop(ev.request_id, None)
            self._requests.put(ev.request_id, ev.conversation_id)
            self._put("hitl.resolved", ev.turn_id, ev.ts, HitlResolvedData(
                request_id=ev.request_id, call_id=ev.call_id, tool=ev.name, outcome=ev.outcome,
                by=ev.decided_by, modified=ev.modified, reason=short_reason(ev.reason),
            ), force=True)
        elif isinstance(ev, TurnDone):
            if ev.turn_id in self._done_turns:
                return  # exactly once per turn
            self._done_turns.put(ev.turn_id)
            self._put("turn.done", ev.turn_id, ev.ts, TurnDoneData(reason=ev.reason, text=ev.text), force=True)
        elif isinstance(ev, ErrorEvent):
            msg = short_reason(ev.message, 300) or ev.code
            self._put("error", ev.turn_id, ev.ts, ErrorData(code=ev.code, message=msg, fatal=ev.fatal), force=True)
        # TurnStarted and unknown events: nothing to publish

    def _on_approval_requested(self, ev: ApprovalRequested) -> None:
        addressed = ev.user_id or self._served
        if ev.user_id is not None and not self.may_control(ev.user_id):
            log.debug("approval %s is addressed to %s, outside this session", ev.request_id, ev.user_id)
            return
        self._requests.put(ev.request_id, ev.conversation_id)
        self._pending[ev.request_id] = ev.conversation_id
        level = self.reports.level(ev.name, ev.report)
        data = HitlRequestData.model_validate({
            "request_id": ev.request_id, "call_id": ev.call_id, "tool": ev.name,
            "prompt": scrub_text(ev.prompt, 500),
            "arguments": scrub(ev.arguments) if shows_args(level) else None,
            "deadline": ev.deadline_ms, "for": addressed,
        })
        # kept for the hellos of clients that join while it is open: they missed this envelope
        self._open[ev.request_id] = PendingRequestData.model_validate({**data.model_dump(by_alias=True), "turn": ev.turn_id})
        self._put("hitl.request", ev.turn_id, ev.ts, data, force=True)
        if self._served_gone and not any(i in self._present for i in self.allowed_identities):
            # nobody left who could answer: do not make the brain wait out the deadline
            asyncio.get_running_loop().call_soon(self.cancel_pending, "system:participant_left")

    def _hello(self, client: str | None) -> None:
        caps = ["hitl"] + (["interrupt", "user_text"] if self.controls is not None else [])
        control = ControlInfo(method=self.options.control_method, max_message_bytes=self.options.max_message_bytes)
        now = _now_ms()
        data = SessionHelloData(protocol=PROTOCOL_VERSION, agent=self.agent_name, capabilities=caps, control=control,
                                client=client, session=self.conversation_id, pending=self._open_requests(now))
        self._put("session.hello", None, now, data, force=True)

    def _open_requests(self, now: int) -> list[PendingRequestData]:
        """What a hello and a `session.sync` ack list: the requests still open, each as its
        `hitl.request` (same scrubbing and report level) plus its turn. Every request kept here
        was published to the whole audience, so every client of the audience may see all of them."""
        return [p for p in self._open.values() if p.deadline > now]

    def _sync_ack(self, cid: str | None) -> str:
        now = _now_ms()
        pending = self._open_requests(now)
        limit = self.options.max_reply_bytes

        def reply(items: list[PendingRequestData], truncated: bool) -> str:
            return _data_json(Ack(id=cid, ts=now, data=AckData(type="session.sync", pending=items, truncated=truncated)))

        text = reply(pending, False)
        if len(text.encode("utf-8")) <= limit:
            return text
        # too big for an RPC reply: without arguments, then without the newest requests
        items = [p.model_copy(update={"arguments": None}) for p in pending]
        while True:
            text = reply(items, True)
            if len(text.encode("utf-8")) <= limit or not items:
                log.warning("session.sync reply cut to %d of %d open requests to fit %d bytes", len(items), len(pending), limit)
                return text
            items.pop()

    def _put(self, etype: str, turn: str | None, ts: int, data: BaseModel | dict[str, Any], *, force: bool = False) -> None:
        if self._closed or self._ended:
            return
        try:
            data_json = _data_json(data)
        except Exception:  # noqa: BLE001 - a bug in a producer; producers must never see it
            log.exception("bridge could not serialise a %s envelope", etype)
            return
        if not self._queue.put(Outgoing(etype, turn, ts, data_json), force=force):
            self.stats.refused += 1
            if not self._overflowing:
                self._overflowing = True
                log.warning("bridge queue full (%d items): the transport is not keeping up", len(self._queue))
                err = ErrorData(code="queue_overflow", message="events were dropped: the transport is not keeping up")
                self._queue.put(Outgoing("error", None, _now_ms(), err.model_dump_json()), force=True)
        self._signal()

    def _signal(self) -> None:
        self._drained.clear()
        self._wake.set()

    # -- the sender -----------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        while True:
            try:
                item = self._queue.pop()
                if item is None:
                    self._overflowing = False
                    self._drained.set()
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                await self._deliver(item)
            except asyncio.CancelledError:
                if not self._absorb_watchdog_cancel():
                    raise
                # the watchdog fired just as a send completed: nothing hung, carry on

    def _absorb_watchdog_cancel(self) -> bool:
        """True when a cancellation came from the send watchdog (not from aclose)."""
        if not self._send_timed_out or self._closed:
            return False
        self._send_timed_out = False
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        return True

    async def _watch_sends(self) -> None:
        """One cheap watchdog instead of a timer per send: cancels a send that hangs."""
        limit = self.options.send_timeout
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(max(0.005, min(1.0, limit / 4)))
            started = self._send_started
            if started is not None and not self._send_timed_out and loop.time() - started > limit:
                self._send_timed_out = True
                if self._sender is not None:
                    self._sender.cancel()

    def _turn_json_for(self, turn: str | None) -> str:
        last, encoded = self._turn_json
        if turn != last:
            encoded = "null" if turn is None else _dumps(turn)
            self._turn_json = (turn, encoded)
        return encoded

    async def _deliver(self, item: Outgoing) -> None:
        self._seq += 1
        seq = self._seq
        if item.text is not None:
            data = '{"delta":' + _ENCODER.encode(item.text.decode("utf-8", "replace")) + "}"
        else:
            data = item.data_json or "{}"
        turn = self._turn_json_for(item.turn)
        envelope = f'{{"v":1,"seq":{seq},"ts":{item.ts},"type":"{item.type}","turn":{turn},"data":{data}}}'
        destination = self.audience()
        opts = self.options
        loop = asyncio.get_running_loop()
        error: BaseException | None = None
        for attempt in range(max(1, opts.send_attempts)):
            if attempt:
                self.stats.retries += 1
                await asyncio.sleep(min(opts.retry_max_delay, opts.retry_base_delay * 2 ** (attempt - 1)))
            self._send_started = loop.time()
            try:
                await self.transport.send(envelope, destination)
                self._send_timed_out = False
                self.stats.sent += 1
                return
            except asyncio.CancelledError:
                if not self._absorb_watchdog_cancel():
                    raise
                error = TimeoutError(f"send took longer than {opts.send_timeout:g} s")
            except Exception as exc:  # noqa: BLE001 - any transport failure is retried, then reported
                error = exc
            finally:
                self._send_started = None
        self.stats.failed += 1
        why = type(error).__name__ if error else "unknown"
        log.warning("bridge could not publish envelope seq=%d type=%s after %d attempts: %s",
                    seq, item.type, opts.send_attempts, why)
        if not (item.type == "error" and item.data_json and '"publish_failed"' in item.data_json):
            err = ErrorData(code="publish_failed", message=f"envelope seq {seq} ({item.type}) could not be delivered: {why}")
            self._queue.put(Outgoing("error", item.turn, _now_ms(), err.model_dump_json()), force=True)

    # -- inbound --------------------------------------------------------------------------------

    async def handle_message(self, sender: str, raw: Any) -> str:
        """Answer one client message; the reply goes to `sender` only. Never raises."""
        cid: str | None = None
        try:
            parsed = parse_client_message(raw, self.options.max_message_bytes)
            if isinstance(parsed, Rejected):
                return error_json(parsed.code, parsed.message, parsed.id)
            cid = parsed.id
            if self._closed:
                return error_json("unsupported", "the session has ended", cid)
            if isinstance(parsed, SessionSync):  # a read: for whoever receives the events
                if not self._in_audience(sender):
                    return error_json("forbidden", "session.sync is only accepted from participants that receive this agent's events", cid)
                return self._sync_ack(cid)
            if not self.may_control(sender):
                return error_json("forbidden", f"{parsed.type} is only accepted from the participant this agent serves", cid)
            if isinstance(parsed, HitlRespond):
                return self._hitl_respond(sender, parsed)
            if isinstance(parsed, AgentInterrupt):
                return await self._control(parsed.type, cid, lambda c: c.interrupt(sender))
            if isinstance(parsed, UserText):
                if sender != self._served:
                    # typed words become the served user's turn: their memory, their tools'
                    # `ToolContext.user_id`, approvals addressed to them
                    return error_json("forbidden", "user.text is only accepted from the participant this agent "
                                      "serves: what it says is recorded, and acted on, as theirs", cid)
                text = parsed.data.text
                return await self._control(parsed.type, cid, lambda c: c.user_text(sender, text))
            return error_json("unknown_type", "unhandled message type", cid)
        except Exception:  # noqa: BLE001 - every message gets an answer
            log.exception("bridge failed handling a message from %s", sender)
            return error_json("internal", "the agent could not handle this message", cid)

    async def _control(self, mtype: str, cid: str | None, call: Callable[[BridgeControls], Any]) -> str:
        if self.controls is None:
            return error_json("unsupported", f"this agent does not accept {mtype}", cid)
        try:
            async with asyncio.timeout(self.options.control_timeout):
                await call(self.controls)
        except TimeoutError:
            return error_json("internal", f"{mtype} timed out", cid)
        except ControlRefused as e:
            return error_json("unsupported", str(e) or f"{mtype} is not possible now", cid)
        except Exception:  # noqa: BLE001
            log.exception("%s control failed", mtype)
            return error_json("internal", f"{mtype} failed", cid)
        return ack_json(mtype, cid)

    def _hitl_respond(self, sender: str, msg: HitlRespond) -> str:
        d, cid = msg.data, msg.id
        rid = d.request_id
        if (rid not in self._pending and rid not in self._requests) or self.brain is None:
            return error_json("unknown_request", f"no approval request {rid!r} in this session", cid)
        gate = self.brain.approvals
        request = gate.get(rid)
        if request is not None and request.user_id and sender != request.user_id and sender not in self.allowed_identities:
            return error_json("forbidden", "this approval request is addressed to someone else", cid)
        approved = d.decision == "approve"
        if d.arguments is not None and not approved:
            return error_json("invalid_message", "data.arguments is only allowed with decision 'approve'", cid)
        if d.arguments is not None and request is not None:
            tool = getattr(getattr(self.brain, "tools", None), "get", lambda _n: None)(request.tool_name)
            if tool is not None:
                try:
                    tool.validate(d.arguments)
                except ValueError as exc:
                    return error_json("invalid_arguments", short_reason(str(exc), 300) or "invalid arguments", cid)
        decision = ApprovalDecision(approved=approved, arguments=d.arguments, reason=d.reason, decided_by=sender)
        status = gate.resolve(rid, decision)
        if status == ResolveStatus.OK:
            self._open.pop(rid, None)  # decided: a hello or sync ack before its hitl.resolved must not list it
            return ack_json(msg.type, cid, rid)
        if status == ResolveStatus.ALREADY_RESOLVED:
            return error_json("already_resolved", f"approval request {rid!r} was already decided", cid)
        if status == ResolveStatus.EXPIRED:
            return error_json("expired", f"approval request {rid!r} has expired", cid)
        return error_json("unknown_request", f"no approval request {rid!r} in this session", cid)

    # -- presence -------------------------------------------------------------------------------

    def cancel_pending(self, by: str) -> int:
        """Resolve every pending approval of this session as cancelled: the tool does not run, and
        the model is told the request was withdrawn (not that the user rejected it)."""
        if self.brain is None or not self._pending:
            return 0
        gate = self.brain.approvals
        cancel_all = getattr(gate, "cancel_all", None)
        if not callable(cancel_all):  # a gate without cancel_all: withdraw each one we know of (the same outcome)
            return self._withdraw(gate, list(self._pending), by)
        n = 0
        for conv in set(self._pending.values()):
            ids = [rid for rid, c in self._pending.items() if c == conv]
            try:
                n += int(cancel_all(conv, by=by))
            except Exception:  # noqa: BLE001 - a broken gate must not keep the requests open (or break leave / close)
                log.exception("the approval gate's cancel_all failed; withdrawing its requests one by one")
                n += self._withdraw(gate, ids, by)
            else:
                for rid in ids:  # no longer answerable: a hello before their hitl.resolved must not list them
                    self._open.pop(rid, None)
        return n

    def _withdraw(self, gate: Any, request_ids: list[str], by: str) -> int:
        n = 0
        for rid in request_ids:
            try:
                if gate.resolve(rid, ApprovalDecision.withdraw(by=by)) == ResolveStatus.OK:
                    self._open.pop(rid, None)
                    n += 1
            except Exception:  # noqa: BLE001
                log.exception("the approval gate could not withdraw request %s", rid)
        return n

    def _on_join(self, identity: str) -> None:
        self._present.add(identity)
        if identity == self._served:
            self._served_gone = False
        if self._in_audience(identity):
            self._hello(identity)

    def _on_leave(self, identity: str) -> None:
        self._present.discard(identity)
        if identity == self._served:
            self._served_gone = True
            self.cancel_pending("system:participant_left")

    def _on_closed(self) -> None:
        self.cancel_pending("system:session_closed")


def attach_event_bridge(
    room_or_transport: Any,
    *,
    brain: BrainLike | None,
    agent_name: str,
    served_identity: str | None,
    allowed_identities: Iterable[str] = (),
    topic: str | None = None,
    report_overrides: Mapping[str, str] | None = None,
    controls: BridgeControls | None = None,
    conversation_id: str | None = None,
    options: BridgeOptions | None = None,
) -> EventBridge:
    """Start a bridge on a LiveKit room (or any `Transport`). Call from a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError("attach_event_bridge must be called from a running asyncio event loop") from None
    options = options or BridgeOptions()
    if isinstance(room_or_transport, Transport):
        own_topic = getattr(room_or_transport, "topic", topic)
        if topic is not None and own_topic != topic:
            raise ValueError(f"topic {topic!r} conflicts with the transport's topic {own_topic!r}")
        transport: Transport = room_or_transport
    else:
        from .livekit_transport import LiveKitRoomTransport
        from .protocol import DEFAULT_TOPIC

        transport = LiveKitRoomTransport(room_or_transport, topic or DEFAULT_TOPIC, options.control_method)
    return EventBridge(
        transport,
        brain=brain,
        agent_name=agent_name,
        served_identity=served_identity,
        allowed_identities=allowed_identities,
        report_overrides=report_overrides,
        controls=controls,
        conversation_id=conversation_id,
        options=options,
    ).start()

"""The whole HITL loop through the bridge: real brain (offline backend), fake room, fake web client."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from brain import (
    ApprovalDecision,
    ApprovalRequest,
    BrainConfig,
    InProcessApprovalGate,
    ResolveStatus,
    TextChunk,
    Tool,
    ToolSet,
    Turn,
    VoiceBrain,
    create_voice_brain,
    tool,
)
from brain.approvals import Outcome
from brain.events import ApprovalRequested, ApprovalResolved
from brain.memory import ToolCall
from brain.tools import as_tool
from bridge import BridgeOptions, EventBridge, attach_event_bridge
from tests.bridge_fakes import FakeClient, FakeRoom

CONV = "room-1"


async def consume(brain: VoiceBrain, turn: Turn) -> list[str]:
    return [d async for d in brain.stream_reply(turn)]


@dataclass
class Session:
    room: FakeRoom
    brain: VoiceBrain
    bridge: EventBridge
    alice: FakeClient

    def client(self, identity: str) -> FakeClient:
        return FakeClient(self.room, identity)

    async def run_turn(self, text: str, user_id: str | None = "alice") -> asyncio.Task[list[str]]:
        async def consume() -> list[str]:
            return [d async for d in self.brain.stream_reply(Turn(text, CONV, user_id=user_id))]

        return asyncio.create_task(consume())


class MinimalGate:
    """A custom approval gate with only what `ApprovalGate` requires (no `cancel_all`)."""

    def __init__(self) -> None:
        self._inner = InProcessApprovalGate()

    def register(self, request: ApprovalRequest) -> asyncio.Future[ApprovalDecision]:
        return self._inner.register(request)

    def resolve(self, request_id: str, decision: ApprovalDecision) -> ResolveStatus:
        return self._inner.resolve(request_id, decision)

    def finish(self, request_id: str, outcome: Outcome) -> None:
        self._inner.finish(request_id, outcome)

    def get(self, request_id: str) -> ApprovalRequest | None:
        return self._inner.get(request_id)


@pytest.fixture
async def session(request: pytest.FixtureRequest) -> AsyncIterator[Session]:
    params: dict[str, Any] = getattr(request, "param", {})
    room = FakeRoom(["alice", "mallory"] + params.get("extra", []))
    gate = params["gate"]() if "gate" in params else MinimalGate() if params.get("minimal_gate") else None
    brain = create_voice_brain(BrainConfig(_env_file=None, hitl_timeout=params.get("hitl_timeout", 30.0)), approvals=gate,
                               tools=params.get("tools"))
    bridge = attach_event_bridge(
        room, brain=brain, agent_name="assistant", served_identity="alice", conversation_id=CONV,
        allowed_identities=params.get("allowed", ()), report_overrides=params.get("reports"),
        options=BridgeOptions(send_attempts=2, retry_base_delay=0.001, broadcast=params.get("broadcast", False),
                              **{k: params[k] for k in ("max_reply_bytes", "memory") if k in params}),
    )
    yield Session(room, brain, bridge, FakeClient(room, "alice"))
    await bridge.aclose()


def types(envelopes: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in envelopes]


def assert_gapless(envelopes: list[dict[str, Any]]) -> None:
    assert [e["seq"] for e in envelopes] == list(range(1, len(envelopes) + 1))


def index_of(envelopes: list[dict[str, Any]], etype: str) -> int:
    return types(envelopes).index(etype)


async def finish(s: Session, task: asyncio.Task[list[str]]) -> str:
    reply = "".join(await asyncio.wait_for(task, 10))
    assert await s.bridge.flush(5)
    return reply


async def test_approve_runs_the_tool_and_events_follow_in_order(session: Session) -> None:
    s = session
    task = await s.run_turn("book a table for two")
    [req] = await s.alice.wait_for("hitl.request")
    assert req["data"]["tool"] == "book_table"
    assert req["data"]["for"] == "alice"
    assert req["data"]["arguments"] == {"restaurant": "Luigi's", "party_size": 2, "time": "19:00"}
    assert "Book a table for 2" in req["data"]["prompt"]
    ack = await s.alice.respond(req["data"]["request_id"], "approve", msg_id="m1")
    assert ack["type"] == "ack" and ack["id"] == "m1" and ack["data"]["request_id"] == req["data"]["request_id"]
    reply = await finish(s, task)
    assert "booked" in reply

    env = s.alice.envelopes
    assert_gapless(env)
    order = [index_of(env, t) for t in ("session.hello", "tool.started", "hitl.request", "hitl.resolved", "tool.finished", "turn.done")]
    assert order == sorted(order)
    resolved = s.alice.of_type("hitl.resolved")[0]["data"]
    assert resolved["outcome"] == "approved" and resolved["by"] == "alice" and resolved["modified"] is False
    assert s.alice.of_type("tool.finished")[0]["data"]["status"] == "ok"
    assert s.alice.of_type("turn.done")[0]["data"]["reason"] == "completed"
    text = "".join(e["data"]["delta"] for e in s.alice.of_type("agent.text"))
    assert text == reply
    # the decision arrives at most once
    again = await s.alice.respond(req["data"]["request_id"], "reject")
    assert again["type"] == "error" and again["data"]["code"] in ("already_resolved", "expired")


async def test_reject_cancels_the_tool(session: Session) -> None:
    s = session
    task = await s.run_turn("book a table for two")
    [req] = await s.alice.wait_for("hitl.request")
    ack = await s.alice.respond(req["data"]["request_id"], "reject", reason="changed my mind")
    assert ack["type"] == "ack"
    reply = await finish(s, task)
    assert "won't" in reply
    resolved = s.alice.of_type("hitl.resolved")[0]["data"]
    assert resolved["outcome"] == "rejected" and resolved["by"] == "alice" and resolved["reason"] == "changed my mind"
    env = s.alice.envelopes
    assert index_of(env, "hitl.resolved") < index_of(env, "tool.finished") < index_of(env, "turn.done")
    assert s.alice.of_type("tool.finished")[0]["data"]["status"] == "cancelled"


@pytest.mark.parametrize("session", [{"hitl_timeout": 0.05}], indirect=True)
async def test_timeout_resolves_and_late_answers_are_expired(session: Session) -> None:
    s = session
    task = await s.run_turn("book a table for two")
    [req] = await s.alice.wait_for("hitl.request")
    reply = await finish(s, task)
    assert "won't" in reply
    resolved = s.alice.of_type("hitl.resolved")[0]["data"]
    assert resolved["outcome"] == "timeout" and resolved["by"] is None
    late = await s.alice.respond(req["data"]["request_id"], "approve")
    assert late["type"] == "error" and late["data"]["code"] == "expired"
    assert s.alice.of_type("tool.finished")[0]["data"]["status"] == "cancelled"


async def test_modified_arguments_are_validated_then_used(session: Session) -> None:
    s = session
    task = await s.run_turn("book a table for two")
    [req] = await s.alice.wait_for("hitl.request")
    rid = req["data"]["request_id"]
    bad = await s.alice.respond(rid, "approve", arguments={"restaurant": "Luigi's", "party_size": "lots"})
    assert bad["type"] == "error" and bad["data"]["code"] == "invalid_arguments"
    assert "party_size" in bad["data"]["message"]
    assert s.brain.approvals.get(rid) is not None  # nothing changed: still pending
    wrong = await s.alice.respond(rid, "reject", arguments={"restaurant": "X", "party_size": 3})
    assert wrong["data"]["code"] == "invalid_message"
    ok = await s.alice.respond(rid, "approve", arguments={"restaurant": "Chez Anna", "party_size": 4, "time": "20:30"})
    assert ok["type"] == "ack"
    reply = await finish(s, task)
    assert "table for 4 at Chez Anna" in reply and "20:30" in reply
    assert s.alice.of_type("hitl.resolved")[0]["data"]["modified"] is True
    assert len(s.alice.of_type("hitl.resolved")) == 1


async def test_forged_approval_from_another_identity_is_forbidden(session: Session) -> None:
    s = session
    mallory = s.client("mallory")
    task = await s.run_turn("book a table for two")
    [req] = await s.alice.wait_for("hitl.request")
    rid = req["data"]["request_id"]
    forged = await mallory.respond(rid, "approve")
    assert forged["type"] == "error" and forged["data"]["code"] == "forbidden"
    assert s.brain.approvals.get(rid) is not None
    assert mallory.envelopes == []  # events are addressed to the served participant only
    await s.alice.respond(rid, "reject")
    await finish(s, task)
    resolved = s.alice.of_type("hitl.resolved")[0]["data"]
    assert resolved["outcome"] == "rejected" and resolved["by"] == "alice"


@pytest.mark.parametrize("session", [{"allowed": ["supervisor"], "extra": ["supervisor"]}], indirect=True)
async def test_participant_leaving_cancels_pending_requests(session: Session) -> None:
    s = session
    sup = s.client("supervisor")  # still in the room, so it sees what happens after alice leaves
    task = await s.run_turn("book a table for two")
    [req] = await s.alice.wait_for("hitl.request")
    sent_before = len(s.room.local_participant.sends)
    s.room.disconnect_participant("alice")
    reply = await finish(s, task)
    assert "won't" in reply
    after = [json.loads(x.text) for x in s.room.local_participant.sends[sent_before:]]
    assert all(x.destination_identities == ["supervisor"] for x in s.room.local_participant.sends[sent_before:])
    resolved = sup.of_type("hitl.resolved")
    assert [r["data"]["outcome"] for r in resolved] == ["cancelled"]
    assert types(after)[:2] == ["hitl.resolved", "tool.finished"] and types(after)[-1] == "turn.done"
    assert resolved[0]["data"]["by"] == "system:participant_left"
    late = await s.alice.respond(req["data"]["request_id"], "approve")
    assert late["data"]["code"] == "expired"


@pytest.mark.parametrize(
    "session", [{"minimal_gate": True, "allowed": ["supervisor"], "extra": ["supervisor"]}], indirect=True
)
async def test_a_custom_gate_without_cancel_all_withdraws_pending_requests_too(session: Session) -> None:
    """The bridge resolves them itself (the gate has no cancel_all): same outcome as cancel_all,
    and the model is not told the user rejected a request nobody answered."""
    s = session
    assert not hasattr(s.brain.approvals, "cancel_all")
    sup = s.client("supervisor")  # still in the room, so it sees what happens after alice leaves
    task = await s.run_turn("book a table for two")
    [req] = await s.alice.wait_for("hitl.request")
    s.room.disconnect_participant("alice")
    await finish(s, task)
    resolved = [r["data"] for r in sup.of_type("hitl.resolved")]
    assert [(r["outcome"], r["by"]) for r in resolved] == [("cancelled", "system:participant_left")]
    (told,) = [m.content for m in s.brain.history(CONV) if m.role == "tool"]
    assert told.startswith("NOT APPROVED") and "system:participant_left" in told and "REJECTED" not in told
    late = await s.alice.respond(req["data"]["request_id"], "approve")
    assert late["data"]["code"] == "expired"


async def test_closing_the_bridge_cancels_pending_requests(session: Session) -> None:
    s = session
    task = await s.run_turn("book a table for two")
    await s.alice.wait_for("hitl.request")
    await s.bridge.aclose()
    await asyncio.wait_for(task, 10)
    resolved = s.alice.of_type("hitl.resolved")
    assert [r["data"]["outcome"] for r in resolved] == ["cancelled"]
    assert resolved[0]["data"]["by"] == "system:session_closed"
    assert s.room.local_participant.rpc_handlers == {}
    assert s.room.handler_count("participant_disconnected") == 0


@pytest.mark.parametrize("session", [{"allowed": ["supervisor"], "extra": ["supervisor"]}], indirect=True)
async def test_allowed_identity_may_decide(session: Session) -> None:
    s = session
    sup = s.client("supervisor")
    task = await s.run_turn("book a table for two")
    [req] = await sup.wait_for("hitl.request")
    assert (await sup.respond(req["data"]["request_id"], "approve"))["type"] == "ack"
    await finish(s, task)
    assert s.alice.of_type("hitl.resolved")[0]["data"]["by"] == "supervisor"


async def test_request_addressed_outside_the_session_is_not_published(session: Session) -> None:
    s = session
    task = await s.run_turn("book a table for two", user_id="bob")

    async def requested() -> None:
        while not s.brain.approvals.pending(CONV):  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    await asyncio.wait_for(requested(), 10)  # a deadlock guard only
    assert await s.bridge.flush(5)  # everything published so far has reached the clients
    assert "tool.started" in types(s.alice.envelopes)  # the turn itself is forwarded ...
    assert s.alice.of_type("hitl.request") == []  # ... its approval request is not
    [rid] = [r.request_id for r in s.brain.approvals.pending(CONV)]
    answer = await s.alice.respond(rid, "approve")
    assert answer["data"]["code"] == "unknown_request"
    s.brain.approvals.resolve(rid, __import__("brain").ApprovalDecision.reject(by="bob"))
    await finish(s, task)
    assert s.alice.of_type("hitl.request") == [] and s.alice.of_type("hitl.resolved") == []
    assert types(s.alice.envelopes)[-1] == "turn.done"


async def test_other_conversations_are_not_forwarded(session: Session) -> None:
    s = session
    other = [d async for d in s.brain.stream_reply(Turn("hello there", "another-room", user_id="alice"))]
    assert other
    await s.bridge.flush(5)
    assert types(s.alice.envelopes) == ["session.hello"]


@pytest.mark.parametrize("session", [{"allowed": ["supervisor"]}], indirect=True)
async def test_a_client_joining_while_a_request_is_open_learns_it_from_its_hello(session: Session) -> None:
    s = session
    task = await s.run_turn("book a table for two")
    [req] = await s.alice.wait_for("hitl.request")
    s.room.connect("supervisor")  # a supervisor's dashboard opens after the request went out
    sup = s.client("supervisor")
    [hello] = await sup.wait_for("session.hello")
    assert sup.of_type("hitl.request") == []  # it was sent before the supervisor was there
    [pending] = hello["data"]["pending"]
    assert pending == {**req["data"], "turn": req["turn"]}
    assert (await sup.respond(pending["request_id"], "approve"))["type"] == "ack"
    await finish(s, task)
    assert s.alice.of_type("hitl.resolved")[0]["data"]["by"] == "supervisor"
    s.room.disconnect_participant("supervisor")  # nothing is open any more when it comes back
    s.room.connect("supervisor")
    [_, again] = await sup.wait_for("session.hello", 2)
    assert again["data"]["pending"] == []


async def hello_pending(s: Session, identity: str) -> list[dict[str, Any]]:
    """What the hello of `identity` (re)joining now lists."""
    client = s.client(identity)
    before = len(client.of_type("session.hello"))
    if identity in s.room.remote_participants:
        s.room.disconnect_participant(identity)
    s.room.connect(identity)
    hellos = await client.wait_for("session.hello", before + 1)
    return hellos[-1]["data"]["pending"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("session", [{"allowed": ["supervisor"]}], indirect=True)
async def test_a_hello_right_after_a_request_ended_does_not_list_it(session: Session) -> None:
    """The served user reconnects (LiveKit: the old participant leaves, the new one, same
    identity, joins at once) while a request is open: their leaving cancelled it, yet the hello
    of their return, sent before the brain had published the cancellation, listed it as open (a
    page would show a request that can only answer `expired`). Likewise a dashboard joining just
    after a decision was acked."""
    s = session
    task = await s.run_turn("book a table for two")
    [req] = await s.alice.wait_for("hitl.request")
    s.room.disconnect_participant("alice")
    s.room.connect("alice")
    [_, back] = await s.alice.wait_for("session.hello", 2)
    assert back["data"]["pending"] == []
    await finish(s, task)
    assert [r["data"]["outcome"] for r in s.alice.of_type("hitl.resolved")] == ["cancelled"]

    task = await s.run_turn("book a table for two")
    [_, req] = await s.alice.wait_for("hitl.request", 2)
    assert (await s.alice.respond(req["data"]["request_id"], "approve"))["type"] == "ack"
    s.room.connect("supervisor")  # before the brain has run the tool and published the outcome
    [hello] = await s.client("supervisor").wait_for("session.hello")
    assert hello["data"]["pending"] == []
    assert (await s.client("supervisor").sync())["data"]["pending"] == []
    await finish(s, task)


@pytest.mark.parametrize("session", [{"allowed": ["supervisor"], "extra": ["supervisor"]}], indirect=True)
async def test_session_sync_lists_the_open_requests_as_a_hello_does(session: Session) -> None:
    """A client that lost the hitl.request's stream asks session.sync: the ack carries the
    hello's pending list, to the audience only, and nothing once the request is decided."""
    s = session
    task = await s.run_turn("book a table for two")
    [req] = await s.alice.wait_for("hitl.request")
    listed = {**req["data"], "turn": req["turn"]}
    reply = await s.alice.sync(msg_id="s1")
    assert reply["type"] == "ack" and reply["id"] == "s1"
    assert reply["data"] == {"type": "session.sync", "request_id": None, "pending": [listed], "truncated": False}
    sup = s.client("supervisor")  # an allowed identity gets the same list
    assert (await sup.sync())["data"]["pending"] == [listed]
    assert await hello_pending(s, "supervisor") == [listed]
    forbidden = await s.client("mallory").sync(msg_id="x")  # not in the audience: sees nothing
    assert forbidden["type"] == "error" and forbidden["data"]["code"] == "forbidden" and forbidden["id"] == "x"
    assert s.client("mallory").envelopes == []
    # other acks do not grow the sync-only fields
    assert await s.alice.respond(req["data"]["request_id"], "approve") == {
        "v": 1, "type": "ack", "id": None, "ts": ANY_TS, "data": {"type": "hitl.respond", "request_id": req["data"]["request_id"]},
    }
    await finish(s, task)
    assert (await s.alice.sync())["data"]["pending"] == []


class _AnyInt:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, int)


ANY_TS: Any = _AnyInt()


@pytest.mark.parametrize("session", [{"broadcast": True, "reports": {"book_table": "name"}}], indirect=True)
async def test_session_sync_follows_the_report_level_and_the_broadcast_audience(session: Session) -> None:
    """With BRIDGE_BROADCAST anyone sees events, so anyone may sync (but not answer); arguments
    hidden by the report level are hidden in the sync ack as in the hitl.request."""
    s = session
    mallory = s.client("mallory")
    task = await s.run_turn("book a table for two")
    [req] = await mallory.wait_for("hitl.request")
    assert req["data"]["arguments"] is None
    [item] = (await mallory.sync())["data"]["pending"]
    assert item == {**req["data"], "turn": req["turn"]} and item["arguments"] is None
    assert (await mallory.respond(item["request_id"], "approve"))["data"]["code"] == "forbidden"
    await s.alice.respond(item["request_id"], "reject")
    await finish(s, task)
    assert (await mallory.sync())["data"]["pending"] == []


@pytest.mark.parametrize("session", [{"allowed": ["supervisor"]}], indirect=True)
async def test_a_session_sync_ack_too_big_for_an_rpc_reply_is_cut_and_says_so(session: Session) -> None:
    """LiveKit refuses RPC replies over 15 KiB (the fake room too): arguments are left out first,
    then the newest requests; the full data stays in the envelopes and the hello."""
    s = session
    ts = int(time.time() * 1000)
    big = {"notes": ["x" * 1900 for _ in range(8)]}  # ~15 KB of arguments per request
    for n in (1, 2):
        s.bridge.publish_event(ApprovalRequested(
            conversation_id=CONV, turn_id=f"turn_{n}", request_id=f"r{n}", call_id=f"c{n}", name="book_table",
            prompt="Book?", arguments=big, report="args", user_id="alice", deadline_ms=ts + 60_000,
        ))
    reply = await s.alice.sync()
    assert reply["type"] == "ack" and reply["data"]["truncated"] is True
    assert [(p["request_id"], p["arguments"]) for p in reply["data"]["pending"]] == [("r1", None), ("r2", None)]
    # a supervisor's hello (alice leaving to rejoin would withdraw them)
    assert [p["arguments"] for p in (await hello_pending(s, "supervisor"))] == [big, big]
    s.bridge.options = BridgeOptions(max_reply_bytes=300)  # room for one request without arguments
    reply = await s.alice.sync()
    assert [p["request_id"] for p in reply["data"]["pending"]] == ["r1"] and reply["data"]["truncated"] is True
    assert len(json.dumps(reply, separators=(",", ":"))) <= 300


# -- every way a request ends empties the bridge's per-request stores -------------------------


def bridge_stores(bridge: EventBridge) -> dict[str, object]:
    """The bridge's stores of open requests (what hellos and session.sync list)."""
    return {"open": dict(bridge._open), "pending": dict(bridge._pending)}


async def assert_nothing_stale(s: Session) -> None:
    assert bridge_stores(s.bridge) == {"open": {}, "pending": {}}
    if "alice" in s.room.remote_participants:
        assert (await s.alice.sync())["data"]["pending"] == []
    identity = "alice" if "alice" in s.room.remote_participants else "supervisor"
    assert await hello_pending(s, identity) == []


async def ends_the_turn(task: asyncio.Task[Any]) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)


class FailingGate(InProcessApprovalGate):
    """A gate whose bookkeeping (`finish`) or cancellation (`cancel_all`, `resolve`) raises."""

    def __init__(self, *, finish: bool = False, cancel: bool = False, resolve: bool = False) -> None:
        super().__init__()
        self.fail_finish, self.fail_cancel, self.fail_resolve = finish, cancel, resolve

    def resolve(self, request_id: str, decision: ApprovalDecision) -> ResolveStatus:
        if self.fail_resolve:
            raise RuntimeError("approval store down")
        return super().resolve(request_id, decision)

    def finish(self, request_id: str, outcome: Outcome) -> None:
        super().finish(request_id, outcome)
        if self.fail_finish:
            raise RuntimeError("approval store down")

    def cancel_all(self, conversation_id: str | None = None, *, by: str | None = None) -> int:
        if self.fail_cancel:
            raise RuntimeError("approval store down")
        return super().cancel_all(conversation_id, by=by)


SUPERVISED: dict[str, Any] = {"allowed": ["supervisor"], "extra": ["supervisor"]}


@pytest.mark.parametrize(
    ("session", "end"),
    [
        (SUPERVISED, "approved"),
        (SUPERVISED, "rejected"),
        ({**SUPERVISED, "hitl_timeout": 0.05}, "timeout"),
        (SUPERVISED, "barge_in"),
        (SUPERVISED, "user_left"),
        (SUPERVISED, "room_closed"),
        ({**SUPERVISED, "gate": lambda: FailingGate(finish=True)}, "approved"),
        ({**SUPERVISED, "gate": lambda: FailingGate(cancel=True)}, "user_left"),
        ({**SUPERVISED, "minimal_gate": True}, "user_left"),
        ({**SUPERVISED, "memory": 2}, "approved_after_many_others"),
    ],
    indirect=["session"],
    ids=["approved", "rejected", "timeout", "barge_in", "user_left", "room_closed", "gate_finish_raises",
         "gate_cancel_all_raises", "gate_without_cancel_all", "request_ids_forgotten"],
)
async def test_every_way_a_request_ends_empties_the_bridge_stores(session: Session, end: str) -> None:
    s = session
    task = await s.run_turn("book a table for two")
    [req] = await s.alice.wait_for("hitl.request")
    rid = req["data"]["request_id"]
    assert list(bridge_stores(s.bridge)["open"]) == [rid]
    if end == "approved_after_many_others":
        # more requests than BridgeOptions.memory come and go (other turns' tools) while this one is open
        for n in range(3):
            common = {"conversation_id": CONV, "turn_id": f"other_{n}", "request_id": f"other_{n}", "call_id": f"c{n}",
                      "name": "book_table"}
            s.bridge.publish_event(ApprovalRequested(**common, prompt="?", arguments={}, deadline_ms=2**62))
            s.bridge.publish_event(ApprovalResolved(**common, outcome="rejected", decided_by="alice"))
        end = "approved"
    if end in ("approved", "rejected"):
        assert (await s.alice.respond(rid, "approve" if end == "approved" else "reject"))["type"] == "ack"
    elif end == "barge_in":
        task.cancel()
    elif end == "user_left":
        s.room.disconnect_participant("alice")
    elif end == "room_closed":
        s.room.close()
    await ends_the_turn(task)
    assert await s.bridge.flush(5)
    # its hitl.resolved went out (once), so clients drop it too
    assert [r["data"]["request_id"] for r in s.client("supervisor").of_type("hitl.resolved")].count(rid) == 1
    await assert_nothing_stale(s)


@pytest.mark.parametrize("session", [SUPERVISED], indirect=True)
async def test_a_turn_that_fails_while_its_approval_is_open_empties_the_bridge_stores(session: Session) -> None:
    """A parallel call fails the turn (the approval service breaks): the open request is cut off."""
    s = session

    async def policy(request: ApprovalRequest) -> ApprovalDecision | None:
        if request.tool_name != "get_weather":
            return None  # book_table: a person decides
        while not any(r.tool_name == "book_table" for r in gate.pending(CONV)):  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        raise RuntimeError("approval service down")

    @tool(requires_approval=True)
    async def get_weather(city: str) -> str:
        """Weather for a city."""
        return "sunny"

    gate = InProcessApprovalGate(policy=policy)
    brain = create_voice_brain(BrainConfig(_env_file=None), approvals=gate, tools=[get_weather])
    await s.bridge.aclose()
    s.room.local_participant.sends.clear()
    s.bridge = attach_event_bridge(s.room, brain=brain, agent_name="assistant", served_identity="alice",
                                   conversation_id=CONV, allowed_identities=["supervisor"])
    s.brain = brain
    task = await s.run_turn("book a table and tell me the weather")
    await ends_the_turn(task)
    assert await s.bridge.flush(5)
    assert s.alice.of_type("turn.done")[-1]["data"]["reason"] == "error"
    outcomes = {r["data"]["tool"]: r["data"]["outcome"] for r in s.alice.of_type("hitl.resolved")}
    assert outcomes == {"get_weather": "cancelled", "book_table": "cancelled"}
    await assert_nothing_stale(s)


@pytest.mark.parametrize("session", [SUPERVISED], indirect=True)
async def test_a_realtime_tool_call_empties_the_bridge_stores_when_cut_off_or_decided(session: Session) -> None:
    """Realtime mode runs the model's calls through `run_tool_call` (agent/realtime.py) and
    cancels it on barge-in."""
    s = session
    turn = Turn("book it", CONV, turn_id="rt_1", user_id="alice")
    args = {"restaurant": "Luigi's", "party_size": 2, "time": "19:00"}
    for n, decide in enumerate((False, True)):
        call = ToolCall(f"rt_call_{n}", "book_table", args, json.dumps(args))
        task = asyncio.create_task(s.brain.run_tool_call(turn, call))
        [*_, req] = await s.alice.wait_for("hitl.request", n + 1)
        if decide:
            await s.alice.respond(req["data"]["request_id"], "approve")
        else:
            task.cancel()
        await ends_the_turn(task)
        assert await s.bridge.flush(5)
        await assert_nothing_stale(s)
    assert [r["data"]["outcome"] for r in s.alice.of_type("hitl.resolved")] == ["cancelled", "approved"]


@pytest.mark.parametrize(
    "gate",
    [lambda: FailingGate(), lambda: FailingGate(cancel=True), lambda: FailingGate(cancel=True, resolve=True)],
    ids=["gate_ok", "gate_cancel_all_raises", "gate_cannot_cancel"],
)
async def test_closing_the_bridge_empties_its_stores_whatever_the_gate_does(gate: Any) -> None:
    room = FakeRoom(["alice"])
    brain = create_voice_brain(BrainConfig(_env_file=None), approvals=gate())
    bridge = attach_event_bridge(room, brain=brain, agent_name="assistant", served_identity="alice", conversation_id=CONV)
    alice = FakeClient(room, "alice")
    task = asyncio.create_task(consume(brain, Turn("book a table for two", CONV, user_id="alice")))
    await alice.wait_for("hitl.request")
    await bridge.aclose()  # completes, even if the gate cannot cancel
    assert bridge_stores(bridge) == {"open": {}, "pending": {}}
    assert room.local_participant.rpc_handlers == {}
    if brain.approvals.fail_resolve:
        # nothing could withdraw it: the brain waits for its deadline (the agent ends the turn
        # with the session); the closed bridge no longer holds it
        assert len(brain.approvals.pending(CONV)) == 1 and alice.of_type("hitl.resolved") == []
        task.cancel()
        await ends_the_turn(task)
        return
    await ends_the_turn(task)
    assert brain.approvals.pending(CONV) == []  # withdrawn in the gate too
    assert [r["data"]["by"] for r in alice.of_type("hitl.resolved")] == ["system:session_closed"]



class ArgumentEchoingGate(InProcessApprovalGate):
    """A custom gate that fails with a message naming the call's arguments (as `KeyError`s,
    validation errors and "cannot route ..." messages of approval services do)."""

    def register(self, request: ApprovalRequest) -> asyncio.Future[ApprovalDecision]:
        raise RuntimeError(f"approval service refused {request.tool_name} {request.arguments}")


@pytest.mark.parametrize(
    "session", [{"gate": ArgumentEchoingGate, "reports": {"book_table": "name"}, "broadcast": True}], indirect=True
)
async def test_a_failing_gate_does_not_publish_arguments_the_report_level_hides(
    session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    """The gate's exception text became the `internal` error envelope, sent to every client
    whatever the tool's report level: arguments configured hidden were broadcast in it."""
    s = session
    mallory = s.client("mallory")
    with caplog.at_level(logging.ERROR, logger="brain"):
        await finish(s, await s.run_turn("book a table for two"))
    [err] = mallory.of_type("error")
    assert err["data"]["code"] == "internal" and "book_table" in err["data"]["message"]
    assert [e["data"]["reason"] for e in mallory.of_type("turn.done")] == ["error"]
    for client in (s.alice, mallory):
        assert client.envelopes and "Luigi" not in json.dumps(client.envelopes)
    # the operator still reads what the gate said, in the log
    assert any("approval service refused book_table" in r.getMessage() and "Luigi" in r.getMessage()
               for r in caplog.records)


@pytest.mark.parametrize(
    "session", [{"gate": ArgumentEchoingGate, "reports": {"book_table": "full"}}], indirect=True
)
async def test_a_failing_gate_is_detailed_in_tool_finished_at_the_full_report_level(session: Session) -> None:
    s = session
    await finish(s, await s.run_turn("book a table for two"))
    [fin] = s.alice.of_type("tool.finished")
    assert fin["data"]["status"] == "error" and "approval service refused book_table" in fin["data"]["error"]



@tool(report="name")
def charge_card(card: str, amount: int) -> str:
    """Charge the user's card."""
    return f"charged {amount}"


@dataclass(frozen=True)
class _RoutingTool(Tool):
    """A custom Tool with a bug: its validation raises something other than ValueError, quoting
    the arguments."""

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        raise LookupError(f"no processor for {arguments}")


class QuotingBackend:
    """A custom backend (BRAIN_BACKEND=pkg.mod:factory): it calls `charge_card`, then (`fails`) fails
    on the tool's result with a message quoting the call it made and the user's words."""

    name = "quoting"

    def __init__(self, fails: bool) -> None:
        self.fails = fails

    async def stream(self, request: Any) -> AsyncIterator[Any]:
        if request.messages[-1].role != "tool":
            yield ToolCall("call_charge", "charge_card", {"card": "4929 1234 5678 9012", "amount": 80})
            return
        said = next(m.content for m in request.messages if m.role == "user")
        calls = [c.arguments for m in request.messages for c in m.tool_calls]
        if self.fails:
            raise ValueError(f"cannot encode {calls} for {said!r}")
        yield TextChunk("Done.")

    async def aclose(self) -> None:
        return None


@pytest.mark.parametrize(
    ("culprit", "code", "message", "logged"),
    [("backend", "unavailable", "the quoting backend failed (ValueError)", "ValueError: cannot encode"),
     ("tool", "internal", "the turn failed (LookupError)", "LookupError: no processor for")],
)
async def test_an_unexpected_failure_does_not_publish_what_its_message_quotes(
    culprit: str, code: str, message: str, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A custom backend's untyped exception (`unavailable`) or a bug's (`internal`, here a custom
    Tool's) became the `error` envelope with its text, sent to every client whatever the tool's
    report level: the card number of a call reported by name only, and the user's words, reached
    everyone in the room (BRIDGE_BROADCAST). Clients now get its type; the log has the text."""
    room = FakeRoom(["alice", "mallory"])
    charge: Any = charge_card
    if culprit == "tool":
        base = as_tool(charge)
        charge = _RoutingTool(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)})
    brain = VoiceBrain(QuotingBackend(fails=culprit == "backend"), tools=ToolSet([charge]))
    bridge = attach_event_bridge(room, brain=brain, agent_name="assistant", served_identity="alice",
                                 conversation_id=CONV, options=BridgeOptions(broadcast=True))
    alice, mallory = FakeClient(room, "alice"), FakeClient(room, "mallory")
    try:
        with caplog.at_level(logging.WARNING, logger="brain"):
            await asyncio.wait_for(consume(brain, Turn("pay my 80 euro bill", CONV, user_id="alice")), 10)
        assert await bridge.flush(5)
    finally:
        await bridge.aclose()
    [err] = mallory.of_type("error")
    assert (err["data"]["code"], err["data"]["message"]) == (code, message)
    assert [e["data"]["reason"] for e in mallory.of_type("turn.done")] == ["error"]
    for client in (alice, mallory):
        sent = json.dumps(client.envelopes)
        assert client.envelopes and "4929" not in sent and "80 euro" not in sent
    # the operator still reads it, with its traceback, in the log
    assert any(logged in r.getMessage() and "4929" in r.getMessage() and "Traceback" in r.getMessage()
               for r in caplog.records)

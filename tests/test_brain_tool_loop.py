"""The tool loop and human approval, through the real openai / google-genai SDKs and fake servers.

What the model is told is read from the next request the fake server received.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from brain import (
    ApprovalDecision,
    ApprovalRequest,
    ConfigError,
    InProcessApprovalGate,
    ResolveStatus,
    Tool,
    ToolContext,
    Turn,
    make_tool,
    tool,
)
from brain.approvals import Outcome
from brain.events import (
    ApprovalRequested,
    ApprovalResolved,
    ErrorEvent,
    TextDelta,
    ToolFinished,
    ToolStarted,
    TurnDone,
)
from tests.fakes.brain_kits import BRAIN_TESTS, EventLog, Kit, reply, wait_for

pytestmark = BRAIN_TESTS


class Calls:
    """Tools used by these tests, recording how they were invoked."""

    def __init__(self) -> None:
        self.log: list[tuple[str, dict[str, Any]]] = []
        self.weather_started = asyncio.Event()
        self.time_started = asyncio.Event()
        self.slow_started = asyncio.Event()
        self.slow_outcome: str | None = None

        @tool
        async def get_weather(city: str) -> dict[str, Any]:
            """Weather for a city."""
            self.log.append(("get_weather", {"city": city}))
            self.weather_started.set()
            await wait_for(self.time_started)  # only completes if get_time runs concurrently
            return {"city": city, "condition": "sunny"}

        @tool
        async def get_time(zone: str) -> str:
            """Time in a zone."""
            self.log.append(("get_time", {"zone": zone}))
            self.time_started.set()
            await wait_for(self.weather_started)
            return f"12:00 in {zone}"

        @tool(requires_approval=True, approval_prompt="Send to {to}?", report="args")
        async def send_email(to: str, body: str) -> str:
            """Send an email."""
            self.log.append(("send_email", {"to": to, "body": body}))
            return f"sent to {to}"

        @tool
        def explode() -> str:
            """Always fails."""
            raise ValueError("boom")

        @tool
        async def slow() -> str:
            """Runs until cancelled."""
            self.slow_started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.slow_outcome = "cancelled"
                raise
            return "never"

        @tool
        def lookup(key: str) -> str:
            """A quick lookup."""
            self.log.append(("lookup", {"key": key}))
            return f"value of {key}"

        self.get_weather, self.get_time, self.send_email = get_weather, get_time, send_email
        self.explode, self.slow, self.lookup = explode, slow, lookup

    def all(self) -> list[Any]:
        return [self.get_weather, self.get_time, self.send_email, self.explode, self.slow, self.lookup]


async def test_parallel_calls_run_concurrently_and_each_result_is_fed_back(kit: Kit) -> None:
    t = Calls()
    kit.server.push(
        kit.calls(("call_w", "get_weather", {"city": "Paris"}), ("call_t", "get_time", {"zone": "UTC"}), text="Let me check. "),
        kit.text("Sunny, and it is noon."),
    )
    brain = kit.brain(tools=t.all())
    log = EventLog(brain)
    turn = Turn("weather and time?", "c")
    deltas = await reply(brain, turn)
    assert "".join(deltas) == "Let me check. Sunny, and it is noon."
    assert sorted(t.log) == [("get_time", {"zone": "UTC"}), ("get_weather", {"city": "Paris"})]
    first, second = kit.server.requests
    assert set(kit.offered_tools(first)) == {"get_weather", "get_time", "send_email", "explode", "slow", "lookup"}
    assert kit.requested_calls(second) == {
        "call_w": ("get_weather", {"city": "Paris"}),
        "call_t": ("get_time", {"zone": "UTC"}),
    }
    results = kit.results(second)
    assert results == {"call_w": '{"city": "Paris", "condition": "sunny"}', "call_t": "12:00 in UTC"}
    assert kit.dialogue(second)[:2] == [("user", "weather and time?"), ("assistant", "Let me check. ")]
    assert {e.call_id: e.status for e in log.of(ToolFinished)} == {"call_w": "ok", "call_t": "ok"}
    assert {e.call_id: e.arguments for e in log.of(ToolStarted)} == {"call_w": {"city": "Paris"}, "call_t": {"zone": "UTC"}}
    assert log.done(turn.turn_id).reason == "completed"
    log.check()


def _answer_with(gate: InProcessApprovalGate, decide: ApprovalDecision) -> Any:
    """A subscriber that answers every approval request as a remote user would (after publication)."""

    def on_event(event: Any) -> None:
        if isinstance(event, ApprovalRequested):
            asyncio.get_running_loop().call_soon(gate.resolve, event.request_id, decide)

    return on_event


APPROVAL_CASES = {
    "approve": (ApprovalDecision.approve(by="alice"), "sent to bob@example.com", ("bob@example.com", "hi")),
    "modify": (
        ApprovalDecision.approve({"to": "carol@example.com", "body": "hi"}, by="alice"),
        # the history keeps the model's call (to bob): the result says what actually ran
        'The user changed the arguments to {"to": "carol@example.com", "body": "hi"} before approving. '
        "sent to carol@example.com",
        ("carol@example.com", "hi"),
    ),
    "reject": (
        ApprovalDecision.reject("not now", by="alice"),
        "REJECTED by the user: not now. The action was not taken.",
        None,
    ),
}


@pytest.mark.parametrize("case", list(APPROVAL_CASES))
async def test_approval_outcome_is_told_for_that_call_only(kit: Kit, case: str) -> None:
    decision, told, ran = APPROVAL_CASES[case]
    t = Calls()
    gate = InProcessApprovalGate()
    kit.server.push(
        kit.calls(("call_mail", "send_email", {"to": "bob@example.com", "body": "hi"}), ("call_look", "lookup", {"key": "k1"})),
        kit.text("Done."),
    )
    brain = kit.brain(tools=t.all(), approvals=gate)
    log = EventLog(brain)
    brain.subscribe(_answer_with(gate, decision))
    turn = Turn("email bob", "c", user_id="alice")
    assert "".join(await reply(brain, turn)) == "Done."
    assert kit.results(kit.server.requests[1]) == {"call_mail": told, "call_look": "value of k1"}
    mails = [args for name, args in t.log if name == "send_email"]
    assert mails == ([] if ran is None else [{"to": ran[0], "body": ran[1]}])
    (req,) = log.of(ApprovalRequested)
    assert (req.call_id, req.name, req.prompt, req.user_id) == ("call_mail", "send_email", "Send to bob@example.com?", "alice")
    (res,) = log.of(ApprovalResolved)
    assert res.request_id == req.request_id and res.decided_by == "alice"
    assert res.outcome == ("rejected" if case == "reject" else "approved")
    assert res.modified is (case == "modify")
    if case == "reject":
        assert res.reason == "not now"
    status = {e.call_id: e.status for e in log.of(ToolFinished)}
    assert status == {"call_mail": "cancelled" if case == "reject" else "ok", "call_look": "ok"}
    # a late answer is refused, and the gate forgot the request
    assert gate.resolve(req.request_id, ApprovalDecision.approve()) == ResolveStatus.ALREADY_RESOLVED
    assert gate.pending() == []
    log.check()


async def test_approval_timeout_tells_the_model_and_expires_the_request(kit: Kit) -> None:
    t = Calls()
    gate = InProcessApprovalGate()
    kit.server.push(
        kit.calls(("call_mail", "send_email", {"to": "bob@example.com", "body": "hi"}), ("call_look", "lookup", {"key": "k"})),
        kit.text("Okay."),
    )
    brain = kit.brain(tools=t.all(), approvals=gate, hitl_timeout=0.2)
    log = EventLog(brain)
    await reply(brain, Turn("email bob", "c"))
    results = kit.results(kit.server.requests[1])
    assert results["call_mail"].startswith("NOT APPROVED: the user did not answer within 0.2 s")
    assert results["call_look"] == "value of k"
    assert [n for n, _ in t.log] == ["lookup"]
    (res,) = log.of(ApprovalResolved)
    assert res.outcome == "timeout"
    assert gate.resolve(res.request_id, ApprovalDecision.approve()) == ResolveStatus.EXPIRED
    assert gate.resolve("hitl_unknown", ApprovalDecision.approve()) == ResolveStatus.UNKNOWN
    log.check()


async def test_invalid_modified_arguments_are_not_run(kit: Kit) -> None:
    t = Calls()
    gate = InProcessApprovalGate(policy=lambda r: ApprovalDecision.approve({"to": 5}))
    kit.server.push(kit.calls(("call_mail", "send_email", {"to": "bob@example.com", "body": "hi"})), kit.text("Hm."))
    brain = kit.brain(tools=t.all(), approvals=gate)
    log = EventLog(brain)
    await reply(brain, Turn("email bob", "c"))
    assert kit.results(kit.server.requests[1])["call_mail"].startswith("ERROR: the user's modified arguments were invalid")
    assert t.log == []
    assert [e.status for e in log.of(ToolFinished)] == ["error"]
    log.check()


async def test_arguments_resent_unchanged_by_the_approver_are_not_a_change(kit: Kit) -> None:
    """An approver sending back the arguments of the request as shown (defaults filled in, "4"
    as 4) approved them unchanged, but the model was told the user had changed them and clients
    read `modified`: the model apologised for, or asked about, a change nobody made. Arguments
    count as changed when they differ once validated; the tool gets those either way."""
    booked: list[dict[str, Any]] = []

    @tool(requires_approval=True)
    def book(name: str, party: int, note: str = "") -> str:
        """Book a table."""
        booked.append({"name": name, "party": party, "note": note})
        return f"booked for {party}"

    def echo(request: ApprovalRequest) -> ApprovalDecision:
        edited = dict(request.arguments)
        if request.call_id == "call_changed":
            edited["party"] = 6
        return ApprovalDecision.approve(edited)

    kit.server.push(
        kit.calls(("call_same", "book", {"name": "Ann", "party": "4"}), ("call_changed", "book", {"name": "Bo", "party": 2})),
        kit.text("Done."),
    )
    brain = kit.brain(tools=[book], approvals=InProcessApprovalGate(policy=echo))
    log = EventLog(brain)
    assert "".join(await reply(brain, Turn("book", "c"))) == "Done."
    told = kit.results(kit.server.requests[1])
    assert told["call_same"] == "booked for 4"
    assert told["call_changed"] == ('The user changed the arguments to {"name": "Bo", "party": 6, "note": ""} '
                                    "before approving. booked for 6")
    assert sorted(booked, key=lambda b: b["name"]) == [{"name": "Ann", "party": 4, "note": ""},
                                                       {"name": "Bo", "party": 6, "note": ""}]
    assert {e.call_id: e.modified for e in log.of(ApprovalResolved)} == {"call_same": False, "call_changed": True}
    log.check()



async def test_the_model_is_told_the_changed_arguments_that_ran(kit: Kit) -> None:
    """An approver's changed arguments were passed on to the model as sent ("6" for a party of 6,
    a default left out), not as the tool ran them: the model's
    picture of the booking differed from what was booked. It is told the validated arguments."""
    booked: list[dict[str, Any]] = []

    @tool(requires_approval=True)
    def book(name: str, party: int, note: str = "") -> str:
        """Book a table."""
        booked.append({"name": name, "party": party, "note": note})
        return f"booked for {party}"

    def edit(request: ApprovalRequest) -> ApprovalDecision:
        return ApprovalDecision.approve({"name": "Bo", "party": "6"})

    kit.server.push(kit.calls(("call_b", "book", {"name": "Bo", "party": 2})), kit.text("Done."))
    brain = kit.brain(tools=[book], approvals=InProcessApprovalGate(policy=edit))
    assert "".join(await reply(brain, Turn("book", "c"))) == "Done."
    assert booked == [{"name": "Bo", "party": 6, "note": ""}]
    told = kit.results(kit.server.requests[1])
    assert told["call_b"] == ('The user changed the arguments to {"name": "Bo", "party": 6, "note": ""} '
                              "before approving. booked for 6")

async def test_tool_error_unknown_tool_and_bad_arguments_are_fed_back(kit: Kit) -> None:
    t = Calls()
    kit.server.push(
        kit.calls(
            ("call_x", "explode", {}),
            ("call_u", "no_such_tool", {"a": 1}),
            ("call_b", "lookup", {"wrong": "arg"}),
        ),
        kit.text("Sorry about that."),
    )
    brain = kit.brain(tools=t.all())
    log = EventLog(brain)
    turn = Turn("do things", "c")
    assert "".join(await reply(brain, turn)) == "Sorry about that."
    results = kit.results(kit.server.requests[1])
    assert results["call_x"] == "ERROR: ValueError: boom"
    assert results["call_u"].startswith("ERROR: unknown tool 'no_such_tool'; available: get_weather, get_time")
    assert results["call_b"].startswith("ERROR: invalid arguments for lookup")
    finished = {e.call_id: (e.status, e.error) for e in log.of(ToolFinished)}
    assert finished["call_x"] == ("error", "ValueError: boom")
    assert finished["call_u"][0] == finished["call_b"][0] == "error"
    assert log.done(turn.turn_id).reason == "completed"
    log.check()


async def test_step_cap_forbids_more_tool_calls(kit: Kit) -> None:
    t = Calls()
    for i in range(3):
        kit.server.push(kit.calls((f"call_{i}", "lookup", {"key": f"k{i}"})))
    kit.server.push(kit.text("Fine."))
    brain = kit.brain(tools=t.all(), max_tool_steps=2)
    log = EventLog(brain)
    turn = Turn("loop forever", "c")
    await reply(brain, turn)
    reqs = kit.server.requests
    assert len(reqs) == 3
    assert [kit.tools_forbidden(r) for r in reqs] == [False, False, True]
    # the third reply's call (made despite "none") is neither run nor remembered
    assert t.log == [("lookup", {"key": "k0"}), ("lookup", {"key": "k1"})]
    assert [e.call_id for e in log.of(ToolStarted)] == ["call_0", "call_1"]
    # and since it gave no answer either, the turn fails (with the apology) instead of silence
    assert log.done(turn.turn_id).reason == "error"
    (err,) = log.of(ErrorEvent)
    assert err.code == "protocol" and "still asked for tools after 2 tool steps" in err.message
    # the next turn's history has every remembered call answered
    await reply(brain, Turn("ok", "c"))
    nxt = kit.server.requests[3]
    assert set(kit.requested_calls(nxt)) == set(kit.results(nxt)) == {"call_0", "call_1"}
    log.check()


async def test_tool_timeout_starts_after_approval(kit: Kit) -> None:
    ran: list[str] = []

    @tool(requires_approval=True, timeout=0.3)
    async def quick_action(name: str) -> str:
        """Needs approval, runs briefly."""
        ran.append(name)
        return "done"

    @tool(timeout=0.3)
    async def stuck() -> str:
        """Never finishes on its own."""
        await asyncio.Event().wait()
        return "never"

    async def slow_human(request: ApprovalRequest) -> ApprovalDecision:
        await asyncio.sleep(0.6)  # longer than the tool's own timeout
        return ApprovalDecision.approve(by="slow-human")

    kit.server.push(kit.calls(("call_q", "quick_action", {"name": "x"}), ("call_s", "stuck", {})), kit.text("Ok."))
    brain = kit.brain(tools=[quick_action, stuck], approvals=InProcessApprovalGate(policy=slow_human))
    log = EventLog(brain)
    await reply(brain, Turn("go", "c"))
    assert ran == ["x"]
    results = kit.results(kit.server.requests[1])
    assert results == {"call_q": "done", "call_s": "ERROR: stuck timed out after 0.3 s"}
    assert {e.call_id: e.status for e in log.of(ToolFinished)} == {"call_q": "ok", "call_s": "error"}
    log.check()


async def test_cancelling_during_tools_cancels_tool_and_approval(kit: Kit) -> None:
    t = Calls()
    gate = InProcessApprovalGate()
    kit.server.push(
        kit.calls(("call_slow", "slow", {}), ("call_mail", "send_email", {"to": "a@b.c", "body": "x"}), text="Working on it. ")
    )
    kit.server.push(kit.text("Next turn works."))
    brain = kit.brain(tools=t.all(), approvals=gate)
    log = EventLog(brain)
    turn = Turn("do it", "c")
    got: list[str] = []

    async def consume() -> None:
        async for d in brain.stream_reply(turn):
            got.append(d)

    task = asyncio.create_task(consume())
    await wait_for(t.slow_started)
    requested = await log.wait(lambda e: isinstance(e, ApprovalRequested))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert t.slow_outcome == "cancelled"
    (res,) = log.of(ApprovalResolved)
    assert res.outcome == "cancelled"
    assert gate.resolve(requested.request_id, ApprovalDecision.approve()) == ResolveStatus.EXPIRED
    assert gate.pending() == []
    assert {e.call_id: e.status for e in log.of(ToolFinished)} == {"call_slow": "cancelled", "call_mail": "cancelled"}
    assert log.done(turn.turn_id).reason == "interrupted"
    assert got == ["Working on it. "]
    # the interrupted calls are answered in history, so the provider accepts the next request
    brain.record_spoken("c", turn.turn_id, "Working on it.")
    assert "".join(await reply(brain, Turn("never mind", "c"))) == "Next turn works."
    nxt = kit.server.requests[1]
    assert set(kit.requested_calls(nxt)) == set(kit.results(nxt)) == {"call_slow", "call_mail"}
    assert all(v.startswith("CANCELLED") for v in kit.results(nxt).values())
    log.check()


async def test_gate_cancel_all_rejects_pending_requests(kit: Kit) -> None:
    t = Calls()
    gate = InProcessApprovalGate()
    kit.server.push(kit.calls(("call_mail", "send_email", {"to": "a@b.c", "body": "x"})), kit.text("Okay."))
    brain = kit.brain(tools=t.all(), approvals=gate)
    log = EventLog(brain)

    def on_event(e: Any) -> None:
        if isinstance(e, ApprovalRequested):
            asyncio.get_running_loop().call_soon(lambda: gate.cancel_all("c", by="participant-left"))

    brain.subscribe(on_event)
    await reply(brain, Turn("mail", "c"))
    (res,) = log.of(ApprovalResolved)
    assert (res.outcome, res.decided_by) == ("cancelled", "participant-left")
    # nobody said no (the user left): the model must not tell the user, back or not, they declined
    told = kit.results(kit.server.requests[1])["call_mail"]
    assert told.startswith("NOT APPROVED") and "participant-left" in told and "REJECTED" not in told
    (fin,) = log.of(ToolFinished)
    assert (fin.status, fin.error) == ("cancelled", "the approval was cancelled")
    assert t.log == []
    log.check()


async def test_missing_call_ids_get_unique_stable_ids(kit: Kit) -> None:
    t = Calls()
    kit.server.push(kit.calls((None, "lookup", {"key": "a"}), (None, "lookup", {"key": "b"})), kit.text("Done."))
    brain = kit.brain(tools=t.all())
    log = EventLog(brain)
    await reply(brain, Turn("two lookups", "c"))
    ids = [e.call_id for e in log.of(ToolStarted)]
    assert len(set(ids)) == 2 and all(ids)
    # the ids in the events are the ids the model is given back
    assert set(kit.requested_calls(kit.server.requests[1])) == set(ids) == set(kit.results(kit.server.requests[1]))
    log.check()


async def test_answer_given_inside_the_approval_requested_callback_is_not_lost(kit: Kit) -> None:
    """The gate registers the waiter before the request is published, so a synchronous answer counts."""
    t = Calls()
    gate = InProcessApprovalGate()
    statuses: list[ResolveStatus] = []

    def answer_at_once(event: Any) -> None:
        if isinstance(event, ApprovalRequested):
            statuses.append(gate.resolve(event.request_id, ApprovalDecision.approve(by="alice")))

    kit.server.push(kit.calls(("call_mail", "send_email", {"to": "bob@example.com", "body": "hi"})), kit.text("Sent."))
    brain = kit.brain(tools=t.all(), approvals=gate, hitl_timeout=2.0)
    log = EventLog(brain)
    brain.subscribe(answer_at_once)
    turn = Turn("email bob", "c")
    assert "".join(await reply(brain, turn)) == "Sent."
    assert statuses == [ResolveStatus.OK]
    assert t.log == [("send_email", {"to": "bob@example.com", "body": "hi"})]
    (res,) = log.of(ApprovalResolved)
    assert (res.outcome, res.decided_by) == ("approved", "alice")
    assert kit.results(kit.server.requests[1]) == {"call_mail": "sent to bob@example.com"}
    assert log.done(turn.turn_id).reason == "completed"
    log.check()


@pytest.mark.parametrize(
    ("prompt", "why"),
    [
        ("Book {missing}?", "names {missing}, which is not a parameter; use the parameters by name (restaurant, party)"),
        ("Book {0}?", "names a positional field"),
        ("Book {}?", "names a positional field"),
        ("Book {restaurant", "is not a valid format string"),
        ("Book {restaurant!x}?", "unknown conversion !x"),
        ("Book for {party:{width}}?", "names {width}, which is not a parameter"),
    ],
)
def test_an_approval_prompt_naming_what_the_tool_does_not_take_is_refused_at_once(prompt: str, why: str) -> None:
    """A typo there left the approver with the generic prompt (no amount, no recipient) at every call."""
    with pytest.raises(ConfigError, match=re.escape(why)):

        @tool(requires_approval=True, approval_prompt=prompt)
        def book(restaurant: str, party: int) -> str:
            """Book a table."""
            return "booked"


@pytest.mark.parametrize("timeout", [0, -1.0, float("nan")])
def test_a_tool_timeout_that_is_not_a_positive_number_is_refused_at_once(timeout: float) -> None:
    """`@tool(timeout=0)` silently ran under BRAIN_TOOL_TIMEOUT, and `timeout=-1` (meant as "no
    limit", say) timed every call out at once."""
    with pytest.raises(ConfigError, match="timeout must be a number of seconds above 0"):

        @tool(timeout=timeout)
        def book(restaurant: str) -> str:
            """Book a table."""
            return "booked"


@pytest.mark.parametrize(
    "prompt",
    [
        "Book {restaurant.name}?",  # AttributeError
        "Book {restaurant:d}?",  # ValueError (format spec)
        "Book {party[0]}?",  # TypeError
    ],
)
def test_an_approval_prompt_that_cannot_be_filled_falls_back_to_a_generic_one(prompt: str) -> None:
    @tool(requires_approval=True, approval_prompt=prompt)
    def book(restaurant: str, party: int) -> str:
        """Book a table."""
        return "booked"

    t = book.__voice_tool__  # type: ignore[attr-defined]
    assert t.describe_request({"restaurant": "Chez Nous", "party": 2}) == "Allow the assistant to run 'book'?"


class _Order(BaseModel):
    id: int


def test_the_readmes_approval_prompt_examples_fill_in() -> None:
    """README showed `{order.id}`: the prompt is filled from the validated arguments as JSON, where
    a model parameter is a dict, so that prompt fell back to the generic one at every call."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    sentence = readme.split("`approval_prompt` may name parameters only (", 1)[1].split(";", 1)[0]
    examples = re.findall(r"`(\{[^`]*\})`", sentence)
    assert len(examples) >= 2, sentence

    @tool(requires_approval=True, approval_prompt=" ".join(examples))
    def refund(order: _Order, amount: float) -> str:
        """Refund an order."""
        return "refunded"

    t = refund.__voice_tool__  # type: ignore[attr-defined]
    assert t.describe_request(t.validate({"order": {"id": 42}, "amount": 9.5})) == "9.5 42"


async def test_a_tool_learns_whose_conversation_it_serves_from_the_brain_not_the_model(kit: Kit) -> None:
    """A tool that needs the caller's identity (their orders, their account) had no way to get it
    but a parameter the model fills in, from what anyone in the call says. A `ToolContext`
    parameter is filled in by the brain; the model is not offered it and cannot set it."""
    seen: list[ToolContext] = []

    @tool
    def my_orders(ctx: ToolContext, status: str = "open") -> str:
        """The user's orders."""
        seen.append(ctx)
        return f"{status} orders of {ctx.user_id}"

    @tool(requires_approval=True)
    async def cancel_order(order_id: str, context: ToolContext) -> str:
        """Cancel one of the user's orders."""
        seen.append(context)
        return f"{order_id} cancelled for {context.user_id}"

    @tool
    def my_address(ctx: ToolContext | None = None) -> str:
        """The user's address (typed optional: it was offered to the model, which could set it)."""
        assert ctx is not None
        seen.append(ctx)
        return f"address of {ctx.user_id}"

    for t in (my_orders, my_address):
        schema = t.__voice_tool__.parameters  # type: ignore[attr-defined]
        assert "ctx" not in schema["properties"] and "$defs" not in schema, schema
    kit.server.push(
        kit.calls(
            ("call_a", "my_orders", {}),
            ("call_b", "my_orders", {"ctx": {"user_id": "mallory"}}),  # the model cannot spoof it
            ("call_c", "cancel_order", {"order_id": "o1"}),
            ("call_d", "my_address", {}),
            ("call_e", "my_address", {"ctx": {"conversation_id": "room-7", "turn_id": "t", "call_id": "c",
                                              "user_id": "mallory"}}),
        ),
        kit.text("Done."),
    )
    brain = kit.brain(tools=[my_orders, cancel_order, my_address],
                      approvals=InProcessApprovalGate(policy=lambda r: ApprovalDecision.approve()))
    turn = Turn("my orders", "room-7", user_id="alice")
    assert "".join(await reply(brain, turn)) == "Done."
    told = kit.results(kit.server.requests[1])
    assert told["call_a"] == "open orders of alice"
    assert told["call_b"].startswith("ERROR: invalid arguments for my_orders: ctx: Extra inputs are not permitted")
    assert told["call_c"] == "o1 cancelled for alice"
    assert told["call_d"] == "address of alice"
    assert told["call_e"].startswith("ERROR: invalid arguments for my_address: ctx: Extra inputs are not permitted")
    assert {(c.conversation_id, c.turn_id, c.user_id) for c in seen} == {("room-7", turn.turn_id, "alice")}
    assert sorted(c.call_id for c in seen) == ["call_a", "call_c", "call_d"]


def test_a_tool_context_mixed_with_other_types_is_refused_at_once() -> None:
    def lookup(ctx: ToolContext | str) -> str:
        return ""

    with pytest.raises(ConfigError, match="parameter 'ctx' mixes ToolContext with other types"):
        make_tool(lookup)


class _Size(str, enum.Enum):  # noqa: UP042 - the usual spelling; a StrEnum formats as its value already
    LARGE = "large"


class _Milk(enum.Enum):
    OAT = "oat"


class _Drink(BaseModel):
    kind: str
    milk: _Milk


def test_an_approval_prompt_shows_enum_parameters_as_their_values() -> None:
    """The approver read "Order a Size.LARGE latte with Milk.OAT milk?": the prompt is filled from
    the arguments as JSON (README), where an enum is its value."""

    @tool(requires_approval=True, approval_prompt="Order a {size} {drink[kind]} with {drink[milk]} milk ({extras})?")
    def order(size: _Size, drink: _Drink, extras: list[_Milk]) -> str:
        """Order a drink."""
        return "ordered"

    t = order.__voice_tool__  # type: ignore[attr-defined]
    arguments = t.validate({"size": "large", "drink": {"kind": "latte", "milk": "oat"}, "extras": ["oat"]})
    assert t.describe_request(arguments) == "Order a large latte with oat milk (['oat'])?"


async def test_broken_approval_prompt_still_asks_with_the_generic_prompt(kit: Kit) -> None:
    booked: list[str] = []

    @tool(requires_approval=True, approval_prompt="Book {restaurant.name}?")
    def book(restaurant: str) -> str:
        """Book a table."""
        booked.append(restaurant)
        return "booked"

    kit.server.push(kit.calls(("call_b", "book", {"restaurant": "Chez Nous"})), kit.text("Booked."))
    brain = kit.brain(tools=[book], approvals=InProcessApprovalGate(policy=lambda r: ApprovalDecision.approve(by="alice")))
    log = EventLog(brain)
    turn = Turn("book Chez Nous", "c")
    assert "".join(await reply(brain, turn)) == "Booked."
    (req,) = log.of(ApprovalRequested)
    assert req.prompt == "Allow the assistant to run 'book'?"
    assert booked == ["Chez Nous"]
    assert log.of(ErrorEvent) == []
    assert log.done(turn.turn_id).reason == "completed"
    log.check()


@dataclasses.dataclass(frozen=True)
class _PromptBugTool(Tool):
    """A custom Tool whose prompt code raises, as describe_request did before it fell back."""

    def describe_request(self, arguments: dict[str, Any]) -> str:
        raise AttributeError("'str' object has no attribute 'name'")


@dataclasses.dataclass
class _BrokenGate(InProcessApprovalGate):
    """A custom gate that raises in one of the methods the brain calls."""

    fail_in: str = ""

    def register(self, request: ApprovalRequest) -> asyncio.Future[ApprovalDecision]:
        if self.fail_in == "register":
            raise RuntimeError("gate unreachable")
        return super().register(request)

    def finish(self, request_id: str, outcome: Outcome) -> None:
        if self.fail_in == "finish":
            raise RuntimeError("gate lost the request")
        super().finish(request_id, outcome)


UNEXPECTED = {
    "approval prompt": ("AttributeError", "'str' object has no attribute 'name'"),
    "gate register": ("RuntimeError", "gate unreachable"),
    "gate finish": ("RuntimeError", "gate lost the request"),
}


@pytest.mark.parametrize("failure", list(UNEXPECTED))
async def test_unexpected_exception_fails_only_that_turn(
    kit: Kit, failure: str, caplog: pytest.LogCaptureFixture
) -> None:
    exc_type, exc_text = UNEXPECTED[failure]
    booked: list[str] = []

    def book(restaurant: str) -> str:
        """Book a table."""
        booked.append(restaurant)
        return "booked"

    base = make_tool(book, requires_approval=True)
    tool_cls = _PromptBugTool if failure == "approval prompt" else Tool
    book_tool = tool_cls(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)})
    gate = _BrokenGate(policy=lambda r: ApprovalDecision.approve(by="alice"), fail_in=failure.removeprefix("gate "))
    kit.server.push(kit.calls(("call_b", "book", {"restaurant": "Chez Nous"})), kit.text("Next turn works."))
    brain = kit.brain(tools=[book_tool], approvals=gate, apology="Sorry, that failed.")
    log = EventLog(brain)
    turn = Turn("book Chez Nous", "c")
    with caplog.at_level(logging.ERROR, logger="brain"):
        deltas = await reply(brain, turn)  # the exception does not escape stream_reply
    assert deltas == ["Sorry, that failed."]
    (err,) = log.of(ErrorEvent)
    # its text, which may quote the arguments, is left to tool.finished (report level) and the log
    assert (err.code, err.turn_id, err.message) == ("internal", turn.turn_id, f"the approval of book failed ({exc_type})")
    assert [e.reason for e in log.of(TurnDone)] == ["error"]
    assert log.done(turn.turn_id).text == "Sorry, that failed."
    assert booked == []
    (fin,) = log.of(ToolFinished)
    assert (fin.call_id, fin.status, fin.error) == ("call_b", "error", f"approval failed: {exc_type}: {exc_text}")
    # the traceback is logged as redacted text (exc_info would be formatted unredacted)
    (logged,) = [r for r in caplog.records if r.name == "brain" and "Traceback" in r.getMessage()]
    assert logged.levelno == logging.ERROR and logged.exc_info is None
    assert f"\n{exc_type}: {exc_text}" in logged.getMessage()
    # the same conversation goes on; the failed call is answered in its history
    turn2 = Turn("try again", "c")
    assert "".join(await reply(brain, turn2)) == "Next turn works."
    assert log.done(turn2.turn_id).reason == "completed"
    nxt = kit.server.requests[1]
    assert kit.results(nxt) == {"call_b": "ERROR: the turn failed before this finished."}
    assert kit.dialogue(nxt)[-2:] == [("assistant", "Sorry, that failed."), ("user", "try again")]
    log.check()


def _request(deadline_ms: int) -> ApprovalRequest:
    return ApprovalRequest(request_id="hitl_x", call_id="c1", conversation_id="c", turn_id="t",
                           tool_name="send_email", arguments={}, prompt="Send?", deadline_ms=deadline_ms)


async def test_an_answer_after_the_deadline_is_expired_even_before_the_brain_times_out() -> None:
    """The brain's timer fires late when the event loop stalls; the request said "answer before
    the deadline", so a later answer must not run the tool."""
    import time

    gate = InProcessApprovalGate()
    late = gate.register(_request(int(time.time() * 1000) - 1))
    assert gate.resolve("hitl_x", ApprovalDecision.approve(by="alice")) == ResolveStatus.EXPIRED
    assert not late.done()  # the brain's own timeout reports the outcome
    gate.finish("hitl_x", "timeout")

    on_time = gate.register(dataclasses.replace(_request(int(time.time() * 1000) + 60_000), request_id="hitl_y"))
    assert gate.resolve("hitl_y", ApprovalDecision.approve(by="alice")) == ResolveStatus.OK
    assert on_time.result().approved


async def test_answering_a_cancelled_request_before_the_brain_finished_it_is_expired() -> None:
    import time

    gate = InProcessApprovalGate()
    gate.register(_request(int(time.time() * 1000) + 60_000))
    assert gate.cancel_all("c", by="system:participant_left") == 1
    assert gate.resolve("hitl_x", ApprovalDecision.approve(by="bob")) == ResolveStatus.EXPIRED


async def test_cancel_all_cancels_only_that_conversations_requests() -> None:
    """One gate serves every conversation of a brain: a participant leaving one room (the bridge
    calls `cancel_all` with its conversation) must not withdraw another room's approvals."""
    import time

    gate = InProcessApprovalGate()
    deadline = int(time.time() * 1000) + 60_000
    here = gate.register(_request(deadline))
    there = gate.register(dataclasses.replace(_request(deadline), request_id="hitl_other", conversation_id="other"))
    assert [r.request_id for r in gate.pending("other")] == ["hitl_other"]
    assert gate.cancel_all("c", by="system:participant_left") == 1
    assert here.done() and not there.done()
    assert gate.resolve("hitl_other", ApprovalDecision.approve(by="bob")) == ResolveStatus.OK
    assert there.result().approved


def test_invalid_arguments_say_where_and_why_without_echoing_values() -> None:
    def login(username: str, password: str, otp: int) -> str:
        """Log in."""
        return "ok"

    with pytest.raises(ValueError) as caught:
        make_tool(login).validate({"username": "bob", "password": "hunter2", "otp": "not-a-number"})
    message = str(caught.value)
    assert message.startswith("invalid arguments for login: otp: ") and "integer" in message
    assert "hunter2" not in message and "not-a-number" not in message


async def test_step_cap_reached_with_words_still_answers(kit: Kit) -> None:
    t = Calls()
    kit.server.push(kit.calls(("call_0", "lookup", {"key": "k0"})))
    kit.server.push(kit.calls(("call_1", "lookup", {"key": "k1"}), text="Here is what I found."))
    brain = kit.brain(tools=t.all(), max_tool_steps=1)
    log = EventLog(brain)
    turn = Turn("look", "c")
    assert "".join(await reply(brain, turn)) == "Here is what I found."
    assert log.done(turn.turn_id).reason == "completed" and log.of(ErrorEvent) == []
    log.check()


async def test_text_of_successive_steps_is_separated_by_a_space(kit: Kit) -> None:
    """"One moment." then, after the tool, "It is sunny.": spoken, shown and remembered as one
    sentence each, not "One moment.It is sunny."."""
    t = Calls()
    kit.server.push(kit.calls(("call_0", "lookup", {"key": "k"}), text="One moment."), kit.text("It is sunny."))
    brain = kit.brain(tools=t.all())
    log = EventLog(brain)
    turn = Turn("weather?", "c")
    deltas = await reply(brain, turn)
    assert "".join(deltas) == "One moment. It is sunny."
    assert "".join(e.text for e in log.of(TextDelta)) == "One moment. It is sunny."
    # an interruption after the first sentence is matched against memory as spoken
    assert brain.record_spoken("c", turn.turn_id, "One moment. It is")
    kit.server.push(kit.text("Ok."))
    await reply(brain, Turn("thanks", "c"))
    said = [text for role, text in kit.dialogue(kit.server.requests[2]) if role == "assistant"]
    assert "".join(said).replace(" ", "") == "Onemoment.Itis"
    log.check()


async def test_a_stream_that_ends_without_its_finish_marker_is_unavailable(kit: Kit) -> None:
    """A connection closed cleanly mid-answer is not the model's whole answer."""
    kit.server.push(kit.stream(kit.text_chunk("Hello wor")))
    brain = kit.brain(apology="Sorry, I lost my train of thought.")
    log = EventLog(brain)
    turn = Turn("hi", "c")
    assert "".join(await reply(brain, turn)) == "Hello wor Sorry, I lost my train of thought."
    (err,) = log.of(ErrorEvent)
    assert err.code == "unavailable" and "ended before it finished" in err.message
    assert log.done(turn.turn_id).reason == "error"
    log.check()


async def test_an_approval_policy_that_raises_fails_the_call_at_once(kit: Kit) -> None:
    def broken_policy(request: ApprovalRequest) -> ApprovalDecision:
        raise KeyError("no such user")

    t = Calls()
    kit.server.push(kit.calls(("call_m", "send_email", {"to": "a@b.c", "body": "x"})))
    brain = kit.brain(tools=t.all(), approvals=InProcessApprovalGate(policy=broken_policy), hitl_timeout=30)
    log = EventLog(brain)
    turn = Turn("mail", "c")
    await reply(brain, turn)  # within reply()'s 5 s, not the 30 s deadline
    (fin,) = log.of(ToolFinished)
    assert fin.status == "error" and fin.error == "approval failed: KeyError: 'no such user'"
    assert log.done(turn.turn_id).reason == "error" and t.log == []
    log.check()


async def test_an_approver_answering_with_something_else_than_a_decision_still_resolves_the_request(kit: Kit) -> None:
    """`policy=lambda r: True`: the call fails at once, and clients still get the request's
    approval.resolved (they would show the question until its deadline)."""
    t = Calls()
    kit.server.push(kit.calls(("call_m", "send_email", {"to": "a@b.c", "body": "x"})))
    gate = InProcessApprovalGate(policy=lambda r: True)  # type: ignore[arg-type,return-value]
    brain = kit.brain(tools=t.all(), approvals=gate, hitl_timeout=30)
    log = EventLog(brain)
    turn = Turn("mail", "c")
    await reply(brain, turn)
    (res,) = log.of(ApprovalResolved)
    assert (res.call_id, res.outcome) == ("call_m", "cancelled")
    (fin,) = log.of(ToolFinished)
    assert fin.status == "error" and "not an ApprovalDecision" in (fin.error or "")
    assert log.done(turn.turn_id).reason == "error" and t.log == [] and gate.pending() == []
    log.check()

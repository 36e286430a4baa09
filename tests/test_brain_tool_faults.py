"""Tools that misbehave, and turns that overlap: what the model and the events are told.

Through the real openai / google-genai SDKs and the fake servers; what the model is told is read
from the next request the fake server received.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel

from brain import ApprovalDecision, InProcessApprovalGate, Turn, VoiceBrain, make_tool, tool
from brain.backends.base import ModelRequest, TextChunk
from brain.events import ToolFinished, TurnDone
from brain.tools import MAX_RESULT_CHARS, ToolSet
from brain.voice_brain import BrainSettings
from tests.fakes.brain_kits import BRAIN_TESTS, EventLog, Kit, open_kit, reply, wait_for

pytestmark = BRAIN_TESTS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


async def test_a_plain_tool_interrupted_while_running_is_reported_as_maybe_done(kit: Kit) -> None:
    """A thread cannot be cancelled: the booking may still go through, so the model must not be
    told it was cancelled."""
    started, release = asyncio.Event(), threading.Event()
    loop = asyncio.get_running_loop()
    done: list[str] = []

    def book_table(restaurant: str) -> str:
        """Book a table."""
        loop.call_soon_threadsafe(started.set)
        release.wait(10)
        done.append(restaurant)
        return "booked"

    kit.server.push(kit.calls(("call_b", "book_table", {"restaurant": "Luigi's"})))
    kit.server.push(kit.text("Let me check."))
    brain = kit.brain(tools=[book_table])
    log = EventLog(brain)
    turn = Turn("book it", "c")
    task = asyncio.create_task(reply(brain, turn))
    await wait_for(started)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()
    (fin,) = log.of(ToolFinished)
    assert fin.status == "cancelled" and "may still complete" in (fin.error or "")
    await reply(brain, Turn("did it work?", "c"))
    told = kit.results(kit.server.requests[1])["call_b"]
    assert told.startswith("INTERRUPTED") and "may or may not have been carried out" in told
    await asyncio.to_thread(lambda: None)
    log.check()


async def test_a_plain_tool_cut_off_by_a_failing_turn_is_not_reported_as_a_user_interruption(kit: Kit) -> None:
    """A parallel call fails the turn (the approval gate breaks) while a plain-function tool runs:
    the turn ended in an error, so neither the model nor the events may say the user interrupted."""
    started, release = asyncio.Event(), threading.Event()
    loop = asyncio.get_running_loop()

    def book_table(restaurant: str) -> str:
        """Book a table."""
        loop.call_soon_threadsafe(started.set)
        release.wait(10)
        return "booked"

    @tool(requires_approval=True)
    async def send_email(to: str) -> str:
        """Send an email."""
        return "sent"

    async def broken_policy(request: Any) -> None:
        await wait_for(started)  # the booking is running when the gate fails
        raise RuntimeError("approval service down")

    kit.server.push(
        kit.calls(("call_b", "book_table", {"restaurant": "Luigi's"}), ("call_m", "send_email", {"to": "bob"})),
        kit.text("Let me check."),
    )
    brain = kit.brain(tools=[book_table, send_email], approvals=InProcessApprovalGate(policy=broken_policy))
    log = EventLog(brain)
    turn = Turn("book it and mail bob", "c")
    await reply(brain, turn)
    release.set()
    assert log.done(turn.turn_id).reason == "error"
    fin = {e.call_id: e for e in log.of(ToolFinished)}
    assert fin["call_b"].status == "cancelled"
    assert fin["call_b"].error == "turn failed; the tool was already running and may still complete"
    await reply(brain, Turn("did it work?", "c"))
    told = kit.results(kit.server.requests[1])
    assert "interrupted" not in told["call_b"]
    assert told["call_b"].startswith("ERROR: the turn failed while this was running")
    assert "may or may not have been carried out" in told["call_b"]
    assert told["call_m"] == "ERROR: the turn failed before this finished."
    await asyncio.to_thread(lambda: None)
    log.check()


async def test_timed_out_plain_tools_do_not_starve_the_model_connection(kit: Kit) -> None:
    """Hung plain-function tools keep their threads; they must not be the threads asyncio
    resolves host names in, or the brain can no longer reach its model."""
    release = threading.Event()

    @tool(timeout=0.05)
    def hang() -> str:
        """Never returns in time."""
        release.wait(20)
        return "late"

    default_threads = min(32, (os.cpu_count() or 1) + 4)  # asyncio's default executor size
    calls = [(f"call_{i}", "hang", {}) for i in range(default_threads + 2)]
    kit.server.push(kit.calls(*calls), kit.text("Those timed out."), kit.text("Still here."))
    base = kit.server.base_url.replace("127.0.0.1", "localhost")  # a name to resolve
    field = "openai_base_url" if kit.name == "openai" else "gemini_base_url"
    brain = kit.brain(tools=[hang], max_tool_steps=1, **{field: base})
    try:
        await reply(brain, Turn("go", "c"), limit=10)
        told = kit.results(kit.server.requests[1])
        assert len(told) == len(calls)
        assert all("did not finish within 0.05 s" in v and "may or may not" in v for v in told.values())
        # every hung thread is still blocked; a new request still resolves and connects
        assert "".join(await reply(brain, Turn("hello?", "c"), limit=10)) == "Still here."
    finally:
        release.set()


async def test_hung_plain_tools_do_not_hold_up_later_plain_tools() -> None:
    """More hung plain-function tools than a thread pool would hold (it had 16): each still runs,
    and a quick one called after them runs too (it used to queue behind them and time out unrun,
    with the model told it may have happened)."""
    release = threading.Event()
    loop = asyncio.get_running_loop()
    started = asyncio.Semaphore(0)

    def hang() -> str:
        loop.call_soon_threadsafe(started.release)
        release.wait(20)
        return "late"

    def quick() -> str:
        return "done"

    hung, fast = make_tool(hang), make_tool(quick)
    tasks = [asyncio.create_task(hung.invoke({})) for _ in range(24)]
    try:

        async def all_started() -> None:
            for _ in tasks:
                await started.acquire()

        await asyncio.wait_for(all_started(), 10)
        assert await asyncio.wait_for(fast.invoke({}), 10) == "done"
        assert not any(t.done() for t in tasks)  # the hung ones are still hung
    finally:
        for t in tasks:
            t.cancel()  # a barge-in: their threads go on
        await asyncio.gather(*tasks, return_exceptions=True)
        release.set()


def test_a_hung_plain_tool_does_not_keep_the_process_from_exiting() -> None:
    """A tool cut off by its timeout while blocked for good: the program still exits (a pool's
    threads are joined at exit, so `python -m brain` or a worker hung there)."""
    script = """
import asyncio, threading
from brain import make_tool

def hang() -> str:
    threading.Event().wait()
    return "never"

async def main() -> None:
    try:
        await asyncio.wait_for(make_tool(hang).invoke({}), 0.05)
    except TimeoutError:
        print("cut off")

asyncio.run(main())
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=20)
    assert (done.returncode, done.stdout.strip()) == (0, "cut off"), done.stderr


async def test_a_plain_tool_raising_stop_iteration_fails_at_once(kit: Kit) -> None:
    """`next(...)` on an empty iterator in a plain-function tool ("the first order that matches")
    raises StopIteration, which an asyncio future refuses: the call's result never arrived, the
    user waited BRAIN_TOOL_TIMEOUT in silence and the model was told the action timed out and may
    have happened. It is a tool error now, told at once."""

    @tool(timeout=30)
    def find_order(ref: str) -> str:
        """Find an order by reference."""
        return next(o for o in ("A1", "B2") if o == ref)

    kit.server.push(kit.calls(("call_f", "find_order", {"ref": "Z9"})), kit.text("No such order."))
    brain = kit.brain(tools=[find_order])
    log = EventLog(brain)
    assert "".join(await reply(brain, Turn("where is Z9?", "c"))) == "No such order."  # not after 30 s
    told = kit.results(kit.server.requests[1])["call_f"]
    assert told.startswith("ERROR: RuntimeError:") and "StopIteration" in told, told
    (fin,) = log.of(ToolFinished)
    assert fin.status == "error" and "may still complete" not in (fin.error or "")
    log.check()


async def test_a_tool_raising_its_own_timeout_or_cancellation_is_an_ordinary_tool_error(kit: Kit) -> None:
    @tool(timeout=30)
    async def fetch() -> str:
        """Calls a slow service with its own short timeout."""
        async with asyncio.timeout(0.01):
            await asyncio.sleep(1)
        return "never"

    @tool
    async def worker() -> str:
        """Its own helper task gets cancelled."""
        helper = asyncio.ensure_future(asyncio.sleep(1))
        helper.cancel()
        return str(await helper)

    kit.server.push(kit.calls(("call_f", "fetch", {}), ("call_w", "worker", {})), kit.text("Both failed."))
    brain = kit.brain(tools=[fetch, worker])
    log = EventLog(brain)
    turn = Turn("go", "c")
    assert "".join(await reply(brain, turn)) == "Both failed."
    told = kit.results(kit.server.requests[1])
    assert told["call_f"] == "ERROR: TimeoutError"  # not "timed out after 30 s"
    assert told["call_w"] == "ERROR: the tool failed (CancelledError)"
    assert {e.call_id: e.status for e in log.of(ToolFinished)} == {"call_f": "error", "call_w": "error"}
    assert log.done(turn.turn_id).reason == "completed"
    log.check()


def test_a_tool_raising_system_exit_or_keyboard_interrupt_is_an_ordinary_tool_error() -> None:
    """A tool calling sys.exit() (a CLI library's usage error, say) or raising KeyboardInterrupt,
    in a thread or as a coroutine: past the tool loop, asyncio ended the event loop with it (the
    worker's sessions with it). The brain runs in a loop of its own here, so one that escapes
    fails this test instead of ending the test run's loop."""

    @tool
    def plain_exit() -> str:
        """Exits."""
        raise SystemExit(2)

    @tool
    async def async_exit() -> str:
        """Exits."""
        sys.exit("usage: lookup KEY")

    @tool
    def plain_break() -> str:
        """Breaks."""
        raise KeyboardInterrupt

    @tool
    async def async_break() -> str:
        """Breaks."""
        raise KeyboardInterrupt

    async def scenario() -> tuple[str, dict[str, str], dict[str, str]]:
        async with open_kit("openai") as kit:
            kit.server.push(
                kit.calls(("e1", "plain_exit", {}), ("e2", "async_exit", {}), ("k1", "plain_break", {}),
                          ("k2", "async_break", {})),
                kit.text("None of them worked."),
            )
            brain = kit.brain(tools=[plain_exit, async_exit, plain_break, async_break])
            log = EventLog(brain)
            turn = Turn("go", "c")
            said = "".join(await reply(brain, turn))
            assert log.done(turn.turn_id).reason == "completed"
            return said, kit.results(kit.server.requests[1]), {e.call_id: e.status for e in log.of(ToolFinished)}

    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["ran"] = asyncio.run(scenario())
        except BaseException as exc:  # noqa: BLE001 - what escaped the brain's event loop
            outcome["escaped"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(30)
    assert "escaped" not in outcome, outcome
    said, told, status = outcome["ran"]
    assert said == "None of them worked."
    assert told == {"e1": "ERROR: SystemExit: 2", "e2": "ERROR: SystemExit: usage: lookup KEY",
                    "k1": "ERROR: KeyboardInterrupt: ", "k2": "ERROR: KeyboardInterrupt: "}
    assert status == dict.fromkeys(told, "error")


class Party(BaseModel):
    name: str
    size: int


@dataclass
class Slot:
    day: str
    hour: int


async def test_model_and_dataclass_parameters_arrive_as_such(kit: Kit) -> None:
    got: list[Any] = []

    @tool(requires_approval=True, report="args")
    def reserve(party: Party, slot: Slot) -> str:
        """Reserve for a party at a slot."""
        got.extend([party, slot])
        return f"{party.name} x{party.size} on {slot.day} at {slot.hour}"

    args = {"party": {"name": "Ada", "size": "2"}, "slot": {"day": "Fri", "hour": 19}}
    kit.server.push(kit.calls(("call_r", "reserve", args)), kit.text("Done."))
    brain = kit.brain(tools=[reserve], approvals=InProcessApprovalGate(policy=lambda r: ApprovalDecision.approve(by="a")))
    log = EventLog(brain)
    await reply(brain, Turn("reserve", "c"))
    assert got == [Party(name="Ada", size=2), Slot(day="Fri", hour=19)]
    assert kit.results(kit.server.requests[1])["call_r"] == "Ada x2 on Fri at 19"
    (fin,) = log.of(ToolFinished)
    assert fin.status == "ok"
    fin.model_dump_json()  # events stay serialisable
    log.check()


async def test_huge_and_unserialisable_results_are_cut_for_the_model_and_json_in_events(kit: Kit) -> None:
    class Opaque:
        def __str__(self) -> str:
            return "opaque-thing"

    @tool
    def dump() -> dict[str, Any]:
        """A big export."""
        return {"rows": "x" * (MAX_RESULT_CHARS * 3), "handle": Opaque()}

    kit.server.push(kit.calls(("call_d", "dump", {})), kit.text("Got it."))
    brain = kit.brain(tools=[dump])
    log = EventLog(brain)
    await reply(brain, Turn("export", "c"))
    told = kit.results(kit.server.requests[1])["call_d"]
    assert len(told) < MAX_RESULT_CHARS + 200 and told.endswith("only the first 16000 are shown]")
    (fin,) = log.of(ToolFinished)
    assert fin.result["handle"] == "opaque-thing"
    assert len(fin.model_dump_json()) > MAX_RESULT_CHARS  # the event keeps it; the bridge caps what leaves
    log.check()


async def test_results_json_cannot_encode_reach_the_model_as_json(kit: Kit) -> None:
    """Models and dataclasses inside a result reached the model as Python reprs ("Slot(day='mon',
    ...)"), text outside ASCII as \\u escapes (six characters each, against the result's cut), and
    bytes that are not UTF-8 failed the whole turn: the user heard the apology, the model was told
    the tool never finished, and clients never got its tool.finished."""

    @tool
    def lookup() -> dict[str, Any]:
        """Look up a venue."""
        return {"party": Party(name="Zoë", size=2), "slot": Slot(day="mon", hour=19), "city": "東京"}

    @tool
    def snapshot() -> bytes:
        """A camera snapshot."""
        return b"\xff\xd8\xff\xe0"

    kit.server.push(kit.calls(("call_l", "lookup", {}), ("call_s", "snapshot", {})), kit.text("Done."))
    brain = kit.brain(tools=[lookup, snapshot])
    log = EventLog(brain)
    turn = Turn("go", "c")
    assert "".join(await reply(brain, turn)) == "Done."
    told = kit.results(kit.server.requests[1])
    assert json.loads(told["call_l"]) == {
        "party": {"name": "Zoë", "size": 2},
        "slot": {"day": "mon", "hour": 19},
        "city": "東京",
    }
    assert "東京" in told["call_l"]
    assert base64.urlsafe_b64decode(json.loads(told["call_s"])) == b"\xff\xd8\xff\xe0"  # base64, not UTF-8
    fin = {e.call_id: e for e in log.of(ToolFinished)}
    assert {k: e.status for k, e in fin.items()} == {"call_l": "ok", "call_s": "ok"}
    assert fin["call_l"].result == json.loads(told["call_l"])  # clients get what the model got
    assert log.done(turn.turn_id).reason == "completed"
    log.check()


async def test_turns_of_one_conversation_run_one_at_a_time(kit: Kit) -> None:
    """A second turn while the first waits for approval: it waits its turn, so neither sends the
    model a history with an unanswered tool call, and each answer stays with its own turn."""
    gate = InProcessApprovalGate()

    @tool(requires_approval=True)
    def send(to: str) -> str:
        """Send."""
        return f"sent to {to}"

    kit.server.push(kit.calls(("call_s", "send", {"to": "bob"})), kit.text("Answer to A."), kit.text("Answer to B."))
    brain = kit.brain(tools=[send], approvals=gate)
    log = EventLog(brain)
    a = asyncio.create_task(reply(brain, Turn("turn A", "c")))
    await log.wait(lambda e: type(e).__name__ == "ApprovalRequested")
    b = asyncio.create_task(reply(brain, Turn("turn B", "c")))
    await asyncio.sleep(0.1)
    assert not b.done() and len(kit.server.requests) == 1  # B waits for A
    (req,) = gate.pending()
    gate.resolve(req.request_id, ApprovalDecision.approve(by="alice"))
    assert "".join(await a) == "Answer to A."
    assert "".join(await b) == "Answer to B."
    last = kit.server.requests[2]
    assert kit.results(last) == {"call_s": "sent to bob"}
    assert kit.dialogue(last)[-2:] == [("assistant", "Answer to A."), ("user", "turn B")]
    assert [e.reason for e in log.of(TurnDone)] == ["completed", "completed"]
    log.check()


class _IteratorOnly:
    """An async iterator with no `aclose`: valid for the ModelBackend protocol."""

    def __init__(self, items: list[str]) -> None:
        self._items = iter(items)

    def __aiter__(self) -> _IteratorOnly:
        return self

    async def __anext__(self) -> TextChunk:
        try:
            return TextChunk(next(self._items))
        except StopIteration:
            raise StopAsyncIteration from None


class _IteratorBackend:
    name = "iterator"

    def stream(self, request: ModelRequest) -> _IteratorOnly:
        return _IteratorOnly(["Hello ", "world."])

    async def aclose(self) -> None:
        pass


async def test_a_custom_backend_may_return_a_plain_async_iterator() -> None:
    brain = VoiceBrain(_IteratorBackend())  # type: ignore[arg-type]
    log = EventLog(brain)
    turn = Turn("hi", "c")
    assert await reply(brain, turn) == ["Hello ", "world."]
    assert log.done(turn.turn_id).reason == "completed"


def test_make_tool_keeps_plain_and_async_functions_apart() -> None:
    async def a() -> str:
        """Async."""
        return "a"

    def b() -> str:
        """Plain."""
        return "b"

    assert not make_tool(a).runs_in_thread and make_tool(b).runs_in_thread


class _FailsAfterATool:
    """Step 1: "One moment." and a tool call; step 2: the model fails."""

    name = "fails-after-a-tool"

    def __init__(self) -> None:
        self.calls = 0

    async def stream(self, request: ModelRequest) -> AsyncIterator[Any]:
        from brain import ToolCall
        from brain.errors import UnavailableError

        self.calls += 1
        if self.calls == 1:
            yield TextChunk("One moment.")
            yield ToolCall("call_1", "lookup", {})
            return
        raise UnavailableError("the model went away", provider=self.name)

    async def aclose(self) -> None:
        pass


async def test_the_apology_after_a_tool_step_is_separated_from_what_was_said() -> None:
    """The last message before the apology is the tool's result: the separator must follow the
    last thing *said*, or speech and memory read "One moment.Sorry, ..."."""
    @tool
    async def lookup() -> str:
        """Look something up."""
        return "found"

    brain = VoiceBrain(_FailsAfterATool(), tools=ToolSet([lookup]),  # type: ignore[arg-type]
                       settings=BrainSettings(apology="Sorry, I can't answer right now."))
    deltas = await reply(brain, Turn("look it up", "c"))
    assert "".join(deltas) == "One moment. Sorry, I can't answer right now."


async def test_a_conversations_lock_goes_away_when_nobody_holds_it() -> None:
    import gc

    brain = VoiceBrain(_IteratorBackend())  # type: ignore[arg-type]
    for i in range(50):
        await reply(brain, Turn("hi", f"conversation-{i}"))
    gc.collect()
    assert len(brain._locks) == 0


async def test_a_plain_tool_run_with_the_approvers_arguments_and_interrupted_tells_the_model_those(kit: Kit) -> None:
    """Approved for three people instead of two, then cut off while booking: the booking that may
    go through is for three, and the model (whose history holds its call for two) must be told."""
    started, release, finished = asyncio.Event(), threading.Event(), threading.Event()
    loop = asyncio.get_running_loop()
    booked: list[int] = []

    def book_table(party_size: int) -> str:
        """Book a table."""
        loop.call_soon_threadsafe(started.set)
        release.wait(10)
        booked.append(party_size)
        finished.set()
        return "booked"

    gate = InProcessApprovalGate(policy=lambda r: ApprovalDecision.approve({"party_size": 3}, by="alice"))
    kit.server.push(kit.calls(("call_b", "book_table", {"party_size": 2})))
    kit.server.push(kit.text("Let me check."))
    brain = kit.brain(tools=[make_tool(book_table, requires_approval=True)], approvals=gate)
    log = EventLog(brain)
    task = asyncio.create_task(reply(brain, Turn("book for two", "c")))
    await wait_for(started)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()
    await reply(brain, Turn("did it work?", "c"))
    told = kit.results(kit.server.requests[1])["call_b"]
    assert '{"party_size": 3}' in told and "may or may not have been carried out" in told
    assert await asyncio.to_thread(finished.wait, 5) and booked == [3]
    log.check()

"""Session life: the brain in llm_node, greeting, inactivity timeout, leaving with the last user."""

from __future__ import annotations

import asyncio

import pytest
from livekit import rtc
from livekit.agents import AgentSession
from livekit.agents.testing import fake_job_context

from agent.brain_agent import BrainAgent, BrainLLM
from agent.latency import format_table
from agent.simulate import Simulation
from agent.turn_tracker import TurnTracker
from agent.worker import (
    JobClosers,
    LastParticipantWatcher,
    attach_session_life,
    load_vad,
    remaining_users,
    wait_for_user,
)
from brain import BrainConfig, InProcessApprovalGate, auto_approve, create_voice_brain

from .agent_fakes import FakeRoom, ScriptedBackend, Step, settings
from .bridge_fakes import wait_until


@pytest.fixture(scope="module")
def vad():
    return load_vad(settings())


async def test_llm_node_streams_the_brain_reply_text_only() -> None:
    brain = create_voice_brain(
        BrainConfig(_env_file=None), approvals=InProcessApprovalGate(policy=auto_approve)  # type: ignore[call-arg]
    )
    agent = BrainAgent(brain, TurnTracker(brain, "text"))
    async with AgentSession(llm=BrainLLM()) as session:
        await session.start(agent)
        result = await session.run(user_input="What's the weather in Paris? Please book a table.")
    messages = [e.item for e in result.events if e.type == "message"]
    text = " ".join(m.text_content or "" for m in messages if m.role == "assistant")
    # "One moment." is flushed as its own segment when the tools start; the segments join cleanly
    assert text.startswith("One moment. ")
    assert "Paris" in text and "booked" in text
    turns = agent.tracker.turns
    assert len(turns) == 1 and turns[0].turn.transcript.startswith("What's the weather")
    assert [m.role for m in brain.history("text")][0] == "user"


async def _wait(cond, sim: Simulation, limit: float = 30.0) -> None:
    start = sim.io.mic.position
    while not cond() and sim.io.mic.position - start < limit:
        await sim.io.mic.play_silence(0.1)


async def test_greeting_spoken_verbatim(vad) -> None:
    s = settings(greeting_mode="say", greeting="Hello there, I am listening.")
    sim = Simulation(s, vad=vad, speed=4.0, conversation_id="greet")
    try:
        await sim.start(greet=True)
    finally:
        await sim.aclose()
    assert sim.result.reply_seconds > 0.5
    assert sim.io.transcript.segments == ["Hello there, I am listening."]
    assert sim.result.turns == []  # said as is: the brain was not asked


async def test_a_greeting_said_as_is_is_remembered_as_heard(vad) -> None:
    """The model never saw the default greeting: asked "Shall I book your usual table?", the
    user's "yes please" reached it alone. Now memory holds the greeting (behind a user-side cue,
    so the history still starts with a user message), cut to what was heard when cut off."""
    from brain.voice_brain import GREETING_CUE

    greeting = "Hi! Shall I book your usual table tonight, at eight, for two people, as always?"
    backend = ScriptedBackend([Step(text=["Booked."])])
    brain = create_voice_brain(settings().brain, backend=backend)
    events = __import__("io").StringIO()
    s = settings(greeting_mode="say", greeting=greeting)
    sim = Simulation(s, vad=vad, brain=brain, speed=4.0, conversation_id="greet3", events=events)
    try:
        await sim.start(greet=True)
        bridge = sim.voice.bridge
        assert bridge is not None
        await bridge.handle_message("user", _control("user.text", "t1", {"text": "yes please"}))
        assert await sim.settle(limit=30)
        # a second session of the same brain: its greeting is cut off after some of its audio
        handle = sim.voice.greet()
        await _until_played(sim, 3.5)
        handle.interrupt()
        await handle
    finally:
        await sim.aclose()
    assert [(m.role, m.content) for m in backend.requests[0].messages] == [
        ("user", GREETING_CUE), ("assistant", greeting), ("user", "yes please")]
    history = [(m.role, m.content) for m in brain.history("greet3")]
    assert history[:4] == [("user", GREETING_CUE), ("assistant", greeting), ("user", "yes please"), ("assistant", "Booked.")]
    assert history[4][0] == "user" and history[5][0] == "assistant"
    heard = history[5][1]
    assert heard and greeting.startswith(heard) and len(heard) < len(greeting), heard


async def test_greeting_generated_by_the_brain(vad) -> None:
    backend = ScriptedBackend([Step(text=["Welcome ", "back!"])])
    brain = create_voice_brain(settings().brain, backend=backend)
    s = settings(greeting_mode="generate", greeting_prompt="Greet the user.")
    sim = Simulation(s, vad=vad, brain=brain, speed=4.0, conversation_id="greet2")
    try:
        await sim.start(greet=True)
    finally:
        await sim.aclose()
    assert backend.requests[0].messages[-1].content == "Greet the user."
    assert sim.io.transcript.segments == ["Welcome back!"]
    assert sim.result.reply_seconds > 0.3


async def test_inactivity_timeout_says_goodbye_and_closes(vad) -> None:
    """The goodbye comes once the user has been silent for the timeout, in audio time.

    The simulated clock is wall time x speed and livekit's away timer is a wall-clock timer, so
    how late the goodbye may start cannot be bounded without timing the machine. What makes it
    late is checked instead: the timer livekit runs is the timeout scaled to the clock (an
    unscaled one fires `speed` times late), and nothing restarted it (a user or agent state
    change before `away` would)."""
    s = settings(inactivity_timeout=3.0, goodbye="Talk to you later.")
    events = __import__("io").StringIO()
    sim = Simulation(s, vad=vad, speed=4.0, conversation_id="idle", events=events)
    states: list[tuple[str, str, float]] = []
    sim.session.on("user_state_changed", lambda ev: states.append(("user", ev.new_state, sim.clock.now())))
    sim.session.on("agent_state_changed", lambda ev: states.append(("agent", ev.new_state, sim.clock.now())))
    try:
        await sim.start()
        await _wait(sim.voice.closed.is_set, sim)
    finally:
        await sim.aclose()
    assert sim.voice.closed.is_set()
    assert sim.voice.close_reason == "inactivity timeout"
    assert sim.io.transcript.segments == ["Talk to you later."]
    assert sim.session.options.user_away_timeout * sim.clock.speed == pytest.approx(3.0)
    # the agent listens from the start, the user goes away (once), then the goodbye is spoken
    assert [(who, state) for who, state, _ in states][:3] == [
        ("agent", "listening"), ("user", "away"), ("agent", "speaking")], states
    assert states[1][2] <= sim.io.sink.segments[0].start  # the goodbye follows the user going away
    # clients are told why the agent leaves (they saw it leave, as after a crash)
    ended = _envelopes(events)[-1]
    assert (ended["type"], ended["data"]) == ("session.ended", {"reason": "inactivity"})


async def test_session_ends_when_the_last_user_leaves(vad) -> None:
    room = FakeRoom("room-7")
    room.join("alice")
    room.join("bob")
    room.join("other-agent", kind=rtc.ParticipantKind.PARTICIPANT_KIND_AGENT)
    shutdowns: list[str] = []
    events = __import__("io").StringIO()
    with fake_job_context(room=room) as ctx:  # type: ignore[arg-type]
        ctx.shutdown = lambda reason="": shutdowns.append(reason)  # type: ignore[method-assign]
        sim = Simulation(settings(), vad=vad, speed=4.0, conversation_id=room.name, events=events)
        try:
            await sim.start()
            attach_session_life(ctx, sim.voice)
            room.leave("alice")
            await sim.io.mic.play_silence(0.5)
            assert not sim.voice.closed.is_set() and shutdowns == []
            assert remaining_users(room) == ["bob"]  # the other agent does not count
            room.leave("bob")
            await asyncio.wait_for(sim.voice.closed.wait(), 10)
        finally:
            await sim.aclose()
    assert sim.voice.close_reason == "last participant left"
    assert shutdowns == ["session closed: last participant left"]
    ended = _envelopes(events)[-1]  # to those still there (a supervisor): why the agent leaves
    assert (ended["type"], ended["data"]) == ("session.ended", {"reason": "participant_left"})


async def test_session_ends_when_the_served_user_is_gone_while_a_supervisor_stays(vad) -> None:
    """The room input follows the served identity: once they have left, a supervisor who stays
    cannot talk to the session, and livekit no longer runs its inactivity timer. The session
    ends after the grace (AGENT_INACTIVITY_TIMEOUT in the worker), unless they come back."""
    room = FakeRoom("room-9")
    room.join("alice")
    room.join("supervisor")
    shutdowns: list[str] = []
    with fake_job_context(room=room) as ctx:  # type: ignore[arg-type]
        ctx.shutdown = lambda reason="": shutdowns.append(reason)  # type: ignore[method-assign]
        sim = Simulation(settings(), vad=vad, speed=4.0, conversation_id=room.name)
        try:
            await sim.start()
            watcher = attach_session_life(ctx, sim.voice, served="alice", grace=0.3)
            room.leave("alice")
            room.join("alice")  # back within the grace: the session goes on
            await asyncio.sleep(0.6)
            assert not sim.voice.closed.is_set() and not watcher.fired
            room.leave("alice")
            await asyncio.wait_for(sim.voice.closed.wait(), 10)
        finally:
            await sim.aclose()
    assert sim.voice.close_reason == "served participant left"
    assert shutdowns == ["session closed: served participant left"]


async def test_a_leave_before_the_watcher_was_attached_still_ends_the_session(vad) -> None:
    room = FakeRoom("room-10")
    room.join("alice")
    with fake_job_context(room=room) as ctx:  # type: ignore[arg-type]
        ctx.shutdown = lambda reason="": None  # type: ignore[method-assign]
        sim = Simulation(settings(), vad=vad, speed=4.0, conversation_id=room.name)
        try:
            await sim.start()
            room.leave("alice")  # between finding the user and watching the room
            watcher = attach_session_life(ctx, sim.voice, served="alice")
            assert not watcher.fired
            watcher.check()
            await asyncio.wait_for(sim.voice.closed.wait(), 10)
        finally:
            await sim.aclose()
    assert sim.voice.close_reason == "last participant left"


async def test_a_served_user_who_reconnects_or_drops_is_waited_for() -> None:
    """A client's full reconnect (same identity, new participant sid) reaches the agent as a leave
    then a join, and a dropped connection as a leave with a reason other than the user's own: the
    session ended at once when nobody else was in the room, so the user came back to a room
    without an agent. Only a deliberate leave (livekit-agents' close-on-disconnect reasons) ends
    it at once; a drop gets the grace (AGENT_INACTIVITY_TIMEOUT), as with others in the room."""
    room = FakeRoom("room-12")
    room.join("alice")
    gone: list[str] = []
    watcher = LastParticipantWatcher(room, gone.append, served="alice", grace=60.0)
    room.rejoin("alice")
    assert gone == [] and not watcher.waiting  # back at once: nothing pending
    room.join("supervisor")
    room.leave("alice", reason=rtc.DisconnectReason.CONNECTION_TIMEOUT)
    room.leave("supervisor")  # the last one there leaves: alice may still come back
    assert gone == [] and watcher.waiting
    room.join("alice")
    assert not watcher.waiting
    room.leave("alice")  # hangs up: the last user left on purpose
    assert gone == ["last participant left"]
    watcher.close()

    room.join("alice")
    gone.clear()
    watcher = LastParticipantWatcher(room, gone.append, served="alice", grace=0.05)
    room.leave("alice", reason=rtc.DisconnectReason.SIGNAL_CLOSE)
    assert gone == []
    await wait_until(lambda: gone)  # never came back: the grace ends the session
    assert gone == ["served participant left"]
    watcher.close()


async def test_the_served_user_is_never_a_supervisor() -> None:
    """A supervisor (BRIDGE_ALLOWED_IDENTITIES) already in the room was taken as the user."""
    room = FakeRoom("room-11")
    room.join("bot", kind=rtc.ParticipantKind.PARTICIPANT_KIND_AGENT)
    room.join("supervisor")
    waiting = asyncio.ensure_future(wait_for_user(room, exclude=["supervisor"]))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    room.join("carol", active=False)  # still joining: not served yet
    await asyncio.sleep(0.05)
    assert not waiting.done()
    room.join("alice")
    assert (await asyncio.wait_for(waiting, 5)).identity == "alice"
    assert (await wait_for_user(room)).identity in {"supervisor", "alice"}  # nobody excluded: the first


async def test_job_closers_run_in_order_once_and_past_a_failure() -> None:
    order: list[str] = []

    def step(name: str, fail: bool = False):  # type: ignore[no-untyped-def]
        async def close() -> None:
            await asyncio.sleep(0.01)  # concurrent callbacks would interleave here
            order.append(name)
            if fail:
                raise RuntimeError(name)

        return close

    closers = JobClosers()
    closers.add(step("speech"))
    closers.add(step("brain", fail=True))
    closers.add(step("model"))
    closers.first(step("session"))
    await closers.run("job ended")
    await closers.run("again")
    assert order == ["session", "speech", "brain", "model"]


async def test_job_shutdown_closes_the_providers_after_the_session(vad) -> None:
    """The worker hands its STT / TTS closers to `attach_session_life`: they run on job
    shutdown, after the session has closed (never while it may still use them)."""
    room = FakeRoom("room-8")
    room.join("alice")
    order: list[str] = []
    with fake_job_context(room=room) as ctx:  # type: ignore[arg-type]
        ctx.shutdown = lambda reason="": None  # type: ignore[method-assign]
        sim = Simulation(settings(), vad=vad, speed=4.0, conversation_id=room.name)
        try:
            await sim.start()

            async def close_stt() -> None:
                order.append(f"stt closed, session closed: {sim.voice.closed.is_set()}")

            attach_session_life(ctx, sim.voice, then=(close_stt,))
            for callback in ctx._shutdown_callbacks:  # what livekit runs when the job ends
                await callback("test")
        finally:
            await sim.aclose()
    assert order == ["stt closed, session closed: True"]


# -- typed control messages and interruptions, through the bridge ------------------------------

LONG = "Here is a long answer about the sea, its tides, its colours and its moods, and more still after that."


def _control(kind: str, mid: str, data: dict | None = None) -> str:
    import json

    return json.dumps({"v": 1, "id": mid, "type": kind, "data": data or {}})


def _envelopes(events) -> list[dict]:  # type: ignore[no-untyped-def]
    import json

    return [json.loads(x) for x in events.getvalue().splitlines() if x.startswith("{")]


async def _until_played(sim: Simulation, seconds: float, limit: float = 30.0) -> None:
    start = sim.io.mic.position
    while sim.io.mic.position - start < limit:
        if sim.io.sink.segments and sim.io.sink.current_played() >= seconds:
            return
        await sim.io.mic.play_silence(0.05)
    raise AssertionError("the reply never played that long")


async def _type_over_a_reply(  # type: ignore[no-untyped-def]
    vad, backend: ScriptedBackend, typed: str, *, speed: float = 2.0, played: float = 1.5
):
    """Type "tell me about the sea", let `played` s of the reply play, type `typed` over it, settle."""
    import io

    brain = create_voice_brain(BrainConfig(_env_file=None), backend=backend)  # type: ignore[call-arg]
    events = io.StringIO()
    sim = Simulation(settings(), vad=vad, brain=brain, speed=speed, conversation_id="typed", events=events)
    try:
        await sim.start()
        bridge = sim.voice.bridge
        assert bridge is not None
        await bridge.handle_message("user", _control("user.text", "t1", {"text": "tell me about the sea"}))
        await _until_played(sim, played)
        reply = await bridge.handle_message("user", _control("user.text", "t2", {"text": typed}))
        assert await sim.settle(limit=30)
        await bridge.flush(2)
    finally:
        await sim.aclose()
    return sim, events, reply


async def test_typed_text_mid_reply_settles_the_interrupted_turn_first(vad) -> None:
    """`user.text` while the agent speaks: the interrupted turn is settled before the next one
    starts, so the model is sent only what was heard, each turn gets its own metrics, and the
    interrupted turn's `turn.done` says `interrupted` with the heard text (the brain had finished
    writing the whole reply long before)."""
    backend = ScriptedBackend([Step(text=[LONG]), Step(text=["Second answer."])])
    sim, events, reply = await _type_over_a_reply(vad, backend, "stop, something else")
    assert '"ack"' in reply
    first, second = sim.voice.tracker.turns
    assert first.outcome == "interrupted" and first.spoken and len(first.spoken) < len(LONG)
    # the second request carries the heard prefix, not the whole unheard reply
    said = [m.content for m in backend.requests[1].messages if m.role == "assistant"]
    assert said == [first.spoken], said
    envelopes = _envelopes(events)
    done = {e["turn"]: e["data"] for e in envelopes if e["type"] == "turn.done"}
    assert done[first.turn.turn_id] == {"reason": "interrupted", "text": first.spoken}
    assert done[second.turn.turn_id]["reason"] == "completed"
    metrics = [e["turn"] for e in envelopes if e["type"] == "metrics"]
    assert metrics == [first.turn.turn_id, second.turn.turn_id]


async def test_interrupting_the_goodbye_is_refused_cleanly(vad) -> None:
    """The goodbye may not be interrupted: the client gets `unsupported`, not `internal`."""
    import io

    s = settings(inactivity_timeout=2.0, goodbye="Talk to you later, goodbye for now, take care.")
    events = io.StringIO()
    sim = Simulation(s, vad=vad, speed=2.0, conversation_id="bye", events=events)
    try:
        await sim.start()
        start = sim.io.mic.position
        while not sim.io.sink.segments and sim.io.mic.position - start < 30:
            await sim.io.mic.play_silence(0.05)
        bridge = sim.voice.bridge
        assert bridge is not None
        import json

        reply = json.loads(await bridge.handle_message("user", _control("agent.interrupt", "i1")))
        await _wait(sim.voice.closed.is_set, sim)
    finally:
        await sim.aclose()
    assert reply["type"] == "error" and reply["data"]["code"] == "unsupported", reply
    assert "cannot be interrupted now" in reply["data"]["message"]


async def test_interrupted_while_the_brain_is_still_writing_reports_only_what_was_heard(vad) -> None:
    backend = ScriptedBackend([Step(text=[LONG + " ", "And a second sentence about waves, still going. ", "A third"],
                                    hang_after=True), Step(text=["Second answer."])])
    sim, events, _ = await _type_over_a_reply(vad, backend, "stop")
    first = sim.voice.tracker.turns[0]
    done = {e["turn"]: e["data"] for e in _envelopes(events) if e["type"] == "turn.done"}
    assert done[first.turn.turn_id] == {"reason": "interrupted", "text": first.spoken}
    assert "A third" not in done[first.turn.turn_id]["text"]


async def test_typed_text_is_not_lost_when_the_interrupted_reply_is_slow_to_settle(vad) -> None:
    """A tool that rolls back for 6 s when cancelled keeps the interrupted reply from settling
    (livekit forces it after 5 s, the bridge's control timeout is 5 s): the typed message must
    still become a turn, and its sender an `ack`."""
    import json

    from brain import ToolCall, tool

    @tool
    async def slow_cleanup() -> str:
        """A tool that rolls back on cancel."""
        try:
            await asyncio.sleep(100)
        except asyncio.CancelledError:
            await asyncio.sleep(6)
            raise
        return "x"

    backend = ScriptedBackend([Step(text=["One moment."], calls=[ToolCall("c1", "slow_cleanup", {})]),
                               Step(text=["Typed answer."])])
    brain = create_voice_brain(BrainConfig(_env_file=None, tools=[]), backend=backend, tools=[slow_cleanup])  # type: ignore[call-arg]
    sim = Simulation(settings(), vad=vad, brain=brain, speed=1.0, conversation_id="slow-settle", events=__import__("io").StringIO())
    try:
        await sim.start()
        bridge = sim.voice.bridge
        assert bridge is not None
        await bridge.handle_message("user", _control("user.text", "t1", {"text": "do it"}))
        await _until_played(sim, 0.5)
        task = asyncio.ensure_future(bridge.handle_message("user", _control("user.text", "t2", {"text": "never mind, hello"})))
        while not task.done():
            await sim.io.mic.play_silence(0.05)
        reply = json.loads(task.result())
        await sim.settle(limit=30)
    finally:
        await sim.aclose()
    assert reply["type"] == "ack", reply
    assert "never mind, hello" in [t.user_text for t in sim.voice.tracker.turns]


async def test_a_session_whose_close_raises_still_ends_for_its_listeners(vad) -> None:
    """livekit-agents 1.8 re-raises a realtime model's fatal failure from `aclose` without
    emitting `close`: the session still counts as closed and its close callbacks run, and
    clients are told it ended on an error."""
    events = __import__("io").StringIO()
    sim = Simulation(settings(), vad=vad, speed=4.0, conversation_id="close-raises", events=events)
    reasons: list[str] = []
    sim.voice.on_close(reasons.append)
    await sim.start()

    async def broken_close() -> None:
        raise RuntimeError("the model failed")

    real_close = sim.session.aclose
    sim.session.aclose = broken_close  # type: ignore[method-assign]
    try:
        await sim.voice.aclose()
    finally:
        sim.session.aclose = real_close  # type: ignore[method-assign]
        await sim.aclose()
    assert sim.voice.closed.is_set() and reasons == ["error"]
    assert _envelopes(events)[-1]["type"] == "session.ended" and _envelopes(events)[-1]["data"] == {"reason": "error"}


async def test_waiting_for_a_user_ends_when_the_room_closes() -> None:
    from livekit import rtc as lk

    from agent.room_life import RoomGone

    room = FakeRoom("room-12")
    waiting = asyncio.ensure_future(wait_for_user(room))
    await asyncio.sleep(0.01)
    room.emit("connection_state_changed", lk.ConnectionState.CONN_DISCONNECTED)
    with pytest.raises(RoomGone):
        await asyncio.wait_for(waiting, 5)
    room.isconnected = lambda: False  # type: ignore[attr-defined]
    with pytest.raises(RoomGone):  # already gone: at once, not after AGENT_JOIN_TIMEOUT
        await asyncio.wait_for(wait_for_user(room), 5)


async def test_a_reply_stopped_before_any_audio_is_dropped_not_merged_into_the_next(vad) -> None:
    """`agent.interrupt` while the model is still thinking is a stop, not a barge-in: the
    cancelled request must not come back glued to the user's next message (it did: "book a
    table what is the weather", and the model was asked to book again)."""
    import json

    backend = ScriptedBackend([Step(hang_before=True), Step(text=["Sunny."])])
    brain = create_voice_brain(BrainConfig(_env_file=None), backend=backend)  # type: ignore[call-arg]
    events = __import__("io").StringIO()
    sim = Simulation(settings(), vad=vad, brain=brain, speed=4.0, conversation_id="stop", events=events)
    try:
        await sim.start()
        bridge = sim.voice.bridge
        assert bridge is not None
        await bridge.handle_message("user", _control("user.text", "t1", {"text": "book a table"}))
        await _wait(lambda: bool(backend.requests), sim)
        assert sim.io.sink.segments == []  # nothing said yet: the model is thinking
        reply = json.loads(await bridge.handle_message("user", _control("agent.interrupt", "i1")))
        assert reply["type"] == "ack", reply
        await bridge.handle_message("user", _control("user.text", "t2", {"text": "what is the weather"}))
        assert await sim.settle(limit=30)
        await bridge.flush(2)
    finally:
        await sim.aclose()
    stopped, answered = sim.voice.tracker.turns
    assert stopped.outcome == "discarded" and 0 in backend.closed_early
    assert answered.turn.transcript == "what is the weather" and answered.outcome == "completed"
    assert [(m.role, m.content) for m in backend.requests[1].messages] == [("user", "what is the weather")]
    assert [(m.role, m.content) for m in brain.history("stop")] == [("user", "what is the weather"), ("assistant", "Sunny.")]
    done = {e["turn"]: e["data"] for e in _envelopes(events) if e["type"] == "turn.done"}
    assert done == {stopped.turn.turn_id: {"reason": "interrupted", "text": ""},
                    answered.turn.turn_id: {"reason": "completed", "text": "Sunny."}}
    # the latency table says so too (it said "merged into the next turn")
    table = format_table(sim.voice.latency.rows).splitlines()
    assert table[1].endswith("book a table                              -       -       -       -        -  "
                             "(no reply: stopped on request)"), table
    assert table[2].endswith("Sunny."), table


async def test_a_failed_reply_cut_off_reports_only_what_was_heard(vad) -> None:
    """A turn that failed (the model broke off, the brain apologised) and was then talked over:
    its `turn.done` says `error` with the text the user heard, as the brain's memory keeps it,
    not the whole text written (the unheard rest and the apology)."""
    from brain import ModelRequest, TextChunk

    class BreaksOff(ScriptedBackend):
        async def stream(self, request: ModelRequest):  # type: ignore[no-untyped-def,override]
            if len(self.requests) == 0:
                self.requests.append(request)
                yield TextChunk(LONG)
                raise RuntimeError("the model connection broke")
            async for item in super().stream(request):
                yield item

    backend = BreaksOff([Step(text=["Second answer."])])
    sim, events, _ = await _type_over_a_reply(vad, backend, "stop", speed=4.0, played=2.0)
    first = sim.voice.tracker.turns[0]
    assert first.outcome == "interrupted" and first.spoken is not None and len(first.spoken) < len(LONG)
    assistant = [m.content for m in sim.voice.brain.history("typed") if m.role == "assistant"]
    assert assistant[0] == first.spoken  # (the second turn's answer follows)
    done = {e["turn"]: e["data"] for e in _envelopes(events) if e["type"] == "turn.done"}
    assert done[first.turn.turn_id] == {"reason": "error", "text": first.spoken}
    errors = [e for e in _envelopes(events) if e["type"] == "error"]
    assert [e["turn"] for e in errors] == [first.turn.turn_id]


async def test_a_session_that_cannot_start_tells_clients_before_the_agent_leaves(vad, monkeypatch) -> None:
    """The session's start raised once the bridge was attached (the worker attaches it first):
    clients had their `session.hello`, then saw the agent leave, with no word of why. They now
    get an `error` `internal` with `fatal: true` (the session is about to close because of it),
    naming the exception's type; its text is the operator's (the job's log)."""
    import io

    events = io.StringIO()
    sim = Simulation(settings(), vad=vad, speed=4.0, conversation_id="broken", events=events)

    async def refuse(*_: object, **__: object) -> None:
        raise RuntimeError("could not subscribe to the track of user@example.com")

    monkeypatch.setattr(sim.session, "start", refuse)
    try:
        with pytest.raises(RuntimeError, match="could not subscribe"):
            await sim.start()
    finally:
        await sim.aclose()  # as the job's shutdown does: the bridge delivers what is queued
    envelopes = _envelopes(events)
    assert [e["type"] for e in envelopes] == ["session.hello", "error", "session.ended"]
    assert envelopes[1]["data"] == {"code": "internal", "message": "the session could not start (RuntimeError)",
                                    "fatal": True}
    assert envelopes[2]["data"] == {"reason": "error"}


def _clip(name: str, start: float, end: float) -> bytes:
    """Seconds `start`..`end` of one of the shared 16 kHz mono recordings, as PCM."""
    import wave

    from .agent_fakes import AUDIO

    with wave.open(str(AUDIO / name)) as w:
        w.setpos(int(start * w.getframerate()))
        return w.readframes(int((end - start) * w.getframerate()))


async def test_a_phrase_too_short_to_interrupt_is_not_carried_into_the_next_turn(vad) -> None:
    """TURN_MIN_INTERRUPTION_WORDS: a couple of words said over a reply ("uh-huh", "well that")
    do not cut it off, and must not come back later either. livekit-agents 1.8 kept them and,
    when the user next spoke, answered them as a turn of their own (an LLM call for a
    backchannel, its reply cut off by the user's real words) or glued them to those words."""
    from agent.turns import TurnSettings

    turn = TurnSettings(_env_file=None, min_interruption_words=3)  # type: ignore[call-arg]
    backend = ScriptedBackend([Step(text=[LONG]), Step(text=["Second answer."]), Step(text=["Third."])])
    brain = create_voice_brain(BrainConfig(_env_file=None), backend=backend)  # type: ignore[call-arg]
    sim = Simulation(settings(turn=turn), vad=vad, brain=brain, speed=4.0, conversation_id="backchannel")
    heard: list[tuple[str, str]] = []  # (final transcript, the agent's state when it came)
    sim.session.on(
        "user_input_transcribed", lambda ev: ev.is_final and heard.append((ev.transcript, sim.session.agent_state))
    )
    try:
        await sim.start()
        sim.session.generate_reply(user_input="tell me about the sea")
        await _until_played(sim, 0.8)
        await sim.io.mic.play(_clip("multi_utterance_16k_mono.wav", 53.45, 54.3))  # two words, real speech
        first = sim.voice.tracker.turns[0]
        await _wait(lambda: first.outcome != "pending", sim)
        assert heard and heard[0][1] == "speaking", heard  # transcribed while the reply played
        backchannel = heard[0][0]
        assert 0 < len(backchannel.split()) < 3, backchannel
        await sim.io.mic.play(_clip("jfk_16k_mono.wav", 0.2, 2.4))  # the user's next words
        assert await sim.settle(quiet=0.5, limit=30)
    finally:
        await sim.aclose()
    assert first.outcome == "completed" and first.heard == LONG  # not cut off
    assert not sim.io.sink.segments[0].interrupted
    # one turn for the next words, with only them: the backchannel was neither answered nor merged
    words = heard[-1][0]
    assert [(t.user_text, t.turn.transcript) for t in sim.voice.tracker.turns[1:]] == [(words, words)]
    assert len(backend.requests) == 2
    users = [m.content for m in brain.history("backchannel") if m.role == "user"]
    assert users == ["tell me about the sea", words]


async def test_a_user_who_mutes_mid_sentence_still_gets_an_answer(vad) -> None:
    """A muted microphone sends no frames at all (not silence). A user who muted part-way through
    a sentence stayed `speaking` for as long as the mute lasted: the VAD never heard the silence
    that ends a turn, so nothing was transcribed, nothing answered, and the inactivity timeout
    (which needs the user `listening`) never started. The microphone's falling quiet now ends the
    speech as silence would: the words said before the mute are answered."""
    from agent.audio_files import decode_file
    from agent.simulate import INPUT_RATE

    from .agent_fakes import AUDIO

    backend = ScriptedBackend([Step(text=["Got it."])])
    brain = create_voice_brain(BrainConfig(_env_file=None), backend=backend)  # type: ignore[call-arg]
    sim = Simulation(settings(), vad=vad, brain=brain, speed=4.0, conversation_id="mute")
    states: list[str] = []
    sim.session.on("user_state_changed", lambda ev: states.append(ev.new_state))
    # the first utterance (speech 0.03-2.02 s), muted mid-sentence at 1.2 s
    words = decode_file(AUDIO / "multi_utterance_16k_mono.wav", INPUT_RATE).slice(0.0, 1.2)
    try:
        await sim.start()
        await sim.play(words)
        assert states == ["speaking"]
        # from here the microphone delivers nothing
        turns = sim.voice.tracker.turns
        await wait_until(lambda: turns and turns[-1].outcome != "pending", within=20)
    finally:
        await sim.aclose()
    assert states[:2] == ["speaking", "listening"]
    (turn,) = sim.voice.tracker.turns
    assert turn.turn.transcript and turn.outcome == "completed"
    assert [m.content for m in backend.requests[0].messages] == [turn.turn.transcript]
    assert sim.io.transcript.segments == ["Got it."]


async def test_the_rooms_microphone_is_read_through_the_quiet_fill() -> None:
    """In a room the input is RoomIO's, set by `AgentSession.start(room=...)`: it is wrapped once
    the session has started, so a muted track's missing frames become silence there too."""
    from livekit.agents.voice import io

    from agent.audio_io import QuietFillInput
    from agent.voice_session import VoiceSession

    class Mic(io.AudioInput):
        def __init__(self) -> None:
            super().__init__(label="RoomIO")
            self.queue: asyncio.Queue[rtc.AudioFrame] = asyncio.Queue()

        async def __anext__(self) -> rtc.AudioFrame:
            return await self.queue.get()

    class RoomSession(AgentSession):  # RoomIO, without a LiveKit server: it sets the input in start
        async def start(self, agent, *, room=None, **kwargs):  # type: ignore[no-untyped-def,override]
            if room is not None:
                self.input.audio = mic
            return await super().start(agent, **kwargs)

    mic = Mic()
    brain = create_voice_brain(BrainConfig(_env_file=None), backend=ScriptedBackend([]))  # type: ignore[call-arg]
    session = RoomSession(llm=BrainLLM())
    voice = VoiceSession(settings(), brain=brain, session=session, conversation_id="room")
    try:
        await voice.start(greet=False, room=object())
        audio_in = session.input.audio
        assert isinstance(audio_in, QuietFillInput) and audio_in.source is mic
        mic.queue.put_nowait(rtc.AudioFrame(bytes(640), 16_000, 1, 320))
        await wait_until(lambda: audio_in.filled > 0)  # the session reads it, then silence
    finally:
        await voice.aclose()
        await brain.aclose()


async def test_livekit_chat_messages_take_the_typed_text_path_with_its_limit(vad) -> None:
    """LiveKit's own chat topic (`lk.chat`): the room I/O the worker builds hands its messages to
    the session as a `user.text` is handled (answered as a turn), and one over the typed-text
    limit is refused with a `too_large` error instead of reaching the brain."""
    import io
    from types import SimpleNamespace

    from livekit.agents.voice.room_io import TextInputEvent

    from bridge.protocol import USER_TEXT_MAX_CHARS

    backend = ScriptedBackend([Step(text=["Answer one."]), Step(text=["Answer two."])])
    brain = create_voice_brain(BrainConfig(_env_file=None), backend=backend)  # type: ignore[call-arg]
    events = io.StringIO()
    sim = Simulation(settings(), vad=vad, brain=brain, speed=4.0, conversation_id="chat", events=events)
    try:
        await sim.start()
        options = sim.voice.room_options("user")
        assert options.participant_identity == "user" and options.close_on_disconnect is False
        text_input = options.get_text_input_options()
        assert text_input is not None
        user = SimpleNamespace(identity="user")
        await text_input.text_input_cb(sim.voice.session, TextInputEvent(text="x" * (USER_TEXT_MAX_CHARS + 1), participant=user))  # type: ignore[arg-type]
        await text_input.text_input_cb(sim.voice.session, TextInputEvent(text="what is the weather", participant=user))  # type: ignore[arg-type]
        assert await sim.settle(limit=30)
        assert sim.voice.bridge is not None
        await sim.voice.bridge.flush(2)
    finally:
        await sim.aclose()
    # only the message within the limit reached the brain
    assert [m.content for m in backend.requests[0].messages if m.role == "user"] == ["what is the weather"]
    assert len(backend.requests) == 1
    envelopes = _envelopes(events)
    errors = [e["data"] for e in envelopes if e.get("type") == "error"]
    assert [e["code"] for e in errors] == ["too_large"], errors
    assert str(USER_TEXT_MAX_CHARS + 1) in errors[0]["message"]
    assert any(e.get("type") == "turn.done" and e["data"]["reason"] == "completed" for e in envelopes)

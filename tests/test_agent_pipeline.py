"""The whole voice pipeline on real speech: Silero VAD -> local STT -> brain -> local TTS -> audio.

No room: `agent.simulate.Simulation` gives an `AgentSession` a paced microphone and a simulated
speaker on a shared clock (faster than real time where the behaviour allows). One Silero VAD is
loaded for the module.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
from types import SimpleNamespace
from typing import Any

import pytest

from agent.audio_files import DecodedAudio, decode_file
from agent.latency import LatencyCollector
from agent.simulate import INPUT_RATE, Simulation, synthesize_utterance
from agent.turns import TurnSettings
from agent.worker import load_vad
from brain import (
    ApprovalRequested,
    ApprovalResolved,
    InProcessApprovalGate,
    ToolCall,
    ToolFinished,
    TurnDone,
    create_voice_brain,
)

from .agent_fakes import (
    AUDIO,
    ScriptedBackend,
    Step,
    play_and_settle,
    settings,
    speech_spans,
)
from .faults_kit import PipelineRig


@pytest.fixture(scope="module")
def vad():
    return load_vad(settings())


async def _typed(sim: Simulation, text: str) -> None:
    """The served user types `text` (a `user.text` message through the bridge): acknowledged."""
    bridge = sim.voice.bridge
    assert bridge is not None
    reply = json.loads(await bridge.handle_message("user", json.dumps({"v": 1, "id": "t1", "type": "user.text", "data": {"text": text}})))
    assert reply["type"] == "ack", reply


def _envelopes(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


async def test_full_voice_turn_on_jfk(vad) -> None:
    # the sentence's ~1 s rhetorical pauses are mid-turn (turns.json): endpoint after 1.6 s
    turn = TurnSettings(_env_file=None, min_endpointing_delay=1.6, max_endpointing_delay=3.0)  # type: ignore[call-arg]
    events = io.StringIO()
    sim = Simulation(settings(turn=turn), vad=vad, speed=2.0, conversation_id="jfk", events=events)
    assert await play_and_settle(sim, decode_file(AUDIO / "jfk_16k_mono.wav", INPUT_RATE), limit=40)
    r = sim.result

    heard = " ".join(r.user_turns).lower()
    assert re.search(r"\b(fellow|country|americans?)\b", heard), heard

    # reply audio at the TTS's declared rate, and it played
    assert r.output_rate == sim.tts.sample_rate == 22_050
    assert r.reply_seconds > 1.0
    assert any(s.played > 0.5 for s in sim.io.sink.segments)
    assert all(f.sample_rate == 22_050 for s in sim.io.sink.segments for f in s.frames)

    # latency parts: the brain's first text and the TTS's first audio, for every reply
    replied = [row for row in r.latency if row.reply_text is not None]
    assert replied and all(row.first_text is not None and row.first_audio is not None for row in replied)
    env = _envelopes(events)  # the same numbers reached the bridge, per brain turn
    metrics = [e for e in env if e["type"] == "metrics"]
    assert metrics and all(m["turn"] for m in metrics)
    assert any(isinstance(m["data"].get("first_audio_ms"), int) for m in metrics)
    assert any(e["type"] == "user.transcript" for e in env)

    # end of user speech (the file's reference spans) -> first reply audio, on the simulation's
    # clock: the reply starts after the speaker stopped, not while the sentence goes on
    speech_end = speech_spans("jfk_16k_mono.wav")[-1][1]
    starts = [s.start for s in sim.io.sink.segments if s.played > 0.5]
    assert starts and min(starts) > speech_end, (starts, speech_end)
    # the latency table has the same measure for the answered turn (from livekit's metrics, or
    # the VAD's end of speech where livekit dropped its anchors), and its parts
    answered = [row for row in r.latency if row.e2e is not None]
    assert answered, r.latency
    assert all(row.e2e > 0 and row.first_text is not None for row in answered)


def _reference_turns(name: str, min_pause: float = 0.9) -> list[tuple[float, float]]:  # noqa: D401
    """(start, end) of each reference turn: speech joined across pauses shorter than `min_pause`."""
    turns: list[list[float]] = []
    for a, b in speech_spans(name):
        if turns and a - turns[-1][1] < min_pause:
            turns[-1][1] = b
        else:
            turns.append([a, b])
    return [(a, b) for a, b in turns]


@pytest.mark.slow
async def test_multi_utterance_one_turn_per_utterance_no_premature_reply(vad) -> None:
    name = "multi_utterance_16k_mono.wav"
    # real time: the local STT decodes each utterance in real time too, and needs the slack
    sim = Simulation(settings(), vad=vad, speed=1.0, conversation_id="multi")
    eou_at: list[float] = []
    sim.voice.agent.user_turn_callbacks.append(lambda _: eou_at.append(sim.clock.now()))
    await play_and_settle(sim, decode_file(AUDIO / name, INPUT_RATE), limit=30)

    turns = _reference_turns(name)  # utterances: speech joined across pauses < 0.9 s
    detection_lag = 0.5  # VAD needs a moment to notice that the user speaks again

    def inside_utterance(t: float) -> bool:
        return any(a + detection_lag < t < b for a, b in turns)

    problems: list[str] = []
    # every utterance is answered: a user turn ends in the pause after it (or after the file)
    for i, (_, end) in enumerate(turns):
        next_start = turns[i + 1][0] + detection_lag if i + 1 < len(turns) else end + 30
        if not any(end < t <= next_start for t in eou_at):
            problems.append(f"no user turn ended after the utterance ending at {end:.2f} s")
    # no user turn ends, and no reply is heard starting, while the speaker is mid-utterance
    problems += [f"user turn ended mid-utterance at {t:.2f} s" for t in eou_at if inside_utterance(t)]
    problems += [
        f"reply started mid-utterance at {seg.start:.2f} s"
        for seg in sim.io.sink.segments
        if seg.played >= 0.3 and inside_utterance(seg.start)
    ]
    assert not problems, (problems, eou_at, turns)


@pytest.mark.parametrize(
    ("name", "duration", "speech"),
    [
        # the Opus file decodes, but carries almost no speech-band energy: Silero's speech
        # probability stays under 0.1 on it, so no turn is expected, only a clean run
        ("multi_utterance_16k.opus", 8.06, False),  # (nothing happens: run it at 4x)
        ("multi_utterance_44k_stereo.mp3", 2.53, True),
    ],
)
async def test_other_formats_decode_and_run(vad, name: str, duration: float, speech: bool) -> None:
    audio = decode_file(AUDIO / name, INPUT_RATE)
    assert audio.sample_rate == INPUT_RATE and abs(audio.duration - duration) < 0.05
    sim = Simulation(settings(), vad=vad, speed=2.0 if speech else 4.0, conversation_id=name)
    assert await play_and_settle(sim, audio, limit=30)
    assert sim.io.mic.position >= audio.duration - 0.02  # the whole file reached the session
    if speech:
        assert sim.result.user_turns and all(t.strip() for t in sim.result.user_turns)
        assert sim.result.reply_seconds > 0.5
    else:  # no speech heard: no user turn, no brain turn, nothing said
        assert sim.result.user_turns == [] and sim.result.turns == []
        assert sim.io.sink.segments == [] and sim.result.reply_seconds == 0.0


async def test_plugin_vad_engine_takes_turns_on_real_speech() -> None:
    # TURN_VAD_ENGINE=plugin: livekit-plugins-silero instead of the default native build, same
    # knobs, same pipeline (the other pipeline tests run the default)
    s = settings(turn=TurnSettings(_env_file=None, vad_engine="plugin"))  # type: ignore[call-arg]
    sim = Simulation(s, vad=load_vad(s), speed=2.0, conversation_id="plugin")
    assert await play_and_settle(sim, decode_file(AUDIO / "multi_utterance_44k_stereo.mp3", INPUT_RATE), limit=30)
    session_vad = getattr(sim.session.vad, "inner", sim.session.vad)  # shared with the batch STT
    assert type(session_vad).__module__.startswith("livekit.plugins.silero")
    assert sim.result.user_turns and all(t.strip() for t in sim.result.user_turns)
    assert sim.result.reply_seconds > 0.5


async def _speech(text: str) -> DecodedAudio:
    return await synthesize_utterance(text)


async def test_barge_in_cancels_the_brain_turn_and_stops_the_audio(vad) -> None:
    long_sentence = (
        "Let me tell you a rather long story about tables, chairs and restaurants, "
        "so that there is plenty of time to interrupt me. "
    )
    backend = ScriptedBackend(
        [
            # a long sentence, then a tool that needs approval nobody gives: the turn stays open
            Step(text=[long_sentence], calls=[ToolCall("c1", "book_table", {"restaurant": "Luigi's", "party_size": 2})]),
            Step(text=["Sure."]),
        ]
    )
    brain = create_voice_brain(settings().brain, backend=backend, approvals=InProcessApprovalGate())
    seen: list[object] = []
    brain.subscribe(seen.append)
    sim = Simulation(settings(), vad=vad, brain=brain, speed=2.0, conversation_id="barge")
    first = await _speech("Please reserve a table.")
    second = await _speech("Stop, what's the weather in Paris?")
    try:
        await sim.start()
        await sim.play(first)
        # wait until the reply has been playing for a while, then talk over it
        for _ in range(300):
            if sim.io.sink.current_played() > 1.0:
                break
            await sim.io.mic.play_silence(0.1)
        assert sim.io.sink.segments, "the agent never started speaking"
        await sim.play(second)
        await sim.settle(limit=30)
    finally:
        await sim.aclose()

    first_turn = sim.result.turns[0]
    # the brain turn was cancelled: the approval and the tool were cancelled, the tool never ran
    assert not any(isinstance(e, ToolFinished) and e.status == "ok" for e in seen)
    done = [e for e in seen if isinstance(e, TurnDone) and e.turn_id == first_turn.turn.turn_id]
    assert done and done[0].reason == "interrupted"
    assert any(isinstance(e, ApprovalResolved) and e.outcome == "cancelled" for e in seen)
    assert any(isinstance(e, ToolFinished) and e.status == "cancelled" for e in seen)
    # the reply audio stopped part-way
    seg = sim.io.sink.segments[0]
    assert seg.interrupted and 0 < seg.played < seg.pushed - 0.5
    # the brain keeps only what was heard: a proper prefix of the reply
    assert first_turn.outcome == "interrupted"
    assert first_turn.spoken is not None and long_sentence.startswith(first_turn.spoken.strip())
    assert len(first_turn.spoken.strip()) < len(long_sentence.strip())
    history = brain.history("barge")
    assistant = [m.content for m in history if m.role == "assistant" and m.content]
    assert assistant and assistant[0].strip() == first_turn.spoken.strip()


async def test_client_interrupt_over_the_bridge_cuts_the_playing_reply(vad) -> None:
    """A web client's `user.text` and `agent.interrupt`, through the bridge's inbound path, on a
    real session: the reply playing is cut, its brain turn cancelled, the sender acknowledged."""
    long_sentence = "Here is a long answer about the sea, its tides, its colours and its moods. "
    backend = ScriptedBackend(
        [Step(text=[long_sentence], calls=[ToolCall("c1", "book_table", {"restaurant": "Luigi's", "party_size": 2})])]
    )
    brain = create_voice_brain(settings().brain, backend=backend, approvals=InProcessApprovalGate())
    seen: list[object] = []
    brain.subscribe(seen.append)
    events = io.StringIO()
    sim = Simulation(settings(), vad=vad, brain=brain, speed=4.0, conversation_id="typed", events=events)

    def message(kind: str, mid: str, data: dict | None = None) -> str:
        return json.dumps({"v": 1, "id": mid, "type": kind, "data": data or {}})

    try:
        await sim.start()
        bridge = sim.voice.bridge
        assert bridge is not None
        typed = json.loads(await bridge.handle_message("user", message("user.text", "t1", {"text": "tell me about the sea"})))
        assert typed["type"] == "ack", typed
        for _ in range(300):
            if sim.io.sink.current_played() > 1.0:
                break
            await sim.io.mic.play_silence(0.1)
        assert sim.io.sink.segments, "the agent never started speaking"
        stranger = json.loads(await bridge.handle_message("someone-else", message("agent.interrupt", "x1")))
        assert stranger["type"] == "error" and stranger["data"]["code"] == "forbidden"
        assert not sim.io.sink.segments[0].interrupted  # a stranger cannot cut the agent off
        reply = json.loads(await bridge.handle_message("user", message("agent.interrupt", "i1")))
        assert reply["type"] == "ack" and reply["id"] == "i1", reply
        assert await sim.settle(limit=30)
    finally:
        await sim.aclose()

    seg = sim.io.sink.segments[0]
    assert seg.interrupted and 0 < seg.played < seg.pushed - 0.5
    [turn] = sim.result.turns
    assert turn.outcome == "interrupted"
    assert any(isinstance(e, TurnDone) and e.reason == "interrupted" for e in seen)
    assert any(isinstance(e, ApprovalResolved) and e.outcome == "cancelled" for e in seen)
    done = [e for e in _envelopes(events) if e["type"] == "turn.done"]
    assert [e["data"]["reason"] for e in done] == ["interrupted"]


async def test_turn_cut_off_before_any_audio_is_merged_into_the_next(vad) -> None:
    backend = ScriptedBackend([Step(hang_before=True), Step(text=["Got both of those."])])
    brain = create_voice_brain(settings().brain, backend=backend)
    sim = Simulation(settings(), vad=vad, brain=brain, speed=1.5, conversation_id="merge")
    first = await _speech("Please reserve a table.")
    second = await _speech("What's the weather in Paris?")
    try:
        await sim.start()
        await sim.play(first)
        for _ in range(300):  # the model is thinking (no audio) ...
            # on the committed turn: a preemptive request can come first (the transcript is
            # early), and speech before the commit makes livekit discard it, not merge it
            if backend.requests and sim.result.user_turns:
                break
            await sim.io.mic.play_silence(0.1)
        assert backend.requests and sim.result.user_turns, "the first turn never reached the brain"
        await sim.play(second)  # ... when the user goes on talking
        await sim.settle(limit=30)
    finally:
        await sim.aclose()

    turns = [t for t in sim.result.turns if t.outcome != "discarded"]
    assert turns[0].outcome == "merged"
    assert 0 in backend.closed_early
    merged = turns[1].turn.transcript
    assert merged.startswith(turns[0].user_text) and merged.endswith(turns[1].user_text)
    assert len(merged) > len(turns[1].user_text)
    # the merged turn is answered, in full; the cut-off one said nothing
    assert sim.io.transcript.segments == ["Got both of those."]
    assert len(sim.io.sink.segments) == 1 and not sim.io.sink.segments[0].interrupted
    assert sim.io.sink.segments[0].played == pytest.approx(sim.io.sink.segments[0].pushed)
    assert turns[1].outcome == "completed"
    # the brain's memory holds the merged turn once, not the lost one
    users = [m.content for m in brain.history("merge") if m.role == "user"]
    assert users == [merged]


async def test_ending_the_session_cancels_a_pending_approval_as_session_closed(vad) -> None:
    """`end()` (the served user gone, the inactivity goodbye, a fatal error) cancels pending
    approvals as `system:session_closed` before livekit interrupts the turn waiting for them
    (which reported them cancelled `by: null`, meaning a barge-in)."""
    backend = ScriptedBackend([Step(text=["One moment."], calls=[ToolCall("c1", "book_table", {"restaurant": "Luigi's", "party_size": 2})])])
    brain = create_voice_brain(settings().brain, backend=backend, approvals=InProcessApprovalGate())
    seen: list[object] = []
    brain.subscribe(seen.append)
    sim = Simulation(settings(), vad=vad, brain=brain, speed=4.0, conversation_id="ending", events=io.StringIO())
    try:
        await sim.start()
        await _typed(sim, "book it")
        for _ in range(300):
            if any(isinstance(e, ApprovalRequested) for e in seen):
                break
            await sim.io.mic.play_silence(0.1)
        sim.voice.end("served participant left")
        await asyncio.wait_for(sim.voice.closed.wait(), 10)
    finally:
        await sim.aclose()
    (resolved,) = [e for e in seen if isinstance(e, ApprovalResolved)]
    assert (resolved.outcome, resolved.decided_by) == ("cancelled", "system:session_closed")


@pytest.mark.parametrize("close", ["served participant left", "worker shutdown"])
async def test_a_tool_call_cut_off_by_the_session_closing_says_so(vad, close: str) -> None:
    """A tool still running when the session closes (the user gone; the worker shutting down,
    which closes the session from livekit's side) was reported `tool.finished` `cancelled`
    with `turn interrupted`, and the model was told "the user interrupted", as after a barge-in.
    It says the session closed, as in realtime mode (an async tool, and a plain function, which
    may still complete)."""
    import threading

    from brain import tool
    from brain.voice_brain import TOOL_MAY_HAVE_RUN

    release = threading.Event()

    @tool(timeout=60)
    async def slow_lookup(key: str) -> str:
        """Look something up (slowly)."""
        await asyncio.sleep(60)
        return "found"

    @tool(timeout=60)
    def blocking_lookup(key: str) -> str:
        """Look something up in a blocking library."""
        release.wait(30)
        return "found"

    calls = [ToolCall("c1", "slow_lookup", {"key": "a"}), ToolCall("c2", "blocking_lookup", {"key": "b"})]
    backend = ScriptedBackend([Step(text=["One moment."], calls=calls)])
    brain = create_voice_brain(settings().brain, backend=backend, tools=[slow_lookup, blocking_lookup])
    seen: list[object] = []
    brain.subscribe(seen.append)
    events = io.StringIO()
    sim = Simulation(settings(), vad=vad, brain=brain, speed=4.0, conversation_id="closing", events=events)
    try:
        await sim.start()
        await _typed(sim, "look it up")
        for _ in range(300):  # until both run and "One moment." has played for a while
            if sum(type(e).__name__ == "ToolStarted" for e in seen) == 2 and sim.io.sink.segments \
                    and sim.io.sink.current_played() > 0.3:
                break
            await sim.io.mic.play_silence(0.1)
        if close == "worker shutdown":
            await asyncio.wait_for(sim.session.aclose(), 30)  # as livekit's job shutdown does
        else:
            sim.voice.end(close)
            await asyncio.wait_for(sim.voice.closed.wait(), 10)
    finally:
        release.set()
        await sim.aclose()
    finished = {e.call_id: (e.status, e.error) for e in seen if isinstance(e, ToolFinished)}
    assert finished == {"c1": ("cancelled", "session closed"),
                        "c2": ("cancelled", f"session closed; {TOOL_MAY_HAVE_RUN}")}, finished
    told = {m.tool_call_id: m.content for m in brain.history("closing") if m.role == "tool"}
    assert told["c1"] == "CANCELLED: the session ended before this finished.", told
    assert told["c2"].startswith("INTERRUPTED: the session ended while this was running;"), told
    out = _envelopes(events)
    assert [e["data"]["reason"] for e in out if e["type"] == "turn.done"] == ["interrupted"]
    assert (out[-1]["type"], out[-1]["data"]["reason"]) == (
        "session.ended", "shutdown" if close == "worker shutdown" else "participant_left")


class _AnchorsDropped:
    """The session as a latency collector sees it when livekit leaves the end of speech out of
    a turn's metrics (and so computes no `e2e_latency`): the same events, those metrics removed."""

    DROPPED = {
        "user": ("stopped_speaking_at", "started_speaking_at", "end_of_turn_delay", "transcription_delay"),
        "assistant": ("e2e_latency",),
    }

    def __init__(self, session: Any) -> None:
        self.session = session

    def on(self, name: str, fn: Any) -> None:
        if name != "conversation_item_added":
            self.session.on(name, fn)
            return

        def without_anchors(event: Any) -> None:
            item = event.item
            dropped = self.DROPPED.get(getattr(item, "role", None) or "", ())
            metrics = {k: v for k, v in (getattr(item, "metrics", None) or {}).items() if k not in dropped}
            fn(SimpleNamespace(item=SimpleNamespace(
                type=getattr(item, "type", None), role=getattr(item, "role", None), text_content=item.text_content,
                metrics=metrics, interrupted=getattr(item, "interrupted", False))))

        self.session.on(name, without_anchors)


async def test_latency_rows_on_a_real_session(vad) -> None:
    """The latency row of a spoken turn: its reply starts when the speaker got its first frame,
    after the end of speech; where livekit drops its end-of-speech anchor, the collector's own
    reading (the VAD event) is the moment livekit uses (it took the VAD's silence off a time
    livekit had already dated back, so e2e read 0.5 s too long). Speed 4: at 8 the VAD's silence
    (audio time) taken off wall time puts the end of speech before its start and livekit drops
    its anchors itself. A typed turn after it has no speech, so no e2e (it was measured from the
    spoken turn's end of speech, seconds earlier), in the table and in its `metrics` envelope."""
    async with PipelineRig(vad, speed=4.0) as rig:
        sim = rig.sim
        fallback = LatencyCollector()
        fallback.attach(_AnchorsDropped(sim.session))
        livekit: list[dict[str, Any]] = []
        sim.session.on("conversation_item_added", lambda ev: livekit.append(dict(ev.item.metrics or {})))
        await rig.turn()
        bridge = sim.voice.bridge
        assert bridge is not None
        typed_in = {"v": 1, "id": "t1", "type": "user.text", "data": {"text": "and tomorrow?"}}
        await bridge.handle_message("user", json.dumps(typed_in))
        assert await sim.settle(quiet=1.5, limit=30)
        assert await bridge.flush(2)
    user, reply = livekit[:2]
    spoken, typed = sim.voice.latency.rows
    first, second = sim.io.sink.segments
    assert spoken.e2e == reply["e2e_latency"] and spoken.reply_started_at == first.started_at
    assert spoken.e2e > 0 and user["stopped_speaking_at"] < first.started_at
    assert typed.user_text == "and tomorrow?" and typed.reply_started_at == second.started_at
    assert (typed.e2e, typed.end_of_turn, typed.transcription, typed.user_stopped_at) == (None, None, None, None)
    assert typed.first_text is not None and typed.first_audio is not None
    metrics = {e["turn"]: e["data"] for e in rig.transport.envelopes if e["type"] == "metrics"}
    assert [metrics[r.turn_id]["e2e_ms"] for r in (spoken, typed)] == [round(spoken.e2e * 1000), None]
    alone, typed_alone = fallback.rows
    assert alone.user_stopped_at == pytest.approx(user["stopped_speaking_at"], abs=0.01)
    assert alone.e2e == pytest.approx(reply["e2e_latency"], abs=0.01)
    assert typed_alone.e2e is None

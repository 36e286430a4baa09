"""Load on the bridge: 20 clients x 200 control messages while the agent streams a reply.

The reply comes from a real `VoiceBrain` (a backend streaming one word per millisecond) through
the bridge to a `MemoryTransport`; meanwhile 20 clients (the served participant, allowed
identities and strangers) send a mix of valid and invalid messages as fast as the loop lets
them. Every message must get exactly its own answer, with the right code, and the reply must
arrive complete and in order. How much the load delays the reply's envelopes is printed (and
recorded in BENCHMARKS.md), not asserted: timing on a shared machine is not a test.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from brain import BrainConfig, ModelRequest, TextChunk, TextDelta, Turn, create_voice_brain
from bridge import BridgeOptions, MemoryTransport, attach_event_bridge

SERVED = "user"
ALLOWED = [f"ops-{i}" for i in range(1, 5)]
STRANGERS = [f"guest-{i}" for i in range(1, 16)]
CLIENTS = [SERVED, *ALLOWED, *STRANGERS]
MESSAGES_PER_CLIENT = 200
MIN_DELTAS = 300
CONV = "room-load"

# message kinds, and what each kind of sender must get back
KINDS = ["user.text", "agent.interrupt", "bad_json", "hitl.unknown", "old_version", "unknown_type", "too_large"]


def _expected(kind: str, sender: str) -> str:
    """`ack` or the error code the protocol prescribes (docs/protocol.md)."""
    may_control = sender == SERVED or sender in ALLOWED
    return {
        "user.text": "ack" if sender == SERVED else "forbidden",  # typed words are the served user's
        "agent.interrupt": "ack" if may_control else "forbidden",
        "bad_json": "malformed_json",
        "hitl.unknown": "unknown_request" if may_control else "forbidden",
        "old_version": "unsupported_version",
        "unknown_type": "unknown_type",
        "too_large": "too_large",
    }[kind]


def _message(kind: str, mid: str) -> str:
    if kind == "user.text":
        return json.dumps({"v": 1, "id": mid, "type": "user.text", "data": {"text": "what about tomorrow?"}})
    if kind == "agent.interrupt":
        return json.dumps({"v": 1, "id": mid, "type": "agent.interrupt"})
    if kind == "bad_json":
        return '{"v": 1, "id": "' + mid + '", "type": '
    if kind == "hitl.unknown":
        return json.dumps({"v": 1, "id": mid, "type": "hitl.respond",
                           "data": {"request_id": f"hitl_{mid}", "decision": "approve"}})
    if kind == "old_version":
        return json.dumps({"v": 0, "id": mid, "type": "agent.interrupt"})
    if kind == "unknown_type":
        return json.dumps({"v": 1, "id": mid, "type": "agent.dance"})
    if kind == "too_large":
        return json.dumps({"v": 1, "id": mid, "type": "user.text", "data": {"text": "x" * 9000}})
    raise ValueError(kind)


class StreamingBackend:
    """A model that streams one word per millisecond, at least `MIN_DELTAS`, until told to stop."""

    name = "streaming"

    def __init__(self, keep_going: asyncio.Event | None = None) -> None:
        self.keep_going = keep_going
        self.words: list[str] = []

    async def stream(self, request: ModelRequest) -> AsyncIterator[Any]:
        i = 0
        while i < MIN_DELTAS or (self.keep_going is not None and self.keep_going.is_set()):
            word = f"w{i} "
            self.words.append(word)
            yield TextChunk(word)
            i += 1
            await asyncio.sleep(0.001)

    async def aclose(self) -> None:
        return None


@dataclass
class Controls:
    """The agent side of `agent.interrupt` / `user.text`: records, does not stop the reply."""

    interrupts: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    async def interrupt(self, sender: str) -> None:
        self.interrupts.append(sender)

    async def user_text(self, sender: str, text: str) -> None:
        self.texts.append(sender)


@dataclass
class Run:
    envelopes: list[dict[str, Any]]
    latencies_ms: list[float]
    reply_text: str
    replies: dict[str, list[tuple[str, str, dict[str, Any]]]]
    controls: Controls
    answered: list[float] = field(default_factory=list)
    """When each client message was answered (for the printed rate only)."""
    during_reply: list[bool] = field(default_factory=list)
    """Per answer: had the reply started (a delta emitted) and not yet finished?"""


async def _run(with_load: bool) -> Run:
    keep_going = asyncio.Event()
    backend = StreamingBackend(keep_going)
    brain = create_voice_brain(BrainConfig(_env_file=None, tools=[]), backend=backend)  # type: ignore[call-arg]
    emitted: list[tuple[int, float]] = []  # (reply length after this delta, when it was emitted)
    sent_len = 0
    latencies: list[float] = []
    envelopes: list[dict[str, Any]] = []

    def on_event(ev: Any) -> None:
        if isinstance(ev, TextDelta):
            talking.set()
            emitted.append(((emitted[-1][0] if emitted else 0) + len(ev.text), time.perf_counter()))

    def on_send(envelope_json: str) -> None:
        nonlocal sent_len
        now = time.perf_counter()
        env = json.loads(envelope_json)
        envelopes.append(env)
        if env["type"] == "agent.text":
            before = sent_len
            sent_len += len(env["data"]["delta"])
            latencies.extend((now - t) * 1000 for n, t in emitted if before < n <= sent_len)

    brain.subscribe(on_event)
    transport = MemoryTransport(CLIENTS, on_send=on_send)
    controls = Controls()
    bridge = attach_event_bridge(
        transport, brain=brain, agent_name="assistant", served_identity=SERVED,
        allowed_identities=ALLOWED, controls=controls, conversation_id=CONV, options=BridgeOptions(),
    )
    replies: dict[str, list[tuple[str, str, dict[str, Any]]]] = {c: [] for c in CLIENTS}
    answered: list[float] = []
    during_reply: list[bool] = []
    talking = asyncio.Event()
    reply_finished = False

    async def client(index: int, identity: str) -> None:
        for i in range(MESSAGES_PER_CLIENT):
            kind = KINDS[(i + index) % len(KINDS)]
            mid = f"{identity}.{i}"
            answer = await transport.deliver(identity, _message(kind, mid))
            answered.append(time.perf_counter())
            during_reply.append(bool(emitted) and not reply_finished)
            replies[identity].append((kind, mid, json.loads(answer)))
            await asyncio.sleep(0)  # each RPC arrives on its own

    async def speak() -> str:
        nonlocal reply_finished
        parts = [d async for d in brain.stream_reply(Turn("tell me a long story", CONV, user_id=SERVED))]
        reply_finished = True
        return "".join(parts)

    if with_load:
        keep_going.set()
        reply_task = asyncio.create_task(speak())
        await talking.wait()  # the agent is talking: now the clients start
        await asyncio.gather(*(client(i, c) for i, c in enumerate(CLIENTS)))
        keep_going.clear()  # and it goes on talking until the last one was answered
        reply_text = await reply_task
    else:
        reply_text = await speak()
    assert await bridge.flush(10.0)
    await bridge.aclose()
    return Run(envelopes, latencies, reply_text, replies, controls, answered, during_reply)


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def _check_reply(run: Run) -> None:
    seqs = [e["seq"] for e in run.envelopes]
    assert seqs == list(range(1, len(seqs) + 1))
    deltas = [e["data"]["delta"] for e in run.envelopes if e["type"] == "agent.text"]
    assert "".join(deltas) == run.reply_text  # complete, in order, nothing duplicated
    done = [e for e in run.envelopes if e["type"] == "turn.done"]
    assert len(done) == 1 and done[0]["data"]["reason"] == "completed"
    assert run.envelopes[-1]["type"] == "turn.done"


async def test_every_sender_is_answered_and_the_reply_arrives_whole() -> None:
    quiet = await _run(with_load=False)
    _check_reply(quiet)

    loaded = await _run(with_load=True)
    _check_reply(loaded)
    # every message was answered while the agent was talking (by event order, not the clock)
    assert loaded.during_reply and all(loaded.during_reply)

    controlled = 0
    for identity, answers in loaded.replies.items():
        assert len(answers) == MESSAGES_PER_CLIENT  # exactly one answer per message
        for kind, mid, reply in answers:
            want = _expected(kind, identity)
            got = reply["type"] if reply["type"] == "ack" else reply["data"]["code"]
            assert got == want, (identity, kind, reply)
            # the answer is to that message: its id echoed (a message refused unread has none)
            assert reply["id"] == (None if kind in ("bad_json", "too_large") else mid), (identity, kind, reply)
            assert "seq" not in reply  # replies are not envelopes
            controlled += want == "ack"
    # the controls ran once per accepted message, for the senders who may control
    assert len(loaded.controls.interrupts) + len(loaded.controls.texts) == controlled
    assert set(loaded.controls.interrupts) <= {SERVED, *ALLOWED} and set(loaded.controls.texts) == {SERVED}
    # nothing but the reply went out: client replies never became envelopes
    assert {e["type"] for e in loaded.envelopes} == {"session.hello", "agent.text", "turn.done"}

    q50, q99 = _pct(quiet.latencies_ms, 50), _pct(quiet.latencies_ms, 99)
    l50, l99 = _pct(loaded.latencies_ms, 50), _pct(loaded.latencies_ms, 99)
    span = max(loaded.answered) - min(loaded.answered)
    print(
        f"\nload: {len(loaded.answered)} messages answered in {span * 1000:.0f} ms "
        f"({len(loaded.answered) / span:.0f} per s) while the reply streamed"
    )
    print(
        f"\nbridge reply latency (delta emitted -> envelope sent), {len(CLIENTS)} clients x "
        f"{MESSAGES_PER_CLIENT} messages: quiet p50 {q50:.3f} ms p99 {q99:.3f} ms "
        f"({len(quiet.latencies_ms)} deltas); under load p50 {l50:.3f} ms p99 {l99:.3f} ms "
        f"({len(loaded.latencies_ms)} deltas); ratio p50 {l50 / q50:.2f}x p99 {l99 / q99:.2f}x"
    )

"""`python -m bridge schema` rewrites bridge/protocol_v1.schema.json from the pydantic models.
`python -m bridge example` prints a real offline session as JSON lines: envelopes the agent
publishes (`"dir": "out"`), and what one client sends and gets back (`"dir": "in"` / `"reply"`).
"""

from __future__ import annotations

import asyncio
import io
import json
import sys

from .protocol import SCHEMA_PATH, schema_text


async def example_session() -> list[dict[str, object]]:
    from brain import BrainConfig, InProcessApprovalGate, Turn, create_voice_brain

    from .event_bridge import attach_event_bridge
    from .transport import JsonLinesTransport

    class Controls:
        async def interrupt(self, sender: str) -> None:
            return None

        async def user_text(self, sender: str, text: str) -> None:
            return None

    lines: list[dict[str, object]] = []
    out = io.StringIO()
    transport = JsonLinesTransport(out, participants=["user-1"])
    gate = InProcessApprovalGate()
    brain = create_voice_brain(BrainConfig(_env_file=None), approvals=gate)  # type: ignore[call-arg]
    bridge = attach_event_bridge(transport, brain=brain, agent_name="assistant", served_identity="user-1",
                                 conversation_id="room-42", controls=Controls())

    def take_output() -> list[dict[str, object]]:
        got = [{"dir": "out", "msg": json.loads(x)} for x in out.getvalue().splitlines()]
        out.seek(0)
        out.truncate()
        return got

    async def client_sends(sender: str, message: dict[str, object]) -> None:
        await bridge.flush(5)
        lines.extend(take_output())
        lines.append({"dir": "in", "from": sender, "msg": message})
        reply = await transport.deliver(sender, json.dumps(message))
        lines.append({"dir": "reply", "to": sender, "msg": json.loads(reply)})

    text = "book a table for two"
    bridge.publish_transcript("book a table", final=False)  # the agent's transcripts precede their turn
    bridge.publish_transcript(text, final=True)
    turn = asyncio.create_task(_consume(brain.stream_reply(Turn(text, "room-42", turn_id="turn_1", user_id="user-1"))))
    while not gate.pending("room-42"):  # noqa: ASYNC110 - waiting on the brain's task
        await asyncio.sleep(0.001)
    rid = gate.pending("room-42")[0].request_id
    await client_sends("intruder", {"v": 1, "id": "x1", "type": "hitl.respond",
                                    "data": {"request_id": rid, "decision": "approve"}})
    # a client that lost envelopes (a seq gap) asks which approvals are open
    await client_sends("user-1", {"v": 1, "id": "s1", "type": "session.sync", "data": {}})
    await client_sends("user-1", {"v": 1, "id": "m1", "type": "hitl.respond",
                                  "data": {"request_id": rid, "decision": "approve",
                                           "arguments": {"restaurant": "Luigi's", "party_size": 3, "time": "20:00"}}})
    await turn
    bridge.publish_metrics("turn_1", {"e2e_ms": 790, "end_of_turn_ms": 560, "transcription_ms": 180,
                                      "first_text_ms": 420, "first_audio_ms": 150, "interrupted": False})
    await client_sends("user-1", {"v": 1, "id": "m2", "type": "hitl.respond",
                                  "data": {"request_id": rid, "decision": "reject"}})
    await bridge.aclose()
    lines.extend(take_output())
    return lines


async def _consume(gen: object) -> None:
    async for _ in gen:  # type: ignore[attr-defined]
        pass


USAGE = """usage: python -m bridge schema | example

  schema   rewrite bridge/protocol_v1.schema.json from the protocol's pydantic models
  example  print an offline session through the real bridge as JSON lines (docs/protocol.md)"""


def main(argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    if argv[:1] == ["schema"]:
        SCHEMA_PATH.write_text(schema_text())
        print(f"wrote {SCHEMA_PATH}")
        return 0
    if argv[:1] == ["example"]:
        for line in asyncio.run(example_session()):
            print(json.dumps(line, ensure_ascii=False))
        return 0
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

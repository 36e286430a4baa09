"""Provider chains (`openai,local`) in the whole pipeline: the real livekit-plugins-openai against
the fake OpenAI server of tests/faults_kit.py, the local providers behind it.

A primary that stalls is given up after FALLBACK_ATTEMPT_TIMEOUT and the next provider answers,
before the agent's own stall guard (AGENT_PROVIDER_TIMEOUT) gives up on the whole chain.
"""

from __future__ import annotations

import pytest

from agent.worker import load_vad

from .agent_fakes import settings
from .faults_kit import ANSWER, STT_APOLOGY, PipelineRig

pytestmark = pytest.mark.timeout(90)

LIMIT = 60.0
"""Audio seconds a turn may take to go quiet (a hang guard: the rig plays 8x faster than real time)."""


@pytest.fixture(scope="module")
def vad():
    return load_vad(settings())


def _errors(obs) -> list[dict]:
    return [e["data"] for e in obs.of_type("error")]


async def test_stalled_stt_primary_hands_the_utterance_to_the_next_provider(vad) -> None:
    """STT_PROVIDERS=openai,local and openai takes the upload and never answers: after the attempt
    deadline the local STT transcribes the utterance and the turn is answered; the agent's stall
    guard (same timeout) waits for the chain instead of apologising for words it lost."""
    async with PipelineRig(vad, speed=8.0, stt_providers="openai,local") as rig:
        rig.arm("stt", "stall")
        first = await rig.turn(limit=LIMIT)
        second = await rig.turn(limit=LIMIT)
        stt_requests = rig.server.stt_requests
    assert stt_requests >= 1  # openai was asked first
    transcripts = [e["data"]["text"] for e in first.of_type("user.transcript") if e["data"].get("final", True)]
    assert transcripts and all(t.strip() for t in transcripts), transcripts  # ...the local STT heard the words
    assert not any(STT_APOLOGY.lower() in said.lower() for said in first.heard), first.heard
    assert any(ANSWER.lower() in said.lower() for said in first.heard), first.heard
    errors = _errors(first)
    assert [(e["code"], e["fatal"]) for e in errors] == [("timeout", False)], errors
    assert errors[0]["message"].startswith("openai failed (no transcript within"), errors
    assert "the next provider in the chain takes over" in errors[0]["message"]
    assert [e["data"]["reason"] for e in first.of_type("turn.done")] == ["completed"]
    assert any(ANSWER.lower() in said.lower() for said in second.heard), second.heard

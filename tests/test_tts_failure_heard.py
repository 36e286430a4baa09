"""A reply whose TTS stalls or fails after some of its audio played: the brain remembers, and
clients are told, only what livekit counts as heard, not the whole reply (the user heard the
first sentence and the apology). The real livekit-plugins-openai TTS against the fake OpenAI
server of tests/faults_kit.py, in the whole pipeline."""

from __future__ import annotations

import pytest

from agent.latency import format_table
from agent.worker import load_vad
from tests.fakes.openai_server import text_reply

from .agent_fakes import settings
from .faults_kit import PipelineRig

pytestmark = pytest.mark.timeout(90)

SENTENCES = ["It is sunny in Paris today.", "The wind is calm and the sky is clear.", "Enjoy your afternoon walk by the river."]
REPLY = " ".join(SENTENCES)


@pytest.mark.parametrize("fault", ["stall", "mid_stream"])
async def test_a_reply_whose_audio_failed_is_remembered_as_heard(fault: str, caplog: pytest.LogCaptureFixture) -> None:
    """... and the inactivity goodbye that follows is not taken for that turn's reply in the
    latency table (livekit records no reply whose audio failed: the goodbye was paired with the
    user's turn, its e2e the inactivity timeout)."""
    idle = {"inactivity_timeout": 2.0, "goodbye": "Talk to you later."}
    async with PipelineRig(load_vad(settings()), speed=8.0, tts_providers="openai", agent=idle) as rig:
        rig.server.push(text_reply(REPLY))
        rig.server.tts_faults.extend(["ok", fault])  # the first sentence is said, the second fails
        first = await rig.turn(limit=60.0)
        said = [m.content for m in rig.brain.history("faults") if m.role == "assistant"]
        for _ in range(300):  # until the goodbye has closed the session (at most 30 s of audio)
            if rig.sim.voice.closed.is_set():
                break
            await rig.sim.io.mic.play_silence(0.1)
        assert rig.sim.voice.closed.is_set() and rig.sim.io.transcript.segments[-1] == "Talk to you later."
    [row] = rig.sim.voice.latency.rows
    assert row.reply_text != "Talk to you later."
    if fault == "mid_stream":  # livekit records none of a reply whose audio broke off (a stall: what played)
        assert (row.reply_text, row.e2e, row.no_reply) == (None, None, "tts_failed")
        assert format_table([row]).splitlines()[1].endswith("(no reply: its audio failed)")
    assert first.audio_seconds > 0.5  # the first sentence (and the apology) played
    [done] = [e["data"] for e in first.of_type("turn.done")]
    assert done["reason"] == "error"
    heard = done["text"]
    assert heard != REPLY and REPLY.startswith(heard), heard  # what played, not the whole reply
    assert said == ([heard] if heard else []), said  # the brain remembers the same
    assert [e["data"]["code"] for e in first.of_type("error")] == ["timeout" if fault == "stall" else "unavailable"]
    if fault == "stall":  # one line says so; livekit's traceback of the failed TTS node is not repeated
        assert "TTS stalled: audio stopped for" in caplog.text
        assert "Error in _tts_inference_task" not in caplog.text



async def test_a_greeting_whose_audio_failed_is_not_remembered_whole() -> None:
    """A greeting said as is (AGENT_GREETING_MODE=say) whose TTS fails after its first sentence
    (the user hears that and the apology): the brain kept the whole greeting, so the model took
    the user's next words for an answer to questions nobody heard. It keeps only what livekit
    counts as heard (none: livekit ends the failed speech before recording any of it)."""
    async with PipelineRig(load_vad(settings()), speed=8.0, tts_providers="openai") as rig:
        voice = rig.sim.voice
        voice.settings = voice.settings.model_copy(update={"greeting_mode": "say", "greeting": REPLY})
        rig.server.tts_faults.extend(["ok", "mid_stream"])
        handle = voice.greet()
        await handle
        assert not handle.interrupted  # it ended on the TTS failure
        said = [m.content for m in rig.brain.history("faults") if m.role == "assistant"]
    assert all(REPLY.startswith(s) and s != REPLY for s in said), said

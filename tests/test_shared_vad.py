"""A batch STT shares the session's VAD pass (one Silero stream per session, not two)."""

from __future__ import annotations

from typing import Any

from livekit.agents import vad as lk_vad

from agent.audio_files import decode_file
from agent.shared_vad import SegmentedSTT, SharedVAD
from agent.simulate import INPUT_RATE, Simulation
from agent.worker import load_vad

from .agent_fakes import AUDIO, play_and_settle, settings


class CountingVAD(lk_vad.VAD):
    """The real Silero VAD, counting the streams opened on it."""

    def __init__(self, inner: lk_vad.VAD) -> None:
        super().__init__(capabilities=inner.capabilities)
        self.inner = inner
        self.streams = 0

    def stream(self) -> Any:
        self.streams += 1
        return self.inner.stream()


async def test_batch_stt_uses_the_sessions_vad_segments() -> None:
    s = settings()
    counting = CountingVAD(load_vad(s))
    sim = Simulation(s, vad=counting, speed=2.0, conversation_id="shared-vad")
    assert isinstance(sim.session.vad, SharedVAD) and isinstance(sim.session.stt, SegmentedSTT)
    assert await play_and_settle(sim, decode_file(AUDIO / "multi_utterance_44k_stereo.mp3", INPUT_RATE), limit=30)
    # the local STT transcribed what the session's VAD cut, and the brain answered
    assert sim.result.user_turns and all(t.strip() for t in sim.result.user_turns)
    assert sim.result.reply_seconds > 0.5
    # livekit's StreamAdapter would have opened a second Silero stream over the same audio
    assert counting.streams == 1

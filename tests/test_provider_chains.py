"""Provider chains (`openai,local`) in the whole pipeline: the real livekit-plugins-openai against
the fake OpenAI server of tests/faults_kit.py, the local providers behind it.

A primary that stalls is given up after FALLBACK_ATTEMPT_TIMEOUT and the next provider answers,
before the agent's own stall guard (AGENT_PROVIDER_TIMEOUT) gives up on the whole chain; a TTS
primary that fails after its first audio hands the sentence it was saying, and the rest of the
reply, to the next provider.
"""

from __future__ import annotations

import asyncio

import pytest

from agent.worker import load_vad
from providers import LocalSTT
from tests.fakes.openai_server import text_reply

from .agent_fakes import settings
from .faults_kit import ANSWER, APOLOGY, STT_APOLOGY, TIMEOUT, PipelineRig, local_seconds, pcm_tone

pytestmark = pytest.mark.timeout(90)

LIMIT = 60.0
"""Audio seconds a turn may take to go quiet (a hang guard: the rig plays 8x faster than real time)."""


@pytest.fixture(scope="module")
def vad():
    return load_vad(settings())


def _tone_seconds(text: str) -> float:
    """The length of the fake's audio for `text` (tests/faults_kit.py `FakeOpenAI._speech`)."""
    return len(pcm_tone(min(0.8, 0.02 * len(text) + 0.2))) / 2 / 24_000


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


async def test_stalled_tts_primary_hands_the_reply_to_the_next_provider(vad) -> None:
    """TTS_PROVIDERS=openai,local and openai's speech request stalls after its headers: after the
    attempt deadline the local voice says the reply, instead of the apology the agent's stall
    guard (same timeout) would play if it gave up on the chain first."""
    async with PipelineRig(vad, speed=8.0, tts_providers="openai,local") as rig:
        rig.arm("tts", "stall")
        first = await rig.turn(limit=LIMIT)
        tts_requests = list(rig.server.tts_requests)
    assert tts_requests[0] == ANSWER  # openai was asked first
    assert not any(APOLOGY.lower() in said.lower() for said in first.heard), first.heard
    assert any(ANSWER.lower() in said.lower() for said in first.heard), first.heard
    # the whole reply in the local voice (the fake's audio for it would be at most 0.8 s)
    assert first.audio_seconds >= 0.9 * await local_seconds(ANSWER), first.audio_seconds
    errors = _errors(first)
    assert [(e["code"], e["fatal"]) for e in errors] == [("timeout", False)], errors
    assert errors[0]["message"] == f"openai failed (no audio within {TIMEOUT:g} s); the next provider in the chain takes over"
    assert [e["data"]["reason"] for e in first.of_type("turn.done")] == ["completed"]


SENTENCES = ["It is sunny in Paris today.", "The wind is calm and the sky is clear.", "Enjoy your afternoon walk by the river."]


@pytest.mark.parametrize("fault", ["disconnect", "mid_stream"])
async def test_tts_primary_failing_after_its_first_audio_leaves_no_sentence_unsaid(vad, fault: str) -> None:
    """TTS_PROVIDERS=openai,local, a three-sentence reply: openai says the first sentence, then its
    connection for the second drops (before any of that sentence's audio, or a third of the way
    in). The local voice says the second sentence whole, and the third is said too (by openai if
    it recovered meanwhile, else locally); clients hear that openai failed."""
    async with PipelineRig(vad, speed=8.0, tts_providers="openai,local") as rig:
        rig.server.push(text_reply(" ".join(SENTENCES)))
        rig.server.tts_faults.extend(["ok", fault])
        first = await rig.turn(limit=LIMIT)
        tts_requests = list(rig.server.tts_requests)
    assert tts_requests[:2] == SENTENCES[:2]  # openai said the first sentence, and failed the second
    local = [await local_seconds(s) for s in SENTENCES]
    tone = [_tone_seconds(s) for s in SENTENCES]
    partial = tone[1] / 3 if fault == "mid_stream" else 0.0
    least = tone[0] + partial + local[1] + min(tone[2], local[2])
    # everything that was said: dropping the rest of the reply leaves tone[0] + partial (< 1.1 s)
    assert first.audio_seconds >= least - 0.2, (first.audio_seconds, least)
    assert not any(APOLOGY.lower() in said.lower() for said in first.heard), first.heard
    errors = _errors(first)
    assert [(e["code"], e["fatal"]) for e in errors] == [("unavailable", False)], errors
    assert errors[0]["message"].startswith("openai failed") and "next provider" in errors[0]["message"], errors
    dones = [e["data"] for e in first.of_type("turn.done")]
    assert [d["reason"] for d in dones] == ["completed"] and dones[0]["text"] == " ".join(SENTENCES), dones


class _FailingSTT:
    """Built lazily: a batch STT that always fails and counts its attempts."""

    @staticmethod
    def make():  # type: ignore[no-untyped-def]
        from livekit.agents import APIConnectionError, stt

        class FailingSTT(stt.STT):
            def __init__(self) -> None:
                super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
                self.attempts = 0
                self.closed = False

            async def _recognize_impl(self, buffer, *, language=None, conn_options=None):  # type: ignore[no-untyped-def]
                self.attempts += 1
                raise APIConnectionError("down")

            async def aclose(self) -> None:
                self.closed = True

        return FailingSTT()


async def test_a_batch_chain_tries_each_provider_its_retries_once(vad) -> None:
    """livekit's VAD adapter around each provider retried the provider's own retries:
    (retries + 1)^2 attempts, so the chain outlasted the budget the agent's guard allows it."""
    from livekit import rtc
    from livekit.agents import APIConnectionError

    from providers.chains import BatchFallbackSTT

    first, second = _FailingSTT.make(), _FailingSTT.make()
    chain = BatchFallbackSTT([first, second], vad=vad, attempt_timeout=5, max_retry_per_stt=1, retry_interval=0.01)
    frame = rtc.AudioFrame(b"\x00\x00" * 1600, 16000, 1, 1600)
    with pytest.raises(APIConnectionError):
        await chain.recognize([frame])
    # each provider: (1 + 1 retry) in the foreground, the same again in livekit's background probe
    probes = [s.recovering_recognize_task for s in chain._status if s.recovering_recognize_task is not None]
    await asyncio.gather(*probes, return_exceptions=True)
    assert (first.attempts, second.attempts) == (4, 4)
    await chain.aclose()
    assert first.closed and second.closed  # the chain owns its providers


@pytest.mark.parametrize("chain", ["local,openai", "openai,local"])
async def test_closing_a_chain_closes_its_local_recogniser(vad, chain: str) -> None:
    """The local recogniser inside a chain kept its decoder process after the job closed it."""
    from providers import SpeechSettings, create_stt

    engine = create_stt(SpeechSettings(STT_PROVIDERS=chain, OPENAI_API_KEY="sk-placeholder-0000"), vad=vad)
    engine.prewarm()
    local = next(m.inner for m in engine._members if isinstance(m.inner, LocalSTT))  # type: ignore[attr-defined]
    await engine.aclose()
    with pytest.raises(Exception, match="the local STT is closed"):
        local._pool.decode(b"\x00\x00" * 1600)

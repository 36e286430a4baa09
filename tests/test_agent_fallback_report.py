"""A provider failing inside a fallback chain: the turn goes on with the next provider, and the
client gets an `error` envelope naming the failed provider (livekit's adapter says nothing)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from livekit.agents import APIConnectionError, tts
from livekit.agents.tts.fallback_adapter import AvailabilityChangedEvent
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions

from agent.voice_session import VoiceSession, build_agent_session
from agent.worker import load_vad
from brain import create_voice_brain
from bridge import MemoryTransport
from providers import LocalSTT, LocalTTS
from providers.provider_errors import tag_provider
from providers.tts_chains import SentenceFallbackTTS, StreamingSentenceFallbackTTS

from .agent_fakes import settings


class BrokenTTS(tts.TTS):
    def __init__(self) -> None:
        super().__init__(capabilities=tts.TTSCapabilities(streaming=False), sample_rate=22050, num_channels=1)

    def synthesize(self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS) -> tts.ChunkedStream:
        raise APIConnectionError("down")


async def test_fallback_hand_over_reaches_the_client_as_an_error_envelope() -> None:
    s = settings()
    broken, local = BrokenTTS(), LocalTTS()
    tag_provider(broken, "elevenlabs")
    chain = tts.FallbackAdapter([broken, local])
    session = build_agent_session(s, vad=load_vad(s), stt=LocalSTT(), tts=chain)
    voice = VoiceSession(s, brain=create_voice_brain(s.brain), session=session, conversation_id="fb")
    transport = MemoryTransport(participants=["user"])
    bridge = voice.attach_bridge(transport, served_identity="user")
    assert bridge is not None

    chain.emit("tts_availability_changed", AvailabilityChangedEvent(tts=broken, available=False))
    chain.emit("tts_availability_changed", AvailabilityChangedEvent(tts=broken, available=True))
    await bridge.aclose()

    errors = [json.loads(x.envelope_json) for x in transport.sent]
    errors = [e for e in errors if e["type"] == "error"]
    assert len(errors) == 1  # recovery is logged, not reported as an error
    assert errors[0]["data"]["code"] == "unavailable"
    assert errors[0]["data"]["fatal"] is False
    assert "elevenlabs" in errors[0]["data"]["message"]
    assert [r.provider for r in voice.errors] == ["elevenlabs"]
    await session.aclose()


TAKES_OVER = "the next provider in the chain takes over"


@pytest.mark.parametrize(
    ("chain_class", "hand_over"),
    [
        # each sentence goes to the next provider whole: a reply the failed one began is finished
        (SentenceFallbackTTS, TAKES_OVER),
        (StreamingSentenceFallbackTTS, TAKES_OVER),
        # livekit's own adapter (passed in code) drops the rest of a reply the failed provider had begun
        (tts.FallbackAdapter, f"{TAKES_OVER} (a reply it had begun to speak is not finished)"),
    ],
)
async def test_the_report_says_what_the_chain_does_after_a_provider_failed(chain_class: Any, hand_over: str) -> None:
    s = settings()
    broken, local = BrokenTTS(), LocalTTS()
    tag_provider(broken, "elevenlabs")
    chain = chain_class([broken, local])
    session = build_agent_session(s, vad=load_vad(s), stt=LocalSTT(), tts=chain)
    voice = VoiceSession(s, brain=create_voice_brain(s.brain), session=session, conversation_id="fb")
    try:
        chain.emit("tts_availability_changed", AvailabilityChangedEvent(tts=broken, available=False))
        chain.emit("tts_availability_changed", AvailabilityChangedEvent(tts=local, available=False))
    finally:
        await session.aclose()
        await chain.aclose()
    assert [(r.provider, r.message) for r in voice.errors] == [
        ("elevenlabs", f"elevenlabs failed; {hand_over}"),
        ("local", "local failed; it is the last provider in the chain"),  # no next one to promise
    ]

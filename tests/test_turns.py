"""Turn settings -> livekit kwargs mapping (agent/turns.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.turns import TurnSettings, session_turn_kwargs, vad_load_kwargs

AUDIO = Path(__file__).resolve().parents[1].parent / "shared" / "audio"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("TURN_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_env_overrides_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TURN_MODE", "stt")
    monkeypatch.setenv("TURN_MIN_ENDPOINTING_DELAY", "0.25")
    monkeypatch.setenv("TURN_MAX_ENDPOINTING_DELAY", "2")
    monkeypatch.setenv("TURN_PREEMPTIVE_GENERATION", "false")
    monkeypatch.setenv("TURN_MIN_INTERRUPTION_WORDS", "2")
    monkeypatch.setenv("TURN_VAD_MIN_SILENCE_DURATION", "0.8")
    s = TurnSettings()
    assert s.mode == "stt"
    assert s.min_endpointing_delay == 0.25
    assert s.max_endpointing_delay == 2.0
    assert s.preemptive_generation is False
    assert s.min_interruption_words == 2
    assert s.vad_min_silence_duration == 0.8


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TURN_MODE=vad\nTURN_VAD_ACTIVATION_THRESHOLD=0.6\nOTHER=1\n")
    s = TurnSettings()
    assert s.vad_activation_threshold == 0.6


def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TURN_MODE", "telepathy")
    with pytest.raises(ValidationError, match="mode"):
        TurnSettings()


def test_max_delay_below_min_delay_is_rejected() -> None:
    with pytest.raises(ValidationError, match="TURN_MAX_ENDPOINTING_DELAY"):
        TurnSettings(min_endpointing_delay=2.0, max_endpointing_delay=1.0)


def test_vad_kwargs_load_a_silero_vad() -> None:
    from livekit.plugins import silero

    s = TurnSettings(vad_min_silence_duration=0.7, vad_activation_threshold=0.4)
    kwargs = vad_load_kwargs(s)
    assert kwargs["min_silence_duration"] == 0.7
    assert kwargs["activation_threshold"] == 0.4
    vad = silero.VAD.load(**kwargs)  # every key is one the plugin accepts
    assert vad.min_silence_duration == pytest.approx(0.7)  # type: ignore[attr-defined]


def test_vad_mode_maps_onto_turn_handling() -> None:
    s = TurnSettings(
        mode="vad",
        min_endpointing_delay=0.4,
        max_endpointing_delay=2.0,
        min_interruption_duration=0.6,
        min_interruption_words=1,
        preemptive_generation=False,
    )
    th = session_turn_kwargs(s, stt_streaming=False)["turn_handling"]
    assert th["turn_detection"] == "vad"
    assert th["endpointing"]["min_delay"] == 0.4
    assert th["endpointing"]["max_delay"] == 2.0
    assert th["interruption"]["min_duration"] == 0.6
    assert th["interruption"]["min_words"] == 1
    assert th["interruption"]["mode"] == "vad"
    assert th["preemptive_generation"]["enabled"] is False


def test_stt_mode_needs_a_streaming_stt(caplog: pytest.LogCaptureFixture) -> None:
    s = TurnSettings(mode="stt")
    assert session_turn_kwargs(s, stt_streaming=True)["turn_handling"]["turn_detection"] == "stt"
    with caplog.at_level(logging.WARNING, logger="agent.turns"):
        th = session_turn_kwargs(s, stt_streaming=False)["turn_handling"]
    assert th["turn_detection"] == "vad"
    assert "falling back" in caplog.text


async def test_session_accepts_the_kwargs() -> None:
    """The mapping is what AgentSession takes, without deprecation shims."""
    from livekit.agents import AgentSession
    from livekit.plugins import silero

    for mode in ("vad", "eou"):
        s = TurnSettings(mode=mode)  # type: ignore[arg-type]
        session = AgentSession(
            vad=silero.VAD.load(**vad_load_kwargs(s)), **session_turn_kwargs(s, stt_streaming=False)
        )
        opts = session.options.turn_handling
        assert opts["endpointing"]["min_delay"] == s.min_endpointing_delay
        assert opts["preemptive_generation"]["enabled"] is s.preemptive_generation

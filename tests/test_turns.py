"""Turn settings -> livekit kwargs mapping (agent/turns.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from livekit import rtc
from pydantic import ValidationError

from agent.turns import MODE_DEFAULTS, TurnSettings, session_turn_kwargs, vad_load_kwargs

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
    (tmp_path / ".env").write_text(
        "TURN_MODE=EOU\nTURN_VAD_ACTIVATION_THRESHOLD=0.6\nTURN_MIN_ENDPOINTING_DELAY=\nOTHER=1\n"
    )
    s = TurnSettings()
    assert s.mode == "eou"
    assert s.vad_activation_threshold == 0.6
    # empty (as in .env.example) = the mode's default
    assert s.min_endpointing_delay == MODE_DEFAULTS["eou"]["min_endpointing_delay"]
    assert (
        TurnSettings(mode="vad").min_endpointing_delay
        == MODE_DEFAULTS["vad"]["min_endpointing_delay"]
    )


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


# -- adaptive end-of-turn detector on real audio ------------------------------------------


def test_policy_requirement_falls_to_zero_at_max_silence() -> None:
    from agent.turn_detector import EouPolicy

    p = EouPolicy(fast_threshold=0.8, slow_threshold=0.5, max_silence=0.8)
    assert p.required_probability(0.2) == pytest.approx(0.8)
    assert p.required_probability(0.5) < p.required_probability(0.3)
    assert p.required_probability(0.79) >= 0.5
    assert p.turn_ended(0.0, 0.8)
    assert not p.turn_ended(0.79, 0.2)
    with pytest.raises(ValueError):
        EouPolicy(fast_threshold=0.5, slow_threshold=0.8)
    with pytest.raises(ValueError):
        EouPolicy(max_silence=0.1)


def _wav(name: str) -> tuple[np.ndarray, int]:
    import wave

    with wave.open(str(AUDIO / name)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16), w.getframerate()


def _frames(pcm: np.ndarray, sr: int, start: float, end: float) -> list[rtc.AudioFrame]:
    spf = sr // 50
    a, b = int(start * sr), int(end * sr)
    return [
        rtc.AudioFrame(pcm[i : i + spf].tobytes(), sr, 1, len(pcm[i : i + spf]))
        for i in range(a, b - spf + 1, spf)
    ]


def _silence(sr: int, seconds: float) -> list[rtc.AudioFrame]:
    return _frames(np.zeros(int(sr * seconds) + sr, dtype=np.int16), sr, 0.0, seconds)


async def _until(cond: Callable[[], bool]) -> None:
    """Wait (no deadline assertion: the suite's timeout guards hangs) for a model look."""
    while not cond():  # noqa: ASYNC110 - the condition flips in the detector's own task
        await asyncio.sleep(0.01)


async def test_detector_takes_the_turn_at_a_clear_turn_end() -> None:
    """multi_utterance, turn end at 46.78 s: the model is confident, no cap needed."""
    from agent.turn_detector import AdaptiveEouDetector, EouPolicy

    pcm, sr = _wav("multi_utterance_16k_mono.wav")
    stream = AdaptiveEouDetector(EouPolicy(0.75, 0.6, 0.75)).stream()
    try:
        for f in _frames(pcm, sr, 39.8, 46.78 + 0.25):  # the whole turn, then 0.25 s of pause
            stream.push_audio(f)
        fut = stream.predict()
        await _until(fut.done)  # no more audio: only the model can end the turn
        ev = fut.result()
        assert stream.looks >= 1
        assert ev.end_of_turn_probability >= 0.75
        assert ev.inference_duration is not None
    finally:
        await stream.aclose()


async def test_detector_holds_the_turn_through_a_mid_sentence_pause() -> None:
    """multi_utterance, pause at 19.58 s (0.77 s, mid-turn): the model says 'not done'; the
    turn is held until speech resumes, fed faster than real time."""
    from agent.turn_detector import AdaptiveEouDetector, EouPolicy

    pcm, sr = _wav("multi_utterance_16k_mono.wav")
    policy = EouPolicy(0.75, 0.6, 0.75)
    stream = AdaptiveEouDetector(policy).stream()
    try:
        for f in _frames(pcm, sr, 16.3, 19.58 + 0.22):
            stream.push_audio(f)
        fut = stream.predict()
        await _until(lambda: stream.looks >= 1)
        assert not fut.done()
        assert stream.last_probability < 0.6
        for f in _frames(pcm, sr, 19.58 + 0.22, 19.58 + 0.6):  # rest of the pause, fast
            stream.push_audio(f)
            await asyncio.sleep(0)
        await _until(lambda: stream.looks >= 2)
        assert not fut.done()
        stream.cancel_inference()  # what the session does when the VAD hears speech again
        assert fut.result().end_of_turn_probability == 0.0
    finally:
        await stream.aclose()


async def test_detector_caps_the_wait_at_max_silence_on_48k_input() -> None:
    """The cut-off last word of multi_utterance (60.0 s) never looks finished to the model;
    the turn is still taken once the pause reaches max_silence, measured on the audio."""
    from agent.turn_detector import AdaptiveEouDetector, EouPolicy

    pcm, sr = _wav("multi_utterance_16k_mono.wav")
    up = np.repeat(pcm[int(51.1 * sr) :], 3)  # 48 kHz, as from a room
    policy = EouPolicy(0.75, 0.6, 0.75)
    stream = AdaptiveEouDetector(policy).stream()
    try:
        for f in _frames(up, 48000, 0.0, len(up) / 48000):
            stream.push_audio(f)
        silence = _silence(48000, 1.0)
        for f in silence[:11]:  # 0.22 s
            stream.push_audio(f)
        fut = stream.predict()
        await _until(lambda: stream.looks >= 1)
        assert not fut.done()
        pushed = 11
        for f in silence[11:]:
            stream.push_audio(f)
            pushed += 1
            if fut.done():
                break
        assert fut.done()
        assert policy.max_silence <= pushed * 0.02 <= policy.max_silence + 0.1
        assert fut.result().end_of_turn_probability < 0.6
    finally:
        await stream.aclose()


async def test_eou_mode_wires_the_detector() -> None:
    from agent.turn_detector import AdaptiveEouDetector

    s = TurnSettings(mode="eou", eou_fast_threshold=0.9)
    td = session_turn_kwargs(s, stt_streaming=False)["turn_handling"]["turn_detection"]
    assert isinstance(td, AdaptiveEouDetector)
    assert td.policy.fast_threshold == 0.9
    assert s.vad_min_silence_duration == 0.3  # eou mode's own defaults
    with pytest.raises(ValidationError, match="TURN_VAD_MIN_SILENCE_DURATION"):
        TurnSettings(mode="eou", vad_min_silence_duration=0.2)


def test_benchmark_scoring_against_the_reference_turns() -> None:
    """benchmarks/_turn_scoring.py: premature / missed / latency per turn end."""
    import json
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from _turn_scoring import score, turns_from_reference

    ref = json.loads((AUDIO / "turns.json").read_text())["multi_utterance_16k_mono.wav"]
    turns = turns_from_reference(ref["speech"], ref["turn_ends"])
    assert [(t.start, t.end) for t in turns][:2] == [(0.032, 6.85), (9.344, 38.91)]
    # a reply in the 0.77 s mid-turn pause, one just after the user resumed (still inside the
    # turn), nothing between 38.91 and the next turn at 39.904, two replies after 46.78
    s = score([2.7, 7.5, 20.0, 20.4, 40.0, 47.3, 47.9, 50.5, 61.0], turns, input_end=64.0)
    assert s.premature_at == [2.7, 20.0, 20.4, 40.0]
    assert s.missed_at == [38.91]
    assert s.per_turn_end == pytest.approx([0.65, None, 0.52, 0.55, 1.0])
    assert s.extra == 1
    assert s.median == pytest.approx(0.6)

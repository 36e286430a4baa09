"""`python -m agent simulate` as a user runs it: offline default, no key, no server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_simulate_offline_default_writes_a_playable_wav(tmp_path) -> None:
    out = tmp_path / "reply.wav"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "OPENAI_", "GEMINI_", "GOOGLE_"))}
    env.update({"BRAIN_BACKEND": "offline", "STT_PROVIDERS": "local", "TTS_PROVIDERS": "local"})
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "simulate", "--speed", "3", "--out", str(out)],
        cwd=tmp_path,  # no .env from the checkout
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    stdout = proc.stdout

    # a playable WAV with the agent's voice in it
    with wave.open(str(out)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 22_050)
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    assert len(samples) > 22_050 * 5 and np.abs(samples).max() > 1000

    # the bridge's envelopes as JSON lines: the demo shows a tool call and an approval
    envelopes = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    types = [e["type"] for e in envelopes]
    assert types[0] == "session.hello"
    for expected in ("user.transcript", "tool.started", "hitl.request", "hitl.resolved", "turn.done", "metrics"):
        assert expected in types, (expected, types)
    assert [e["seq"] for e in envelopes] == list(range(1, len(envelopes) + 1))

    # the transcript of each turn and the latency table
    assert "user : " in stdout and "agent: " in stdout
    assert "approval requested: Book a table" in stdout
    assert "e2e ms" in stdout and "wrote " in stdout
    # at --speed 3 the table says its figures are not audio-time latencies
    assert "at --speed 3 these figures mix wall-clock and audio time" in stdout


def test_long_runs_report_progress_short_ones_do_not(capsys) -> None:
    from agent.simulate import _progress

    assert _progress(20.0, speed=2.0) is None  # 10 s of wall time: nothing to report
    report = _progress(60.0, speed=1.0)
    assert report is not None
    for position in range(0, 61):
        report(float(position))
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("simulate:") and "/ 60.0 s of audio" in lines[0]
    assert len(lines) == 10  # every 6 s of the 60


async def test_bridge_off_says_why_no_event_lines_are_printed(tmp_path) -> None:
    import io

    from agent.simulate import build_parser, run
    from bridge.config import BridgeConfig

    from .agent_fakes import settings

    s = settings(bridge=BridgeConfig(_env_file=None, enabled=False))  # type: ignore[call-arg]
    args = build_parser().parse_args(["--say", "hello there", "--speed", "4", "--no-greeting", "--tail", "15", "--out", str(tmp_path / "r.wav")])
    out = io.StringIO()
    assert await run(args, settings=s, out=out) == 0
    text = out.getvalue()
    assert "BRIDGE_ENABLED=false: no event lines are printed" in text
    assert "e2e ms" in text and "at --speed 4 these figures mix wall-clock and audio time" in text
    assert not [line for line in text.splitlines() if line.startswith("{")]
    assert "user : " in text and (tmp_path / "r.wav").exists()


class _SlowSTT:
    """Built lazily (livekit imports): a batch STT that takes `delay` wall seconds per segment,
    answering nothing for segments under `min_seconds` (noise), else the segment's number."""

    @staticmethod
    def make(delay: float, min_seconds: float = 0.0):  # type: ignore[no-untyped-def]
        import asyncio

        from livekit import rtc
        from livekit.agents import stt

        class SlowSTT(stt.STT):
            def __init__(self) -> None:
                super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
                self.count = 0

            async def _recognize_impl(self, buffer, *, language=None, conn_options=None):  # type: ignore[no-untyped-def]
                frames = buffer if isinstance(buffer, list) else [buffer]
                seconds = rtc.combine_audio_frames(frames).duration
                await asyncio.sleep(delay)
                self.count += 1
                text = f"segment {self.count}" if seconds >= min_seconds else ""
                return stt.SpeechEvent(type=stt.SpeechEventType.FINAL_TRANSCRIPT,
                                       alternatives=[stt.SpeechData(language="en", text=text)])

        return SlowSTT()


async def test_simulation_waits_for_every_segment_a_slow_recogniser_still_holds() -> None:
    """At 10x, JFK's four segments end within about a second of wall time while each takes this
    recogniser 0.6 s: the first turn's reply must not end the run while the others are queued."""
    from agent.audio_files import decode_file
    from agent.simulate import INPUT_RATE, Simulation
    from agent.worker import load_vad
    from tests.agent_fakes import AUDIO, play_and_settle, settings

    s = settings()
    engine = _SlowSTT.make(delay=0.6)
    sim = Simulation(s, vad=load_vad(s), stt=engine, speed=10.0, conversation_id="slow")
    audio = decode_file(AUDIO / "jfk_16k_mono.wav", INPUT_RATE)
    assert await play_and_settle(sim, audio, limit=120)
    assert engine.count >= 3
    heard = " ".join(sim.result.user_turns)
    assert f"segment {engine.count}" in heard, sim.result.user_turns  # the last one too


async def test_a_segment_recognised_as_nothing_does_not_keep_the_simulation_busy() -> None:
    from agent.audio_files import decode_file
    from agent.simulate import INPUT_RATE, Simulation
    from agent.worker import load_vad
    from tests.agent_fakes import AUDIO, settings

    s = settings()
    engine = _SlowSTT.make(delay=0.05, min_seconds=60.0)  # every segment comes back empty
    sim = Simulation(s, vad=load_vad(s), stt=engine, speed=10.0, conversation_id="noise")
    audio = decode_file(AUDIO / "jfk_16k_mono.wav", INPUT_RATE)
    try:
        await sim.start()
        await sim.play(audio)
        assert await sim.settle(limit=30)  # was: busy until the limit ("still busy 60 s ...")
    finally:
        await sim.aclose()
    assert engine.count >= 1 and sim.result.user_turns == []


def _flaky_stt(failures: int):  # type: ignore[no-untyped-def]
    """A batch STT whose first `failures` recognitions fail (then answers "book a table")."""
    from livekit.agents import APIConnectionError, stt

    class FlakySTT(stt.STT):
        def __init__(self) -> None:
            super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
            self.calls = 0

        async def _recognize_impl(self, buffer, *, language=None, conn_options=None):  # type: ignore[no-untyped-def]
            self.calls += 1
            if self.calls <= failures:
                raise APIConnectionError("recogniser hiccup", retryable=True)
            return stt.SpeechEvent(type=stt.SpeechEventType.FINAL_TRANSCRIPT,
                                   alternatives=[stt.SpeechData(language="en", text="book a table")])

    return FlakySTT()


async def test_a_retried_recognition_sends_one_error_envelope_at_most() -> None:
    """AGENT_PROVIDER_MAX_RETRY=1: an attempt that is retried is logged, not reported; clients
    get one `error` for a request whose every attempt failed, and none when the retry works."""
    import io
    import json

    from agent.audio_files import decode_file
    from agent.simulate import INPUT_RATE, Simulation
    from agent.worker import load_vad
    from tests.agent_fakes import AUDIO, play_and_settle, settings

    audio = decode_file(AUDIO / "jfk_16k_mono.wav", INPUT_RATE)
    audio = type(audio)(audio.pcm[: int(2.3 * INPUT_RATE) * 2], INPUT_RATE, INPUT_RATE, 1)  # the first words
    outcomes = {}
    for failures in (1, 2):
        s = settings(provider_max_retry=1, provider_retry_interval=0.01)
        events = io.StringIO()
        engine = _flaky_stt(failures)
        sim = Simulation(s, vad=load_vad(s), stt=engine, speed=4.0, conversation_id=f"flaky{failures}", events=events)
        assert await play_and_settle(sim, audio, limit=30)
        envelopes = [json.loads(x) for x in events.getvalue().splitlines() if x.startswith("{")]
        outcomes[failures] = (engine.calls, [e for e in envelopes if e["type"] == "error"], sim.result.user_turns)
    calls, errors, turns = outcomes[1]
    assert calls == 2 and errors == [] and turns == ["book a table"]  # the retry worked: nothing to report
    calls, errors, _ = outcomes[2]
    assert calls == 2 and len(errors) == 1, errors  # both attempts failed: one report
    assert errors[0]["data"]["code"] == "unavailable" and "recogniser hiccup" in errors[0]["data"]["message"]


async def test_no_user_turn_is_a_failed_run(tmp_path) -> None:
    """A run that heard and answered nothing exited 0, so a script could not tell."""
    import io
    import wave

    from agent.simulate import build_parser, run

    from .agent_fakes import settings

    silence = tmp_path / "silence.wav"
    with wave.open(str(silence), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x00" * 16000 * 2)
    args = build_parser().parse_args([str(silence), "--speed", "10", "--no-greeting", "--tail", "1", "--out", str(tmp_path / "r.wav")])
    out = io.StringIO()
    assert await run(args, settings=settings(), out=out) == 1
    assert "simulate: no user turn was detected" in out.getvalue()
    with wave.open(str(tmp_path / "r.wav"), "rb") as w:  # the WAV is written at the TTS's rate anyway
        rate = w.getframerate()
    assert f"of reply audio on a {w.getnframes() / rate:.1f} s timeline, {rate} Hz mono)" in out.getvalue()


async def test_a_report_override_naming_no_tool_is_refused_before_anything_runs(tmp_path) -> None:
    """The worker refuses it at start-up; simulate ignored it, so a run looked fine while that
    tool would have stayed at its own (wider) report level."""
    import io

    from agent.simulate import build_parser, run
    from brain.errors import ConfigError
    from bridge.config import BridgeConfig

    from .agent_fakes import settings

    s = settings(bridge=BridgeConfig(_env_file=None, report_overrides={"book_tabel": "none"}))  # type: ignore[call-arg]
    args = build_parser().parse_args(["--say", "hello", "--out", str(tmp_path / "r.wav")])
    out = io.StringIO()
    with pytest.raises(ConfigError, match="BRIDGE_REPORT_OVERRIDES names 'book_tabel'"):
        await run(args, settings=s, out=out)
    assert out.getvalue() == "" and not (tmp_path / "r.wav").exists()

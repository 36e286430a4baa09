"""The worker refuses to start on a configuration every job would fail on, and says why."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.worker import define_voice_agent
from brain import BrainConfig
from bridge.config import BridgeConfig
from providers import SpeechSettings
from providers.realtime import RealtimeSettings

from .agent_fakes import settings

ROOT = Path(__file__).resolve().parents[1]
SECRET = "sk-test-do-not-print-0123456789"


def _speech(**values: str) -> SpeechSettings:
    return SpeechSettings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"speech": _speech(STT_PROVIDERS="whisper")}, ["STT_PROVIDERS=whisper", "valid:", "local", "openai"]),
        ({"speech": _speech(TTS_PROVIDERS="local,openai")}, ["TTS_PROVIDERS=local,openai", "missing OPENAI_API_KEY"]),
        ({"brain": BrainConfig(_env_file=None, backend="openai")}, ["OPENAI_API_KEY", "BRAIN_BACKEND=openai"]),  # type: ignore[call-arg]
        ({"brain": BrainConfig(_env_file=None, backend="nowhere.module:make")}, ["nowhere.module", "BRAIN_BACKEND"]),  # type: ignore[call-arg]
        ({"brain": BrainConfig(_env_file=None, tools=["nowhere.tools"])}, ["nowhere.tools", "BRAIN_TOOLS"]),  # type: ignore[call-arg]
        ({"brain": BrainConfig(_env_file=None, tools=["tests.fakes.brain_plugins", "tests.fakes.brain_plugins_clash"])},  # type: ignore[call-arg]
         ["'shout' is defined in both", "BRAIN_TOOLS"]),
        ({"bridge": BridgeConfig(_env_file=None, report_overrides="get_weather=full,book_tabel=none")},  # type: ignore[call-arg]
         ["BRIDGE_REPORT_OVERRIDES names 'book_tabel'", "tools: get_weather, book_table"]),
    ],
)
def test_bad_configuration_fails_when_the_worker_is_defined(overrides: dict, expected: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        define_voice_agent(settings(**overrides))
    for part in expected:
        assert part in str(info.value), str(info.value)


def test_realtime_mode_checks_the_realtime_provider(monkeypatch) -> None:
    for var in ("OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    realtime = RealtimeSettings(_env_file=None)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        define_voice_agent(settings(mode="realtime", realtime=realtime))
    define_voice_agent(settings(mode="realtime", realtime=realtime), check=False)  # opt-out: builds


def test_realtime_mode_does_not_need_the_unused_brain_models_key(monkeypatch) -> None:
    """In realtime mode the realtime model answers: BRAIN_BACKEND=openai next to gemini-live
    needs no OPENAI_API_KEY, and the worker's brain keeps its tools on the offline backend."""
    for var in ("OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    realtime = RealtimeSettings(_env_file=None, REALTIME_PROVIDER="gemini-live", GEMINI_API_KEY="g-placeholder")  # type: ignore[call-arg]
    s = settings(mode="realtime", realtime=realtime, brain=BrainConfig(_env_file=None, backend="openai"))  # type: ignore[call-arg]
    define_voice_agent(s)  # no OPENAI_API_KEY error
    brain = s.effective_brain()
    assert brain.backend == "offline" and brain.tools == s.brain.tools
    pipeline = settings(brain=BrainConfig(_env_file=None, backend="openai"))  # type: ignore[call-arg]
    assert pipeline.effective_brain() is pipeline.brain


def test_offline_default_passes_and_a_good_chain_with_keys_too() -> None:
    define_voice_agent(settings())
    good = _speech(STT_PROVIDERS="openai,local", TTS_PROVIDERS="openai,local", OPENAI_API_KEY=SECRET)
    define_voice_agent(settings(speech=good))


def test_cli_start_exits_2_naming_the_problem_without_secrets(tmp_path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LIVEKIT_URL": "ws://127.0.0.1:1",
        "LIVEKIT_API_KEY": "devkey",
        "LIVEKIT_API_SECRET": SECRET,
        "TTS_PROVIDERS": "elevenlabs",
        "STT_PROVIDERS": "deepgram-nope",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "start"], cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "deepgram-nope" in proc.stderr and "STT_PROVIDERS" in proc.stderr
    assert SECRET not in proc.stderr + proc.stdout

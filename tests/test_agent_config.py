"""AgentSettings (env / .env, nested package settings, masking) and `doctor`."""

from __future__ import annotations

import io
import json
import re

import pytest
from pydantic import ValidationError

from agent.config import AgentSettings
from agent.doctor import doctor_command
from brain import ConfigError

SECRET = "sk-test-THIS-MUST-NOT-APPEAR-123"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No .env from the checkout, no LiveKit / model variables from the machine."""
    monkeypatch.chdir(tmp_path)
    for var in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET", "OPENAI_API_KEY", "AGENT_NAME",
                "BRAIN_BACKEND", "STT_PROVIDERS", "TTS_PROVIDERS", "TURN_MODE"):
        monkeypatch.delenv(var, raising=False)


def test_defaults_are_offline_and_need_no_key() -> None:
    s = AgentSettings()
    assert s.name == "voice-agent" and s.http_port == 8081 and s.greeting_mode == "say"
    assert s.brain.backend == "offline"
    assert s.speech.stt_providers == ["local"] and s.speech.tts_providers == ["local"]
    assert s.turn.mode == "vad" and s.bridge.enabled


def test_env_and_dotenv_are_read(monkeypatch, tmp_path) -> None:
    (tmp_path / ".env").write_text("AGENT_GREETING_MODE=generate\nAGENT_INACTIVITY_TIMEOUT=12\nBRAIN_HITL_TIMEOUT=9\n")
    monkeypatch.setenv("AGENT_NAME", "concierge")
    monkeypatch.setenv("LIVEKIT_URL", "wss://example.livekit.cloud")
    monkeypatch.setenv("TURN_MIN_ENDPOINTING_DELAY", "0.4")
    s = AgentSettings()
    assert (s.name, s.greeting_mode, s.inactivity_timeout) == ("concierge", "generate", 12.0)
    assert s.livekit_url == "wss://example.livekit.cloud"
    assert s.brain.hitl_timeout == 9.0  # nested: each package reads its own variables
    assert s.turn.min_endpointing_delay == 0.4


def test_bad_values_name_the_field(monkeypatch) -> None:
    monkeypatch.setenv("AGENT_GREETING_MODE", "shout")
    with pytest.raises(ValidationError, match="greeting_mode"):
        AgentSettings()


def test_connecting_commands_name_missing_livekit_variables(monkeypatch) -> None:
    monkeypatch.setenv("LIVEKIT_URL", "ws://localhost:7880")
    with pytest.raises(ConfigError) as err:
        AgentSettings().require_livekit()
    assert str(err.value).split(":", 1)[-1].strip().startswith("LIVEKIT_API_KEY, LIVEKIT_API_SECRET not set")
    monkeypatch.setenv("LIVEKIT_API_KEY", "devkey")
    monkeypatch.setenv("LIVEKIT_API_SECRET", SECRET)
    assert AgentSettings().require_livekit() == ("ws://localhost:7880", "devkey", SECRET)


def test_masked_configuration_hides_secrets(monkeypatch) -> None:
    monkeypatch.setenv("LIVEKIT_API_SECRET", SECRET)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    masked = AgentSettings().masked()
    assert set(masked) == {"agent", "brain", "speech", "turn", "bridge", "realtime"}
    dumped = json.dumps(masked, default=str)
    assert SECRET not in dumped
    assert masked["agent"]["livekit_api_secret"] == "***"
    assert masked["brain"]["openai_api_key"] == "***"
    assert masked["speech"]["openai_api_key"] == "***"
    assert masked["realtime"]["openai_api_key"] == "***"


def test_doctor_prints_providers_and_masked_config(monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    out = io.StringIO()
    assert doctor_command([], out=out) == 0
    text = out.getvalue()
    assert SECRET not in text
    assert re.search(r"\* stt +local +ok", text) and re.search(r"\* tts +local +ok", text)
    assert re.search(r"\* llm +offline +ok", text)
    assert re.search(r"  realtime +openai-realtime +ok", text)  # configured (key), not chosen
    assert "[agent]" in text and "[brain]" in text and "[turn]" in text
    assert 'openai_api_key = "***"' in text

    out = io.StringIO()
    doctor_command(["--json"], out=out)
    data = json.loads(out.getvalue())
    chosen = {(r["kind"], r["name"]) for r in data["providers"] if r["chosen"]}
    assert chosen == {("stt", "local"), ("tts", "local"), ("llm", "offline"), ("tools", "brain.example_tools")}
    assert data["mode"] == "pipeline"
    assert SECRET not in out.getvalue()


def test_doctor_hides_passwords_inside_urls(monkeypatch) -> None:
    """Keys are masked by name; a password inside LIVEKIT_URL or a base URL by its shape."""
    monkeypatch.setenv("LIVEKIT_URL", "wss://lkuser:lkpassSECRET@lk.example")
    monkeypatch.setenv("OPENAI_BASE_URL", "https://user:pwSECRETurl@proxy.example/v1")
    for argv in ([], ["--json"]):
        out = io.StringIO()
        doctor_command(argv, out=out)
        text = out.getvalue()
        assert "SECRET" not in text
        assert "wss://lkuser:" in text and "@lk.example" in text and "https://user:" in text


def test_doctor_checks_the_brains_tool_modules(monkeypatch) -> None:
    monkeypatch.setenv("BRAIN_TOOLS", "no_such_tools_module")
    out = io.StringIO()
    assert doctor_command(["--json"], out=out) == 1  # start would fail: say so now
    data = json.loads(out.getvalue())
    assert data["ok"] is False  # the same verdict as the exit code and GET /providers
    (row,) = [r for r in data["providers"] if r["kind"] == "tools"]
    assert row["chosen"] and not row["installed"]
    assert "cannot import tool module 'no_such_tools_module' (BRAIN_TOOLS)" in row["reason"]


@pytest.mark.parametrize(
    ("env", "name", "reason"),
    [
        ({"BRAIN_BACKEND": "tests.fakes.brain_plugins:no_such_factory"}, "tests.fakes.brain_plugins:no_such_factory",
         "'tests.fakes.brain_plugins' has no callable 'no_such_factory' (BRAIN_BACKEND)"),
        ({"BRAIN_TOOLS": "tests.fakes.brain_plugins,tests.fakes.brain_plugins_clash"}, "tests.fakes.brain_plugins_clash",
         "tool 'shout' is defined in both 'tests.fakes.brain_plugins' and 'tests.fakes.brain_plugins_clash' (BRAIN_TOOLS)"),
        ({"BRIDGE_REPORT_OVERRIDES": "get_wether=none"}, "BRIDGE_REPORT_OVERRIDES",
         "BRIDGE_REPORT_OVERRIDES names 'get_wether', which no BRAIN_TOOLS module defines"),
    ],
)
def test_doctor_fails_where_the_worker_would_refuse_to_start(monkeypatch, env: dict, name: str, reason: str) -> None:
    """A missing factory, two tool modules sharing a name, an override of no tool: `doctor` said ok."""
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    out = io.StringIO()
    assert doctor_command(["--json"], out=out) == 1
    data = json.loads(out.getvalue())
    (row,) = [r for r in data["providers"] if r["name"] == name]
    assert data["ok"] is False and row["chosen"] and not row["configured"]
    assert reason in row["reason"]


def test_doctor_blames_a_tool_module_that_does_not_import_on_its_own_row_only(monkeypatch) -> None:
    """The name-clash check of a later module re-imported the earlier one: a healthy module got
    the missing module's error (and was reported unusable)."""
    monkeypatch.setenv("BRAIN_TOOLS", "no_such_tools_module,tests.fakes.brain_plugins")
    out = io.StringIO()
    assert doctor_command(["--json"], out=out) == 1
    rows = {r["name"]: r for r in json.loads(out.getvalue())["providers"] if r["kind"] == "tools"}
    assert not rows["no_such_tools_module"]["configured"]
    good = rows["tests.fakes.brain_plugins"]
    assert good["configured"] and good["reason"] == "shout, convert", good


def test_doctor_fails_when_a_chosen_provider_is_unusable(monkeypatch) -> None:
    monkeypatch.setenv("STT_PROVIDERS", "openai")  # no OPENAI_API_KEY
    out = io.StringIO()
    assert doctor_command([], out=out) == 1
    assert "OPENAI_API_KEY" in out.getvalue()


def test_doctor_shows_each_chosen_providers_effective_options(monkeypatch) -> None:
    """Defaults included (nobody set LOCAL_STT_EARLY), by variable name, keys masked."""
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("STT_PROVIDERS", "openai,local")
    monkeypatch.setenv("LOCAL_STT_DECODERS", "2")
    out = io.StringIO()
    assert doctor_command(["--json"], out=out) == 0
    assert json.loads(out.getvalue())["ok"] is True
    options = json.loads(out.getvalue())["provider_options"]
    assert set(options) == {"stt openai", "stt local", "tts local"}
    assert options["stt local"]["LOCAL_STT_EARLY"] is True and options["stt local"]["LOCAL_STT_DECODERS"] == 2
    assert options["stt openai"]["OPENAI_API_KEY"] == "***"
    out = io.StringIO()
    doctor_command([], out=out)
    text = out.getvalue()
    assert "stt local (chosen):" in text and "  LOCAL_STT_EARLY = true" in text
    assert SECRET not in text

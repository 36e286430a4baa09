"""RealtimeSettings and create_realtime_model: names, keys, turn detection, no network."""

from __future__ import annotations

from pathlib import Path

import pytest

from providers import realtime as rt
from providers.errors import ProviderConfigError
from providers.provider_errors import provider_name
from providers.realtime import RealtimeSettings, create_realtime_model

_ENV = (
    "REALTIME_PROVIDER", "REALTIME_MODEL", "REALTIME_VOICE", "REALTIME_TURN_DETECTION",
    "REALTIME_VAD_THRESHOLD", "REALTIME_SILENCE_DURATION_MS", "REALTIME_PREFIX_PADDING_MS",
    "OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_REALTIME_BASE_URL", "GEMINI_API_KEY",
    "GOOGLE_API_KEY", "VOICE_CONFIG_FILE", "REALTIME_EAGERNESS", "REALTIME_ALLOW_INTERRUPTIONS",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)


def settings(**kw: object) -> RealtimeSettings:
    return RealtimeSettings(_env_file=None, **kw)  # type: ignore[arg-type]


def test_reads_environment_and_prefers_the_realtime_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REALTIME_PROVIDER", "OpenAI-Realtime")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://chat.example/v1")
    monkeypatch.setenv("OPENAI_REALTIME_BASE_URL", "http://rt.example/v1")
    monkeypatch.setenv("REALTIME_TURN_DETECTION", "semantic_vad")
    s = settings()
    assert s.provider == "openai-realtime"
    assert s.openai_base_url == "http://rt.example/v1"
    assert s.turn_detection == "semantic_vad"
    assert s.masked()["openai_api_key"] == "***"
    assert "sk-test" not in repr(s)


def test_toml_file_is_read_below_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "voice.toml"
    cfg.write_text('[realtime]\nprovider = "gemini-live"\nvoice = "Kore"\nsilence_duration_ms = 700\n')
    monkeypatch.setenv("VOICE_CONFIG_FILE", str(cfg))
    monkeypatch.setenv("REALTIME_VOICE", "Puck")
    s = settings()
    assert (s.provider, s.voice, s.silence_duration_ms) == ("gemini-live", "Puck", 700)


def test_unknown_provider_lists_the_valid_ones() -> None:
    with pytest.raises(ProviderConfigError) as e:
        settings(provider="openai")
    assert "REALTIME_PROVIDER" in str(e.value)
    assert "openai-realtime" in str(e.value) and "gemini-live" in str(e.value)


def test_bad_value_names_the_variable_without_echoing_secrets() -> None:
    with pytest.raises(ProviderConfigError) as e:
        settings(vad_threshold=3.0, openai_api_key="sk-secret")
    assert "REALTIME_VAD_THRESHOLD" in str(e.value)
    assert "sk-secret" not in str(e.value)


@pytest.mark.parametrize(
    ("provider", "variable"),
    [("openai-realtime", "OPENAI_API_KEY"), ("gemini-live", "GEMINI_API_KEY")],
)
def test_missing_key_names_its_variable(provider: str, variable: str) -> None:
    with pytest.raises(ProviderConfigError, match=variable):
        create_realtime_model(settings(provider=provider))


def test_missing_plugin_names_the_pip_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(rt._PLUGIN_MODULES, "gemini-live", ("livekit.plugins.not_installed_here", "google"))
    with pytest.raises(ProviderConfigError) as e:
        create_realtime_model(settings(provider="gemini-live", gemini_api_key="placeholder"))
    assert "pip install '.[google]'" in str(e.value)


async def test_openai_server_vad_is_configurable() -> None:
    model = create_realtime_model(
        settings(openai_api_key="placeholder", vad_threshold=0.7, silence_duration_ms=400, prefix_padding_ms=200, voice="alloy")
    )
    try:
        td = model._opts.turn_detection  # type: ignore[attr-defined]
        assert (td.type, td.threshold, td.silence_duration_ms, td.prefix_padding_ms) == ("server_vad", 0.7, 400, 200)
        assert td.interrupt_response is True and td.create_response is True
        assert model.capabilities.turn_detection and model.capabilities.user_transcription
        assert model._opts.voice == "alloy"  # type: ignore[attr-defined]
        assert provider_name(model) == "openai-realtime"
    finally:
        await model.aclose()


async def test_openai_semantic_vad() -> None:
    model = create_realtime_model(settings(openai_api_key="placeholder", turn_detection="semantic_vad", eagerness="low"))
    try:
        td = model._opts.turn_detection  # type: ignore[attr-defined]
        assert (td.type, td.eagerness) == ("semantic_vad", "low")
    finally:
        await model.aclose()


async def test_gemini_live_builds_offline_with_server_side_vad() -> None:
    model = create_realtime_model(
        settings(provider="gemini-live", gemini_api_key="placeholder", silence_duration_ms=800, voice="Kore")
    )
    try:
        assert model.capabilities.turn_detection  # Gemini detects turns server-side
        assert provider_name(model) == "gemini-live"
        opts = model._opts  # type: ignore[attr-defined]
        detection = opts.realtime_input_config.automatic_activity_detection
        assert detection.disabled is False and detection.silence_duration_ms == 800
        assert opts.voice == "Kore" and opts.api_key == "placeholder"
    finally:
        await model.aclose()


def test_openai_without_interruptions_is_refused_naming_the_variable() -> None:
    """livekit-agents stops an OpenAI reply whenever the server hears the user, whatever the
    server's `interrupt_response`: REALTIME_ALLOW_INTERRUPTIONS=false cannot be honoured there
    (every session failed to start with it), so it is refused when the model is built."""
    with pytest.raises(ProviderConfigError) as e:
        create_realtime_model(settings(openai_api_key="placeholder", allow_interruptions=False))
    assert "REALTIME_ALLOW_INTERRUPTIONS" in str(e.value) and "gemini-live" in str(e.value)

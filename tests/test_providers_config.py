"""Provider configuration: settings sources, every provider built from config (placeholder
keys, no network), and the errors for unknown names, missing keys and missing extras."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pytest
from livekit.agents import stt, tts
from livekit.plugins import silero

from providers import (
    LocalSTT,
    LocalTTS,
    ProviderConfigError,
    ProviderOptions,
    ProviderSpec,
    SpeechSettings,
    build_provider,
    create_stt,
    create_tts,
    import_plugins,
    provider_report,
    registry,
)
from providers.settings import CONFIG_FILE_VAR
from providers.spec import field_variables

PLACEHOLDER = "placeholder-secret-value"

STT_PROVIDERS = ["openai", "deepgram", "azure", "google", "local"]
TTS_PROVIDERS = [
    "openai",
    "elevenlabs",
    "cartesia",
    "deepgram",
    "azure",
    "fishaudio",
    "google",
    "hume",
    "resemble",
    "local",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No provider variable from the developer's shell or .env leaks into a test."""
    names = set(registry.all_variables()) | {CONFIG_FILE_VAR}
    for name, f in SpeechSettings.model_fields.items():
        names.update(field_variables(name, f))
    for name in names:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # .env is read from the working directory
    return tmp_path


@pytest.fixture
def all_keys(tmp_path: Path) -> dict[str, str]:
    creds = tmp_path / "service-account.json"
    # a file google-auth loads without a network (a service account's would need a real RSA key)
    creds.write_text(json.dumps({"type": "authorized_user", "client_id": "c", "client_secret": "s", "refresh_token": "r"}))
    keys = [
        "OPENAI_API_KEY",
        "DEEPGRAM_API_KEY",
        "AZURE_SPEECH_KEY",
        "ELEVEN_API_KEY",
        "CARTESIA_API_KEY",
        "FISH_API_KEY",
        "GOOGLE_API_KEY",
        "HUME_API_KEY",
        "RESEMBLE_API_KEY",
    ]
    return {
        **{k: PLACEHOLDER for k in keys},
        "AZURE_SPEECH_REGION": "westeurope",
        "GOOGLE_APPLICATION_CREDENTIALS": str(creds),
    }


def test_registry_lists_every_required_provider() -> None:
    assert sorted(registry.names("stt")) == sorted(STT_PROVIDERS)
    assert sorted(registry.names("tts")) == sorted(TTS_PROVIDERS)


def test_defaults_are_offline() -> None:
    settings = SpeechSettings()
    assert (settings.stt_providers, settings.tts_providers) == (["local"], ["local"])
    assert isinstance(create_stt(settings), LocalSTT)
    assert isinstance(create_tts(settings), LocalTTS)


def test_sources_precedence_env_over_dotenv_over_toml(
    monkeypatch: pytest.MonkeyPatch, clean_env: Path
) -> None:
    toml = clean_env / "voice.toml"
    toml.write_text(
        'STT_PROVIDERS = ["deepgram", "local"]\n'
        'TTS_PROVIDER = "cartesia"\n'
        "LOCAL_TTS_RATE = 150\n"
        "[deepgram]\n"
        'stt_model = "nova-2"\n'
        'api_key = "from-toml"\n'
    )
    monkeypatch.setenv(CONFIG_FILE_VAR, str(toml))
    settings = SpeechSettings()
    assert settings.stt_providers == ["deepgram", "local"]
    assert settings.tts_providers == ["cartesia"]
    assert settings.lookup()["DEEPGRAM_STT_MODEL"] == "nova-2"
    assert settings.deepgram_api_key is not None
    assert settings.deepgram_api_key.get_secret_value() == "from-toml"

    (clean_env / ".env").write_text("DEEPGRAM_STT_MODEL=nova-3-medical\nLOCAL_TTS_RATE=160\n")
    monkeypatch.setenv("local_tts_rate", "170")  # names are case-insensitive
    settings = SpeechSettings()
    assert settings.lookup()["DEEPGRAM_STT_MODEL"] == "nova-3-medical"  # .env beats TOML
    assert settings.lookup()["LOCAL_TTS_RATE"] == "170"  # env beats .env
    settings = SpeechSettings(LOCAL_TTS_RATE=180, stt_providers="local")
    assert settings.lookup()["LOCAL_TTS_RATE"] == 180  # arguments beat everything
    assert settings.stt_providers == ["local"]


def test_config_file_named_in_dotenv_is_read(monkeypatch: pytest.MonkeyPatch, clean_env: Path) -> None:
    monkeypatch.delenv(CONFIG_FILE_VAR, raising=False)
    (clean_env / "voice.toml").write_text('TTS_PROVIDERS = ["openai", "local"]\n[openai]\ntts_voice = "nova"\n')
    (clean_env / ".env").write_text(f"{CONFIG_FILE_VAR}=voice.toml\n")  # relative to the working dir
    settings = SpeechSettings()
    assert settings.tts_providers == ["openai", "local"]
    assert settings.lookup()["OPENAI_TTS_VOICE"] == "nova"
    assert SpeechSettings(_env_file=None).tts_providers == ["local"]  # no .env, no file


def test_config_file_errors_are_clear(monkeypatch: pytest.MonkeyPatch, clean_env: Path) -> None:
    monkeypatch.setenv(CONFIG_FILE_VAR, str(clean_env / "missing.toml"))
    with pytest.raises(ProviderConfigError, match="VOICE_CONFIG_FILE=.*file not found"):
        SpeechSettings()
    (clean_env / "bad.toml").write_text("STT_PROVIDERS = [unterminated")
    monkeypatch.setenv(CONFIG_FILE_VAR, str(clean_env / "bad.toml"))
    with pytest.raises(ProviderConfigError, match="invalid TOML"):
        SpeechSettings()


def test_provider_lists_are_validated() -> None:
    assert SpeechSettings(STT_PROVIDER=" OpenAI , local").stt_providers == ["openai", "local"]
    with pytest.raises(ProviderConfigError, match="STT_PROVIDERS.*no provider named"):
        SpeechSettings(STT_PROVIDERS=" , ")
    with pytest.raises(ProviderConfigError, match="listed twice: local"):
        SpeechSettings(TTS_PROVIDERS="local,local")


def _build(kind: str, name: str, values: dict[str, Any]) -> Any:
    settings = SpeechSettings(**{f"{kind.upper()}_PROVIDERS": name}, **values)
    return build_provider(kind, name, settings)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", STT_PROVIDERS)
async def test_every_stt_provider_builds_from_config(name: str, all_keys: dict[str, str]) -> None:
    engine = _build("stt", name, all_keys)
    assert isinstance(engine, stt.STT)
    await engine.aclose()


@pytest.mark.parametrize("name", TTS_PROVIDERS)
async def test_every_tts_provider_builds_from_config(name: str, all_keys: dict[str, str]) -> None:
    engine = _build("tts", name, all_keys)
    assert isinstance(engine, tts.TTS)
    assert engine.num_channels == 1
    await engine.aclose()


@pytest.mark.parametrize(
    ("kind", "name", "values", "check"),
    [
        ("stt", "deepgram", {"DEEPGRAM_STT_MODEL": "nova-2"}, lambda e: e.model == "nova-2"),
        ("stt", "openai", {"OPENAI_STT_MODEL": "whisper-1"}, lambda e: e.model == "whisper-1"),
        ("tts", "openai", {"OPENAI_TTS_MODEL": "tts-1"}, lambda e: e.model == "tts-1"),
        (
            "tts",
            "elevenlabs",
            {"ELEVENLABS_TTS_SAMPLE_RATE": "16000"},
            lambda e: e.sample_rate == 16000,
        ),
        (
            "tts",
            "cartesia",
            {"CARTESIA_TTS_SAMPLE_RATE": "44100"},
            lambda e: e.sample_rate == 44100,
        ),
        ("tts", "azure", {"AZURE_TTS_SAMPLE_RATE": "16000"}, lambda e: e.sample_rate == 16000),
        (
            "tts",
            "deepgram",
            {"DEEPGRAM_TTS_MODEL": "aura-2-thalia-en", "DEEPGRAM_TTS_SAMPLE_RATE": "16000"},
            lambda e: (e.model, e.sample_rate) == ("aura-2-thalia-en", 16000),
        ),
        (
            "tts",
            "resemble",
            {"RESEMBLE_TTS_SAMPLE_RATE": "22050"},
            lambda e: e.sample_rate == 22050,
        ),
        (
            "tts",
            "local",
            {"LOCAL_TTS_VOICE": "en-gb", "LOCAL_TTS_RATE": "200"},
            lambda e: (e.voice.voice, e.voice.rate) == ("en-gb", 200),
        ),
        ("tts", "local", {"TTS_LANGUAGE": "de"}, lambda e: e.voice.voice == "de"),
        ("stt", "local", {"LOCAL_STT_PROFILE": "accurate"}, lambda e: e.model.endswith("accurate")),
    ],
)
async def test_options_reach_the_provider(
    kind: str, name: str, values: dict[str, str], check: Any, all_keys: dict[str, str]
) -> None:
    engine = _build(kind, name, {**all_keys, **values})
    assert check(engine)
    await engine.aclose()


def test_openai_base_url_is_configurable(all_keys: dict[str, str]) -> None:
    engine = _build("tts", "openai", {**all_keys, "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})
    assert engine.provider == "127.0.0.1:9"


def test_openai_speech_may_use_its_own_servers(all_keys: dict[str, str]) -> None:
    """One OPENAI_BASE_URL drove the brain, STT, TTS and realtime: a local Whisper server for
    STT alone could not be configured."""
    values = {**all_keys, "OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_STT_BASE_URL": "http://127.0.0.1:8/v1"}
    assert _build("stt", "openai", values).provider == "127.0.0.1:8"
    assert _build("tts", "openai", values).provider == "127.0.0.1:9"  # falls back to OPENAI_BASE_URL
    values["OPENAI_TTS_BASE_URL"] = "http://127.0.0.1:7/v1"
    assert _build("tts", "openai", values).provider == "127.0.0.1:7"


@pytest.mark.parametrize(
    ("kind", "name", "variables"),
    [
        ("stt", "openai", ["OPENAI_API_KEY"]),
        ("stt", "deepgram", ["DEEPGRAM_API_KEY"]),
        ("stt", "azure", ["AZURE_SPEECH_KEY", "AZURE_SPEECH_REGION"]),
        ("stt", "google", ["GOOGLE_APPLICATION_CREDENTIALS"]),
        ("tts", "elevenlabs", ["ELEVEN_API_KEY"]),
        ("tts", "cartesia", ["CARTESIA_API_KEY"]),
        ("tts", "deepgram", ["DEEPGRAM_API_KEY"]),
        ("tts", "fishaudio", ["FISH_API_KEY"]),
        ("tts", "google", ["GEMINI_API_KEY or GOOGLE_API_KEY"]),
        ("tts", "hume", ["HUME_API_KEY"]),
        ("tts", "resemble", ["RESEMBLE_API_KEY"]),
    ],
)
def test_missing_key_names_its_variable(kind: str, name: str, variables: list[str]) -> None:
    settings = SpeechSettings(**{f"{kind.upper()}_PROVIDERS": name})
    create = create_stt if kind == "stt" else create_tts
    with pytest.raises(ProviderConfigError) as err:
        create(settings)  # type: ignore[operator]
    assert f"missing {', '.join(variables)}" in str(err.value)
    assert f"{kind.upper()}_PROVIDERS={name}" in str(err.value)


async def test_gemini_tts_uses_the_gemini_key_the_brain_and_gemini_live_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """With both GEMINI_API_KEY and GOOGLE_API_KEY set, the brain and gemini-live used the first,
    Gemini TTS the second: one key in a .env was good, the other one failed every reply."""
    import base64

    from brain import BrainConfig
    from providers.realtime import RealtimeSettings

    from .fakes.gemini_server import FakeGeminiServer, candidate_chunk
    from .fakes.scripted import Stream

    monkeypatch.setenv("GEMINI_API_KEY", "the-gemini-key")
    monkeypatch.setenv("GOOGLE_API_KEY", "another-google-key")
    async with FakeGeminiServer() as server:
        audio = {"inlineData": {"mimeType": "audio/L16;codec=pcm;rate=24000", "data": base64.b64encode(bytes(4800)).decode()}}
        server.push(Stream([candidate_chunk([audio], "STOP")]))
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", server.base_url)  # google-genai's own endpoint variable
        engine = create_tts(SpeechSettings(TTS_PROVIDERS="google"))
        try:
            frames = [ev.frame async for ev in engine.synthesize("Hi.")]
        finally:
            await engine.aclose()
        (request,) = server.requests
    assert sum(f.samples_per_channel for f in frames) == 2400
    brain_key = BrainConfig(_env_file=None).gemini_api_key  # type: ignore[call-arg]
    live_key = RealtimeSettings(_env_file=None).gemini_api_key  # type: ignore[call-arg]
    assert brain_key is not None and live_key is not None
    assert request.headers["x-goog-api-key"] == brain_key.get_secret_value() == live_key.get_secret_value() == "the-gemini-key"


async def test_gemini_tts_talks_to_gemini_base_url_as_the_brain_and_gemini_live_do(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plugin takes no base URL: with GEMINI_BASE_URL naming a proxy, the brain and
    gemini-live went through it and Gemini TTS straight to Google (blocked, or around the proxy)."""
    import base64

    from livekit.agents import APIConnectOptions

    from .fakes.gemini_server import FakeGeminiServer, candidate_chunk
    from .fakes.scripted import Stream

    monkeypatch.delenv("GOOGLE_GEMINI_BASE_URL", raising=False)
    async with FakeGeminiServer() as server:
        audio = {"inlineData": {"mimeType": "audio/L16;codec=pcm;rate=24000", "data": base64.b64encode(bytes(4800)).decode()}}
        server.push(Stream([candidate_chunk([audio], "STOP")]))
        engine = create_tts(SpeechSettings(_env_file=None, TTS_PROVIDERS="google", GEMINI_API_KEY="k", GEMINI_BASE_URL=server.base_url + "/"))
        try:
            frames = [ev.frame async for ev in engine.synthesize("Hi.", conn_options=APIConnectOptions(max_retry=0))]
        finally:
            await engine.aclose()
        (request,) = server.requests
    assert sum(f.samples_per_channel for f in frames) == 2400
    assert request.headers["x-goog-api-key"] == "k"


def test_google_credentials_file_must_exist() -> None:
    settings = SpeechSettings(STT_PROVIDERS="google", GOOGLE_APPLICATION_CREDENTIALS="/nope.json")
    with pytest.raises(
        ProviderConfigError, match="GOOGLE_APPLICATION_CREDENTIALS \\(file not found\\)"
    ):
        create_stt(settings)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"installed": {"client_id": "id", "client_secret": "s"}}', "does not have a valid type"),  # an OAuth client
        ('{"type": "service_account", "project_id": "p"}', "missing fields"),
        ("project = 'p'", "not a valid json file"),
    ],
)
def test_a_google_credentials_file_google_auth_cannot_load_is_refused(tmp_path: Path, content: str, problem: str) -> None:
    """Only the file's existence was checked: doctor said ok, the worker started, and every
    recognition then failed (the plugin loads the file at its first request)."""
    from providers.factory import check_chains

    creds = tmp_path / "creds.json"
    creds.write_text(content)
    settings = SpeechSettings(STT_PROVIDERS="google", GOOGLE_APPLICATION_CREDENTIALS=str(creds))
    with pytest.raises(ProviderConfigError, match=f"GOOGLE_APPLICATION_CREDENTIALS: .*{problem}"):
        check_chains(settings)
    (row,) = [r for r in provider_report(settings) if (r.kind, r.name) == ("stt", "google")]
    assert not row.configured and problem in row.reason


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ProviderConfigError) as err:
        create_tts(SpeechSettings(TTS_PROVIDERS="local,whisperspeech"))
    message = str(err.value)
    assert "unknown TTS provider 'whisperspeech'" in message
    assert "valid: " + ", ".join(sorted(TTS_PROVIDERS)) in message


def test_missing_extra_says_which_pip_install(monkeypatch: pytest.MonkeyPatch) -> None:
    class GhostOptions(ProviderOptions):
        pass

    ghost: ProviderSpec[Any, Any] = ProviderSpec(
        "ghost",
        "stt",
        GhostOptions,
        lambda o: None,
        ("livekit.plugins.ghost_not_installed",),
        "ghost",
    )
    monkeypatch.setitem(registry.SPECS["stt"], "ghost", ghost)
    settings = SpeechSettings(STT_PROVIDERS="ghost")
    with pytest.raises(ProviderConfigError, match=r"pip install '\.\[ghost\]'"):
        create_stt(settings)
    with pytest.raises(ProviderConfigError, match=r"pip install '\.\[ghost\]'"):
        import_plugins(settings)  # what the worker calls at start-up, on the main thread
    import_plugins(SpeechSettings(STT_PROVIDERS="deepgram,local", TTS_PROVIDERS="cartesia"))
    (row,) = [r for r in provider_report(settings) if r.name == "ghost"]
    assert (row.installed, row.chosen, row.reason) == (False, True, "pip install '.[ghost]'")


def test_all_problems_of_a_chain_are_reported_together() -> None:
    with pytest.raises(ProviderConfigError) as err:
        create_stt(SpeechSettings(STT_PROVIDERS="deepgram,openai,local"), vad=None)
    assert "DEEPGRAM_API_KEY" in str(err.value) and "OPENAI_API_KEY" in str(err.value)


def test_invalid_option_names_its_variable() -> None:
    with pytest.raises(ProviderConfigError, match="LOCAL_TTS_RATE"):
        create_tts(SpeechSettings(LOCAL_TTS_RATE="1000"))
    with pytest.raises(ProviderConfigError, match="English model only"):
        create_stt(SpeechSettings(STT_LANGUAGE="de"))
    with pytest.raises(ProviderConfigError, match="LOCAL_TTS_VOICE.*espeak-ng has no voice 'xx-nope'"):
        create_tts(SpeechSettings(LOCAL_TTS_VOICE="xx-nope"))


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("OPENAI_TTS_RESPONSE_FORMAT", "ogg", "'mp3', 'opus', 'aac', 'flac', 'wav' or 'pcm'"),
        ("OPENAI_TTS_SPEED", "5", "less than or equal to 4"),
        ("OPENAI_TTS_SPEED", "0.1", "greater than or equal to 0.25"),
    ],
)
def test_an_openai_tts_option_the_service_refuses_is_refused_with_the_configuration(
    all_keys: dict[str, str], variable: str, value: str, says: str
) -> None:
    """OpenAI's speech endpoint takes these six formats and speeds 0.25-4.0 (400 otherwise):
    doctor and the start-up check said ok, then every reply failed at its first sentence."""
    from providers.factory import check_chains

    settings = SpeechSettings(TTS_PROVIDERS="openai", **all_keys, **{variable: value})
    with pytest.raises(ProviderConfigError, match=rf"{variable}: .*{re.escape(says)}"):
        check_chains(settings)
    (row,) = [r for r in provider_report(settings) if (r.kind, r.name) == ("tts", "openai")]
    assert not row.configured and row.reason.startswith(variable)


def test_openai_tts_options_the_service_takes_are_kept(all_keys: dict[str, str]) -> None:
    from livekit.plugins.openai.tts import RESPONSE_FORMATS

    from providers.catalog.openai import OpenAITTSOptions, ResponseFormat

    literal = next(a for a in get_args(RESPONSE_FORMATS) if get_origin(a) is Literal)
    assert get_args(ResponseFormat) == get_args(literal)  # the plugin's formats, no other
    settings = SpeechSettings(**all_keys, OPENAI_TTS_RESPONSE_FORMAT=" PCM ", OPENAI_TTS_SPEED="4")
    options = OpenAITTSOptions.model_validate(settings.lookup())
    assert (options.response_format, options.speed) == ("pcm", 4.0)


def test_an_azure_tts_sample_rate_the_plugin_lacks_is_refused_with_the_configuration(all_keys: dict[str, str]) -> None:
    """livekit-plugins-azure raises for such a rate only when the TTS is built, in each job: doctor
    and the start-up check said ok, then every room failed."""
    from providers.factory import check_chains

    settings = SpeechSettings(TTS_PROVIDERS="azure", **all_keys, AZURE_TTS_SAMPLE_RATE="32000")
    with pytest.raises(ProviderConfigError, match=r"AZURE_TTS_SAMPLE_RATE: .*one of \(8000, 16000, 22050, 24000, 44100, 48000\)"):
        check_chains(settings)
    (row,) = [r for r in provider_report(settings) if (r.kind, r.name) == ("tts", "azure")]
    assert not row.configured and row.reason.startswith("AZURE_TTS_SAMPLE_RATE")
    from livekit.plugins.azure.tts import SUPPORTED_OUTPUT_FORMATS

    from providers.catalog.azure import TTS_RATES

    assert set(TTS_RATES) == set(SUPPORTED_OUTPUT_FORMATS)  # every rate the plugin has, no other


def test_the_local_voice_is_checked_with_the_configuration_not_in_each_job() -> None:
    """The start-up check and doctor refuse a voice espeak-ng lacks (the worker used to look
    healthy, then fail every room); a locale spelled en_US is espeak's en-us."""
    from providers.factory import check_chains

    with pytest.raises(ProviderConfigError, match="TTS_LANGUAGE.*espeak-ng has no voice 'xx-klingon'"):
        check_chains(SpeechSettings(TTS_LANGUAGE="xx-klingon"))
    check_chains(SpeechSettings(TTS_LANGUAGE="en_US"))
    assert create_tts(SpeechSettings(TTS_LANGUAGE="en_US")).voice.voice == "en-us"


def test_an_espeak_voice_variant_is_kept_as_written_and_checked() -> None:
    """espeak-ng's variant names are case-sensitive (`+Annie`, `+Michael`): the whole value used
    to be lowercased, and espeak-ng, finding no `annie`, spoke the plain voice without a word; a
    misspelt variant was accepted the same way. Only the language part is normalised now, and a
    variant espeak-ng lacks is refused with the configuration."""
    import numpy as np

    from providers import LocalTTS

    annie, plain = (create_tts(SpeechSettings(LOCAL_TTS_VOICE=v)) for v in ("en_US+Annie", "en-us"))
    assert isinstance(annie, LocalTTS) and isinstance(plain, LocalTTS)
    assert annie.voice.voice == "en-us+Annie"
    with pytest.raises(ProviderConfigError, match=r"LOCAL_TTS_VOICE.*espeak-ng has no voice 'en-us\+Anie'"):
        create_tts(SpeechSettings(LOCAL_TTS_VOICE="en-us+Anie"))

    def crossings(engine: LocalTTS) -> float:  # zero crossings per sample: a higher voice has more
        pcm = engine._engine.synthesize_blocking("Hello there, how are you?", engine.voice)
        samples = np.sign(np.frombuffer(pcm, dtype=np.int16))
        return float(np.mean(samples[1:] != samples[:-1]))

    assert crossings(annie) > 1.15 * crossings(plain)


def test_batch_stt_chain_needs_a_vad(all_keys: dict[str, str]) -> None:
    settings = SpeechSettings(STT_PROVIDERS="openai,local", **all_keys)
    with pytest.raises(ProviderConfigError, match="openai, local cannot stream.*VAD"):
        create_stt(settings)
    assert isinstance(create_stt(settings, vad=silero.VAD.load()), stt.FallbackAdapter)


def test_secrets_never_appear_in_messages_or_repr(all_keys: dict[str, str]) -> None:
    settings = SpeechSettings(**all_keys)
    assert PLACEHOLDER not in repr(settings)
    with pytest.raises(ProviderConfigError) as err:
        SpeechSettings(OPENAI_API_KEY=PLACEHOLDER, FALLBACK_MAX_RETRY="many")
    assert "FALLBACK_MAX_RETRY" in str(err.value) and PLACEHOLDER not in str(err.value)
    assert all(PLACEHOLDER not in r.model_dump_json() for r in provider_report(settings))


def test_provider_report(all_keys: dict[str, str]) -> None:
    rows = provider_report(SpeechSettings(STT_PROVIDERS="deepgram,local", TTS_PROVIDERS="bogus"))
    by_key = {(r.kind, r.name): r for r in rows}
    assert len(by_key) == len(rows) == len(STT_PROVIDERS) + len(TTS_PROVIDERS) + 1
    deepgram = by_key[("stt", "deepgram")]
    assert (deepgram.installed, deepgram.configured, deepgram.chosen) == (True, False, True)
    assert deepgram.reason == "missing DEEPGRAM_API_KEY"
    local = by_key[("stt", "local")]
    assert (local.installed, local.configured, local.chosen, local.reason) == (True, True, True, "")
    assert by_key[("tts", "local")].chosen is False
    assert by_key[("tts", "bogus")].reason.startswith("unknown provider; valid: azure, cartesia")

    rows = provider_report(SpeechSettings(**all_keys))
    assert all(r.configured and r.installed for r in rows)


def test_env_example_is_a_working_offline_configuration() -> None:
    example = Path(__file__).resolve().parents[1] / ".env.example"
    settings = SpeechSettings(_env_file=str(example))
    assert (settings.stt_providers, settings.tts_providers) == (["local"], ["local"])
    assert isinstance(create_tts(settings), LocalTTS)
    documented = {line.split("=", 1)[0] for line in example.read_text().splitlines() if "=" in line}
    assert registry.all_variables() <= documented  # every provider variable is listed


def test_a_base_url_needs_its_scheme_and_loses_its_trailing_slash(all_keys: dict[str, str]) -> None:
    """`127.0.0.1:8000/v1` passed every check and failed at the first request, deep in httpx."""
    from brain import BrainConfig

    with pytest.raises(ProviderConfigError, match=r"OPENAI_BASE_URL: .*'127.0.0.1:8000/v1' is not a URL"):
        SpeechSettings(OPENAI_BASE_URL="127.0.0.1:8000/v1")
    with pytest.raises(ProviderConfigError, match=r"CARTESIA_BASE_URL: .*must start with http"):
        _build("tts", "cartesia", {**all_keys, "CARTESIA_BASE_URL": "api.cartesia.ai"})
    with pytest.raises(ValueError, match=r"GEMINI_BASE_URL[\s\S]*not a URL"):
        BrainConfig(_env_file=None, GEMINI_BASE_URL="localhost:1")  # type: ignore[call-arg]
    # plugins that append "/path" asked for "//path"
    assert _build("tts", "cartesia", {**all_keys, "CARTESIA_BASE_URL": "http://127.0.0.1:9/"})._opts.base_url == "http://127.0.0.1:9"
    assert SpeechSettings(OPENAI_BASE_URL=" http://127.0.0.1:9/v1/ ").openai_base_url == "http://127.0.0.1:9/v1"


def test_a_base_url_without_its_scheme_is_not_echoed_with_its_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The value the scheme check names went out as it was (the CLI's `error:` line, doctor,
    the worker's `GET /providers`): a proxy's `user:password@` or a key pasted into the wrong
    variable with it. The host is still named; the credentials are not."""
    from pydantic import ValidationError

    from agent.config import AgentSettings
    from agent.health import providers_payload
    from brain import BrainConfig
    from brain.config import describe_settings_error

    with pytest.raises(ProviderConfigError) as raised:
        SpeechSettings(OPENAI_BASE_URL="bob:hunter2pass@proxy.corp:8443/v1")
    assert "hunter2pass" not in str(raised.value) and "bob" not in str(raised.value)
    assert "proxy.corp:8443/v1" in str(raised.value) and "not a URL" in str(raised.value)
    # what the CLI and `python -m brain` print of a settings error (never the input itself)
    with pytest.raises(ValidationError) as raised_brain:
        BrainConfig(_env_file=None, OPENAI_BASE_URL="sk-proj-Abc123def456ghi789jkl")  # type: ignore[call-arg]
    said = describe_settings_error(raised_brain.value, [BrainConfig])
    assert "Abc123def456" not in said and "OPENAI_BASE_URL: " in said and "not a URL" in said, said
    # a plugin's own base URL: the reason of its row, served over HTTP by the worker
    monkeypatch.setenv("CARTESIA_BASE_URL", "u:s3cretpw@api.cartesia.ai")
    rows = providers_payload(AgentSettings(_env_file=None))["providers"]  # type: ignore[call-arg]
    reason = next(r["reason"] for r in rows if r["name"] == "cartesia")
    assert "not a URL" in reason and "api.cartesia.ai" in reason and "s3cretpw" not in reason, reason


@pytest.mark.parametrize(
    ("kind", "name", "values", "variable"),
    [
        ("stt", "openai", {"OPENAI_API_KEY": "   "}, "OPENAI_API_KEY"),
        ("tts", "openai", {"OPENAI_API_KEY": "   "}, "OPENAI_API_KEY"),
        # azure has its own rule (a key, and a region or an endpoint): its key of spaces passed
        ("stt", "azure", {"AZURE_SPEECH_KEY": "  ", "AZURE_SPEECH_REGION": "westeurope"}, "AZURE_SPEECH_KEY"),
        ("tts", "azure", {"AZURE_SPEECH_KEY": "\t", "AZURE_SPEECH_ENDPOINT": "https://x.example/v1"}, "AZURE_SPEECH_KEY"),
    ],
)
def test_a_key_of_spaces_is_no_key(kind: str, name: str, values: dict[str, str], variable: str) -> None:
    """It counted as configured: start-up and doctor said ok, then every request failed."""
    from providers.factory import check_chains

    settings = SpeechSettings(**{f"{kind.upper()}_PROVIDERS": name}, **values)
    with pytest.raises(ProviderConfigError, match=f"missing {variable}$"):
        check_chains(settings)  # the worker's start-up check
    (row,) = [r for r in provider_report(settings) if (r.kind, r.name) == (kind, name)]
    assert (row.configured, row.reason) == (False, f"missing {variable}")  # doctor, GET /providers


def test_an_option_of_spaces_means_its_default() -> None:
    """`LOCAL_TTS_VOICE= ` (spaces) picked espeak's en-gb instead of the en-us default; blank options
    mean their default, as empty ones do."""
    from providers.factory import resolve_options
    from providers.registry import get_spec

    options, problem = resolve_options(get_spec("tts", "local"), SpeechSettings(LOCAL_TTS_VOICE="   ", LOCAL_TTS_RATE=" "))
    assert problem == "" and options is not None
    assert (options.voice, options.rate) == ("en-us", 175)  # type: ignore[attr-defined]


def test_a_chosen_plugin_that_fails_to_import_is_not_ok(monkeypatch: pytest.MonkeyPatch) -> None:
    """doctor and GET /providers said "ok" for a plugin found on disk that raises on import;
    the worker's start-up then failed on it."""

    class BrokenOptions(ProviderOptions):
        pass

    broken: ProviderSpec[Any, Any] = ProviderSpec(
        "broken", "stt", BrokenOptions, lambda o: None, ("tests.fakes.broken_plugin",), "broken"
    )
    monkeypatch.setitem(registry.SPECS["stt"], "broken", broken)
    (row,) = [r for r in provider_report(SpeechSettings(STT_PROVIDERS="broken,local")) if r.name == "broken"]
    assert (row.installed, row.chosen) == (False, True)
    assert row.reason == "tests.fakes.broken_plugin does not import (RuntimeError: this module needs a setting it did not get)"
    # not chosen: the cheap on-disk check only (nothing imported for a report)
    (row,) = [r for r in provider_report(SpeechSettings()) if r.name == "broken"]
    assert row.installed and not row.chosen

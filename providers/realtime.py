"""Realtime (speech-to-speech) models by name: `openai-realtime` and `gemini-live`.

`RealtimeSettings` reads `REALTIME_*` variables (plus the providers' API keys) from constructor
arguments > environment > `.env` > the TOML file named by `VOICE_CONFIG_FILE` (flat
`REALTIME_PROVIDER = "..."` or a `[realtime]` table with `provider = "..."`).
`create_realtime_model(settings)` builds the official plugin's model without touching the
network; errors name the variable or the `pip install` command that fixes them.

Turn-taking lives with the model: OpenAI Realtime uses server-side `server_vad` or
`semantic_vad` (`REALTIME_TURN_DETECTION`), Gemini Live always uses its own server-side
activity detection (tuned by `REALTIME_SILENCE_DURATION_MS` / `REALTIME_PREFIX_PADDING_MS`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from brain.config import checked_base_url

from .errors import ProviderConfigError
from .provider_errors import tag_provider
from .settings import TomlFileSource

if TYPE_CHECKING:
    from livekit.agents import llm

REALTIME_PROVIDERS = ("openai-realtime", "gemini-live")

DEFAULT_OPENAI_MODEL = "gpt-realtime"
DEFAULT_OPENAI_TRANSCRIPTION_MODEL = "gpt-4o-mini-transcribe"

_PLUGIN_MODULES = {
    "openai-realtime": ("livekit.plugins.openai", "openai"),
    "gemini-live": ("livekit.plugins.google", "google"),
}


def _alias(*names: str) -> Any:
    return AliasChoices(*names)


class RealtimeSettings(BaseSettings):
    """Realtime-mode configuration; every field is read from the variable named in its alias."""

    model_config = SettingsConfigDict(
        allow_inf_nan=False,  # `inf` timeouts overflow later; NaN passes every bound
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        case_sensitive=False,
        env_ignore_empty=True,  # `NAME=` (as in .env.example) means "use the default"
    )

    provider: str = Field("openai-realtime", validation_alias=_alias("REALTIME_PROVIDER"))
    model: str | None = Field(None, validation_alias=_alias("REALTIME_MODEL"))
    """None: the plugin's default model."""
    voice: str | None = Field(None, validation_alias=_alias("REALTIME_VOICE"))

    # --- OpenAI Realtime ---
    openai_api_key: SecretStr | None = Field(None, validation_alias=_alias("OPENAI_API_KEY"))
    openai_base_url: str | None = Field(
        None, validation_alias=_alias("OPENAI_REALTIME_BASE_URL", "OPENAI_BASE_URL")
    )
    turn_detection: Literal["server_vad", "semantic_vad"] = Field(
        "server_vad", validation_alias=_alias("REALTIME_TURN_DETECTION")
    )
    vad_threshold: float | None = Field(
        None, gt=0.0, lt=1.0, validation_alias=_alias("REALTIME_VAD_THRESHOLD")
    )
    """server_vad: activation threshold (None: the server's default, 0.5)."""
    eagerness: Literal["low", "medium", "high", "auto"] = Field(
        "auto", validation_alias=_alias("REALTIME_EAGERNESS")
    )
    """semantic_vad: how eagerly the model takes the turn."""
    transcription_model: str = Field(
        DEFAULT_OPENAI_TRANSCRIPTION_MODEL, validation_alias=_alias("REALTIME_TRANSCRIPTION_MODEL")
    )
    """Model transcribing the user's audio (user transcripts for clients)."""

    # --- shared server-VAD knobs (OpenAI server_vad and Gemini Live) ---
    silence_duration_ms: int | None = Field(
        None, ge=0, validation_alias=_alias("REALTIME_SILENCE_DURATION_MS")
    )
    prefix_padding_ms: int | None = Field(
        None, ge=0, validation_alias=_alias("REALTIME_PREFIX_PADDING_MS")
    )
    allow_interruptions: bool = Field(True, validation_alias=_alias("REALTIME_ALLOW_INTERRUPTIONS"))
    """The server cancels its reply when the user starts speaking."""

    # --- Gemini Live ---
    gemini_api_key: SecretStr | None = Field(
        None, validation_alias=_alias("GEMINI_API_KEY", "GOOGLE_API_KEY")
    )
    gemini_base_url: str | None = Field(None, validation_alias=_alias("GEMINI_BASE_URL"))

    # --- connection ---
    max_retry: int = Field(3, ge=0, validation_alias=_alias("REALTIME_MAX_RETRY"))
    retry_interval: float = Field(2.0, ge=0, validation_alias=_alias("REALTIME_RETRY_INTERVAL"))
    connect_timeout: float = Field(10.0, gt=0, validation_alias=_alias("REALTIME_CONNECT_TIMEOUT"))

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as e:
            # name the variables, never echo the (possibly secret) input values
            problems = "; ".join(_describe_error(err) for err in e.errors())
            raise ProviderConfigError(f"invalid realtime settings: {problems}") from None

    @field_validator("openai_base_url", "gemini_base_url", mode="before")
    @classmethod
    def _base_url(cls, v: object) -> object:
        return checked_base_url(v)

    @field_validator("provider", mode="before")
    @classmethod
    def _check_provider(cls, value: Any) -> str:
        name = str(value or "").strip().lower()
        if name not in REALTIME_PROVIDERS:
            raise ValueError(
                f"unknown realtime provider {value!r}; valid: {', '.join(REALTIME_PROVIDERS)}"
            )
        return name

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, dotenv_settings, TomlFileSource(settings_cls, dotenv_settings))

    def masked(self) -> dict[str, object]:
        """The effective configuration with secrets masked (for `doctor` and logs)."""
        out: dict[str, object] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                out[name] = "***" if value.get_secret_value() else None
            else:
                out[name] = value
        return out


def _variable(field_name: str) -> str:
    alias = RealtimeSettings.model_fields[field_name].validation_alias
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0]
    return field_name.upper()


def _describe_error(err: Any) -> str:
    loc = [str(p) for p in err.get("loc", ())]
    names = [_variable(p) if p in RealtimeSettings.model_fields else p for p in loc]
    where = ".".join(names) or "settings"
    return f"{where}: {err.get('msg', 'invalid')}"


def _secret(value: SecretStr | None) -> str | None:
    if value is None:
        return None
    raw = value.get_secret_value().strip()
    return raw or None


def _import_plugin(provider: str) -> Any:
    module, extra = _PLUGIN_MODULES[provider]
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ProviderConfigError(
            f"REALTIME_PROVIDER={provider} needs the {module} plugin: pip install '.[{extra}]' ({e})"
        ) from None


def create_realtime_model(settings: RealtimeSettings | None = None) -> llm.RealtimeModel:
    """The configured realtime model (no network use until a session starts)."""
    settings = settings or RealtimeSettings()
    if settings.provider == "openai-realtime":
        model: llm.RealtimeModel = _create_openai(settings)
    else:
        model = _create_gemini(settings)
    tag_provider(model, settings.provider)
    return model


def _conn_options(settings: RealtimeSettings) -> Any:
    from livekit.agents import APIConnectOptions

    return APIConnectOptions(
        max_retry=settings.max_retry,
        retry_interval=settings.retry_interval,
        timeout=settings.connect_timeout,
    )


def openai_turn_detection(settings: RealtimeSettings) -> Any:
    """The OpenAI Realtime `turn_detection` object for these settings."""
    from openai.types.realtime.realtime_audio_input_turn_detection import SemanticVad, ServerVad

    if settings.turn_detection == "semantic_vad":
        return SemanticVad(
            type="semantic_vad",
            eagerness=settings.eagerness,
            create_response=True,
            interrupt_response=settings.allow_interruptions,
        )
    kwargs: dict[str, Any] = {}
    if settings.vad_threshold is not None:
        kwargs["threshold"] = settings.vad_threshold
    if settings.silence_duration_ms is not None:
        kwargs["silence_duration_ms"] = settings.silence_duration_ms
    if settings.prefix_padding_ms is not None:
        kwargs["prefix_padding_ms"] = settings.prefix_padding_ms
    return ServerVad(
        type="server_vad",
        create_response=True,
        interrupt_response=settings.allow_interruptions,
        **kwargs,
    )


def unsupported_setting(settings: RealtimeSettings, provider: str) -> str | None:
    """Why `provider` cannot run with these settings (None: it can). The model factory refuses
    them at start-up, and `python -m agent doctor` reports the provider as unusable."""
    if provider == "openai-realtime" and not settings.allow_interruptions:
        # livekit-agents interrupts the reply on the server's `speech_started` whatever
        # `interrupt_response` says, and refuses a session whose own interruptions are off
        return (
            "REALTIME_ALLOW_INTERRUPTIONS=false is not supported with REALTIME_PROVIDER=openai-realtime: "
            "livekit-agents stops the reply whenever the server hears the user; leave it true, or "
            "use REALTIME_PROVIDER=gemini-live"
        )
    return None


def _create_openai(settings: RealtimeSettings) -> llm.RealtimeModel:
    key = _secret(settings.openai_api_key)
    if key is None:
        raise ProviderConfigError(
            "OPENAI_API_KEY is not set; REALTIME_PROVIDER=openai-realtime needs it"
        )
    problem = unsupported_setting(settings, "openai-realtime")
    if problem:
        raise ProviderConfigError(problem)
    _import_plugin("openai-realtime")
    from openai.types.realtime import AudioTranscription

    from .realtime_openai import GuardedOpenAIRealtimeModel

    kwargs: dict[str, Any] = {}
    if settings.openai_base_url:
        kwargs["base_url"] = settings.openai_base_url
    if settings.voice:
        kwargs["voice"] = settings.voice
    return GuardedOpenAIRealtimeModel(
        provider_name="openai-realtime",
        model=settings.model or DEFAULT_OPENAI_MODEL,
        api_key=key,
        turn_detection=openai_turn_detection(settings),
        input_audio_transcription=AudioTranscription(model=settings.transcription_model),
        conn_options=_conn_options(settings),
        **kwargs,
    )


def gemini_realtime_input_config(settings: RealtimeSettings) -> Any:
    """Gemini Live's server-side activity detection, from the shared VAD knobs."""
    from google.genai import types

    detection = types.AutomaticActivityDetection(
        disabled=False,
        silence_duration_ms=settings.silence_duration_ms,
        prefix_padding_ms=settings.prefix_padding_ms,
    )
    handling = (
        types.ActivityHandling.START_OF_ACTIVITY_INTERRUPTS
        if settings.allow_interruptions
        else types.ActivityHandling.NO_INTERRUPTION
    )
    return types.RealtimeInputConfig(automatic_activity_detection=detection, activity_handling=handling)


def _create_gemini(settings: RealtimeSettings) -> llm.RealtimeModel:
    key = _secret(settings.gemini_api_key)
    if key is None:
        raise ProviderConfigError(
            "GEMINI_API_KEY (or GOOGLE_API_KEY) is not set; REALTIME_PROVIDER=gemini-live needs it"
        )
    google = _import_plugin("gemini-live")
    from google.genai import types

    kwargs: dict[str, Any] = {}
    if settings.model:
        kwargs["model"] = settings.model
    if settings.voice:
        kwargs["voice"] = settings.voice
    if settings.gemini_base_url:
        kwargs["http_options"] = types.HttpOptions(
            base_url=settings.gemini_base_url,
            timeout=int(settings.connect_timeout * 1000),
        )
    model: llm.RealtimeModel = google.realtime.RealtimeModel(
        api_key=key,
        vertexai=False,
        realtime_input_config=gemini_realtime_input_config(settings),
        conn_options=_conn_options(settings),
        **kwargs,
    )
    return model

"""`openai`: OpenAI (or any OpenAI-compatible server via OPENAI_BASE_URL), livekit-plugins-openai."""

from __future__ import annotations

from typing import Any, Literal

from livekit.agents import stt, tts
from livekit.agents.types import NOT_GIVEN
from pydantic import AliasChoices, Field, SecretStr, field_validator

from ..spec import ProviderOptions, ProviderSpec, secret

_MODULES = ("livekit.plugins.openai",)

ResponseFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]


class OpenAISTTOptions(ProviderOptions):
    required = ("api_key",)
    api_key: SecretStr | None = Field(None, validation_alias="OPENAI_API_KEY")
    # a local Whisper server for speech, OpenAI (OPENAI_BASE_URL) for the brain, ...
    base_url: str | None = Field(None, validation_alias=AliasChoices("OPENAI_STT_BASE_URL", "OPENAI_BASE_URL"))
    model: str = Field("gpt-4o-mini-transcribe", validation_alias="OPENAI_STT_MODEL")
    language: str = Field(
        "en", validation_alias=AliasChoices("OPENAI_STT_LANGUAGE", "STT_LANGUAGE")
    )


class OpenAITTSOptions(ProviderOptions):
    required = ("api_key",)
    api_key: SecretStr | None = Field(None, validation_alias="OPENAI_API_KEY")
    base_url: str | None = Field(None, validation_alias=AliasChoices("OPENAI_TTS_BASE_URL", "OPENAI_BASE_URL"))
    model: str = Field("gpt-4o-mini-tts", validation_alias="OPENAI_TTS_MODEL")
    voice: str = Field("ash", validation_alias="OPENAI_TTS_VOICE")
    # the speech endpoint's range: another speed is a 400 at the first sentence
    speed: float = Field(1.0, ge=0.25, le=4.0, validation_alias="OPENAI_TTS_SPEED")
    instructions: str | None = Field(None, validation_alias="OPENAI_TTS_INSTRUCTIONS")
    # pcm = 24 kHz s16le, no decoding; the endpoint knows no other format (a 400 at the first
    # sentence), and the plugin decodes these
    response_format: ResponseFormat = Field("mp3", validation_alias="OPENAI_TTS_RESPONSE_FORMAT")

    @field_validator("response_format", mode="before")
    @classmethod
    def _format(cls, v: object) -> object:
        return v.strip().lower() if isinstance(v, str) else v


def _build_stt(o: OpenAISTTOptions) -> stt.STT:
    from livekit.plugins import openai

    return openai.STT(
        api_key=secret(o.api_key) or "",
        base_url=o.base_url or NOT_GIVEN,
        model=o.model,
        language=o.language,
    )


def _build_tts(o: OpenAITTSOptions) -> tts.TTS:
    from livekit.plugins import openai

    return openai.TTS(
        api_key=secret(o.api_key) or "",
        base_url=o.base_url or NOT_GIVEN,
        model=o.model,
        voice=o.voice,
        speed=o.speed,
        instructions=o.instructions if o.instructions else NOT_GIVEN,
        response_format=o.response_format,
    )


SPECS: tuple[ProviderSpec[Any, Any], ...] = (
    ProviderSpec("openai", "stt", OpenAISTTOptions, _build_stt, _MODULES, "openai"),
    ProviderSpec("openai", "tts", OpenAITTSOptions, _build_tts, _MODULES, "openai"),
)

"""`elevenlabs`: ElevenLabs streaming TTS via livekit-plugins-elevenlabs (extra `elevenlabs`)."""

from __future__ import annotations

from typing import Any

from livekit.agents import tts
from livekit.agents.types import NOT_GIVEN
from pydantic import AliasChoices, Field, SecretStr, field_validator

from ..spec import ProviderOptions, ProviderSpec, secret

_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)  # the plugin's pcm_<rate> encodings


class ElevenLabsTTSOptions(ProviderOptions):
    required = ("api_key",)
    api_key: SecretStr | None = Field(None, validation_alias="ELEVEN_API_KEY")
    model: str = Field("eleven_turbo_v2_5", validation_alias="ELEVENLABS_TTS_MODEL")
    voice: str | None = Field(None, validation_alias="ELEVENLABS_TTS_VOICE")  # a voice id
    language: str | None = Field(
        None, validation_alias=AliasChoices("ELEVENLABS_TTS_LANGUAGE", "TTS_LANGUAGE")
    )
    sample_rate: int | None = Field(None, validation_alias="ELEVENLABS_TTS_SAMPLE_RATE")
    base_url: str | None = Field(None, validation_alias="ELEVENLABS_BASE_URL")

    @field_validator("sample_rate")
    @classmethod
    def _supported_rate(cls, value: int | None) -> int | None:
        if value is not None and value not in _RATES:
            raise ValueError(f"must be one of {_RATES}")
        return value


def _build_tts(o: ElevenLabsTTSOptions) -> tts.TTS:
    from livekit.plugins import elevenlabs

    kwargs: dict[str, Any] = {}
    if o.voice:
        kwargs["voice_id"] = o.voice
    return elevenlabs.TTS(
        api_key=secret(o.api_key) or "",
        model=o.model,
        language=o.language or NOT_GIVEN,
        encoding=f"pcm_{o.sample_rate}" if o.sample_rate else NOT_GIVEN,  # type: ignore[arg-type]
        base_url=o.base_url or NOT_GIVEN,
        **kwargs,
    )


SPECS: tuple[ProviderSpec[Any, Any], ...] = (
    ProviderSpec(
        "elevenlabs",
        "tts",
        ElevenLabsTTSOptions,
        _build_tts,
        ("livekit.plugins.elevenlabs",),
        "elevenlabs",
    ),
)

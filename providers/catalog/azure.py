"""`azure`: Azure AI Speech STT and TTS via livekit-plugins-azure (extra `azure`)."""

from __future__ import annotations

from typing import Any

from livekit.agents import stt, tts
from livekit.agents.types import NOT_GIVEN
from pydantic import AliasChoices, Field, SecretStr, field_validator

from ..spec import ProviderOptions, ProviderSpec, is_set, secret

_MODULES = ("livekit.plugins.azure",)
# the plugin's raw PCM output formats; it raises for any other rate only when the TTS is built
TTS_RATES = (8000, 16000, 22050, 24000, 44100, 48000)


class _AzureOptions(ProviderOptions):
    api_key: SecretStr | None = Field(None, validation_alias="AZURE_SPEECH_KEY")
    region: str | None = Field(None, validation_alias="AZURE_SPEECH_REGION")
    # a custom endpoint replaces the region
    endpoint: str | None = Field(None, validation_alias="AZURE_SPEECH_ENDPOINT")

    def missing(self) -> list[str]:
        out = [] if is_set(self.api_key) else ["AZURE_SPEECH_KEY"]
        if not (is_set(self.region) or is_set(self.endpoint)):
            out.append("AZURE_SPEECH_REGION")
        return out


class AzureSTTOptions(_AzureOptions):
    language: str = Field(
        "en-US", validation_alias=AliasChoices("AZURE_STT_LANGUAGE", "STT_LANGUAGE")
    )
    sample_rate: int = Field(16000, gt=0, validation_alias="AZURE_STT_SAMPLE_RATE")


class AzureTTSOptions(_AzureOptions):
    voice: str = Field("en-US-JennyNeural", validation_alias="AZURE_TTS_VOICE")
    language: str | None = Field(
        None, validation_alias=AliasChoices("AZURE_TTS_LANGUAGE", "TTS_LANGUAGE")
    )
    sample_rate: int = Field(24000, gt=0, validation_alias="AZURE_TTS_SAMPLE_RATE")

    @field_validator("sample_rate")
    @classmethod
    def _supported_rate(cls, value: int) -> int:
        if value not in TTS_RATES:
            raise ValueError(f"must be one of {TTS_RATES}")
        return value


def _build_stt(o: AzureSTTOptions) -> stt.STT:
    from livekit.plugins import azure

    return azure.STT(
        speech_key=secret(o.api_key) or NOT_GIVEN,
        speech_region=o.region or NOT_GIVEN,
        speech_endpoint=o.endpoint or NOT_GIVEN,
        language=o.language,
        sample_rate=o.sample_rate,
    )


def _build_tts(o: AzureTTSOptions) -> tts.TTS:
    from livekit.plugins import azure

    return azure.TTS(
        speech_key=secret(o.api_key),
        speech_region=o.region,
        speech_endpoint=o.endpoint,
        voice=o.voice,
        language=o.language,
        sample_rate=o.sample_rate,
    )


SPECS: tuple[ProviderSpec[Any, Any], ...] = (
    ProviderSpec("azure", "stt", AzureSTTOptions, _build_stt, _MODULES, "azure"),
    ProviderSpec("azure", "tts", AzureTTSOptions, _build_tts, _MODULES, "azure"),
)

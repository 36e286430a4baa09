"""`deepgram`: Deepgram streaming STT and Aura streaming TTS via livekit-plugins-deepgram
(extra `deepgram`)."""

from __future__ import annotations

from typing import Any

from livekit.agents import stt, tts
from pydantic import AliasChoices, Field, SecretStr

from ..spec import ProviderOptions, ProviderSpec, secret


class DeepgramSTTOptions(ProviderOptions):
    required = ("api_key",)
    api_key: SecretStr | None = Field(None, validation_alias="DEEPGRAM_API_KEY")
    model: str = Field("nova-3", validation_alias="DEEPGRAM_STT_MODEL")
    language: str = Field(
        "en-US", validation_alias=AliasChoices("DEEPGRAM_STT_LANGUAGE", "STT_LANGUAGE")
    )
    sample_rate: int = Field(16000, gt=0, validation_alias="DEEPGRAM_STT_SAMPLE_RATE")
    base_url: str = Field(
        "https://api.deepgram.com/v1/listen", validation_alias="DEEPGRAM_BASE_URL"
    )


def _build_stt(o: DeepgramSTTOptions) -> stt.STT:
    from livekit.plugins import deepgram

    return deepgram.STT(
        api_key=secret(o.api_key) or "",
        model=o.model,
        language=o.language,
        sample_rate=o.sample_rate,
        base_url=o.base_url,
    )


class DeepgramTTSOptions(ProviderOptions):
    required = ("api_key",)
    api_key: SecretStr | None = Field(None, validation_alias="DEEPGRAM_API_KEY")
    model: str = Field("aura-2-andromeda-en", validation_alias="DEEPGRAM_TTS_MODEL")  # model = voice
    sample_rate: int = Field(24000, gt=0, validation_alias="DEEPGRAM_TTS_SAMPLE_RATE")
    base_url: str = Field(
        "https://api.deepgram.com/v1/speak", validation_alias="DEEPGRAM_TTS_BASE_URL"
    )


def _build_tts(o: DeepgramTTSOptions) -> tts.TTS:
    from livekit.plugins import deepgram

    return deepgram.TTS(
        api_key=secret(o.api_key) or "",
        model=o.model,
        sample_rate=o.sample_rate,
        base_url=o.base_url,
    )


SPECS: tuple[ProviderSpec[Any, Any], ...] = (
    ProviderSpec(
        "deepgram", "stt", DeepgramSTTOptions, _build_stt, ("livekit.plugins.deepgram",), "deepgram"
    ),
    ProviderSpec(
        "deepgram", "tts", DeepgramTTSOptions, _build_tts, ("livekit.plugins.deepgram",), "deepgram"
    ),
)

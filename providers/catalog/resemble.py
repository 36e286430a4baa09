"""`resemble`: Resemble AI TTS via livekit-plugins-resemble (extra `resemble`)."""

from __future__ import annotations

from typing import Any

from livekit.agents import tts
from pydantic import Field, SecretStr

from ..spec import ProviderOptions, ProviderSpec, secret


class ResembleTTSOptions(ProviderOptions):
    required = ("api_key",)
    api_key: SecretStr | None = Field(None, validation_alias="RESEMBLE_API_KEY")
    model: str | None = Field(None, validation_alias="RESEMBLE_TTS_MODEL")
    voice: str | None = Field(None, validation_alias="RESEMBLE_TTS_VOICE")  # a voice uuid
    sample_rate: int = Field(44100, gt=0, validation_alias="RESEMBLE_TTS_SAMPLE_RATE")


def _build_tts(o: ResembleTTSOptions) -> tts.TTS:
    from livekit.plugins import resemble

    return resemble.TTS(
        api_key=secret(o.api_key),
        model=o.model,
        voice_uuid=o.voice,
        sample_rate=o.sample_rate,
    )


SPECS: tuple[ProviderSpec[Any, Any], ...] = (
    ProviderSpec(
        "resemble", "tts", ResembleTTSOptions, _build_tts, ("livekit.plugins.resemble",), "resemble"
    ),
)

"""`fishaudio`: Fish Audio TTS via livekit-plugins-fishaudio (extra `fishaudio`)."""

from __future__ import annotations

from typing import Any

from livekit.agents import tts
from livekit.agents.types import NOT_GIVEN
from pydantic import Field, SecretStr

from ..spec import ProviderOptions, ProviderSpec, secret


class FishAudioTTSOptions(ProviderOptions):
    required = ("api_key",)
    api_key: SecretStr | None = Field(None, validation_alias="FISH_API_KEY")
    model: str | None = Field(None, validation_alias="FISHAUDIO_TTS_MODEL")  # None: plugin default
    voice: str | None = Field(None, validation_alias="FISHAUDIO_TTS_VOICE")  # a reference id
    sample_rate: int | None = Field(None, gt=0, validation_alias="FISHAUDIO_TTS_SAMPLE_RATE")
    base_url: str | None = Field(None, validation_alias="FISHAUDIO_BASE_URL")


def _build_tts(o: FishAudioTTSOptions) -> tts.TTS:
    from livekit.plugins import fishaudio

    kwargs: dict[str, Any] = {"model": o.model} if o.model else {}
    return fishaudio.TTS(
        api_key=secret(o.api_key) or "",
        voice_id=o.voice or NOT_GIVEN,
        sample_rate=o.sample_rate or NOT_GIVEN,
        base_url=o.base_url or NOT_GIVEN,
        **kwargs,
    )


SPECS: tuple[ProviderSpec[Any, Any], ...] = (
    ProviderSpec(
        "fishaudio",
        "tts",
        FishAudioTTSOptions,
        _build_tts,
        ("livekit.plugins.fishaudio",),
        "fishaudio",
    ),
)

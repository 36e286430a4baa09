"""`cartesia`: Cartesia Sonic streaming TTS via livekit-plugins-cartesia (extra `cartesia`)."""

from __future__ import annotations

from typing import Any

from livekit.agents import tts
from pydantic import AliasChoices, Field, SecretStr

from ..spec import ProviderOptions, ProviderSpec, secret


class CartesiaTTSOptions(ProviderOptions):
    required = ("api_key",)
    api_key: SecretStr | None = Field(None, validation_alias="CARTESIA_API_KEY")
    model: str = Field("sonic-3", validation_alias="CARTESIA_TTS_MODEL")
    voice: str | None = Field(None, validation_alias="CARTESIA_TTS_VOICE")  # a voice id
    language: str = Field(
        "en", validation_alias=AliasChoices("CARTESIA_TTS_LANGUAGE", "TTS_LANGUAGE")
    )
    sample_rate: int = Field(24000, gt=0, validation_alias="CARTESIA_TTS_SAMPLE_RATE")
    base_url: str = Field("https://api.cartesia.ai", validation_alias="CARTESIA_BASE_URL")


def _build_tts(o: CartesiaTTSOptions) -> tts.TTS:
    from livekit.plugins import cartesia

    kwargs: dict[str, Any] = {"voice": o.voice} if o.voice else {}
    return cartesia.TTS(
        api_key=secret(o.api_key),
        model=o.model,
        language=o.language,
        sample_rate=o.sample_rate,
        base_url=o.base_url,
        **kwargs,
    )


SPECS: tuple[ProviderSpec[Any, Any], ...] = (
    ProviderSpec(
        "cartesia", "tts", CartesiaTTSOptions, _build_tts, ("livekit.plugins.cartesia",), "cartesia"
    ),
)

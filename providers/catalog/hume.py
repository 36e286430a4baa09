"""`hume`: Hume Octave TTS via livekit-plugins-hume (extra `hume`)."""

from __future__ import annotations

import re
from typing import Any, Literal

from livekit.agents import tts
from pydantic import Field, SecretStr

from ..spec import ProviderOptions, ProviderSpec, secret

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)


class HumeTTSOptions(ProviderOptions):
    required = ("api_key",)
    api_key: SecretStr | None = Field(None, validation_alias="HUME_API_KEY")
    model: Literal["1", "2"] = Field("1", validation_alias="HUME_TTS_MODEL")  # Octave version
    # a voice-library name, or a voice id (uuid)
    voice: str | None = Field(None, validation_alias="HUME_TTS_VOICE")
    description: str | None = Field(None, validation_alias="HUME_TTS_DESCRIPTION")
    base_url: str = Field("https://api.hume.ai", validation_alias="HUME_BASE_URL")


def _build_tts(o: HumeTTSOptions) -> tts.TTS:
    from livekit.plugins import hume

    kwargs: dict[str, Any] = {}
    if o.voice:
        key = "id" if _UUID.match(o.voice) else "name"
        kwargs["voice"] = {key: o.voice, "provider": hume.VoiceProvider.hume}
    return hume.TTS(
        api_key=secret(o.api_key),
        model_version=o.model,
        description=o.description,
        base_url=o.base_url,
        **kwargs,
    )


SPECS: tuple[ProviderSpec[Any, Any], ...] = (
    ProviderSpec("hume", "tts", HumeTTSOptions, _build_tts, ("livekit.plugins.hume",), "hume"),
)

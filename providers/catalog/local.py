"""`local`: offline pocketsphinx STT and espeak-ng TTS (no key, no network)."""

from __future__ import annotations

from typing import Any, Literal

from livekit.agents import stt, tts
from pydantic import AliasChoices, Field, field_validator

from ..spec import ProviderOptions, ProviderSpec


class LocalSTTOptions(ProviderOptions):
    language: str = Field("en", validation_alias=AliasChoices("LOCAL_STT_LANGUAGE", "STT_LANGUAGE"))
    profile: Literal["fast", "accurate"] = Field("fast", validation_alias="LOCAL_STT_PROFILE")
    decoders: int = Field(1, ge=1, le=8, validation_alias="LOCAL_STT_DECODERS")
    early: bool = Field(True, validation_alias="LOCAL_STT_EARLY")

    @field_validator("language")
    @classmethod
    def _english_only(cls, value: str) -> str:
        if not value.lower().startswith("en"):
            raise ValueError(
                f"the local STT ships an English model only (got language {value!r}); "
                "set LOCAL_STT_LANGUAGE=en or choose another STT provider"
            )
        return value


class LocalTTSOptions(ProviderOptions):
    voice: str = Field(
        "en-us", validation_alias=AliasChoices("LOCAL_TTS_VOICE", "TTS_LANGUAGE")
    )  # an espeak-ng voice / language name
    rate: int = Field(175, ge=80, le=450, validation_alias="LOCAL_TTS_RATE")  # words per minute
    pitch: int = Field(50, ge=0, le=100, validation_alias="LOCAL_TTS_PITCH")

    @field_validator("voice")
    @classmethod
    def _known_voice(cls, value: str) -> str:
        """Checked with the configuration (doctor, start-up), not in every job: a locale spelled
        `en_US` is espeak's `en-us`; a voice espeak-ng does not have is refused here. A `+variant`
        suffix is kept as written: espeak-ng's variant names are case-sensitive (`+Annie`)."""
        language, plus, variant = value.strip().partition("+")
        voice = language.strip().lower().replace("_", "-") + plus + variant.strip()
        from ..local_tts import EspeakEngine

        if not EspeakEngine.shared().has_voice(voice):
            raise ValueError(f"espeak-ng has no voice {value!r} (try en-us, en-gb, de, fr, es, ...)")
        return voice


def _build_stt(o: LocalSTTOptions) -> stt.STT:
    from ..local_stt import LocalSTT

    return LocalSTT(profile=o.profile, max_decoders=o.decoders, early=o.early)


def _build_tts(o: LocalTTSOptions) -> tts.TTS:
    from ..local_tts import LocalTTS

    return LocalTTS(voice=o.voice, rate=o.rate, pitch=o.pitch)


SPECS: tuple[ProviderSpec[Any, Any], ...] = (
    ProviderSpec(
        "local",
        "stt",
        LocalSTTOptions,
        _build_stt,
        ("pocketsphinx",),
        summary="pocketsphinx, offline",
    ),
    ProviderSpec(
        "local",
        "tts",
        LocalTTSOptions,
        _build_tts,
        ("espeakng_loader",),
        summary="espeak-ng, offline",
    ),
)

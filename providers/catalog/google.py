"""`google`: Google Cloud Speech-to-Text (service-account file) and Gemini TTS (API key),
both from livekit-plugins-google (extra `google`)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from livekit.agents import stt, tts
from livekit.agents.types import NOT_GIVEN
from pydantic import AliasChoices, Field, SecretStr, field_validator

from ..spec import ProviderOptions, ProviderSpec, secret

_MODULES = ("livekit.plugins.google",)


def _credentials_problem(path: Path) -> str | None:
    """Why google-auth cannot load a credentials file (None: it can). Local only: nothing is
    refreshed, no network."""
    try:
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError
    except ImportError:
        return None  # no plugin: the report says which pip install
    try:
        with warnings.catch_warnings():  # "deprecated": the plugin loads the file with it too
            warnings.simplefilter("ignore", DeprecationWarning)
            google.auth.load_credentials_from_file(str(path))  # type: ignore[no-untyped-call]
    except DefaultCredentialsError as e:
        # its messages name the file and the problem (missing fields, no valid type), no values
        return "; ".join(str(a) for a in e.args)
    except OSError as e:  # unreadable (permissions)
        return f"cannot read {path}: {e.strerror or e}"
    return None


class GoogleSTTOptions(ProviderOptions):
    required = ("credentials_file",)
    credentials_file: str | None = Field(None, validation_alias="GOOGLE_APPLICATION_CREDENTIALS")
    model: str = Field("latest_long", validation_alias="GOOGLE_STT_MODEL")
    language: str = Field(
        "en-US", validation_alias=AliasChoices("GOOGLE_STT_LANGUAGE", "STT_LANGUAGE")
    )
    sample_rate: int = Field(16000, gt=0, validation_alias="GOOGLE_STT_SAMPLE_RATE")
    location: str = Field("global", validation_alias="GOOGLE_STT_LOCATION")

    @field_validator("credentials_file")
    @classmethod
    def _loadable(cls, value: str | None) -> str | None:
        """The plugin loads the file only at its first request: one google-auth cannot load
        (an OAuth client's JSON, a truncated key, ...) is refused with the configuration."""
        path = Path(value).expanduser() if value else None
        if path is None or not path.is_file():
            return value  # missing() names it
        problem = _credentials_problem(path)
        if problem:
            raise ValueError(f"google-auth cannot load this credentials file: {problem}")
        return value

    def missing(self) -> list[str]:
        if not self.credentials_file:
            return ["GOOGLE_APPLICATION_CREDENTIALS"]
        if not Path(self.credentials_file).expanduser().is_file():
            return ["GOOGLE_APPLICATION_CREDENTIALS (file not found)"]
        return []


class GeminiTTSOptions(ProviderOptions):
    required = ("api_key",)
    api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("GEMINI_API_KEY", "GOOGLE_API_KEY")
    )
    model: str | None = Field(None, validation_alias="GOOGLE_TTS_MODEL")  # None: plugin default
    voice: str = Field("Kore", validation_alias="GOOGLE_TTS_VOICE")
    instructions: str | None = Field(None, validation_alias="GOOGLE_TTS_INSTRUCTIONS")
    # the endpoint the brain and gemini-live use too (a proxy); None: Google's
    base_url: str | None = Field(None, validation_alias="GEMINI_BASE_URL")


def _build_stt(o: GoogleSTTOptions) -> stt.STT:
    from livekit.plugins import google

    return google.STT(
        credentials_file=str(Path(o.credentials_file or "").expanduser()),
        model=o.model,
        languages=o.language,
        sample_rate=o.sample_rate,
        location=o.location,
    )


def _build_tts(o: GeminiTTSOptions) -> tts.TTS:
    from livekit.plugins.google import beta

    kwargs: dict[str, Any] = {"model": o.model} if o.model else {}
    engine = beta.GeminiTTS(
        api_key=secret(o.api_key) or "",
        vertexai=False,
        voice_name=o.voice,
        instructions=o.instructions or NOT_GIVEN,
        **kwargs,
    )
    if o.base_url:
        # the plugin takes no base URL; its google-genai client (built, not yet connected) is
        # replaced by one that has it (tests/test_providers_config.py checks the attribute still
        # carries every request)
        from google.genai import Client, types

        engine._client = Client(
            api_key=secret(o.api_key) or "", vertexai=False, http_options=types.HttpOptions(base_url=o.base_url)
        )
    return engine


SPECS: tuple[ProviderSpec[Any, Any], ...] = (
    ProviderSpec("google", "stt", GoogleSTTOptions, _build_stt, _MODULES, "google"),
    ProviderSpec("google", "tts", GeminiTTSOptions, _build_tts, _MODULES, "google", "Gemini TTS"),
)

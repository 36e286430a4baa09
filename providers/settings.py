"""`SpeechSettings`: which STT/TTS providers to use and their options.

Sources, highest priority first: constructor arguments > environment > `.env` > the TOML file
named by `VOICE_CONFIG_FILE` > defaults. All names are case-insensitive. The TOML file uses the
same names as the environment, either flat (`DEEPGRAM_STT_MODEL = "nova-3"`) or in a table
named after the prefix (`[deepgram]` + `stt_model = "nova-3"`).

Common knobs and the well-known API keys are declared fields. Every other variable a
registered provider declares (see `ProviderOptions`) is collected into `provider_env`, so a new
provider file needs no change here. Extend by subclassing and adding fields.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from brain.config import checked_base_url
from brain.errors import register_secrets_of

from .errors import ProviderConfigError
from .spec import field_variables

CONFIG_FILE_VAR = "VOICE_CONFIG_FILE"

ProviderList = Annotated[list[str], NoDecode]


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}_{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(_flatten(value, name))
        else:
            out[name.upper()] = value
    return out


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Flattened, upper-cased contents of a TOML config file."""
    p = Path(path).expanduser()
    try:
        with p.open("rb") as f:
            return _flatten(tomllib.load(f))
    except FileNotFoundError:
        raise ProviderConfigError(f"{CONFIG_FILE_VAR}={path}: file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ProviderConfigError(f"{CONFIG_FILE_VAR}={path}: invalid TOML: {e}") from None


class TomlFileSource(PydanticBaseSettingsSource):
    """Values from the TOML file named by VOICE_CONFIG_FILE (speech and realtime settings).

    The variable itself may be in the environment or in `.env` (`dotenv`, the settings'
    own dotenv source), as every other variable may.
    """

    def __init__(self, settings_cls: type[BaseSettings], dotenv: PydanticBaseSettingsSource | None = None) -> None:
        super().__init__(settings_cls)
        self._dotenv = dotenv

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ returns everything at once

    def config_path(self) -> str | None:
        path = os.environ.get(CONFIG_FILE_VAR)
        if path:
            return path
        dotenv_vars: Mapping[str, Any] = getattr(self._dotenv, "env_vars", None) or {}
        for name, value in dotenv_vars.items():
            if name.upper() == CONFIG_FILE_VAR and value:
                return str(value)
        return None

    def __call__(self) -> dict[str, Any]:
        path = self.config_path()
        return read_config_file(path) if path else {}


class _Normalised(PydanticBaseSettingsSource):
    """Wraps a source: keys of declared fields -> their canonical variable name, and variables
    of registered providers -> `provider_env`. Priorities between sources are kept."""

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        inner: PydanticBaseSettingsSource,
        collected: Callable[[], set[str]],
    ) -> None:
        super().__init__(settings_cls)
        self._inner = inner
        self._collected = collected

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        data = self._inner()
        raw: Mapping[str, Any] = (
            getattr(self._inner, "env_vars", None)
            or getattr(self._inner, "init_kwargs", None)
            or {}
        )
        own = {k.upper(): v for k, v in data.items()}
        out: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            names = [*field_variables(name, field), name.upper()]
            for n in names:
                if n.upper() in own and n != "PROVIDER_ENV":
                    out[names[0]] = own[n.upper()]
                    break
        provider_env = dict(own.get("PROVIDER_ENV") or {})
        upper = {k.upper(): v for k, v in {**raw, **data}.items()}
        for n in self._collected():
            if n in upper and n not in provider_env and upper[n] not in (None, ""):
                provider_env[n] = upper[n]
        if provider_env:
            out["provider_env"] = provider_env
        return out


class SpeechSettings(BaseSettings):
    """Speech-provider configuration (see docs/providers.md for every variable)."""

    model_config = SettingsConfigDict(
        allow_inf_nan=False,  # `inf` timeouts overflow later; NaN passes every bound
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,  # `NAME=` (as in .env.example) means "use the default"
        extra="ignore",
        populate_by_name=True,
        case_sensitive=False,
    )

    # --- chains: first is primary, the rest are fallbacks ---
    stt_providers: ProviderList = Field(
        default_factory=lambda: ["local"],
        validation_alias=AliasChoices("STT_PROVIDERS", "STT_PROVIDER"),
    )
    tts_providers: ProviderList = Field(
        default_factory=lambda: ["local"],
        validation_alias=AliasChoices("TTS_PROVIDERS", "TTS_PROVIDER"),
    )
    # --- chain-wide defaults (each provider's own <NAME>_STT_LANGUAGE etc. wins) ---
    stt_language: str | None = Field(None, validation_alias="STT_LANGUAGE")
    tts_language: str | None = Field(None, validation_alias="TTS_LANGUAGE")
    # --- fallback behaviour (used only when a chain has more than one provider) ---
    fallback_max_retry: int = Field(0, ge=0, validation_alias="FALLBACK_MAX_RETRY")
    fallback_retry_interval: float = Field(0.5, ge=0, validation_alias="FALLBACK_RETRY_INTERVAL")
    fallback_attempt_timeout: float = Field(10.0, gt=0, validation_alias="FALLBACK_ATTEMPT_TIMEOUT")
    # --- credentials / endpoints of the built-in providers ---
    openai_api_key: SecretStr | None = Field(None, validation_alias="OPENAI_API_KEY")
    openai_base_url: str | None = Field(None, validation_alias="OPENAI_BASE_URL")
    deepgram_api_key: SecretStr | None = Field(None, validation_alias="DEEPGRAM_API_KEY")
    azure_speech_key: SecretStr | None = Field(None, validation_alias="AZURE_SPEECH_KEY")
    azure_speech_region: str | None = Field(None, validation_alias="AZURE_SPEECH_REGION")
    google_application_credentials: str | None = Field(
        None, validation_alias="GOOGLE_APPLICATION_CREDENTIALS"
    )
    google_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("GEMINI_API_KEY", "GOOGLE_API_KEY")
    )
    eleven_api_key: SecretStr | None = Field(None, validation_alias="ELEVEN_API_KEY")
    cartesia_api_key: SecretStr | None = Field(None, validation_alias="CARTESIA_API_KEY")
    fish_api_key: SecretStr | None = Field(None, validation_alias="FISH_API_KEY")
    hume_api_key: SecretStr | None = Field(None, validation_alias="HUME_API_KEY")
    resemble_api_key: SecretStr | None = Field(None, validation_alias="RESEMBLE_API_KEY")
    # --- everything else registered providers read, by variable name (may hold secrets) ---
    provider_env: dict[str, Any] = Field(default_factory=dict, repr=False)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as e:
            # name the variables, never echo the (possibly secret) input values
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
            )
            raise ProviderConfigError(f"invalid speech settings: {problems}") from None

    def model_post_init(self, context: Any, /) -> None:
        register_secrets_of(self)  # its keys never reach logs or error envelopes, whatever echoes them

    def secret_values(self) -> list[str]:
        """The keys of providers the settings do not declare (a provider added in catalog/):
        `provider_env` holds them as plain strings. `register_secrets_of` scrubs them literally,
        as it does the `SecretStr` fields, wherever they were read from (`.env` too)."""
        from .registry import secret_variables  # late: the registry imports provider files

        keys = secret_variables()
        return [v for n, v in self.provider_env.items() if n.upper() in keys and isinstance(v, str)]

    @field_validator("openai_base_url", mode="before")
    @classmethod
    def _base_url(cls, v: object) -> object:
        return checked_base_url(v)

    @field_validator("stt_providers", "tts_providers", mode="before")
    @classmethod
    def _split_names(cls, value: Any) -> list[str]:
        items = value.split(",") if isinstance(value, str) else list(value or [])
        names = [str(n).strip().lower() for n in items if str(n).strip()]
        if not names:
            raise ValueError("no provider named (expected e.g. 'openai,local')")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"provider listed twice: {', '.join(dupes)}")
        return names

    @classmethod
    def collected_variables(cls) -> set[str]:
        """Variable names gathered into `provider_env`: those of registered providers."""
        from .registry import all_variables  # late: the registry imports provider files

        declared = {v.upper() for n, f in cls.model_fields.items() for v in field_variables(n, f)}
        return {v.upper() for v in all_variables()} - declared

    def lookup(self) -> dict[str, Any]:
        """Every known value by variable name, as provider options read them."""
        values: dict[str, Any] = {k.upper(): v for k, v in self.provider_env.items()}
        for name, field in type(self).model_fields.items():
            if name == "provider_env":
                continue
            for var in field_variables(name, field):
                values[var.upper()] = getattr(self, name)
        return values

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = (init_settings, env_settings, dotenv_settings, TomlFileSource(settings_cls, dotenv_settings))
        collected = cls.collected_variables
        return tuple(_Normalised(settings_cls, s, collected) for s in sources)

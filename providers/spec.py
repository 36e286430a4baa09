"""What a provider file declares: its options (read by variable name) and how to build it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, TypeVar, get_args

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from brain.config import checked_base_url

Kind = Literal["stt", "tts"]


def field_variables(name: str, field: FieldInfo) -> list[str]:
    """The variable names a field is read from, preferred first (its aliases, else its name)."""
    alias = field.validation_alias
    if isinstance(alias, str):
        return [alias]
    if isinstance(alias, AliasChoices):
        return [c for c in alias.choices if isinstance(c, str)]
    return [name.upper()]


class ProviderOptions(BaseModel):
    """One provider's options. Each field's `validation_alias` is its variable name
    (e.g. `DEEPGRAM_STT_MODEL`); `AliasChoices` lists fallbacks such as `STT_LANGUAGE`."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True, allow_inf_nan=False)

    required: ClassVar[tuple[str, ...]] = ()
    """Field names that must be set (keys); reported by variable name when missing."""

    @model_validator(mode="before")
    @classmethod
    def _blank_means_unset(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            # a value of spaces too (`LOCAL_TTS_VOICE= ` picked espeak's en-gb, not the en-us default)
            return {k: v for k, v in data.items() if v is not None and not (isinstance(v, str) and not v.strip())}
        return data

    @field_validator("*", mode="before")
    @classmethod
    def _base_urls(cls, v: Any, info: ValidationInfo) -> Any:
        return checked_base_url(v) if (info.field_name or "").endswith("base_url") else v

    @classmethod
    def variables(cls) -> list[str]:
        """Every variable name this provider reads."""
        return [v for n, f in cls.model_fields.items() for v in field_variables(n, f)]

    @classmethod
    def secret_variables(cls) -> list[str]:
        """The variable names of this provider's keys: its `SecretStr` fields."""
        return [
            v
            for n, f in cls.model_fields.items()
            if _holds_secret(f.annotation)
            for v in field_variables(n, f)
        ]

    @classmethod
    def variable(cls, field_name: str) -> str:
        return field_variables(field_name, cls.model_fields[field_name])[0]

    def missing(self) -> list[str]:
        """Variable names of required settings that are not set."""
        return [
            " or ".join(field_variables(name, type(self).model_fields[name]))
            for name in self.required
            if not is_set(getattr(self, name))
        ]


OptionsT = TypeVar("OptionsT", bound=ProviderOptions)
ProductT = TypeVar("ProductT")


@dataclass(frozen=True)
class ProviderSpec(Generic[OptionsT, ProductT]):
    """A named STT or TTS provider.

    `build` runs at start-up with validated options and must not touch the network.
    `modules` are imported first; if that fails the user is told to `pip install '.[extra]'`.
    """

    name: str
    kind: Kind
    options: type[OptionsT]
    build: Callable[[OptionsT], ProductT]
    modules: tuple[str, ...] = ()
    extra: str | None = None
    summary: str = ""


def _holds_secret(annotation: Any) -> bool:
    """`SecretStr`, `SecretStr | None`, `Optional[SecretStr]`, ..."""
    return annotation is SecretStr or any(_holds_secret(a) for a in get_args(annotation))


def is_set(value: object) -> bool:
    """A setting has a value: a key (secret or not) of spaces is no key. For `missing()`."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, str):
        value = value.strip()
    return bool(value)


def secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None

"""Provider registry: name -> `ProviderSpec`, per kind.

Adding a provider = one file in `catalog/` exposing `SPECS`, plus its module name below.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from .errors import ProviderConfigError
from .spec import Kind, ProviderSpec

CATALOG: tuple[str, ...] = (
    "local",
    "openai",
    "deepgram",
    "azure",
    "google",
    "elevenlabs",
    "cartesia",
    "fishaudio",
    "hume",
    "resemble",
)

AnySpec = ProviderSpec[Any, Any]
SPECS: dict[Kind, dict[str, AnySpec]] = {"stt": {}, "tts": {}}
CHAIN_VARIABLE: dict[Kind, str] = {"stt": "STT_PROVIDERS", "tts": "TTS_PROVIDERS"}


def register(spec: AnySpec) -> None:
    """Add (or replace) a provider; catalog modules are registered at import."""
    SPECS[spec.kind][spec.name] = spec


for _module in CATALOG:
    for _spec in importlib.import_module(f"{__package__}.catalog.{_module}").SPECS:
        register(_spec)


def names(kind: Kind) -> list[str]:
    return sorted(SPECS[kind])


def get_spec(kind: Kind, name: str) -> AnySpec:
    try:
        return SPECS[kind][name]
    except KeyError:
        raise ProviderConfigError(
            f"unknown {kind.upper()} provider {name!r} in {CHAIN_VARIABLE[kind]}; "
            f"valid: {', '.join(names(kind))}"
        ) from None


def all_variables() -> set[str]:
    """Every variable name any registered provider reads."""
    return {v for kind in SPECS.values() for s in kind.values() for v in s.options.variables()}


def secret_variables() -> set[str]:
    """The variable names of every registered provider's keys (its `SecretStr` options)."""
    return {v for kind in SPECS.values() for s in kind.values() for v in s.options.secret_variables()}


def install_hint(spec: AnySpec) -> str:
    return f"pip install '.[{spec.extra}]'" if spec.extra else "pip install ."


def is_installed(spec: AnySpec) -> bool:
    """Cheap check (no import) that the provider's modules can be found."""
    for module in spec.modules:
        try:
            if importlib.util.find_spec(module) is None:
                return False
        except (ImportError, ValueError):
            return False
    return True

"""`provider_report`: which providers are installed, configured and chosen (no network)."""

from __future__ import annotations

import importlib
import threading

from pydantic import BaseModel

from .factory import resolve_options
from .registry import SPECS, AnySpec, install_hint, is_installed, names
from .settings import SpeechSettings
from .spec import Kind


class ProviderStatus(BaseModel):
    kind: Kind
    name: str
    installed: bool
    configured: bool
    chosen: bool
    reason: str = ""
    """Empty when usable; else the fix, e.g. "missing OPENAI_API_KEY" or "pip install '.[deepgram]'"."""


def provider_report(settings: SpeechSettings | None = None) -> list[ProviderStatus]:
    """One row per registered provider and kind, plus rows for unknown chosen names."""
    settings = settings or SpeechSettings()
    rows: list[ProviderStatus] = []
    chains: dict[Kind, list[str]] = {"stt": settings.stt_providers, "tts": settings.tts_providers}
    for kind, chain in chains.items():
        for name, spec in sorted(SPECS[kind].items()):
            installed = is_installed(spec)
            broken = _import_problem(spec) if installed and name in chain else None
            _, problem = resolve_options(spec, settings)
            reason = install_hint(spec) if not installed else broken or problem
            installed = installed and broken is None
            rows.append(
                ProviderStatus(
                    kind=kind,
                    name=name,
                    installed=installed,
                    configured=not problem,
                    chosen=name in chain,
                    reason=reason,
                )
            )
        for name in chain:
            if name not in SPECS[kind]:
                rows.append(
                    ProviderStatus(
                        kind=kind,
                        name=name,
                        installed=False,
                        configured=False,
                        chosen=True,
                        reason=f"unknown provider; valid: {', '.join(names(kind))}",
                    )
                )
    return rows


def _import_problem(spec: AnySpec) -> str | None:
    """Why a chosen provider's plugin, found on disk, does not import (None: it does); the
    worker imports it at start-up, and a plugin that fails there is not "ok". Only on the main
    thread, where livekit lets plugins register; elsewhere the on-disk check stands."""
    if threading.current_thread() is not threading.main_thread():
        return None
    for module in spec.modules:
        try:
            importlib.import_module(module)
        except Exception as e:  # noqa: BLE001 - any failure while importing is the answer
            return f"{module} does not import ({type(e).__name__}: {e})"
    return None

"""Speech providers (STT / TTS) chosen by name from configuration.

    settings = SpeechSettings()              # env, .env, VOICE_CONFIG_FILE (TOML)
    stt = create_stt(settings, vad=vad)      # one provider, or a chain (BatchFallbackSTT / StreamingFallbackSTT)
    tts = create_tts(settings)
    for row in provider_report(settings): ...

`local` works offline (pocketsphinx / espeak-ng); cloud providers use the official
livekit plugins, installed with `pip install '.[name]'`. See docs/providers.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import ProviderConfigError
    from .factory import build_provider, check_chains, create_stt, create_tts, import_plugins
    from .local_stt import LocalSTT
    from .local_tts import LocalTTS
    from .registry import get_spec, names, register
    from .report import ProviderStatus, provider_report
    from .settings import SpeechSettings
    from .spec import ProviderOptions, ProviderSpec

# Exports load on first use: the pocketsphinx worker process imports `providers._sphinx_worker`
# and must not pay for importing livekit.
_EXPORTS = {
    "ProviderConfigError": "errors",
    "build_provider": "factory",
    "check_chains": "factory",
    "create_stt": "factory",
    "create_tts": "factory",
    "import_plugins": "factory",
    "LocalSTT": "local_stt",
    "LocalTTS": "local_tts",
    "get_spec": "registry",
    "names": "registry",
    "register": "registry",
    "ProviderStatus": "report",
    "provider_report": "report",
    "SpeechSettings": "settings",
    "ProviderOptions": "spec",
    "ProviderSpec": "spec",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'providers' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "LocalSTT",
    "LocalTTS",
    "ProviderConfigError",
    "ProviderOptions",
    "ProviderSpec",
    "ProviderStatus",
    "SpeechSettings",
    "build_provider",
    "check_chains",
    "create_stt",
    "create_tts",
    "get_spec",
    "import_plugins",
    "names",
    "provider_report",
    "register",
]

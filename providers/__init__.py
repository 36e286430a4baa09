"""Speech providers (STT / TTS) chosen by name from configuration.

    settings = SpeechSettings()              # env, .env, VOICE_CONFIG_FILE (TOML)
    stt = create_stt(settings, vad=vad)      # one provider or a FallbackAdapter chain
    tts = create_tts(settings)
    for row in provider_report(settings): ...

`local` works offline (pocketsphinx / espeak-ng); cloud providers use the official
livekit plugins, installed with `pip install '.[name]'`. See docs/providers.md.
"""

from .errors import ProviderConfigError
from .factory import build_provider, create_stt, create_tts, import_plugins
from .local_stt import LocalSTT
from .local_tts import LocalTTS
from .registry import get_spec, names, register
from .report import ProviderStatus, provider_report
from .settings import SpeechSettings
from .spec import ProviderOptions, ProviderSpec

__all__ = [
    "LocalSTT",
    "LocalTTS",
    "ProviderConfigError",
    "ProviderOptions",
    "ProviderSpec",
    "ProviderStatus",
    "SpeechSettings",
    "build_provider",
    "create_stt",
    "create_tts",
    "get_spec",
    "import_plugins",
    "names",
    "provider_report",
    "register",
]

"""`create_stt` / `create_tts`: build the configured provider chain at start-up."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar

from livekit.agents import stt, tts
from livekit.agents.vad import VAD
from pydantic import ValidationError

from .chains import BatchFallbackSTT, StreamingFallbackSTT
from .errors import ProviderConfigError
from .provider_errors import tag_provider
from .registry import CHAIN_VARIABLE, AnySpec, get_spec, install_hint
from .settings import SpeechSettings
from .spec import Kind, ProviderOptions
from .tts_chains import SentenceFallbackTTS, StreamingSentenceFallbackTTS

T = TypeVar("T")


def resolve_options(spec: AnySpec, settings: SpeechSettings) -> tuple[ProviderOptions | None, str]:
    """The provider's validated options, or None and what is wrong (no secrets in it)."""
    try:
        options = spec.options.model_validate(settings.lookup())
    except ValidationError as e:
        return None, "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
        )
    missing = options.missing()
    if missing:
        return options, "missing " + ", ".join(missing)
    return options, ""


def _import_modules(spec: AnySpec) -> None:
    for module in spec.modules:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ProviderConfigError(
                f"{spec.kind.upper()} provider {spec.name!r} needs {module}, which does not "
                f"import ({e}); install it with: {install_hint(spec)}"
            ) from None
        except RuntimeError as e:  # livekit registers plugins on the main thread only
            raise ProviderConfigError(
                f"{spec.kind.upper()} provider {spec.name!r}: importing {module} failed ({e}); "
                "call providers.import_plugins(settings) on the main thread at start-up"
            ) from None


def import_plugins(settings: SpeechSettings | None = None) -> None:
    """Import the plugins of every chosen provider. Call it on the main thread when the
    worker starts: livekit registers plugins (and their file downloads) at import time."""
    settings = settings or SpeechSettings()
    chains: dict[Kind, list[str]] = {"stt": settings.stt_providers, "tts": settings.tts_providers}
    for kind, chain in chains.items():
        for name in chain:
            _import_modules(get_spec(kind, name))


def checked_provider(kind: Kind, name: str, settings: SpeechSettings) -> tuple[AnySpec, ProviderOptions]:
    """A provider's spec and validated options, its plugin imported; nothing built, no network.
    ProviderConfigError says exactly what to fix."""
    spec = get_spec(kind, name)
    _import_modules(spec)
    options, problem = resolve_options(spec, settings)
    if problem or options is None:
        raise ProviderConfigError(f"{kind.upper()} provider {name!r}: {problem}")
    return spec, options


def build_provider(kind: Kind, name: str, settings: SpeechSettings) -> Any:
    """One provider instance; ProviderConfigError says exactly what to fix."""
    spec, options = checked_provider(kind, name, settings)
    try:
        instance = spec.build(options)
    except Exception as e:
        raise ProviderConfigError(f"{kind.upper()} provider {name!r}: {e}") from e
    tag_provider(instance, name)  # error reports then say "deepgram", not a hostname
    return instance


def _per_provider(kind: Kind, names: list[str], settings: SpeechSettings, step: Callable[..., T]) -> list[T]:
    """`step` for every provider of a chain; one ProviderConfigError listing every problem."""
    done, problems = [], []
    for name in names:
        try:
            done.append(step(kind, name, settings))
        except ProviderConfigError as e:
            problems.append(str(e))
    if problems:
        raise ProviderConfigError(f"{CHAIN_VARIABLE[kind]}={','.join(names)}: " + " | ".join(problems))
    return done


def _build_chain(kind: Kind, names: list[str], settings: SpeechSettings) -> list[Any]:
    return _per_provider(kind, names, settings, build_provider)


def check_chains(settings: SpeechSettings | None = None) -> None:
    """Validate the STT and TTS chains without building them (no network): every name is
    known, its plugin imports (on the main thread, as livekit requires) and its options and
    keys are there. Raises one ProviderConfigError listing every problem of a chain."""
    settings = settings or SpeechSettings()
    _per_provider("stt", settings.stt_providers, settings, checked_provider)
    _per_provider("tts", settings.tts_providers, settings, checked_provider)


def create_stt(settings: SpeechSettings | None = None, *, vad: VAD | None = None) -> stt.STT:
    """The configured STT: one provider, or a fallback chain over the providers in order.

    A chain of non-streaming providers (local, openai, ...) is a `BatchFallbackSTT`; a chain
    with a streaming provider is livekit's `FallbackAdapter`, whose non-streaming members run
    behind a `StreamAdapter`. Either needs `vad` (e.g. `silero.VAD.load()`).
    """
    settings = settings or SpeechSettings()
    instances: list[stt.STT] = _build_chain("stt", settings.stt_providers, settings)
    if len(instances) == 1:
        return instances[0]
    batch_only = [
        n
        for n, s in zip(settings.stt_providers, instances, strict=True)
        if not s.capabilities.streaming
    ]
    if batch_only and vad is None:
        raise ProviderConfigError(
            f"STT_PROVIDERS={','.join(settings.stt_providers)}: {', '.join(batch_only)} "
            "cannot stream, so a fallback chain with them needs a VAD: "
            "create_stt(settings, vad=silero.VAD.load())"
        )
    chain = BatchFallbackSTT if len(batch_only) == len(instances) else StreamingFallbackSTT
    engine = chain(
        instances,
        vad=vad,
        attempt_timeout=settings.fallback_attempt_timeout,
        max_retry_per_stt=settings.fallback_max_retry,
        retry_interval=settings.fallback_retry_interval,
    )
    tag_provider(engine, ",".join(settings.stt_providers))  # a failing chain is "openai,local"
    return engine


def create_tts(settings: SpeechSettings | None = None) -> tts.TTS:
    """The configured TTS: one provider, or a fallback chain over the providers in order
    (output at the highest sample rate of the chain; others are resampled).

    Both kinds fail over sentence by sentence: a chain led by a provider that cannot stream
    (openai, azure, hume) is a `SentenceFallbackTTS`, a chain led by a streaming provider a
    `StreamingSentenceFallbackTTS`, which streams each sentence's text to it as it arrives.
    """
    settings = settings or SpeechSettings()
    instances: list[tts.TTS] = _build_chain("tts", settings.tts_providers, settings)
    if len(instances) == 1:
        return instances[0]
    engine: tts.TTS
    if instances[0].capabilities.streaming:
        chain: type[SentenceFallbackTTS] | type[StreamingSentenceFallbackTTS] = StreamingSentenceFallbackTTS
    else:
        chain = SentenceFallbackTTS
    engine = chain(
        instances,
        attempt_timeout=settings.fallback_attempt_timeout,
        max_retry_per_tts=settings.fallback_max_retry,
        retry_interval=settings.fallback_retry_interval,
    )
    tag_provider(engine, ",".join(settings.tts_providers))
    return engine

"""`create_voice_brain`: config in, a ready VoiceBrain out (keys checked at start-up)."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable
from typing import Any

from .approvals import ApprovalGate
from .backends.base import ModelBackend
from .config import BrainConfig
from .errors import ConfigError, register_secrets_of
from .memory import ConversationMemory
from .tools import Tool, ToolSet, load_tool_modules
from .voice_brain import BrainSettings, VoiceBrain


def _secret(value: Any) -> str:
    return value.get_secret_value() if value is not None else ""


def load_factory(path: str) -> Callable[..., Any]:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"custom brain must look like 'package.module:factory', got {path!r} (BRAIN_BACKEND)")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or the module itself failed (SyntaxError, a raise)
        raise ConfigError(
            f"cannot import custom brain module {module_name!r} (BRAIN_BACKEND): {type(exc).__name__}: {exc}"
        ) from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"{module_name!r} has no callable {attr!r} (BRAIN_BACKEND)")
    if inspect.iscoroutinefunction(factory):
        raise ConfigError(f"{path} is async; it must be a plain function returning a ModelBackend (BRAIN_BACKEND)")
    return factory


def _call_factory(factory: Callable[..., Any], config: BrainConfig) -> Any:
    """`factory(config)` or `factory()`, whichever its signature takes; any failure names the variable."""
    try:
        signature = inspect.signature(factory)
    except ValueError:  # no signature to read (a builtin): offer the config
        signature = None
    args: tuple[Any, ...] = (config,)
    if signature is not None:
        for candidate in ((config,), ()):
            try:
                signature.bind(*candidate)
            except TypeError:
                continue
            args = candidate
            break
        else:
            raise ConfigError(f"{config.backend} must take no argument or one (the BrainConfig) (BRAIN_BACKEND)")
    try:
        return factory(*args)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"{config.backend} failed (BRAIN_BACKEND): {type(exc).__name__}: {exc}") from exc


def build_backend(config: BrainConfig) -> ModelBackend:
    config.require_keys()
    if config.backend == "offline":
        from .backends.offline import OfflineBackend

        return OfflineBackend(token_delay=config.offline_token_delay)
    if config.backend == "openai":
        from .backends.openai_chat import OpenAIChatBackend

        return OpenAIChatBackend(
            api_key=_secret(config.openai_api_key),
            base_url=config.openai_base_url,
            timeout=config.request_timeout,
            max_retries=config.max_retries,
        )
    if config.backend == "gemini":
        from .backends.gemini import GeminiBackend

        return GeminiBackend(
            api_key=_secret(config.gemini_api_key),
            base_url=config.gemini_base_url,
            timeout=config.request_timeout,
            max_retries=config.max_retries,
        )
    factory = load_factory(config.backend)
    backend = _call_factory(factory, config)
    if not isinstance(backend, ModelBackend):
        missing = [a for a in ("name", "stream", "aclose") if not hasattr(backend, a)]
        raise ConfigError(
            f"{config.backend} returned {type(backend).__name__}, which is not a ModelBackend "
            f"(it needs a `name`, `stream(request)` and `aclose()`; missing: {', '.join(missing) or 'none'}) (BRAIN_BACKEND)"
        )
    # mistakes that would only show in every turn ("'async for' requires an object with __aiter__")
    kind = type(backend).__name__
    name = getattr(backend, "name", None)
    if not isinstance(name, str) or not name.strip():  # it names the backend in every error event
        raise ConfigError(f"{kind}.name must be a non-empty string, got {name!r:.40} (BRAIN_BACKEND)")
    try:
        stream_signature = inspect.signature(backend.stream)
    except (TypeError, ValueError):  # no signature to read: the first turn will tell
        stream_signature = None
    if stream_signature is not None:
        try:
            stream_signature.bind(None)
        except TypeError:
            raise ConfigError(
                f"{kind}.stream{stream_signature} must take one argument, the ModelRequest: "
                "`async def stream(self, request)` (BRAIN_BACKEND)"
            ) from None
    if inspect.isgeneratorfunction(backend.stream):
        raise ConfigError(f"{kind}.stream is a plain generator; write it as `async def stream(self, request)` with `yield` (BRAIN_BACKEND)")
    if inspect.iscoroutinefunction(backend.stream):
        raise ConfigError(f"{kind}.stream is `async def` without `yield`; it must yield its output (BRAIN_BACKEND)")
    return backend


def create_voice_brain(
    config: BrainConfig | None = None,
    *,
    tools: Iterable[Tool | Callable[..., Any]] | None = None,
    approvals: ApprovalGate | None = None,
    backend: ModelBackend | None = None,
) -> VoiceBrain:
    """Build a brain from config. Tools passed here are added to the modules named in BRAIN_TOOLS."""
    config = config or BrainConfig()
    register_secrets_of(config)  # its keys never reach logs or error messages, whatever echoes them
    toolset = ToolSet(tools or ())
    for t in load_tool_modules(config.tools):
        if toolset.get(t.name) is None:  # a tool passed here wins over a module's namesake
            toolset.add(t)
    return VoiceBrain(
        backend or build_backend(config),
        tools=toolset,
        approvals=approvals,
        memory=ConversationMemory(max_turns=config.memory_turns, max_chars=config.memory_chars),
        settings=BrainSettings(
            model=config.effective_model,
            system_prompt=config.system_prompt,
            temperature=config.temperature,
            max_tokens=config.max_tokens,
            user_id=config.user_id,
            hitl_timeout=config.hitl_timeout,
            tool_timeout=config.tool_timeout,
            max_tool_steps=config.max_tool_steps,
            apology=config.apology,
            request_timeout=config.request_timeout,
        ),
    )

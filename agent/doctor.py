"""`python -m agent doctor`: which providers are usable, and the effective configuration.

Every provider the agent can use is one row: speech (STT / TTS, from `providers`), the brain's
model backends (`llm`) and the tool modules it loads (`tools`), and realtime models (`realtime`), each with installed / configured /
chosen and, when it is not usable, why (the variable to set or the package to install). The
worker serves the same rows on `GET /providers` (agent.health). Nothing touches the network.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from typing import Any, TextIO

from brain.errors import ConfigError
from brain.factory import load_factory
from brain.tools import load_tool_module, load_tool_modules

from .config import AgentSettings
from .log_redaction import redact_value

BRAIN_BACKENDS: dict[str, tuple[str | None, str | None, str]] = {
    # name: (module that must import, key variable, install hint)
    "offline": (None, None, ""),
    "openai": ("openai", "OPENAI_API_KEY", "pip install openai"),
    "gemini": ("google.genai", "GEMINI_API_KEY or GOOGLE_API_KEY", "pip install google-genai"),
}
REALTIME_PLUGINS: dict[str, tuple[str, str, str]] = {
    "openai-realtime": ("livekit.plugins.openai", "OPENAI_API_KEY", "pip install '.[openai]'"),
    "gemini-live": ("livekit.plugins.google", "GEMINI_API_KEY or GOOGLE_API_KEY", "pip install '.[google]'"),
}


def _installed(module: str | None) -> bool:
    if module is None:
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _secret_set(value: Any) -> bool:
    if value is None:
        return False
    raw = value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
    return bool(raw.strip())


def _row(kind: str, name: str, installed: bool, configured: bool, chosen: bool, reason: str) -> dict[str, Any]:
    return {"kind": kind, "name": name, "installed": installed, "configured": configured, "chosen": chosen, "reason": reason}


def speech_rows(settings: AgentSettings) -> list[dict[str, Any]]:
    from providers import provider_report

    rows = [row.model_dump() for row in provider_report(settings.speech)]
    if settings.mode != "pipeline":
        for row in rows:  # the realtime model listens and speaks
            if row["chosen"]:
                row["chosen"] = False
                row["reason"] = (row["reason"] + "; " if row["reason"] else "") + "not used: AGENT_MODE=realtime"
    return rows


def brain_rows(settings: AgentSettings) -> list[dict[str, Any]]:
    b = settings.brain
    keys = {"openai": b.openai_api_key, "gemini": b.gemini_api_key}
    pipeline = settings.mode == "pipeline"
    rows = []
    for name, (module, key_var, hint) in BRAIN_BACKENDS.items():
        installed = _installed(module)
        configured = key_var is None or _secret_set(keys.get(name))
        reason = hint if not installed else ("" if configured else f"missing {key_var}")
        if b.backend == name and not pipeline:  # the realtime model answers
            reason = (reason + "; " if reason else "") + "not used: AGENT_MODE=realtime"
        rows.append(_row("llm", name, installed, configured, pipeline and b.backend == name, reason))
    if b.backend not in BRAIN_BACKENDS:  # a custom brain: package.module:factory
        module = b.backend.partition(":")[0]
        installed = _installed(module)
        reason = "" if installed else f"module {module!r} not found (BRAIN_BACKEND)"
        if installed:
            try:  # imports it, as start-up does: the factory must exist (it is not called)
                load_factory(b.backend)
            except ConfigError as exc:
                reason = exc.message
        rows.append(_row("llm", b.backend, installed, installed and not reason, pipeline, reason))
    return rows


def realtime_rows(settings: AgentSettings) -> list[dict[str, Any]]:
    from providers.realtime import unsupported_setting

    rt = settings.realtime
    keys = {"openai-realtime": rt.openai_api_key, "gemini-live": rt.gemini_api_key}
    rows = []
    for name, (module, key_var, hint) in REALTIME_PLUGINS.items():
        installed = _installed(module)
        configured = _secret_set(keys[name])
        chosen = settings.mode == "realtime" and rt.provider == name
        reason = hint if not installed else ("" if configured else f"missing {key_var}")
        if problem := unsupported_setting(rt, name):  # refused at start-up too
            configured = False
            reason = (reason + "; " if reason else "") + problem
        if not chosen and settings.mode != "realtime" and rt.provider == name:
            reason = (reason + "; " if reason else "") + "not used: AGENT_MODE=pipeline"
        rows.append(_row("realtime", name, installed, configured, chosen, reason))
    return rows


def tool_rows(settings: AgentSettings) -> list[dict[str, Any]]:
    """The tool modules of BRAIN_TOOLS: each must import and define tools (as at start-up)."""
    from .startup_checks import check_tools

    rows = []
    loaded: list[str] = []  # the earlier modules that import (one that does not has its own row)
    for module in settings.brain.tools:
        try:
            names = [t.name for t in load_tool_module(module)]
        except ConfigError as exc:
            rows.append(_row("tools", module, False, False, True, str(exc)))
            continue
        try:
            for earlier in loaded:  # a name an earlier module already uses
                load_tool_modules([earlier, module])
        except ConfigError as exc:
            rows.append(_row("tools", module, True, False, True, exc.message))
        else:
            rows.append(_row("tools", module, True, True, True, ", ".join(names)))
        loaded.append(module)
    if all(r["configured"] for r in rows):
        try:
            check_tools(settings)
        except ConfigError as exc:  # BRIDGE_REPORT_OVERRIDES names a tool nobody defines
            rows.append(_row("tools", "BRIDGE_REPORT_OVERRIDES", True, False, True, exc.message))
    return rows


def provider_rows(settings: AgentSettings) -> list[dict[str, Any]]:
    """Every provider: speech, brain backends and their tool modules, realtime models."""
    return [*speech_rows(settings), *brain_rows(settings), *tool_rows(settings), *realtime_rows(settings)]


def unusable_chosen(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["chosen"] and not (r["installed"] and r["configured"])]


def chosen_options(settings: AgentSettings) -> dict[str, dict[str, Any]]:
    """Each chosen speech provider's effective options, by variable name (defaults included,
    secrets masked): what `LOCAL_STT_EARLY` or `DEEPGRAM_STT_MODEL` is when nobody set it."""
    from pydantic import SecretStr

    from providers.factory import resolve_options
    from providers.registry import get_spec
    from providers.spec import Kind

    out: dict[str, dict[str, Any]] = {}
    if settings.mode != "pipeline":
        return out
    speech = settings.speech
    chains: tuple[tuple[Kind, list[str]], ...] = (("stt", speech.stt_providers), ("tts", speech.tts_providers))
    for kind, chain in chains:
        for name in chain:
            try:
                spec = get_spec(kind, name)
            except ValueError as e:
                out[f"{kind} {name}"] = {"error": str(e)}
                continue
            options, problem = resolve_options(spec, speech)
            if options is None:
                out[f"{kind} {name}"] = {"error": problem}
                continue
            values: dict[str, Any] = {}
            for field in type(options).model_fields:
                value = getattr(options, field)
                if isinstance(value, SecretStr):
                    value = "***" if _secret_set(value) else None
                values[spec.options.variable(field)] = value
            out[f"{kind} {name}"] = values
    return out


def report(settings: AgentSettings) -> dict[str, Any]:
    # keys are masked by name; a password inside a URL (LIVEKIT_URL, *_BASE_URL) by its shape
    rows = provider_rows(settings)
    return redact_value({  # type: ignore[no-any-return]
        "mode": settings.mode,
        "ok": not unusable_chosen(rows),  # as GET /providers says it
        "providers": rows,
        "provider_options": chosen_options(settings),
        "config": settings.masked(),
    })


def format_report(data: dict[str, Any]) -> str:
    lines = [f"mode: {data.get('mode', 'pipeline')}", "providers (* = chosen):"]
    for row in data["providers"]:
        mark = "*" if row["chosen"] else " "
        state = "ok" if row["installed"] and row["configured"] else "unusable"
        reason = f"  ({row['reason']})" if row["reason"] else ""
        lines.append(f" {mark} {row['kind']:<8} {row['name']:<16} {state}{reason}")
    for provider, values in data.get("provider_options", {}).items():
        lines.append("")
        lines.append(f"{provider} (chosen):")
        for key, value in values.items():
            lines.append(f"  {key} = {json.dumps(value, default=str)}")
    lines.append("")
    lines.append("effective configuration (secrets masked):")
    for section, values in data["config"].items():
        lines.append(f"[{section}]")
        for key, value in (values or {}).items():
            lines.append(f"  {key} = {json.dumps(value, default=str)}")
    return "\n".join(lines)


def doctor_command(argv: list[str], *, out: TextIO = sys.stdout) -> int:
    p = argparse.ArgumentParser(prog="python -m agent doctor", description=__doc__)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = p.parse_args(argv)
    data = report(AgentSettings())
    if args.json:
        print(json.dumps(data, indent=2, default=str), file=out)
    else:
        print(format_report(data), file=out)
    return 1 if unusable_chosen(data["providers"]) else 0

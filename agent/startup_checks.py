"""Configuration checks run when the worker is defined, before it registers with LiveKit.

Providers and the brain are built per job, in the job process: without these checks a worker
with a wrong provider name or a missing key would register, accept rooms and fail in each.
Nothing here uses the network.
"""

from __future__ import annotations

from brain.errors import ConfigError
from brain.factory import load_factory
from brain.tools import load_tool_modules

from .config import AgentSettings


def check_configuration(settings: AgentSettings) -> None:
    """Raise a ValueError (ConfigError / ProviderConfigError) naming what to fix."""
    brain = settings.effective_brain()
    brain.require_keys()
    if ":" in brain.backend:  # a custom brain by import path
        load_factory(brain.backend)
    check_tools(settings)
    if settings.mode == "realtime":
        from providers.realtime import create_realtime_model

        create_realtime_model(settings.realtime)  # checks the key and the plugin; connects later
    else:
        from providers import check_chains

        check_chains(settings.speech)


def check_tools(settings: AgentSettings) -> list[str]:
    """Load the BRAIN_TOOLS modules as every job's brain will, and check that
    BRIDGE_REPORT_OVERRIDES names only their tools; returns the tool names."""
    names = [t.name for t in load_tool_modules(settings.brain.tools)]
    unknown = [name for name in settings.bridge.report_overrides if name not in names]
    if unknown:  # a misspelt `secret_tool=none` would leave that tool at its own, wider level
        raise ConfigError(
            f"BRIDGE_REPORT_OVERRIDES names {', '.join(map(repr, unknown))}, which no BRAIN_TOOLS module "
            f"defines (tools: {', '.join(names) or 'none'})"
        )
    return names

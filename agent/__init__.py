"""The livekit-agents worker and the command line (`python -m agent`); see docs/agent.md.

    from agent import AgentSettings, define_voice_agent
    server = define_voice_agent(AgentSettings())   # what the livekit-agents CLI runs

Names are imported lazily, so `python -m agent token` and friends stay light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AgentSettings": "agent.config",
    "define_voice_agent": "agent.worker",
    "VoiceWorker": "agent.worker",
    "VoiceSession": "agent.voice_session",
    "build_agent_session": "agent.voice_session",
    "BrainAgent": "agent.brain_agent",
    "BrainLLM": "agent.brain_agent",
    "Simulation": "agent.simulate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'agent' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)

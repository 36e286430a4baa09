"""The brain: transport-independent replies, memory, tools and human approval.

    brain = create_voice_brain(BrainConfig())
    async for delta in brain.stream_reply(Turn("what's the weather in Paris?", "room-1")):
        ...
"""

from .approvals import (
    ApprovalCancelled,
    ApprovalDecision,
    ApprovalGate,
    ApprovalRequest,
    InProcessApprovalGate,
    ResolveStatus,
    auto_approve,
    auto_reject,
)
from .backends.base import ModelBackend, ModelOutput, ModelRequest, TextChunk
from .config import BrainConfig
from .errors import (
    AuthError,
    BadRequestError,
    BrainError,
    CancelledTurnError,
    ConfigError,
    ContextTooLongError,
    InternalError,
    ProtocolError,
    ProviderTimeoutError,
    RateLimitedError,
    ToolFailedError,
    UnavailableError,
)
from .events import (
    ApprovalRequested,
    ApprovalResolved,
    BrainEvent,
    ErrorEvent,
    EventHub,
    ReportLevel,
    TextDelta,
    ToolFinished,
    ToolStarted,
    TurnDone,
    TurnStarted,
)
from .factory import create_voice_brain
from .memory import ConversationMemory, Message, ToolCall
from .tools import Tool, ToolContext, ToolSet, load_tool_module, make_tool, tool
from .turn import Turn, new_turn_id
from .voice_brain import BrainSettings, Cutoff, VoiceBrain

__all__ = [
    "ApprovalCancelled", "ApprovalDecision", "ApprovalGate", "ApprovalRequest", "ApprovalRequested",
    "ApprovalResolved", "AuthError", "BadRequestError", "BrainConfig", "BrainError", "BrainEvent",
    "BrainSettings", "CancelledTurnError", "ConfigError", "ContextTooLongError", "Cutoff", "ConversationMemory", "ErrorEvent",
    "EventHub", "InProcessApprovalGate", "InternalError", "Message", "ModelBackend", "ModelOutput",
    "ModelRequest", "ProtocolError", "ProviderTimeoutError", "RateLimitedError", "ReportLevel",
    "ResolveStatus", "TextChunk", "TextDelta", "Tool", "ToolCall", "ToolFailedError", "ToolFinished",
    "ToolContext", "ToolSet", "ToolStarted", "Turn", "TurnDone", "TurnStarted", "UnavailableError", "VoiceBrain",
    "auto_approve", "auto_reject", "create_voice_brain", "load_tool_module", "make_tool", "new_turn_id",
    "tool",
]

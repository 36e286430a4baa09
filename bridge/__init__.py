"""The event bridge: what the brain and the session do, as versioned JSON envelopes for web clients.

    bridge = attach_event_bridge(
        room,                               # rtc.Room, or any Transport (JsonLinesTransport for simulate)
        brain=brain, agent_name="assistant", served_identity=participant.identity,
        controls=my_controls,               # BridgeControls: interrupt(sender), user_text(sender, text)
        conversation_id=room.name,          # only this conversation's brain events are forwarded
        **BridgeConfig().attach_kwargs(),   # topic, allowed identities, report overrides, options
    )
    await session.start(agent, room=room, **BridgeConfig().session_start_options())  # lk.agent.session off
    bridge.publish_transcript("hello", final=True)
    bridge.publish_metrics(turn_id, {"e2e_ms": 812})
    bridge.publish_error("stt_unavailable", "speech recognition is down", fatal=False)
    await bridge.aclose()                   # pending approvals -> cancelled, queue flushed

Out: text streams on `topic` (default `voice-agent.events`). In: the RPC method
`options.control_method` (default `voice-agent.control`). Protocol: docs/protocol.md,
models in `bridge.protocol`, JSON Schema in bridge/protocol_v1.schema.json, browser helper in
bridge/client/voice-agent-events.js.
"""

from .config import BridgeConfig
from .event_bridge import (
    BrainLike,
    BridgeControls,
    BridgeOptions,
    BridgeStats,
    ControlRefused,
    EventBridge,
    attach_event_bridge,
)
from .livekit_transport import LiveKitRoomTransport, agent_session_start_options
from .protocol import DEFAULT_CONTROL_METHOD, DEFAULT_TOPIC, PROTOCOL_VERSION
from .transport import Inbound, JsonLinesTransport, MemoryTransport, Sent, Transport

__all__ = [
    "DEFAULT_CONTROL_METHOD", "DEFAULT_TOPIC", "PROTOCOL_VERSION", "BrainLike", "BridgeConfig",
    "BridgeControls", "BridgeOptions", "BridgeStats", "ControlRefused", "EventBridge", "Inbound", "JsonLinesTransport",
    "LiveKitRoomTransport", "MemoryTransport", "Sent", "Transport", "agent_session_start_options",
    "attach_event_bridge",
]

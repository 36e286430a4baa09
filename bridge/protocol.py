"""Protocol v1: the pydantic models web clients code against (the source of truth).

Three message families:

* `AgentEnvelope` - agent -> clients on the events topic, one per event, numbered by `seq`.
* `ClientMessage` - clients -> agent over the control RPC method.
* `Reply` - the agent's answer to one client message (`ack` or `error`), returned to its sender
  only as the RPC response. Replies are not part of the numbered event stream.

`bridge/protocol_v1.schema.json` is generated from these models (`python -m bridge schema`);
a test checks that the committed file matches.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

PROTOCOL_VERSION = 1
DEFAULT_TOPIC = "voice-agent.events"
DEFAULT_CONTROL_METHOD = "voice-agent.control"
SCHEMA_PATH = Path(__file__).with_name("protocol_v1.schema.json")

JsonScalar = str | int | float | bool | None
ToolStatus = Literal["ok", "error", "cancelled"]
HitlOutcome = Literal["approved", "rejected", "timeout", "cancelled"]
TurnReason = Literal["completed", "interrupted", "error"]
SessionEndReason = Literal["participant_left", "inactivity", "shutdown", "error"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)


# -- envelope payloads (agent -> clients) -----------------------------------------------------


class ControlInfo(_Model):
    method: str = Field(description="RPC method name clients call with ClientMessage JSON")
    max_message_bytes: int = Field(description="larger client messages are refused with too_large")


class UserTranscriptData(_Model):
    text: str
    final: bool


class AgentTextData(_Model):
    delta: str = Field(description="reply text to append; consecutive deltas may arrive merged")


class ToolStartedData(_Model):
    call_id: str
    tool: str
    arguments: dict[str, Any] | None = Field(default=None, description="present for report level args/full")


class ToolFinishedData(_Model):
    call_id: str
    tool: str
    status: ToolStatus
    result: Any = Field(default=None, description="present for report level full")
    error: str | None = Field(default=None, description="short reason, report level full only")


class HitlRequestData(_Model):
    request_id: str
    call_id: str
    tool: str
    prompt: str = Field(description="the question put to the user")
    arguments: dict[str, Any] | None = Field(default=None, description="present for report level args/full")
    deadline: int = Field(description="epoch milliseconds after which the request times out")
    for_: str | None = Field(default=None, alias="for", description="identity the request is addressed to")


class PendingRequestData(HitlRequestData):
    """An open approval request as listed in `session.hello`: its `hitl.request` data plus its turn."""

    turn: str | None = Field(default=None, description="the turn of the request's hitl.request")


class SessionHelloData(_Model):
    protocol: int = PROTOCOL_VERSION
    agent: str
    capabilities: list[str] = Field(description="subset of: hitl, interrupt, user_text")
    control: ControlInfo
    client: str | None = Field(default=None, description="identity of the client that joined")
    session: str | None = Field(default=None, description="conversation id, when known")
    pending: list[PendingRequestData] = Field(
        default_factory=list,
        description="approval requests still open when the hello was sent (a client that joins "
        "mid-session missed their hitl.request); each resolves later with hitl.resolved",
    )


class HitlResolvedData(_Model):
    request_id: str
    call_id: str
    tool: str
    outcome: HitlOutcome
    by: str | None = Field(default=None, description="identity that decided, or system:<why>")
    modified: bool = False
    reason: str | None = None


class TurnDoneData(_Model):
    reason: TurnReason
    text: str = Field(default="", description="the reply text of the turn as the user heard it (all of it when completed)")


class SessionEndedData(_Model):
    reason: SessionEndReason = Field(
        description="participant_left: the served participant left (or stayed away past the grace); "
        "inactivity: nobody spoke for the inactivity timeout (the goodbye was said); shutdown: the agent's "
        "worker is shutting down or restarting (start a new session to go on); error: a fatal error, "
        "sent before as an error envelope with fatal: true"
    )


class ErrorData(_Model):
    code: str
    message: str
    fatal: bool = False


MetricsData = dict[str, JsonScalar]


class _Envelope(_Model):
    v: Literal[1] = 1
    seq: int = Field(ge=1, description="per-session counter, +1 per envelope; a missing number is an envelope that could not be delivered (reported as publish_failed)")
    ts: int = Field(description="epoch milliseconds when the event happened")
    turn: str | None = None


class SessionHello(_Envelope):
    type: Literal["session.hello"] = "session.hello"
    data: SessionHelloData


class UserTranscript(_Envelope):
    type: Literal["user.transcript"] = "user.transcript"
    data: UserTranscriptData


class AgentText(_Envelope):
    type: Literal["agent.text"] = "agent.text"
    data: AgentTextData


class ToolStartedEnvelope(_Envelope):
    type: Literal["tool.started"] = "tool.started"
    data: ToolStartedData


class ToolFinishedEnvelope(_Envelope):
    type: Literal["tool.finished"] = "tool.finished"
    data: ToolFinishedData


class HitlRequest(_Envelope):
    type: Literal["hitl.request"] = "hitl.request"
    data: HitlRequestData


class HitlResolved(_Envelope):
    type: Literal["hitl.resolved"] = "hitl.resolved"
    data: HitlResolvedData


class TurnDoneEnvelope(_Envelope):
    type: Literal["turn.done"] = "turn.done"
    data: TurnDoneData


class SessionEnded(_Envelope):
    type: Literal["session.ended"] = "session.ended"
    data: SessionEndedData


class Metrics(_Envelope):
    type: Literal["metrics"] = "metrics"
    data: MetricsData


class ErrorEnvelope(_Envelope):
    type: Literal["error"] = "error"
    data: ErrorData


AgentEnvelope = Annotated[
    SessionHello
    | UserTranscript
    | AgentText
    | ToolStartedEnvelope
    | ToolFinishedEnvelope
    | HitlRequest
    | HitlResolved
    | TurnDoneEnvelope
    | Metrics
    | ErrorEnvelope
    | SessionEnded,
    Field(discriminator="type"),
]
ENVELOPE_TYPES = (
    "session.hello", "user.transcript", "agent.text", "tool.started", "tool.finished",
    "hitl.request", "hitl.resolved", "turn.done", "metrics", "error", "session.ended",
)

# -- client messages (clients -> agent) -------------------------------------------------------

ClientId = Annotated[str, Field(max_length=64, description="optional client correlation id, echoed in the reply")]


class HitlRespondData(_Model):
    request_id: str = Field(min_length=1, max_length=128)
    decision: Literal["approve", "reject"]
    arguments: dict[str, Any] | None = Field(default=None, description="replacement arguments (approve only)")
    reason: str | None = Field(default=None, max_length=500)


USER_TEXT_MAX_CHARS = 2000
"""The longest typed message the agent takes (`user.text`, and LiveKit's own chat topic)."""


class UserTextData(_Model):
    text: str = Field(min_length=1, max_length=USER_TEXT_MAX_CHARS, pattern=r"\S", description="not blank")


class EmptyData(_Model):
    pass


def _wire_requires_v_and_type(schema: dict[str, Any]) -> None:
    # the defaults are for building messages in Python; on the wire both are required
    schema["required"] = sorted({*schema.get("required", []), "v", "type"})


class _ClientMessage(_Model):
    model_config = ConfigDict(json_schema_extra=_wire_requires_v_and_type)

    v: Literal[1] = 1
    id: ClientId | None = None


class HitlRespond(_ClientMessage):
    type: Literal["hitl.respond"] = "hitl.respond"
    data: HitlRespondData


class AgentInterrupt(_ClientMessage):
    type: Literal["agent.interrupt"] = "agent.interrupt"
    data: EmptyData = Field(default_factory=EmptyData)


class UserText(_ClientMessage):
    type: Literal["user.text"] = "user.text"
    data: UserTextData


class SessionSync(_ClientMessage):
    """Ask which approval requests are open now (after a `seq` gap): the ack lists them."""

    type: Literal["session.sync"] = "session.sync"
    data: EmptyData = Field(default_factory=EmptyData)


ClientMessage = Annotated[HitlRespond | AgentInterrupt | UserText | SessionSync, Field(discriminator="type")]
CLIENT_MESSAGE_TYPES = ("hitl.respond", "agent.interrupt", "user.text", "session.sync")

# -- replies (agent -> one client, as the RPC response) ---------------------------------------

ErrorCode = Literal[
    "too_large",            # message longer than control.max_message_bytes
    "malformed_json",       # not parseable as JSON
    "invalid_message",      # JSON, but not an object of the expected shape / types
    "unsupported_version",  # v is not 1
    "unknown_type",         # type is not a client message type
    "forbidden",            # sender may not do this
    "unknown_request",      # no such HITL request id (in this session)
    "already_resolved",     # the request was decided already
    "expired",              # the request timed out or was cancelled
    "invalid_arguments",    # modified arguments do not fit the tool
    "unsupported",          # this agent does not offer the action
    "internal",             # the agent failed to carry the action out
]


class AckData(_Model):
    type: str = Field(description="the client message type acknowledged")
    request_id: str | None = None
    pending: list[PendingRequestData] | None = Field(
        default=None,
        description="session.sync only (absent otherwise): the approval requests open now, by the "
        "rules of session.hello's pending",
    )
    truncated: bool | None = Field(
        default=None,
        description="session.sync only: true when pending had to be cut to fit the RPC reply "
        "(arguments left out, then the last requests); a client must not drop requests it knows "
        "because they are missing from a truncated list",
    )


class Ack(_Model):
    v: Literal[1] = 1
    type: Literal["ack"] = "ack"
    id: str | None = Field(default=None, description="the client message's id, if it had one")
    ts: int
    data: AckData


class ReplyErrorData(_Model):
    code: ErrorCode
    message: str
    fatal: bool = False


class ReplyError(_Model):
    v: Literal[1] = 1
    type: Literal["error"] = "error"
    id: str | None = None
    ts: int
    data: ReplyErrorData


Reply = Annotated[Ack | ReplyError, Field(discriminator="type")]

envelope_adapter: TypeAdapter[Any] = TypeAdapter(AgentEnvelope)
client_message_adapter: TypeAdapter[Any] = TypeAdapter(ClientMessage)
reply_adapter: TypeAdapter[Any] = TypeAdapter(Reply)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of protocol v1 (all three families), as committed in the repository."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "voice-agent bridge protocol v1",
        "description": (
            "AgentEnvelope: agent -> clients on the events topic. ClientMessage: clients -> agent "
            "over the control RPC method. Reply: the agent's answer to one ClientMessage."
        ),
        "protocol_version": PROTOCOL_VERSION,
        "default_topic": DEFAULT_TOPIC,
        "default_control_method": DEFAULT_CONTROL_METHOD,
        "AgentEnvelope": envelope_adapter.json_schema(mode="serialization"),
        "ClientMessage": client_message_adapter.json_schema(mode="validation"),
        "Reply": reply_adapter.json_schema(mode="serialization"),
    }


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"

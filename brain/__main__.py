"""`python -m brain`: a short text conversation through the configured brain (offline by default).

Shows streaming deltas, a plain tool call, and a tool that waits for human approval (answered
here by a console policy that approves after printing the request). A turn that fails shows why
(`[error] code: message`) before its apology, and the demo then exits with status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from pydantic import ValidationError

from . import (
    ApprovalDecision,
    ApprovalRequest,
    BrainConfig,
    InProcessApprovalGate,
    Turn,
    create_voice_brain,
)
from .config import describe_settings_error
from .errors import ConfigError
from .events import (
    ApprovalRequested,
    ApprovalResolved,
    ErrorEvent,
    ToolFinished,
    ToolStarted,
    TurnDone,
)

SCRIPT = [
    "Hello there!",
    "What's the weather in Paris?",
    "Please book a table for four.",
]


def _approve(request: ApprovalRequest) -> ApprovalDecision:
    print(f"\n  [approval] {request.prompt}  -> approved (demo policy)")
    return ApprovalDecision.approve(by="demo-user")


def _show(event: object) -> None:
    if isinstance(event, ToolStarted):
        print(f"\n  [tool] {event.name}({event.arguments}) started")
    elif isinstance(event, ApprovalRequested):
        print(f"\n  [hitl] approval requested for {event.name} (id {event.request_id})")
    elif isinstance(event, ApprovalResolved):
        print(f"  [hitl] {event.outcome} by {event.decided_by}")
    elif isinstance(event, ToolFinished):
        print(f"  [tool] {event.name} -> {event.status}: {event.result or event.error}")
    elif isinstance(event, ErrorEvent):  # why the turn failed, before its apology
        print(f"\n  [error] {event.code}: {event.message}", flush=True)


async def main() -> int:
    try:
        brain = create_voice_brain(BrainConfig(), approvals=InProcessApprovalGate(policy=_approve))
    except ValidationError as exc:  # names the variable, never echoes its value
        print(f"error: {describe_settings_error(exc, [BrainConfig])}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    brain.subscribe(_show)
    failed: list[str] = []
    brain.subscribe(lambda e: failed.append(e.turn_id) if isinstance(e, TurnDone) and e.reason == "error" else None)
    for line in SCRIPT:
        print(f"\nuser : {line}\nagent: ", end="", flush=True)
        async for delta in brain.stream_reply(Turn(line, conversation_id="demo", user_id="demo-user")):
            print(delta, end="", flush=True)
        print()
    await brain.aclose()
    if failed:  # e.g. a wrong key: every turn apologised; the demo did not work
        print(f"\n{len(failed)} of {len(SCRIPT)} turns failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    argparse.ArgumentParser(
        prog="python -m brain", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Configured by BRAIN_* and the model keys (.env.example).",
    ).parse_args()  # --help describes the demo instead of running it; anything else is refused
    sys.exit(asyncio.run(main()))

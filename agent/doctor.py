"""`python -m agent doctor`: which providers are usable, and the effective configuration."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from .config import AgentSettings


def report(settings: AgentSettings) -> dict[str, Any]:
    from providers import provider_report

    return {
        "providers": [row.model_dump() for row in provider_report(settings.speech)],
        "config": settings.masked(),
    }


def format_report(data: dict[str, Any]) -> str:
    lines = ["speech providers (* = chosen):"]
    for row in data["providers"]:
        mark = "*" if row["chosen"] else " "
        state = "ok" if row["installed"] and row["configured"] else "unusable"
        reason = f"  ({row['reason']})" if row["reason"] else ""
        lines.append(f" {mark} {row['kind']:<3} {row['name']:<12} {state}{reason}")
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
    chosen_unusable = [
        r for r in data["providers"] if r["chosen"] and not (r["installed"] and r["configured"])
    ]
    return 1 if chosen_unusable else 0

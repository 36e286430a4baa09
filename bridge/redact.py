"""What of a tool call may leave the process: report levels plus a secret scrubber.

Report levels (per tool, overridable by config): `none` - no tool envelopes (a HITL request still
names the tool), `name` - the tool name, `args` - name and arguments, `full` - also result and error.
Whatever the level, values under secret-looking keys and token-looking strings are masked, and
free text (errors) is cut to one short line, so tracebacks never leave.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Literal

ReportLevel = Literal["none", "name", "args", "full"]
REPORT_LEVELS: tuple[ReportLevel, ...] = ("none", "name", "args", "full")
MASK = "***"

_SECRET_KEY = re.compile(
    r"key|secret|token|passw|pwd|credential|authorization|cookie|dsn"
    r"|(?:^|[_\-.])(?:pass|pin|auth)(?:$|[_\-.])",  # "pass", "db_pass", "x-auth"; not "authenticated"
    re.I,
)
_SECRET_VALUE = re.compile(
    r"(\b[spr]k-[A-Za-z0-9_\-*]{6,}|\b(?:[spr]k|rk)_(?:live|test)_[A-Za-z0-9]{8,}|\bwhsec_[A-Za-z0-9]{16,}"
    r"|AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_\-]{20,}|gh[pousr]_[A-Za-z0-9]{20,}"
    r"|xox[abpr]-[A-Za-z0-9\-]{10,}|(?<![A-Za-z0-9])eyJ[A-Za-z0-9_\-]{8,256}\.[A-Za-z0-9_\-]{8,8192}\.[A-Za-z0-9_\-]*"
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/\-*]{8,}=*|\b[0-9a-fA-F]{32,}\b)"
)
# a value after a scheme word, in a query parameter, after a secret-named field or as a URL's
# password: the prefix stays, so the reader sees what it was
_SECRET_AFTER = re.compile(
    r"([?&](?i:key|api_key|apikey|token|access_token)=)[^&\s'\"]+"
    r"|(\b[A-Za-z_]*(?i:password|passwd|pwd|secret|token|apikey|[_\-]key)['\"]?\s*[:=]\s*['\"]?)[^\s'\",;&)}\]]+"
    r"|((?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]+:)[^@\s/]+(?=@)"
)
# its own pass (after the others): "Token estimation" and "Basic Authentication" stay, the value
# must be `_credential_like`; as one alternative among the others it hid what followed it
_SCHEME_VALUE = re.compile(r"(\b(?i:token|basic)\s+)([A-Za-z0-9._~+/\-*]{8,}=*)")
_MAX_DEPTH = 8
_MAX_ITEMS = 200
_MAX_STR = 2000


def shows_name(level: ReportLevel) -> bool:
    return level != "none"


def shows_args(level: ReportLevel) -> bool:
    return level in ("args", "full")


def shows_result(level: ReportLevel) -> bool:
    return level == "full"


def _credential_like(value: str) -> bool:
    """A digit, an "=" or a capital after a lowercase letter (base64), not a word; linear time."""
    lower = next((i for i, c in enumerate(value) if c.islower()), len(value))
    return "=" in value or any(c.isdigit() for c in value) or any(c.isupper() for c in value[lower + 1 :])


def _mask_scheme_value(m: re.Match[str]) -> str:
    return m.group(1) + MASK if _credential_like(m.group(2)) else m.group(0)


def scrub_text(text: str, limit: int = _MAX_STR) -> str:
    """Mask token-looking substrings and cap the length."""
    if len(text) >= 8:  # shorter strings cannot hold any of the token shapes
        text = _SECRET_VALUE.sub(MASK, text)
        text = _SECRET_AFTER.sub(lambda m: next(g for g in m.groups() if g) + MASK, text)
        text = _SCHEME_VALUE.sub(_mask_scheme_value, text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def short_reason(text: str | None, limit: int = 200) -> str | None:
    """First line only, scrubbed and capped: enough to say why, never a traceback."""
    if not text:
        return None
    first = text.strip().splitlines()[0] if text.strip() else ""
    return scrub_text(first, limit) or None


def scrub(value: Any, _depth: int = 0, *, mask_numbers: bool = True) -> Any:
    """A JSON-safe copy of `value` with secrets masked and size capped.

    `mask_numbers=False` keeps numbers under secret-looking keys (metrics such as `llm_token_count`).
    """
    if _depth > _MAX_DEPTH:
        return "…"
    kind = type(value)
    if kind is str:
        return scrub_text(value)
    if value is None or kind is int or kind is bool:
        return value
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for i, (k, v) in enumerate(value.items()):
            if i >= _MAX_ITEMS:
                out["…"] = f"{len(value) - _MAX_ITEMS} more"
                break
            key = scrub_text(str(k), 200)
            if key in out:  # two keys masked alike: keep both values
                key = f"{key} ({i + 1})"
            secret = _SECRET_KEY.search(key) and not (v is None or (isinstance(v, str) and not v))
            if secret and (mask_numbers or not isinstance(v, int | float) or isinstance(v, bool)):
                out[key] = MASK
            else:
                out[key] = scrub(v, _depth + 1, mask_numbers=mask_numbers)
        return out
    if isinstance(value, list | tuple | set | frozenset):
        items = list(value)
        head = [scrub(v, _depth + 1, mask_numbers=mask_numbers) for v in items[:_MAX_ITEMS]]
        if len(items) > _MAX_ITEMS:
            head.append(f"… {len(items) - _MAX_ITEMS} more")
        return head
    dump = getattr(value, "model_dump", None)  # pydantic models
    if callable(dump):
        try:
            return scrub(dump(mode="json"), _depth + 1, mask_numbers=mask_numbers)
        except Exception:  # noqa: BLE001 - fall back to the string form
            pass
    return scrub_text(str(value))


class ReportPolicy:
    """Resolves a tool's effective report level: config override first, then the tool's own."""

    def __init__(self, overrides: Mapping[str, str] | None = None) -> None:
        self._overrides: dict[str, ReportLevel] = {}
        for name, level in (overrides or {}).items():
            if level not in REPORT_LEVELS:
                raise ValueError(
                    f"report level for tool {name!r} must be one of {', '.join(REPORT_LEVELS)}, got {level!r}"
                )
            self._overrides[name] = level  # type: ignore[assignment]

    def level(self, tool: str, declared: str) -> ReportLevel:
        found = self._overrides.get(tool)
        if found is not None:
            return found
        return declared if declared in REPORT_LEVELS else "name"  # type: ignore[return-value]

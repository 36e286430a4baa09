"""Redaction cost against input length: every log record goes through `brain.errors.redact_secrets`
and every tool text through `bridge.redact.scrub_text`, so neither may grow faster than the text.

    .venv/bin/python benchmarks/redaction_scaling.py

For each adversarial shape (long runs that once sent a regex into quadratic backtracking), the
time at 20 KB and at 200 KB, side by side in one run; linear cost means a ratio near 10.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from brain.errors import redact_secrets
from bridge.redact import scrub_text

SHAPES: dict[str, Callable[[int], str]] = {
    "Basic + letters": lambda n: "Basic " + "g" * n,
    "Token + letters": lambda n: "Token " + "x" * n,
    "password: + letters": lambda n: "password: " + "a" * n,
    "URL userinfo": lambda n: "https://" + "a" * (n // 2) + ":" + "b" * (n // 2),
    "dotted run": lambda n: "a." * (n // 2),
    "hyphen run": lambda n: "a-" * (n // 2),
    "eyJ- run": lambda n: "eyJ-" * (n // 4),
    "eyJa. run": lambda n: "eyJa." * (n // 5),
}


def _seconds(fn: Callable[[str], object], text: str) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        fn(text)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    small, large = 20_000, 200_000
    print("| shape | function | 20 KB ms | 200 KB ms | ratio |")
    print("|---|---|---|---|---|")
    for name, make in SHAPES.items():
        for label, fn in (("redact_secrets", redact_secrets), ("scrub_text", lambda t: scrub_text(t, limit=10**7))):
            a, b = _seconds(fn, make(small)), _seconds(fn, make(large))
            print(f"| {name} | {label} | {a * 1000:.1f} | {b * 1000:.1f} | {b / a:.1f} |")


if __name__ == "__main__":
    main()

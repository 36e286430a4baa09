"""Scores reply start times against the reference turns in ../shared/audio/turns.json.

A user turn runs from its first speech onset to its turn end. A reply that starts inside a
turn is premature. For each turn end, latency = first reply start in [turn end, next turn
start) minus turn end; a turn end with no reply in that window is missed (for the last turn
the window closes at the end of the input, trailing silence included).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Turn:
    start: float
    end: float


@dataclass
class Score:
    latencies: list[float]  # one per answered turn end
    per_turn_end: list[float | None]  # latency per reference turn end, None = missed
    premature: int
    missed: int
    extra: int  # further replies in a gap that was already answered
    premature_at: list[float]
    missed_at: list[float]

    @property
    def median(self) -> float | None:
        return float(np.median(self.latencies)) if self.latencies else None

    @property
    def p95(self) -> float | None:
        return float(np.percentile(self.latencies, 95)) if self.latencies else None


def turns_from_reference(speech: list[list[float]], turn_ends: list[float]) -> list[Turn]:
    """Group speech segments into turns, each closed by the next reference turn end."""
    turns: list[Turn] = []
    ends = sorted(turn_ends)
    i = 0
    for end in ends:
        onsets = [s for s, _ in speech[i:] if s < end]
        if not onsets:
            raise ValueError(f"turn end {end} has no speech before it")
        turns.append(Turn(start=onsets[0], end=end))
        while i < len(speech) and speech[i][0] < end:
            i += 1
    return turns


def score(reply_starts: list[float], turns: list[Turn], input_end: float) -> Score:
    latencies: list[float] = []
    per_turn_end: list[float | None] = []
    premature_at: list[float] = []
    missed_at: list[float] = []
    extra = 0
    for r in reply_starts:
        if any(t.start <= r < t.end for t in turns):
            premature_at.append(r)
    for k, t in enumerate(turns):
        window_end = turns[k + 1].start if k + 1 < len(turns) else input_end
        in_gap = [r for r in reply_starts if t.end <= r < window_end]
        if in_gap:
            latencies.append(in_gap[0] - t.end)
            per_turn_end.append(in_gap[0] - t.end)
            extra += len(in_gap) - 1
        else:
            missed_at.append(t.end)
            per_turn_end.append(None)
    return Score(
        latencies=latencies,
        per_turn_end=per_turn_end,
        premature=len(premature_at),
        missed=len(missed_at),
        extra=extra,
        premature_at=premature_at,
        missed_at=missed_at,
    )

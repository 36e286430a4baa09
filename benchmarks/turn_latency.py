"""Turn-taking latency benchmark: how fast and how safely does the agent take the turn?

Real Silero VAD and the real livekit-agents turn handling, zero-latency stub STT / LLM / TTS,
the shared recordings paced in real time. Scored against ../shared/audio/turns.json: per turn
end, time to the first reply audio; premature replies (inside a user turn); missed turn ends.

    .venv/bin/python benchmarks/turn_latency.py                  # all presets, real time
    .venv/bin/python benchmarks/turn_latency.py --configs a,d --files multi
    .venv/bin/python benchmarks/turn_latency.py --variant "d2:mode=eou,eou_fast_threshold=0.8"

Configurations:
  a  livekit-agents defaults for VAD turn handling (silero.VAD.load(), turn_detection="vad")
  b  conservative: Silero min silence 1.0 s, endpointing min delay 1.0 s, no preemptive generation
  c  livekit-agents self-hosted default: AgentSession() with no VAD / turn options, i.e. the
     bundled local VAD plus the local audio turn detector (turn-detector-v1-mini)
  d  this project's defaults (agent.turns.TurnSettings; TURN_* env and .env are ignored)
--speed > 1 compresses the audio timeline but not the session's own delays: smoke tests only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _turn_harness import run_session  # noqa: E402
from _turn_scoring import Score, score, turns_from_reference  # noqa: E402

AUDIO = ROOT.parent / "shared" / "audio"
FILES = {"multi": "multi_utterance_16k_mono.wav", "jfk": "jfk_16k_mono.wav"}

SessionFactory = Callable[..., Any]


@dataclass
class Config:
    key: str
    label: str
    build: Callable[[], SessionFactory]  # loads models once, returns a session factory


def _preset_a() -> SessionFactory:
    from livekit.agents import AgentSession
    from livekit.plugins import silero

    vad = silero.VAD.load()
    return lambda **kw: AgentSession(vad=vad, turn_handling={"turn_detection": "vad"}, **kw)


def _preset_b() -> SessionFactory:
    from livekit.agents import AgentSession
    from livekit.plugins import silero

    vad = silero.VAD.load(min_silence_duration=1.0)
    return lambda **kw: AgentSession(
        vad=vad,
        turn_handling={
            "turn_detection": "vad",
            "endpointing": {"min_delay": 1.0},
            "preemptive_generation": {"enabled": False},
        },
        **kw,
    )


def _preset_c() -> SessionFactory:
    from livekit.agents import AgentSession

    for var in ("LIVEKIT_DEV_MODE", "LIVEKIT_REMOTE_EOT_URL"):
        os.environ.pop(var, None)  # self-hosted production: the local v1-mini model
    return lambda **kw: AgentSession(**kw)


def _project(overrides: dict[str, str]) -> Callable[[], SessionFactory]:
    def build() -> SessionFactory:
        from livekit.agents import AgentSession
        from livekit.plugins import silero

        from agent.turns import TurnSettings, session_turn_kwargs, vad_load_kwargs

        for var in [v for v in os.environ if v.startswith("TURN_")]:
            del os.environ[var]  # benchmark the code's defaults, not this shell's
        extra: dict[str, Any] = dict(overrides)
        settings = TurnSettings(_env_file=None, **extra)  # type: ignore[call-arg]
        logging.getLogger("turn_latency").info("project settings: %s", settings.model_dump())
        if settings.vad_engine == "native":  # as agent.worker.load_vad does
            from livekit.agents import inference

            vad: Any = inference.VAD(**vad_load_kwargs(settings))
        else:
            vad = silero.VAD.load(**vad_load_kwargs(settings))
        return lambda **kw: AgentSession(
            vad=vad, **session_turn_kwargs(settings, stt_streaming=False), **kw
        )

    return build


PRESETS = {
    "a": Config("a", "(a) livekit VAD defaults", _preset_a),
    "b": Config("b", "(b) conservative VAD", _preset_b),
    "c": Config("c", "(c) livekit self-hosted default (local audio EOT)", _preset_c),
    "d": Config("d", "(d) project defaults", _project({})),
}


def _parse_variant(spec: str) -> Config:
    """`name:key=val,...` -> a project config; a key TurnSettings does not have is an error
    (TurnSettings ignores unknown fields, so a misspelt knob would silently run the defaults)."""
    from agent.turns import TurnSettings

    name, _, body = spec.partition(":")
    if not name:
        raise ValueError(f"variant {spec!r}: expected name:key=val,...")
    overrides: dict[str, str] = {}
    for kv in (kv.strip() for kv in body.split(",") if kv.strip()):
        key, sep, val = kv.partition("=")
        if not sep:
            raise ValueError(f"variant {spec!r}: {kv!r} is not key=val")
        if key not in TurnSettings.model_fields:
            known = ", ".join(sorted(TurnSettings.model_fields))
            raise ValueError(f"variant {spec!r}: TurnSettings has no {key!r} (known: {known})")
        overrides[key] = val
    return Config(name, f"({name}) {body}", _project(overrides))


def _load_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected mono PCM16")
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16), w.getframerate()


class _ExtrasFormatter(logging.Formatter):
    """Shows the `extra=` fields livekit-agents attaches to its debug records."""

    _std = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        extras = {k: v for k, v in vars(record).items() if k not in self._std}
        return f"{record.created:.3f} {record.name}: {record.getMessage()} {extras or ''}"


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}"


async def _run(args: argparse.Namespace) -> list[dict[str, Any]]:
    reference = json.loads((AUDIO / "turns.json").read_text())
    configs = [PRESETS[k] for k in args.configs.split(",") if k] + [
        _parse_variant(v) for v in args.variant
    ]
    rows: list[dict[str, Any]] = []
    for cfg in configs:
        factory = cfg.build()
        for fkey in args.files.split(","):
            fname = FILES[fkey]
            pcm, sr = _load_wav(AUDIO / fname)
            ref = reference[fname]
            turns = turns_from_reference(ref["speech"], ref["turn_ends"])
            load_before = os.getloadavg()[0]
            t = time.perf_counter()
            result = await run_session(factory, pcm, sr, speed=args.speed, trailing=args.trailing)
            s: Score = score(result.reply_starts, turns, result.duration)
            row = {
                "config": cfg.key,
                "label": cfg.label,
                "file": fkey,
                "median": s.median,
                "p95": s.p95,
                "premature": s.premature,
                "missed": s.missed,
                "extra": s.extra,
                "latencies": [None if x is None else round(x, 3) for x in s.per_turn_end],
                "premature_at": [round(x, 2) for x in s.premature_at],
                "missed_at": s.missed_at,
                "replies": [round(x, 3) for x in result.reply_starts],
                "load1": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                "input_lateness": round(result.max_input_lateness, 3),
                "wall": round(time.perf_counter() - t, 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def _table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| config | file | median s | p95 s | premature | missed | latencies s | load (1 min) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['label']} | {r['file']} | {_fmt(r['median'])} | {_fmt(r['p95'])} | "
            f"{r['premature']} | {r['missed']} | {', '.join(_fmt(x) for x in r['latencies'])} | "
            f"{r['load1'][0]:.1f} -> {r['load1'][1]:.1f} |"
        )
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--configs", default="a,b,c,d", help="comma list of presets (a,b,c,d)")
    p.add_argument("--variant", action="append", default=[], help="name:key=val,... TurnSettings")
    p.add_argument("--files", default="multi,jfk", help="comma list: multi,jfk")
    p.add_argument("--speed", type=float, default=1.0, help="audio pacing factor (1.0 = real time)")
    p.add_argument("--trailing", type=float, default=4.0, help="seconds of silence after the file")
    p.add_argument("--json", type=Path, help="also write the rows here")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args()
    # reject bad names before minutes of real-time runs, not in the middle of them
    if bad := [k for k in args.configs.split(",") if k and k not in PRESETS]:
        p.error(f"--configs: unknown preset(s) {', '.join(bad)} (known: {', '.join(PRESETS)})")
    if bad := [k for k in args.files.split(",") if k not in FILES]:
        p.error(f"--files: unknown file(s) {', '.join(bad)} (known: {', '.join(FILES)})")
    for v in args.variant:
        try:
            _parse_variant(v)
        except ValueError as e:
            p.error(f"--variant: {e}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    if args.verbose:
        for h in logging.getLogger().handlers:
            h.setFormatter(_ExtrasFormatter())
    rows = asyncio.run(_run(args))
    print()
    print(_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

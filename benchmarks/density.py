"""Density: how many concurrent voice sessions fit on this machine, and what each one costs.

K concurrent sessions (default K = 1, 8, 32, 64), each the agent's own session (turn handling
from agent.turns, BrainAgent with the offline brain, the event bridge on a MemoryTransport) on
the real Silero VAD, with zero-latency stub STT / TTS and real recordings paced in real time
(36 s: four user turns from ../shared/audio, each followed by 2.5 s of silence for the reply;
session starts spread over 2 s). Two ways to run them:

  inproc  all K sessions in one process, one event loop, one Silero VAD
  jobs    one process per session, as livekit-agents runs jobs: the project's worker
          (agent.worker.define_voice_agent, unregistered) dispatching K fake jobs to its
          forkserver-forked job processes (see benchmarks/_density_jobs.py)

Reported per run: CPU share of one core per active session (CPU seconds / session seconds),
RSS and PSS (/proc/<pid>/smaps_rollup) of the process(es), event-loop lag (oversleep of 10 ms
sleeps) and microphone frame lag (frame handed to the session vs its last sample's real time),
turn latency (reference turn end -> first reply audio; p50 / p95 over every turn of every session).

    .venv/bin/python benchmarks/density.py                         # everything, ~8 min
    .venv/bin/python benchmarks/density.py --ks 1,8 --modes inproc  # a quick look
    .venv/bin/python benchmarks/density.py --json out/density.json

Each (mode, K) runs in a fresh interpreter, one after the other.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)


class _ErrorCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.counts: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[record.getMessage()[:120]] = self.counts.get(record.getMessage()[:120], 0) + 1


def _child(mode: str, k: int, spread: float, stack: str, vad: str, rate: int, out: Path) -> None:
    logging.basicConfig(level=logging.ERROR)
    if vad:  # read by density_settings, here and in the job processes
        os.environ["DENSITY_VAD_ENGINE"] = vad
    errors = _ErrorCounter()
    logging.getLogger().addHandler(errors)
    if mode == "inproc":
        from _density_inproc import run_inproc

        result = asyncio.run(run_inproc(k, spread=spread, stack=stack, input_rate=rate))
    else:
        from _density_jobs import run_jobs

        with tempfile.TemporaryDirectory(prefix="density-") as d:
            result = asyncio.run(run_jobs(k, Path(d), spread=spread, stack=stack, input_rate=rate))
    result["logged_errors"] = errors.counts  # e.g. livekit's "error initializing process" (retried)
    out.write_text(json.dumps(result))


def _run(mode: str, k: int, spread: float, stack: str, vad: str, rate: int) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    load = os.getloadavg()[0]
    t = time.perf_counter()
    try:
        subprocess.run(
            [sys.executable, __file__, "--child", mode, "--k", str(k), "--spread", str(spread),
             "--stack", stack, "--vad", vad, "--input-rate", str(rate), "--out", str(out)],
            check=True, timeout=600,
        )
        result: dict[str, Any] = json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)
    result["load1"] = [round(load, 2), round(os.getloadavg()[0], 2)]
    result["run_s"] = round(time.perf_counter() - t, 1)
    return result


# -- summary ----------------------------------------------------------------------------------


def summarize(r: dict[str, Any]) -> dict[str, Any]:
    from _density_session import pct

    lat = [x for s in r["sessions"] for x in s["latencies"]]
    frame = r.pop("frame_lag_ms", [])
    k = r["k"]
    row: dict[str, Any] = {
        "mode": r["mode"],
        "stack": ", ".join(
            [r["stack"]]
            + ([f"{r['vad']} VAD"] if r.get("vad") else [])
            + ([f"{r['input_rate'] // 1000} kHz in"] if r.get("input_rate", 24_000) != 24_000 else [])
        ),
        "k": k,
        "cpu_pct_per_session": r["cpu_pct_per_session"],
        "loop_cpu_pct_per_session": r["loop_cpu_pct_per_session"],
        "loop_lag_p99_ms": r["loop_lag_p99_ms"],
        "loop_lag_max_ms": r["loop_lag_max_ms"],
        "frame_lag_p99_ms": pct(frame, 99),
        "frame_lag_max_ms": max(frame, default=None),
        "turn_p50_s": pct(lat, 50),
        "turn_p95_s": pct(lat, 95),
        "turns": len(lat),
        "missed": sum(s["missed"] for s in r["sessions"]),
        "premature": sum(s["premature"] for s in r["sessions"]),
        "errors": [s["error"] for s in r["sessions"] if s.get("error")] + r.get("errors", []),
        "load1": r.get("load1"),
    }
    cores = os.cpu_count() or 1
    if r["mode"] == "inproc":
        idle, active = r["memory_idle"], r["memory_active"]
        # one process: the event-loop thread is the ceiling (one core)
        row["busy"] = f"loop thread {r['loop_cpu_pct_per_session'] * k:.0f} % of a core"
        row.update(
            process_cpu_pct=r["process_cpu_pct"],
            rss_mb=active["rss"],
            pss_mb=active["pss"],
            rss_per_session_mb=(active["rss"] - idle["rss"]) / k,
        )
    else:
        total = (r["cpu_pct_per_session"] + r["worker_cpu_pct_per_session"]) * k
        row["busy"] = f"{total / cores:.0f} % of {cores} cores"
        jobs = r["job_memory"]
        shared = (r["forkserver_memory"] or {}).get("pss", 0.0)
        row.update(
            worker_cpu_pct_per_session=r["worker_cpu_pct_per_session"],
            rss_mb=sum(j["rss"] for j in jobs) / len(jobs),
            pss_mb=sum(j["pss"] for j in jobs) / len(jobs),
            private_mb=sum(j["private_dirty"] for j in jobs) / len(jobs),
            forkserver_pss_mb=shared,
            worker_pss_mb=r["worker_memory"]["pss"],
            pss_total_per_job_mb=(sum(j["pss"] for j in jobs) + shared + r["worker_memory"]["pss"]) / len(jobs),
            setup_s=r["setup_s"],
        )
    return row


def _f(v: Any, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def table(rows: list[dict[str, Any]]) -> str:
    base = {(r["mode"], r["stack"]): r["turn_p95_s"] for r in rows if r["k"] == 1}
    out = [
        "| mode | stack | K | CPU % of a core / session | busy | RSS MB | PSS MB | loop lag p99 / max ms | frame lag p99 / max ms | turn p50 / p95 s | p95 vs K=1 | missed / premature |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        b = base.get((r["mode"], r["stack"]))
        ratio = f"{r['turn_p95_s'] / b:.2f}x" if b and r["turn_p95_s"] else "-"
        if r["mode"] == "inproc":
            cpu = (f"{_f(r['cpu_pct_per_session'], 2)} (loop {_f(r['loop_cpu_pct_per_session'], 2)}; "
                   f"process {_f(r['process_cpu_pct'], 0)} %)")
            rss = f"{_f(r['rss_mb'], 0)} (+{_f(r['rss_per_session_mb'], 1)} / session)"
            pss = _f(r["pss_mb"], 0)
        else:
            cpu = (f"{_f(r['cpu_pct_per_session'], 2)} (loop {_f(r['loop_cpu_pct_per_session'], 2)}; "
                   f"+ worker {_f(r['worker_cpu_pct_per_session'], 2)})")
            rss = f"{_f(r['rss_mb'], 0)} / job"
            pss = f"{_f(r['pss_mb'], 0)} / job ({_f(r['pss_total_per_job_mb'], 0)} incl. forkserver + worker)"
        out.append(
            f"| {r['mode']} | {r['stack']} | {r['k']} | {cpu} | {r['busy']} | {rss} | {pss} | {_f(r['loop_lag_p99_ms'])} / {_f(r['loop_lag_max_ms'], 0)} | "
            f"{_f(r['frame_lag_p99_ms'])} / {_f(r['frame_lag_max_ms'], 0)} | {_f(r['turn_p50_s'], 2)} / {_f(r['turn_p95_s'], 2)} | "
            f"{ratio} | {r['missed']} / {r['premature']} |"
        )
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ks", default="1,8,32,64", help="comma list of concurrent session counts")
    p.add_argument("--modes", default="inproc,jobs", help="inproc, jobs or both")
    p.add_argument("--spread", type=float, default=2.0, help="session starts spread over this many seconds")
    p.add_argument("--stacks", default="ours",
                   help="ours (brain + bridge) and/or bare (the same session with a plain livekit Agent)")
    p.add_argument("--json", type=Path, help="write raw results and the summary here")
    p.add_argument("--vad", default="", choices=["", "native", "plugin"],
                   help="Silero engine (TURN_VAD_ENGINE): native (livekit-local-inference's, the default) "
                   "or plugin (livekit-plugins-silero); both modes")
    p.add_argument("--input-rate", type=int, default=24_000,
                   help="microphone rate: 24000 (RoomIO's default) or e.g. 16000 (the VAD's own rate)")
    p.add_argument("--child", choices=["inproc", "jobs"], help=argparse.SUPPRESS)
    p.add_argument("--stack", default="ours", help=argparse.SUPPRESS)
    p.add_argument("--k", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(args.child, args.k, args.spread, args.stack, args.vad, args.input_rate, args.out)
        return
    raw, rows = [], []
    runs = [(m, s, int(k)) for m in args.modes.split(",") for s in args.stacks.split(",") for k in args.ks.split(",")]
    for mode, stack, k in runs:
        print(f"density: {mode} {stack} {args.vad} K={k} ...", file=sys.stderr, flush=True)
        r = _run(mode, k, args.spread, stack, args.vad, args.input_rate)
        row = summarize(r)  # (drops the per-frame lags from r)
        raw.append(r)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print()
    print(table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "raw": raw}, indent=1))


if __name__ == "__main__":
    main()

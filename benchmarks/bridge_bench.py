"""Bridge benchmark: envelope latency, throughput, and memory under a slow transport.

    .venv/bin/python benchmarks/bridge_bench.py            # full run (~20 s)
    .venv/bin/python benchmarks/bridge_bench.py --quick    # smaller numbers

1. Latency: brain event emitted -> `transport.send` called, fast (in-memory) transport, events
   paced one per loop iteration as a streaming model produces them. Goal p99 < 5 ms.
2. Throughput: bursts of distinct envelopes (reply deltas of different turns, so none merge;
   and tool.started events, which go through pydantic) until all are handed to the transport.
   Goal >= 20,000 envelopes/s.
3. Slow transport: each send takes 100x the producer's time per delta; a flood of deltas of one
   reply. Goal: memory under 1 MiB, reply text complete.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from brain import TextDelta, ToolStarted  # noqa: E402
from bridge import BridgeOptions, MemoryTransport, attach_event_bridge  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class ProbeTransport(MemoryTransport):
    """Timestamps each send and hashes the reply text; keeps no envelopes (memory is the bridge's)."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__(["alice"], delay=delay)
        self.times: list[float] = []
        self.text = hashlib.sha256()  # what arrived, without keeping it (memory is measured)
        self.count = 0

    async def send(self, envelope_json: str, destination: list[str] | None) -> None:
        self.times.append(time.perf_counter())
        self.count += 1
        if '"agent.text"' in envelope_json:
            self.text.update(json.loads(envelope_json)["data"]["delta"].encode())
        if self.delay:
            await asyncio.sleep(self.delay)


async def latency(n: int) -> dict[str, float]:
    t = ProbeTransport()
    b = attach_event_bridge(t, brain=None, agent_name="bench", served_identity="alice")
    await b.flush(5)
    t.times.clear()
    events = [TextDelta(conversation_id="c", turn_id=f"t{i}", text="word ") for i in range(n)]
    emitted: list[float] = []
    for ev in events:
        emitted.append(time.perf_counter())
        b.publish_event(ev)
        await asyncio.sleep(0)  # the producer yields between deltas, like a streaming model
    await b.flush(10)
    await b.aclose()
    lat = [(s - e) * 1000 for e, s in zip(emitted, t.times, strict=True)]
    return {"n": n, "p50_ms": pct(lat, 0.5), "p95_ms": pct(lat, 0.95), "p99_ms": pct(lat, 0.99), "max_ms": max(lat)}


async def throughput(n: int, kind: str, burst: int = 1000) -> dict[str, float]:
    t = ProbeTransport()
    b = attach_event_bridge(t, brain=None, agent_name="bench", served_identity="alice")
    await b.flush(5)
    t.count = 0
    if kind == "delta":
        events: list[Any] = [TextDelta(conversation_id="c", turn_id=f"t{i}", text="word ") for i in range(n)]
    else:
        events = [ToolStarted(conversation_id="c", turn_id="t", call_id=f"c{i}", name="get_weather",
                              arguments={"city": "Paris", "units": "metric"}, report="args") for i in range(n)]
    gc.collect()
    start = time.perf_counter()
    for i in range(0, n, burst):
        for ev in events[i:i + burst]:
            b.publish_event(ev)
        await asyncio.sleep(0)
    await b.flush(60)
    elapsed = time.perf_counter() - start
    await b.aclose()
    assert t.count == n, (t.count, n)
    return {"n": n, "seconds": elapsed, "per_second": n / elapsed}


async def slow_transport(n: int) -> dict[str, Any]:
    words = [f"w{i} " for i in range(n)]
    events = [TextDelta(conversation_id="c", turn_id="t1", text=w) for w in words]
    # the producer's time per delta, measured with a fast transport
    probe = ProbeTransport()
    b = attach_event_bridge(probe, brain=None, agent_name="bench", served_identity="alice")
    start = time.perf_counter()
    for ev in events[:2000]:
        b.publish_event(ev)
        await asyncio.sleep(0)
    per_delta = (time.perf_counter() - start) / 2000
    await b.aclose()

    delay = per_delta * 100
    t = ProbeTransport(delay=delay)
    gc.collect()
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    b = attach_event_bridge(t, brain=None, agent_name="bench", served_identity="alice",
                            options=BridgeOptions(flush_timeout=120))
    start = time.perf_counter()
    for ev in events:
        b.publish_event(ev)
        await asyncio.sleep(0)
    produced = time.perf_counter() - start
    await b.aclose()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    expected = hashlib.sha256("".join(words).encode()).hexdigest()
    return {
        "deltas": n,
        "producer_us_per_delta": per_delta * 1e6,
        "transport_ms_per_send": delay * 1000,
        "producer_seconds": produced,
        "envelopes_sent": t.count,
        "queue_peak_bytes": b._queue.stats.peak_bytes,
        "traced_peak_bytes": peak - base,
        "text_complete": t.text.hexdigest() == expected,
    }


async def main(quick: bool) -> dict[str, Any]:
    scale = 5 if quick else 1
    return {
        "latency": await latency(20_000 // scale),
        "throughput_delta": await throughput(200_000 // scale, "delta"),
        "throughput_tool": await throughput(100_000 // scale, "tool"),
        "slow_transport": await slow_transport(50_000 // scale),
    }


def report(r: dict[str, Any]) -> str:
    lat, td, tt, slow = r["latency"], r["throughput_delta"], r["throughput_tool"], r["slow_transport"]
    mib = 1024 * 1024
    rows = [
        "| measure | result | goal |",
        "|---|---|---|",
        f"| latency event -> transport, fast transport ({lat['n']} events) | p50 {lat['p50_ms']:.3f} ms, "
        f"p95 {lat['p95_ms']:.3f} ms, **p99 {lat['p99_ms']:.3f} ms**, max {lat['max_ms']:.2f} ms | p99 < 5 ms |",
        f"| throughput, agent.text envelopes ({td['n']}) | **{td['per_second']:,.0f} /s** | >= 20,000 /s |",
        f"| throughput, tool.started envelopes ({tt['n']}) | **{tt['per_second']:,.0f} /s** | >= 20,000 /s |",
        f"| slow transport: {slow['deltas']} deltas, producer {slow['producer_us_per_delta']:.1f} us/delta, "
        f"send {slow['transport_ms_per_send']:.2f} ms (100x) | {slow['envelopes_sent']} envelopes, queue peak "
        f"{slow['queue_peak_bytes'] / 1024:.1f} KiB, traced peak **{slow['traced_peak_bytes'] / mib:.3f} MiB**, "
        f"text complete: **{slow['text_complete']}** | < 1 MiB, complete |",
    ]
    return "\n".join(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true", help="print raw results as JSON too")
    args = parser.parse_args()
    results = asyncio.run(main(args.quick))
    if args.json:
        print(json.dumps(results, indent=2))
    print(report(results))

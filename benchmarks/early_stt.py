"""Early recognition on the offline default: reply latency with and without `LOCAL_STT_EARLY`.

The whole offline pipeline (`agent.simulate.Simulation`: Silero VAD, pocketsphinx STT, offline
brain, espeak-ng TTS) on three user utterances, paced in real time: two questions synthesised
with the local TTS (the demo's) and JFK's sentence from `../shared/audio`. Each clip runs with
early recognition off and on, alternating (off, on, on, off, ...) so drift on a shared machine
cancels. Per turn: end of user speech -> first reply audio (`e2e`) and the transcription delay
livekit reports (end of speech -> final transcript); per run, how many early recognitions became
the transcript and how many were dropped because the user went on.

    .venv/bin/python benchmarks/early_stt.py                 # 3 rounds, ~4 min
    .venv/bin/python benchmarks/early_stt.py --rounds 5 --json out/early_stt.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.audio_files import DecodedAudio, decode_file, silence  # noqa: E402
from agent.config import AgentSettings  # noqa: E402
from agent.simulate import DEFAULT_UTTERANCE, INPUT_RATE, Simulation, synthesize_utterance  # noqa: E402
from agent.worker import load_vad  # noqa: E402
from providers.local_stt import LocalSTT  # noqa: E402

AUDIO = ROOT.parent / "shared" / "audio"
SECOND_QUESTION = "Book a table for four at eight tonight, please."


async def clips() -> dict[str, DecodedAudio]:
    out = {
        "demo question": await synthesize_utterance(DEFAULT_UTTERANCE),
        "booking": await synthesize_utterance(SECOND_QUESTION),
    }
    jfk = AUDIO / "jfk_16k_mono.wav"
    if jfk.exists():
        out["jfk"] = decode_file(jfk, INPUT_RATE)
    return out


async def run_once(settings: AgentSettings, vad: Any, audio: DecodedAudio, *, early: bool) -> dict[str, Any]:
    stt = LocalSTT(early=early)
    sim = Simulation(settings, vad=vad, stt=stt, conversation_id="early-stt")
    padded = DecodedAudio(audio.pcm + silence(0.5, audio.sample_rate), audio.sample_rate, audio.source_rate, 1)
    try:
        await sim.start()
        await sim.play(padded)
        await sim.settle(limit=30)
    finally:
        await sim.aclose()
        await stt.aclose()
    answered = [r for r in sim.result.latency if r.e2e is not None]
    stats = getattr(sim.session.stt, "early", None)
    return {
        "early": early,
        "e2e": [r.e2e for r in answered],
        "stt": [r.transcription for r in answered if r.transcription is not None],
        "text": " / ".join(sim.result.user_turns),
        "used": stats.used if stats else 0,
        "dropped": stats.dropped if stats else 0,
    }


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f}" if values else "-"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    os.environ.setdefault("AGENT_LOG_LEVEL", "WARNING")
    settings = AgentSettings(_env_file=None, greeting_mode="off")  # type: ignore[call-arg]
    vad = load_vad(settings)
    audio = await clips()
    runs: list[dict[str, Any]] = []
    for r in range(args.rounds):
        order = (False, True) if r % 2 == 0 else (True, False)
        for name, clip in audio.items():
            for early in order:
                result = await run_once(settings, vad, clip, early=early)
                result.update(round=r, clip=name)
                runs.append(result)
                print(f"round {r} {name:<14} early={'on ' if early else 'off'} e2e {_ms(result['e2e']):>5} ms "
                      f"stt {_ms(result['stt']):>5} ms used {result['used']} dropped {result['dropped']}  {result['text']}",
                      flush=True)

    print(f"\n{platform.node()} {platform.machine()}, load {os.getloadavg()[0]:.1f}, {args.rounds} rounds")
    print(f"{'clip':<14} {'e2e off':>8} {'e2e on':>8} {'ratio':>6} {'stt off':>8} {'stt on':>8}  early used / dropped")
    for name in audio:
        off = [v for x in runs if x["clip"] == name and not x["early"] for v in x["e2e"]]
        on = [v for x in runs if x["clip"] == name and x["early"] for v in x["e2e"]]
        stt_off = [v for x in runs if x["clip"] == name and not x["early"] for v in x["stt"]]
        stt_on = [v for x in runs if x["clip"] == name and x["early"] for v in x["stt"]]
        used = sum(x["used"] for x in runs if x["clip"] == name and x["early"])
        dropped = sum(x["dropped"] for x in runs if x["clip"] == name and x["early"])
        ratio = statistics.median(on) / statistics.median(off) if on and off else float("nan")
        print(f"{name:<14} {_ms(off):>8} {_ms(on):>8} {ratio:>6.2f} {_ms(stt_off):>8} {_ms(stt_on):>8}  {used} / {dropped}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    asyncio.run(main())

"""Fault matrix: every stage x every fault, in both modes, offline (see RELIABILITY.md).

Stages: STT, brain (LLM), TTS, realtime model (OpenAI Realtime and Gemini Live), bridge transport. Faults: exception at start,
exception mid-stream, stall past the timeout, rate limit, abrupt disconnect. For every cell:
the session (and the process: no unhandled exception) survives, the user hears a short apology
(or, for a bridge fault, the answer itself), the client gets an `error` envelope with the
expected code (never `fatal`) and exactly one `turn.done` per turn, and the next turn works.
A realtime-model fault's apology is scripted in the fake, so those cells also check that the
agent requested it (a `response.create`, or for Gemini a `clientContent` turn, whose instructions
carry BRAIN_APOLOGY).

Cells that cannot apply are listed with the reason. `pytest tests/test_faults_matrix.py` prints
the matrix and writes it to out/fault_matrix.md (the table in RELIABILITY.md comes from there).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.worker import load_vad

from .agent_fakes import settings
from .faults_kit import (
    ANSWER,
    APOLOGY,
    EXPECTED_CODE,
    FAULT_TITLES,
    FAULTS,
    STT_APOLOGY,
    CellResult,
    PipelineRig,
    RealtimeRig,
    check_next_turn,
    check_turn,
)

pytestmark = pytest.mark.timeout(60)

MODES = ("pipeline", "realtime")
STAGES = {
    "stt": "STT (livekit-plugins-openai, HTTP)",
    "brain": "brain / LLM (OpenAI backend, SDK)",
    "tts": "TTS (livekit-plugins-openai, HTTP)",
    "realtime": "realtime model (OpenAI Realtime, WebSocket)",
    "gemini": "realtime model (Gemini Live, WebSocket)",
    "bridge": "bridge transport",
}
NOT_APPLICABLE = {
    ("pipeline", "realtime"): "pipeline mode has no realtime model",
    ("pipeline", "gemini"): "pipeline mode has no realtime model",
    ("realtime", "stt"): "the realtime model transcribes the user itself; livekit-plugins-openai only logs a "
                         "failed input transcription (no session error to report) and the reply is unaffected",
    ("realtime", "brain"): "the brain's model backend is not used in realtime mode (the realtime model answers; "
                           "the brain runs only tools and approvals)",
    ("realtime", "tts"): "the realtime model speaks itself: audio failures are realtime-model faults",
}
HEARD = {"stt": (STT_APOLOGY,), "brain": (APOLOGY,), "tts": (APOLOGY,), "realtime": (APOLOGY,), "gemini": (APOLOGY,),
         "bridge": (ANSWER,)}

RESULTS: dict[tuple[str, str, str], CellResult] = {}
OUT = Path(__file__).resolve().parents[1] / "out" / "fault_matrix.md"


@pytest.fixture(scope="module")
def vad():
    return load_vad(settings())


def _expected(stage: str, fault: str) -> str:
    return "publish_failed" if stage == "bridge" else EXPECTED_CODE[fault]


CELLS = [(m, s, f) for m in MODES for s in STAGES for f in FAULTS]


@pytest.mark.parametrize(("mode", "stage", "fault"), CELLS, ids=[f"{m}-{s}-{f}" for m, s, f in CELLS])
async def test_cell(vad, mode: str, stage: str, fault: str) -> None:
    expected = _expected(stage, fault)
    requested: list[str] = []
    result = CellResult(mode, stage, fault, expected)
    RESULTS[(mode, stage, fault)] = result
    reason = NOT_APPLICABLE.get((mode, stage))
    if reason is not None:
        result.detail = f"n/a: {reason}"
        pytest.skip(f"not applicable: {reason}")

    if mode == "pipeline":
        async with PipelineRig(vad, speed=8.0) as rig:
            rig.arm(stage, fault)
            first = await rig.turn()
            second = await rig.turn()
    else:
        provider = "gemini-live" if stage == "gemini" else "openai-realtime"
        async with RealtimeRig(provider=provider) as rig:
            rig.arm("realtime" if stage == "gemini" else stage, fault)
            # a broken reply is followed by the apology: two turns
            first = await rig.turn(expect_turns=1 if stage == "bridge" else 2)
            # the fake speaks the scripted apology whatever it is asked: the agent must ask for it
            if stage in ("realtime", "gemini"):
                requested = rig.apology_problems()
            rig.script_answer()
            second = await rig.turn()

    result.code = ",".join(first.error_codes()) or "-"
    result.problems = check_turn(first, expected_code=expected, heard_any=HEARD[stage]) + check_next_turn(second, ANSWER)
    result.problems += requested
    result.passed = not result.problems
    assert not result.problems, result.problems


def _table() -> str:
    ran = [r for r in RESULTS.values() if not r.detail.startswith("n/a")]
    passed = sum(r.passed for r in ran)
    lines = [
        f"{passed}/{len(ran)} applicable cells passed ({len(RESULTS) - len(ran)} not applicable, "
        f"{len(RESULTS)} cells in all).",
        "",
        "| mode | stage | " + " | ".join(FAULT_TITLES[f] for f in FAULTS) + " |",
        "|---|---|" + "---|" * len(FAULTS),
    ]
    for mode in MODES:
        for stage, title in STAGES.items():
            cells = []
            for fault in FAULTS:
                r = RESULTS.get((mode, stage, fault))
                if r is None:
                    cells.append("not run")
                elif r.detail.startswith("n/a"):
                    cells.append("n/a")
                else:
                    mark = "pass" if r.passed else "FAIL"
                    cells.append(f"{mark} `{r.code}`" + ("" if r.passed else f" (expected `{r.expected}`)"))
            lines.append(f"| {mode} | {title} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Not applicable:")
    for (mode, stage), reason in NOT_APPLICABLE.items():
        lines.append(f"- {mode} x {STAGES[stage]}: {reason}.")
    failed = [r for r in ran if not r.passed]
    if failed:
        lines.append("")
        lines.append("Failures:")
        lines += [f"- {r.mode} x {r.stage} x {r.fault}: {'; '.join(r.problems)}" for r in failed]
    return "\n".join(lines)


def test_print_matrix(capsys) -> None:
    """Runs last (definition order): prints the matrix and writes out/fault_matrix.md."""
    if not RESULTS:
        pytest.skip("no cell ran")
    table = _table()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(table + "\n")
    with capsys.disabled():
        print("\n\nFault matrix\n\n" + table + "\n")
    ran = [r for r in RESULTS.values() if not r.detail.startswith("n/a")]
    assert all(r.passed for r in ran), [f"{r.mode}-{r.stage}-{r.fault}" for r in ran if not r.passed]

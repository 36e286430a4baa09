"""Dependency direction: brain/ and providers/ never import agent/ or bridge/; brain/ never imports livekit."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(package: str) -> list[tuple[Path, str]]:
    found: list[tuple[Path, str]] = []
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.extend((path, alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.append((path, node.module))
    return found


@pytest.mark.parametrize("package", ["brain", "providers"])
def test_lower_layers_do_not_import_upper_layers(package: str) -> None:
    bad = [(str(p.relative_to(ROOT)), m) for p, m in _imports(package) if m.split(".")[0] in ("agent", "bridge")]
    assert bad == []


def test_bridge_does_not_import_agent() -> None:
    bad = [(str(p.relative_to(ROOT)), m) for p, m in _imports("bridge") if m.split(".")[0] == "agent"]
    assert bad == []


def test_brain_does_not_import_livekit_statically() -> None:
    bad = [(str(p.relative_to(ROOT)), m) for p, m in _imports("brain") if m.split(".")[0] == "livekit"]
    assert bad == []


def test_brain_runs_without_livekit_loaded() -> None:
    """Importing and using the brain in a fresh interpreter pulls in no livekit module."""
    code = (
        "import asyncio, sys\n"
        "from brain import create_voice_brain, BrainConfig, Turn\n"
        "async def main():\n"
        "    b = create_voice_brain(BrainConfig(_env_file=None, backend='offline'))\n"
        "    out = [d async for d in b.stream_reply(Turn('hello', 'c'))]\n"
        "    assert out\n"
        "asyncio.run(main())\n"
        "bad = sorted(m for m in sys.modules if m == 'livekit' or m.startswith('livekit.') or m.split('.')[0] in ('agent', 'bridge'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


_UPPER = "bad = sorted(m for m in sys.modules if m.split('.')[0] in {upper!r})\nprint(bad)\nsys.exit(1 if bad else 0)\n"


@pytest.mark.parametrize(
    ("use", "upper"),
    [
        (  # the offline providers, made by name and used once each
            "from providers import SpeechSettings, create_stt, create_tts\n"
            "s = SpeechSettings(_env_file=None, STT_PROVIDERS='local', TTS_PROVIDERS='local')\n"
            "stt, tts = create_stt(s), create_tts(s)\n"
            "async def main():\n"
            "    frames = [f async for f in tts.synthesize('Hello there.')]\n"
            "    assert frames\n"
            "    await stt.aclose(); await tts.aclose()\n"
            "asyncio.run(main())\n",
            ("agent", "bridge"),
        ),
        (  # the bridge publishing an envelope over an in-memory transport
            "from bridge import MemoryTransport, attach_event_bridge\n"
            "async def main():\n"
            "    b = attach_event_bridge(MemoryTransport(), brain=None, agent_name='a', served_identity='alice')\n"
            "    b.publish_transcript('hi', final=True)\n"
            "    assert await b.flush(5)\n"
            "    await b.aclose()\n"
            "asyncio.run(main())\n",
            ("agent",),
        ),
    ],
    ids=["providers", "bridge"],
)
def test_lower_layers_run_without_upper_layers_loaded(use: str, upper: tuple[str, ...]) -> None:
    """What the static check cannot see (imports made by name at run time): using the layer in a
    fresh interpreter loads no module of a layer above it."""
    code = "import asyncio, sys\n" + use + _UPPER.format(upper=set(upper))
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_bridge_uses_only_brains_event_and_approval_types() -> None:
    # the bridge library maps brain events and answers approvals; the `python -m bridge` demo
    # (bridge/__main__.py) is the one place that runs a brain
    allowed = {"brain.events", "brain.approvals"}
    bad = [
        (str(p.relative_to(ROOT)), m)
        for p, m in _imports("bridge")
        if p.name != "__main__.py" and m.split(".")[0] == "brain" and m not in allowed
    ]
    assert not bad, bad

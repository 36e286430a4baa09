"""Provider report: `python -m agent doctor` and the worker's `GET /providers` (no LiveKit server)."""

from __future__ import annotations

import asyncio
import io
import json
import socket

import aiohttp
import pytest

from agent.config import AgentSettings
from agent.doctor import doctor_command
from agent.worker import define_voice_agent

SECRET = "sk-test-NEVER-SHOWN-0123456789"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no .env from the checkout
    for var in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET", "OPENAI_API_KEY", "GEMINI_API_KEY",
                "GOOGLE_API_KEY", "AGENT_MODE", "REALTIME_PROVIDER", "BRAIN_BACKEND", "STT_PROVIDERS", "TTS_PROVIDERS"):
        monkeypatch.delenv(var, raising=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rows(data: dict) -> dict[tuple[str, str], dict]:
    return {(r["kind"], r["name"]): r for r in data["providers"]}


async def test_worker_serves_the_provider_report_next_to_its_health_check(monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    port = _free_port()
    server = define_voice_agent(AgentSettings(http_host="127.0.0.1", http_port=port, mode="realtime"))
    started = asyncio.Event()
    server.on("worker_started", lambda *_: started.set())
    task = asyncio.create_task(server.run(devmode=True, unregistered=True))
    try:
        await asyncio.wait_for(started.wait(), 30)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/") as r:
                assert (r.status, await r.text()) == (200, "OK")  # livekit's own routes still work
            async with http.get(f"http://127.0.0.1:{port}/providers") as r:
                assert r.status == 200
                body = await r.text()
    finally:
        await server.aclose()
        await asyncio.wait_for(task, 10)
    assert SECRET not in body
    data = json.loads(body)
    assert data["mode"] == "realtime" and data["ok"] is True
    rows = _rows(data)
    assert rows[("realtime", "openai-realtime")] == {
        "kind": "realtime", "name": "openai-realtime", "installed": True, "configured": True, "chosen": True, "reason": "",
    }
    gemini = rows[("realtime", "gemini-live")]
    assert not gemini["chosen"] and not gemini["configured"]
    assert gemini["reason"] and ("GEMINI_API_KEY" in gemini["reason"] or "pip install" in gemini["reason"])
    # in realtime mode the speech providers and the brain's model are not used
    assert not rows[("stt", "local")]["chosen"] and "AGENT_MODE=realtime" in rows[("stt", "local")]["reason"]
    assert not any(r["chosen"] for r in data["providers"] if r["kind"] in ("stt", "tts", "llm"))
    assert {"stt", "tts", "llm", "tools", "realtime"} == {r["kind"] for r in data["providers"]}
    assert rows[("tools", "brain.example_tools")]["chosen"]  # the realtime model calls the brain's tools


def test_the_provider_route_redacts_what_doctor_redacts(monkeypatch, tmp_path) -> None:
    """A chosen provider's plugin that fails to import is reported with its error, and that may
    carry a credential (a proxy URL with its password): doctor redacted it, `GET /providers`
    served it as it was."""
    from typing import Any

    from agent.doctor import report
    from agent.health import providers_payload
    from providers import SpeechSettings, registry
    from providers.spec import ProviderOptions, ProviderSpec

    proxy = "http://deploy:Pr0xyPassw0rd@proxy.internal:3128"
    (tmp_path / "proxied_plugin.py").write_text(f"raise ConnectionError('cannot reach {proxy}')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec: ProviderSpec[Any, Any] = ProviderSpec("proxied", "tts", ProviderOptions, lambda o: None, ("proxied_plugin",))
    monkeypatch.setitem(registry.SPECS["tts"], "proxied", spec)
    settings = AgentSettings(speech=SpeechSettings(tts_providers=["proxied"]))
    served = providers_payload(settings)
    row = _rows(served)[("tts", "proxied")]
    assert row["chosen"] and not row["installed"] and "does not import" in row["reason"]  # the path is real
    assert "Pr0xyPassw0rd" not in json.dumps(served)
    assert "Pr0xyPassw0rd" not in json.dumps(report(settings))
    assert served["providers"] == report(settings)["providers"]  # the same rows, redacted alike


def test_doctor_reports_every_kind_and_names_the_missing_variable(monkeypatch) -> None:
    monkeypatch.setenv("AGENT_MODE", "realtime")
    out = io.StringIO()
    assert doctor_command(["--json"], out=out) == 1  # the chosen realtime model has no key
    data = json.loads(out.getvalue())
    chosen = [r for r in data["providers"] if r["chosen"]]
    assert [(r["kind"], r["name"]) for r in chosen] == [("tools", "brain.example_tools"), ("realtime", "openai-realtime")]
    assert chosen[1]["reason"] == "missing OPENAI_API_KEY"

    monkeypatch.setenv("AGENT_MODE", "pipeline")
    monkeypatch.setenv("BRAIN_BACKEND", "gemini")
    out = io.StringIO()
    assert doctor_command([], out=out) == 1
    text = out.getvalue()
    assert "mode: pipeline" in text
    line = next(x for x in text.splitlines() if " llm " in x and "gemini" in x)
    assert line.startswith(" *") and "unusable" in line
    # either key will do (as the TTS row, start-up and .env.example say): both are named
    assert line.endswith("(missing GEMINI_API_KEY or GOOGLE_API_KEY)"), line
    live = next(x for x in text.splitlines() if " realtime " in x and "gemini-live" in x)
    assert live.endswith("(missing GEMINI_API_KEY or GOOGLE_API_KEY)"), live
    offline = next(x for x in text.splitlines() if " llm " in x and "offline" in x)
    assert offline.startswith("  ") and offline.rstrip().endswith("ok")  # usable, not chosen


def test_doctor_refuses_openai_realtime_without_interruptions_as_start_up_does(monkeypatch) -> None:
    """REALTIME_ALLOW_INTERRUPTIONS=false cannot work with openai-realtime: the worker refuses to
    start, so doctor (a deploy script's check) and GET /providers must not call it usable."""
    from agent.startup_checks import check_configuration
    from providers import ProviderConfigError

    for var, value in (("AGENT_MODE", "realtime"), ("REALTIME_PROVIDER", "openai-realtime"),
                       ("OPENAI_API_KEY", SECRET), ("REALTIME_ALLOW_INTERRUPTIONS", "false")):
        monkeypatch.setenv(var, value)
    with pytest.raises(ProviderConfigError, match="REALTIME_ALLOW_INTERRUPTIONS"):
        check_configuration(AgentSettings())
    out = io.StringIO()
    assert doctor_command(["--json"], out=out) == 1
    data = json.loads(out.getvalue())
    row = _rows(data)[("realtime", "openai-realtime")]
    assert data["ok"] is False and row["chosen"] and not row["configured"]
    assert "REALTIME_ALLOW_INTERRUPTIONS=false" in row["reason"] and "gemini-live" in row["reason"]
    assert SECRET not in out.getvalue()
    monkeypatch.setenv("REALTIME_ALLOW_INTERRUPTIONS", "true")
    assert doctor_command(["--json"], out=io.StringIO()) == 0

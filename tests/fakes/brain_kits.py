"""Helpers for brain tests: one `Kit` per provider (fake server + real SDK brain) and an event log.

A Kit hides the wire differences so one test body checks both SDKs:

    async with open_kit("gemini") as kit:
        kit.server.push(kit.calls(("call_1", "get_weather", {"city": "Paris"})), kit.text("Sunny."))
        brain = kit.brain(tools=[get_weather])
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import pytest

from brain import (
    ApprovalGate,
    BrainConfig,
    Tool,
    Turn,
    VoiceBrain,
    create_voice_brain,
)
from brain.events import (
    ApprovalRequested,
    ApprovalResolved,
    ToolFinished,
    ToolStarted,
    TurnDone,
    TurnStarted,
)

from . import gemini_server as gm
from . import openai_server as oa
from .gemini_server import FakeGeminiServer
from .openai_server import FakeOpenAIServer
from .scripted import Action, Chunk, HttpError, RecordedRequest, ScriptedServer, Stream

PROVIDERS = ("openai", "gemini")
CallSpec = tuple[str | None, str, dict[str, Any]]

# every variable the brain config reads; tests start from a clean environment
ENV_VARS = (
    "OPENAI_API_KEY", "OPENAI_BASE_URL", "GEMINI_API_KEY", "GOOGLE_API_KEY", "GEMINI_BASE_URL",
    "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_GENAI_USE_ENTERPRISE", "GOOGLE_GENAI_API_VERSION",
    "GOOGLE_CLOUD_PROJECT", "GOOGLE_CLOUD_LOCATION",
)


def clean_env(monkeypatch: Any) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("BRAIN_") or name in ENV_VARS:
            monkeypatch.delenv(name, raising=False)


def config_without_dotenv(**fields: Any) -> BrainConfig:
    """BrainConfig from the given fields and the (cleaned) environment, ignoring any `.env` file."""
    return BrainConfig(**{"_env_file": None, **fields})


class Kit:
    """A fake provider server, its wire format, and brains wired to it through the real SDK."""

    name: str
    server: ScriptedServer

    def __init__(self) -> None:
        self._brains: list[VoiceBrain] = []

    # -- scripting (provider-specific) -----------------------------------------------------

    def text(self, text: str, pieces: int = 4) -> Stream:
        raise NotImplementedError

    def text_chunk(self, text: str) -> Chunk:
        raise NotImplementedError

    def end_text(self) -> list[Action]:
        """What ends a text stream (a finish chunk)."""
        raise NotImplementedError

    def calls(self, *calls: CallSpec, text: str = "") -> Stream:
        raise NotImplementedError

    def rate_limited(self, retry_after: float) -> HttpError:
        """A 429 asking to wait `retry_after` seconds, the way the provider says it."""
        raise NotImplementedError

    # -- reading requests (provider-specific) ----------------------------------------------

    def results(self, req: RecordedRequest) -> dict[str, str]:
        """call id -> the tool result text the model was given."""
        raise NotImplementedError

    def requested_calls(self, req: RecordedRequest) -> dict[str, tuple[str, dict[str, Any]]]:
        """call id -> (name, arguments) of the assistant tool calls in the request's history."""
        raise NotImplementedError

    def dialogue(self, req: RecordedRequest) -> list[tuple[str, str]]:
        """(role, text) of the user / assistant text in the request (system prompt excluded)."""
        raise NotImplementedError

    def offered_tools(self, req: RecordedRequest) -> list[str]:
        raise NotImplementedError

    def tools_forbidden(self, req: RecordedRequest) -> bool:
        """The request declares tools but tells the model not to call them."""
        raise NotImplementedError

    def stream(self, *actions: Action) -> Stream:
        return Stream(list(actions))

    # -- brains ----------------------------------------------------------------------------

    def config(self, **overrides: Any) -> BrainConfig:
        raise NotImplementedError

    def brain(
        self,
        tools: Iterable[Tool | Callable[..., Any]] = (),
        approvals: ApprovalGate | None = None,
        **config: Any,
    ) -> VoiceBrain:
        b = create_voice_brain(self.config(**config), tools=list(tools), approvals=approvals)
        self._brains.append(b)
        return b

    async def aclose(self) -> None:
        for b in self._brains:
            await b.aclose()
        await self.server.close()


_BASE: dict[str, Any] = {"_env_file": None, "tools": [], "max_retries": 0, "request_timeout": 10.0}


class OpenAIKit(Kit):
    name = "openai"

    def __init__(self) -> None:
        super().__init__()
        self.server = FakeOpenAIServer()

    def config(self, **overrides: Any) -> BrainConfig:
        assert isinstance(self.server, FakeOpenAIServer)
        args: dict[str, Any] = {
            **_BASE,
            "backend": "openai",
            "model": "gpt-fake",
            "openai_api_key": "sk-test-key",
            "openai_base_url": self.server.base_url,
        }
        return BrainConfig(**{**args, **overrides})

    def text(self, text: str, pieces: int = 4) -> Stream:
        return oa.text_reply(text, pieces)

    def text_chunk(self, text: str) -> Chunk:
        return oa.text_chunk(text)

    def end_text(self) -> list[Action]:
        return [oa.finish_chunk("stop")]

    def calls(self, *calls: CallSpec, text: str = "") -> Stream:
        return oa.tool_reply(*calls, text=text)

    def rate_limited(self, retry_after: float) -> HttpError:
        return oa.rate_limited(retry_after)

    def results(self, req: RecordedRequest) -> dict[str, str]:
        return oa.tool_results(req)

    def requested_calls(self, req: RecordedRequest) -> dict[str, tuple[str, dict[str, Any]]]:
        import json

        out: dict[str, tuple[str, dict[str, Any]]] = {}
        for m in oa.messages(req):
            for c in m.get("tool_calls") or []:
                out[c["id"]] = (c["function"]["name"], json.loads(c["function"]["arguments"]))
        return out

    def dialogue(self, req: RecordedRequest) -> list[tuple[str, str]]:
        return [
            (m["role"], m["content"])
            for m in oa.messages(req)
            if m["role"] in ("user", "assistant") and m.get("content")
        ]

    def offered_tools(self, req: RecordedRequest) -> list[str]:
        return oa.tool_names(req)

    def tools_forbidden(self, req: RecordedRequest) -> bool:
        return bool(req.body.get("tools")) and req.body.get("tool_choice") == "none"


class GeminiKit(Kit):
    name = "gemini"

    def __init__(self) -> None:
        super().__init__()
        self.server = FakeGeminiServer()

    def config(self, **overrides: Any) -> BrainConfig:
        args: dict[str, Any] = {
            **_BASE,
            "backend": "gemini",
            "model": "gemini-fake",
            "gemini_api_key": "gm-test-key",
            "gemini_base_url": self.server.origin,
        }
        return BrainConfig(**{**args, **overrides})

    def text(self, text: str, pieces: int = 4) -> Stream:
        return gm.text_reply(text, pieces)

    def text_chunk(self, text: str) -> Chunk:
        return gm.text_chunk(text)

    def end_text(self) -> list[Action]:
        return [gm.text_chunk("", "STOP")]

    def calls(self, *calls: CallSpec, text: str = "") -> Stream:
        return gm.tool_reply(*calls, text=text)

    def rate_limited(self, retry_after: float) -> HttpError:
        return gm.rate_limited(retry_after)

    def results(self, req: RecordedRequest) -> dict[str, str]:
        return {k: v["response"]["result"] for k, v in gm.function_responses(req).items()}

    def requested_calls(self, req: RecordedRequest) -> dict[str, tuple[str, dict[str, Any]]]:
        out: dict[str, tuple[str, dict[str, Any]]] = {}
        for c in gm.contents(req):
            for p in c.get("parts", []):
                fc = p.get("functionCall")
                if fc is not None:
                    out[fc.get("id") or fc["name"]] = (fc["name"], fc.get("args", {}))
        return out

    def dialogue(self, req: RecordedRequest) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for c in gm.contents(req):
            text = "".join(p.get("text", "") for p in c.get("parts", []))
            if text:
                out.append(("assistant" if c["role"] == "model" else "user", text))
        return out

    def offered_tools(self, req: RecordedRequest) -> list[str]:
        return gm.declared_tools(req)

    def tools_forbidden(self, req: RecordedRequest) -> bool:
        mode = req.body.get("toolConfig", {}).get("functionCallingConfig", {}).get("mode")
        return bool(req.body.get("tools")) and mode == "NONE"


def make_kit(name: str) -> Kit:
    return {"openai": OpenAIKit, "gemini": GeminiKit}[name]()


@contextlib.asynccontextmanager
async def open_kit(name: str) -> AsyncIterator[Kit]:
    kit = make_kit(name)
    await kit.server.start()
    try:
        yield kit
    finally:
        await kit.aclose()


# -- driving turns -------------------------------------------------------------------------


async def reply(brain: VoiceBrain, turn: Turn, *, limit: float = 5.0) -> list[str]:
    """All deltas of one reply (guarded: a hang fails the test instead of blocking the suite)."""
    async with asyncio.timeout(limit):
        return [d async for d in brain.stream_reply(turn)]


async def wait_for(event: asyncio.Event, limit: float = 5.0) -> None:
    async with asyncio.timeout(limit):
        await event.wait()


class EventLog:
    """Records every brain event and checks the invariants clients rely on."""

    def __init__(self, brain: VoiceBrain) -> None:
        self.events: list[Any] = []
        self._waiters: list[tuple[Callable[[Any], bool], asyncio.Future[Any]]] = []
        brain.subscribe(self._on_event)

    def _on_event(self, event: Any) -> None:
        self.events.append(event)
        for pred, fut in list(self._waiters):
            if not fut.done() and pred(event):
                fut.set_result(event)

    async def wait(self, pred: Callable[[Any], bool], limit: float = 5.0) -> Any:
        for e in self.events:
            if pred(e):
                return e
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.append((pred, fut))
        async with asyncio.timeout(limit):
            return await fut

    def of(self, cls: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls)]

    def types(self, turn_id: str | None = None) -> list[str]:
        return [e.type for e in self.events if turn_id is None or e.turn_id == turn_id]

    def done(self, turn_id: str) -> TurnDone:
        (d,) = [e for e in self.of(TurnDone) if e.turn_id == turn_id]
        return d

    def check(self) -> None:
        """Invariants: one started/done per turn (done last), stable unique call ids, no duplicates."""
        assert len({id(e) for e in self.events}) == len(self.events), "an event object was emitted twice"
        turns = [e.turn_id for e in self.of(TurnStarted)]
        assert len(turns) == len(set(turns)), "turn.started twice for a turn"
        for tid in turns:
            mine = [e for e in self.events if e.turn_id == tid]
            dones = [e for e in mine if isinstance(e, TurnDone)]
            assert len(dones) == 1, f"turn {tid}: {len(dones)} turn.done events"
            assert mine[0].type == "turn.started" and mine[-1] is dones[0], f"turn {tid}: order {[e.type for e in mine]}"
        started = [e.call_id for e in self.of(ToolStarted)]
        finished = [e.call_id for e in self.of(ToolFinished)]
        assert len(started) == len(set(started)), f"tool.started twice for a call id: {started}"
        assert sorted(started) == sorted(finished), f"started {started} vs finished {finished}"
        assert all(cid for cid in started), "empty call id"
        names = {e.call_id: e.name for e in self.of(ToolStarted)}
        for e in self.of(ToolFinished) + self.of(ApprovalRequested) + self.of(ApprovalResolved):
            assert names.get(e.call_id) == e.name, f"{e.type} for unknown call {e.call_id}"
        requested = {e.request_id: e.call_id for e in self.of(ApprovalRequested)}
        resolved = [(e.request_id, e.call_id) for e in self.of(ApprovalResolved)]
        assert len(requested) == len(self.of(ApprovalRequested)), "approval requested twice"
        assert sorted(resolved) == sorted(requested.items()), "every approval request resolves exactly once"


# -- fixtures for the brain's test modules (registered in tests/conftest.py); a module opts in with
# `pytestmark = BRAIN_TESTS`. google-genai subclasses aiohttp.ClientSession, which aiohttp deprecates
BRAIN_TESTS = [
    pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession:DeprecationWarning"),
    pytest.mark.usefixtures("brain_env"),
]


@pytest.fixture
def brain_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No BRAIN_* / provider variable from the environment leaks into a test's brain."""
    clean_env(monkeypatch)


@pytest.fixture(params=PROVIDERS)
async def kit(request: pytest.FixtureRequest) -> AsyncIterator[Kit]:
    """Each test once per provider: its fake server and brains wired to it through the real SDK."""
    async with open_kit(request.param) as k:
        yield k

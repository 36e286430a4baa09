"""Brain configuration: missing keys, BRAIN_TOOLS, custom backends, and tool schemas from signatures."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any, Literal

import pytest

from brain import ConfigError, Turn, create_voice_brain, make_tool, tool
from brain.events import ErrorEvent, ToolFinished
from tests.fakes.brain_kits import EventLog, clean_env, config_without_dotenv, reply, wait_for
from tests.fakes.brain_plugins import EchoBackend
from tests.fakes.brain_plugins import shout as _shout


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    clean_env(monkeypatch)


@pytest.mark.parametrize(
    ("backend", "variable"),
    [("openai", "OPENAI_API_KEY"), ("gemini", "GEMINI_API_KEY")],
)
def test_missing_key_names_the_variable(monkeypatch: pytest.MonkeyPatch, backend: str, variable: str) -> None:
    monkeypatch.setenv("BRAIN_BACKEND", backend)
    with pytest.raises(ConfigError, match=variable) as info:
        create_voice_brain(config_without_dotenv())
    assert info.value.code == "config"
    monkeypatch.setenv(variable, "   ")  # blank counts as missing
    with pytest.raises(ConfigError, match=variable):
        create_voice_brain(config_without_dotenv())


def test_keys_from_the_environment_are_used_and_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRAIN_BACKEND", "openai")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    cfg = config_without_dotenv()
    brain = create_voice_brain(cfg)
    assert brain.backend.name == "openai"
    masked = cfg.masked()
    assert masked["openai_api_key"] == "***" and masked["gemini_api_key"] is None
    assert "sk-secret-value" not in repr(masked) and "sk-secret-value" not in repr(cfg)
    monkeypatch.setenv("GOOGLE_API_KEY", "g-key")  # accepted as the Gemini key too
    assert config_without_dotenv(backend="gemini").gemini_api_key is not None


def test_unknown_backend_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown brain backend 'claude'"):
        config_without_dotenv(backend="claude")


def test_tools_from_brain_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRAIN_TOOLS", "tests.fakes.brain_plugins, brain.example_tools")
    cfg = config_without_dotenv()
    assert cfg.tools == ["tests.fakes.brain_plugins", "brain.example_tools"]
    brain = create_voice_brain(cfg)
    assert brain.tools.names() == ["shout", "convert", "get_weather", "book_table"]
    assert brain.tools.get("book_table").requires_approval  # type: ignore[union-attr]
    assert not brain.tools.get("shout").requires_approval  # type: ignore[union-attr]


def test_default_tools_are_the_examples() -> None:
    assert create_voice_brain(config_without_dotenv()).tools.names() == ["get_weather", "book_table"]


@pytest.mark.parametrize("value", ["none", "NONE", " None "])
def test_brain_tools_none_loads_no_module(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("BRAIN_TOOLS", value)
    cfg = config_without_dotenv()
    assert cfg.tools == []
    assert create_voice_brain(cfg).tools.names() == []
    # tools passed in code still apply
    assert create_voice_brain(cfg, tools=[_shout]).tools.names() == ["shout"]


@pytest.mark.parametrize(
    ("tools", "offer"),
    [
        ("brain.example_tools", "; ask me about the weather, or ask me to book a table."),
        ("none", "."),
        ("tests.fakes.brain_plugins", "."),  # tools of its own, none the offline model can call
    ],
)
async def test_the_offline_model_offers_only_what_its_tools_can_do(monkeypatch: pytest.MonkeyPatch, tools: str, offer: str) -> None:
    monkeypatch.setenv("BRAIN_TOOLS", tools)
    brain = create_voice_brain(config_without_dotenv())
    said = "".join(await reply(brain, Turn("hello there", "c")))
    assert said == "You said: hello there. I'm the offline assistant" + offer


def test_empty_brain_tools_keeps_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRAIN_TOOLS", "")
    assert config_without_dotenv().tools == ["brain.example_tools"]


def test_brain_tools_none_with_modules_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRAIN_TOOLS", "none,brain.example_tools")
    with pytest.raises(ValueError, match="BRAIN_TOOLS=none cannot be combined with tool modules"):
        config_without_dotenv()


def test_brain_tools_listing_nothing_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only `none` turns the tools off; a stray separator is a mistake, not a choice."""
    monkeypatch.setenv("BRAIN_TOOLS", " , ")
    with pytest.raises(ValueError, match="names no tool module; use BRAIN_TOOLS=none"):
        config_without_dotenv()


@pytest.mark.parametrize("variable", ["BRAIN_HITL_TIMEOUT", "BRAIN_REQUEST_TIMEOUT", "BRAIN_TOOL_TIMEOUT"])
@pytest.mark.parametrize("value", ["inf", "nan"])
def test_infinite_or_nan_timeouts_are_rejected(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match="finite number"):
        config_without_dotenv()


def test_masked_configuration_hides_credentials_in_base_urls() -> None:
    masked = config_without_dotenv(openai_base_url="https://bob:hunter2pass@proxy.corp/v1",
                                   gemini_base_url="https://gw.corp/v1?key=AIzaSyA1234567890abcdefgh").masked()
    assert "hunter2pass" not in str(masked) and "AIzaSyA1234567890abcdefgh" not in str(masked)
    assert str(masked["openai_base_url"]).startswith("https://bob:") and "proxy.corp/v1" in str(masked["openai_base_url"])


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("tests.fakes.no_such_module", "cannot import tool module 'tests.fakes.no_such_module' (BRAIN_TOOLS)"),
        ("tests.fakes.scripted", "tool module 'tests.fakes.scripted' defines no @tool functions"),
        ("tests.fakes.broken_plugin", "cannot import tool module 'tests.fakes.broken_plugin' (BRAIN_TOOLS): RuntimeError"),
    ],
)
def test_bad_tool_module_is_a_config_error(monkeypatch: pytest.MonkeyPatch, path: str, message: str) -> None:
    monkeypatch.setenv("BRAIN_TOOLS", path)
    with pytest.raises(ConfigError) as info:
        create_voice_brain(config_without_dotenv())
    assert message in str(info.value)


async def test_custom_backend_from_import_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRAIN_BACKEND", "tests.fakes.brain_plugins:make_backend")
    monkeypatch.setenv("BRAIN_MODEL", "echo-1")
    monkeypatch.setenv("BRAIN_TOOLS", "tests.fakes.brain_plugins")
    brain = create_voice_brain(config_without_dotenv())
    assert isinstance(brain.backend, EchoBackend) and brain.backend.model == "echo-1"
    log = EventLog(brain)
    assert "".join(await reply(brain, Turn("hello there", "c"))) == "hello there "
    assert "".join(await reply(brain, Turn("shout quietly please", "c"))) == "The tool said QUIETLY PLEASE."
    (fin,) = log.of(ToolFinished)
    assert (fin.call_id, fin.status, fin.result) == ("call_shout_1", "ok", "QUIETLY PLEASE")
    log.check()
    brain2 = create_voice_brain(config_without_dotenv(backend="tests.fakes.brain_plugins:make_backend_no_args"))
    assert isinstance(brain2.backend, EchoBackend) and brain2.backend.model == "no-args"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("tests.fakes.nowhere:make", "cannot import custom brain module 'tests.fakes.nowhere' (BRAIN_BACKEND)"),
        ("tests.fakes.brain_plugins:missing", "has no callable 'missing' (BRAIN_BACKEND)"),
        ("tests.fakes.brain_plugins:not_a_backend",
         "not a ModelBackend (it needs a `name`, `stream(request)` and `aclose()`; missing: name, stream, aclose) (BRAIN_BACKEND)"),
        ("tests.fakes.brain_plugins:make_backend_sync_stream",
         "_SyncStream.stream is a plain generator; write it as `async def stream(self, request)` with `yield` (BRAIN_BACKEND)"),
        ("tests.fakes.brain_plugins:make_backend_no_yield",
         "_NoYieldStream.stream is `async def` without `yield`; it must yield its output (BRAIN_BACKEND)"),
        ("tests.fakes.brain_plugins:make_backend_stream_without_request",
         "_StreamWithoutRequest.stream() must take one argument, the ModelRequest: `async def stream(self, request)` (BRAIN_BACKEND)"),
        ("tests.fakes.brain_plugins:make_backend_numbered_name", "_NumberedName.name must be a non-empty string, got 7 (BRAIN_BACKEND)"),
        ("tests.fakes.brain_plugins:", "custom brain must look like 'package.module:factory'"),
        ("tests.fakes.broken_plugin:make", "cannot import custom brain module 'tests.fakes.broken_plugin' "
         "(BRAIN_BACKEND): RuntimeError: this module needs a setting it did not get"),
        ("tests.fakes.brain_plugins:make_backend_wrong_signature", "must take no argument or one (the BrainConfig) (BRAIN_BACKEND)"),
        ("tests.fakes.brain_plugins:make_backend_that_fails", "failed (BRAIN_BACKEND): RuntimeError: license server unreachable"),
        ("tests.fakes.brain_plugins:make_backend_async", "is async; it must be a plain function"),
    ],
)
def test_bad_custom_backend_is_a_config_error(path: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        create_voice_brain(config_without_dotenv(backend=path, tools=[]))
    assert message in str(info.value)


async def test_custom_backend_with_a_plain_aclose_closes() -> None:
    """`def aclose(self)` (no async) passed the ModelBackend check, then closing the brain raised
    "object NoneType can't be used in 'await' expression" at the end of every session."""
    brain = create_voice_brain(config_without_dotenv(backend="tests.fakes.brain_plugins:make_backend_sync_close"))
    assert "".join(await reply(brain, Turn("hello", "c"))) == "hello "
    await brain.aclose()
    assert brain.backend.closed  # type: ignore[attr-defined]


async def test_a_custom_backend_that_stalls_ends_the_turn_after_the_request_timeout() -> None:
    """BRAIN_REQUEST_TIMEOUT bounded only the built-in backends: a custom one that stopped
    answering (here after a first word, keeping its stream busy with empty chunks) held the
    user's turn for ever, in silence. It gets the same bound: `timeout`, the apology, its
    stream closed, and the next turn is answered."""
    brain = create_voice_brain(config_without_dotenv(
        backend="tests.fakes.brain_plugins:make_backend_stalling", tools=[], request_timeout=0.5, apology="Sorry."
    ))
    log = EventLog(brain)
    stalled = Turn("think hard", "c")
    assert await reply(brain, stalled, limit=5) == ["Let me think", " Sorry."]
    assert [(e.code, e.provider, e.turn_id) for e in log.of(ErrorEvent)] == [("timeout", "echo", stalled.turn_id)]
    assert log.done(stalled.turn_id).reason == "error"
    await wait_for(brain.backend.released)  # type: ignore[attr-defined]
    assert "".join(await reply(brain, Turn("hello again", "c"))) == "hello again "
    log.check()


def test_json_schema_from_a_typed_signature() -> None:
    @tool(requires_approval=True, report="full", timeout=3.0)
    def set_thermostat(
        room: str,
        degrees: int,
        mode: Literal["heat", "cool"] = "heat",
        note: str | None = None,
        boost: bool = False,
    ) -> str:
        """Set a room's thermostat."""
        return f"{room}={degrees}"

    t = set_thermostat.__voice_tool__  # type: ignore[attr-defined]
    assert (t.name, t.description, t.requires_approval, t.report, t.timeout) == (
        "set_thermostat", "Set a room's thermostat.", True, "full", 3.0
    )
    assert t.parameters == {
        "type": "object",
        "properties": {
            "room": {"type": "string"},
            "degrees": {"type": "integer"},
            "mode": {"enum": ["heat", "cool"], "type": "string", "default": "heat"},
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
            "boost": {"type": "boolean", "default": False},
        },
        "required": ["room", "degrees"],
        "additionalProperties": False,
    }
    assert t.openai_schema()["function"]["parameters"] is t.parameters
    # the decorated function stays a plain function
    assert set_thermostat("hall", 20) == "hall=20"
    # validation coerces what JSON allows and names what is wrong
    assert t.validate({"room": "hall", "degrees": "21"}) == {
        "room": "hall", "degrees": 21, "mode": "heat", "note": None, "boost": False
    }
    for bad in ({"room": "hall"}, {"room": "hall", "degrees": 1, "mode": "dry"}, {"room": "x", "degrees": 1, "extra": 1}):
        with pytest.raises(ValueError, match="invalid arguments for set_thermostat"):
            t.validate(bad)


def test_make_tool_rejects_varargs_and_bad_report() -> None:
    def f(*args: Any) -> None: ...

    with pytest.raises(ConfigError, match=r"\*args/\*\*kwargs"):
        make_tool(f)
    with pytest.raises(ConfigError, match="report must be one of"):
        make_tool(lambda: None, report="everything")  # type: ignore[arg-type]


def test_a_parameter_type_json_cannot_describe_is_named() -> None:
    """pydantic's own message named neither the tool nor the parameter, over three lines advising
    `arbitrary_types_allowed`, a model setting a tool author cannot reach."""
    def dial(number: str, via: socket.socket) -> None:
        """Call someone."""

    def later(then: Callable[[int], int]) -> None:
        """Run later."""

    with pytest.raises(ConfigError) as info:
        make_tool(dial)
    assert info.value.message == (
        "tool dial: parameter 'via' (socket) cannot be described to the model as JSON; use str, int, float, "
        "bool, Literal, lists, dicts, pydantic models or dataclasses"
    )
    with pytest.raises(ConfigError, match=r"tool later: parameter 'then' \(collections.abc.Callable\[\[int\], int\]\)"):
        make_tool(later)


def test_a_tool_module_with_an_unusable_tool_names_module_and_tool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRAIN_TOOLS", "tests.fakes.bad_tool_plugin")
    with pytest.raises(ConfigError) as info:
        create_voice_brain(config_without_dotenv())
    assert info.value.message.startswith(
        "tool module 'tests.fakes.bad_tool_plugin' (BRAIN_TOOLS): tool open_door: parameter 'key' (socket) cannot"
    )


def test_duplicate_tool_names_are_rejected() -> None:
    @tool(name="same")
    def a() -> None: ...

    @tool(name="same")
    def b() -> None: ...

    with pytest.raises(ConfigError, match="duplicate tool name 'same'"):
        create_voice_brain(config_without_dotenv(tools=[]), tools=[a, b])


def test_two_tool_modules_defining_the_same_name_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    """The model could only ever call one of them: the second was dropped without a word."""
    monkeypatch.setenv("BRAIN_TOOLS", "tests.fakes.brain_plugins,tests.fakes.brain_plugins_clash")
    with pytest.raises(ConfigError) as info:
        create_voice_brain(config_without_dotenv())
    assert info.value.message == (
        "tool 'shout' is defined in both 'tests.fakes.brain_plugins' and 'tests.fakes.brain_plugins_clash' "
        "(BRAIN_TOOLS); rename one with @tool(name=...)"
    )
    # a tool one module imports from another is the same tool: offered once, no clash
    monkeypatch.setenv("BRAIN_TOOLS", "tests.fakes.brain_plugins_clash,brain.example_tools")
    assert create_voice_brain(config_without_dotenv()).tools.names() == ["convert", "shout", "get_weather", "book_table"]


@pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession:DeprecationWarning")
async def test_gemini_brain_ignores_the_vertex_ai_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    """GOOGLE_GENAI_USE_VERTEXAI=true (common on GCP) would move google-genai to Vertex AI, another
    endpoint and credential than the GEMINI_API_KEY the brain is configured with."""
    from tests.fakes.brain_kits import open_kit

    monkeypatch.setenv("GOOGLE_GENAI_USE_VERTEXAI", "true")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "some-project")
    async with open_kit("gemini") as kit:
        kit.server.push(kit.text("Still the Gemini API."))
        brain = kit.brain()
        assert "".join(await reply(brain, Turn("hi", "c"))) == "Still the Gemini API."
        assert len(kit.server.requests) == 1

"""Tools: typed Python functions, with a JSON schema derived from the signature.

    @tool(requires_approval=True, report="args")
    async def send_email(to: str, body: str) -> str:
        "Send an email."
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import importlib
import inspect
import json
import logging
import re
import string
import threading
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Union, get_args, get_origin, get_type_hints

from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from pydantic_core import to_jsonable_python

from .errors import ConfigError
from .events import ReportLevel

_TOOL_ATTR = "__voice_tool__"

log = logging.getLogger("brain")


def _describe(exc: ValidationError) -> str:
    """Where and why, without the offending values: they may be secrets the tool's report level
    masks (pydantic's own message quotes each input)."""
    return "; ".join(
        f"{'.'.join(str(part) for part in err['loc']) or 'arguments'}: {err['msg']}"
        for err in exc.errors(include_url=False, include_input=False)
    )


@dataclass(frozen=True)
class ToolContext:
    """Who a call is for: a tool taking a parameter typed `ToolContext` gets it filled in by the
    brain. The model neither sees nor sets it (it is not in the schema, and a model or approver
    naming it is refused), so a tool can trust it, unlike an argument the model could make up."""

    conversation_id: str
    turn_id: str
    call_id: str
    user_id: str | None = None
    """The identity of the user the turn is for (the served participant), else `BRAIN_USER_ID`."""


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    fn: Callable[..., Any]
    args_model: type[BaseModel]
    requires_approval: bool = False
    report: ReportLevel = "name"
    timeout: float | None = None
    """Seconds the call may run once approved (None: the brain's default)."""
    approval_prompt: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    context_parameter: str | None = None
    """The parameter typed `ToolContext`, filled in by the brain (None: the tool takes none)."""

    def _checked(self, arguments: dict[str, Any]) -> BaseModel:
        try:
            return self.args_model.model_validate(arguments)
        except ValidationError as exc:
            raise ValueError(f"invalid arguments for {self.name}: {_describe(exc)}") from exc

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Check and coerce model-supplied arguments; raises ValueError with a readable message."""
        return self._checked(arguments).model_dump()

    @property
    def runs_in_thread(self) -> bool:
        """A plain function: it runs in a worker thread, which cancellation cannot stop."""
        return not inspect.iscoroutinefunction(self.fn)

    async def invoke(self, arguments: dict[str, Any], context: ToolContext | None = None) -> Any:
        """Run the tool with `arguments` (validated here); `context` fills its `ToolContext`
        parameter, if it has one (required then)."""
        checked = self._checked(arguments)
        # the validated values themselves: a parameter typed as a model or dataclass gets one
        kwargs = {name: getattr(checked, name) for name in type(checked).model_fields}
        if self.context_parameter is not None:
            if context is None:
                raise TypeError(f"tool {self.name} takes a ToolContext: invoke it with one")
            kwargs[self.context_parameter] = context
        if inspect.iscoroutinefunction(self.fn):
            return await self.fn(**kwargs)
        # plain functions run off the event loop so a slow tool never stalls audio
        result = await _in_thread(self.name, functools.partial(self.fn, **kwargs))
        if inspect.isawaitable(result):
            return await result
        return result

    def describe_request(self, arguments: dict[str, Any]) -> str:
        """The approval prompt; never raises (a prompt the arguments cannot fill gets the generic one)."""
        generic = f"Allow the assistant to run '{self.name}'?"
        if not self.approval_prompt:
            return generic
        try:
            return self.approval_prompt.format(**{k: _as_json_values(v) for k, v in arguments.items()})
        except Exception as exc:  # noqa: BLE001 - e.g. "{restaurant.name}" on a str argument
            log.warning("tool %s: approval prompt %r failed (%r); using the generic one", self.name, self.approval_prompt, exc)
            return generic

    def openai_schema(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


def _as_json_values(value: Any) -> Any:
    """Enum members as their values, as the model sent them and as JSON has them: the prompt said
    "Order a Size.LARGE coffee?" for a `size: Size` parameter. Other values stay as validated (a
    Decimal amount keeps its format spec, `{amount:.2f}`)."""
    if isinstance(value, Enum):
        return _as_json_values(value.value)
    if isinstance(value, dict):
        return {k: _as_json_values(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_as_json_values(v) for v in value]
    return value


def _schema_for(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    schema.setdefault("properties", {})
    schema["additionalProperties"] = False
    return schema


def _args_model(fn_name: str, fields: dict[str, Any]) -> tuple[type[BaseModel], dict[str, Any]]:
    model = create_model(f"{fn_name}_args", __config__=ConfigDict(extra="forbid"), **fields)  # type: ignore[call-overload]
    return model, _schema_for(model)


def _unusable_parameter(fn_name: str, fields: dict[str, Any]) -> str:
    """Which parameter the model could not be told about (pydantic's own message advises model
    settings a tool author cannot reach)."""
    for pname, spec in fields.items():
        try:
            _args_model(fn_name, {pname: spec})
        except Exception:  # noqa: BLE001
            kind = spec[0].__name__ if isinstance(spec[0], type) else repr(spec[0])
            return (
                f"parameter {pname!r} ({kind}) cannot be described to the "
                "model as JSON; use str, int, float, bool, Literal, lists, dicts, pydantic models or dataclasses"
            )
    return "its parameters cannot be described to the model as JSON"


def _check_prompt(tool_name: str, prompt: str, parameters: list[str]) -> None:
    """An approval prompt may only name the tool's parameters, by name: a typo there would leave
    the approver with the generic prompt (without the amount, the recipient, ...) at every call.
    What depends on the values (an attribute, an index, a format spec) is checked when asked."""

    def fields(text: str) -> list[str]:
        found = []
        for _, name, spec, conversion in string.Formatter().parse(text):
            if name is None:
                continue
            if conversion not in (None, "r", "s", "a"):
                raise ValueError(f"unknown conversion !{conversion}")
            found.append(name)
            found += fields(spec or "")  # "{amount:{width}}": width is a field too
        return found

    try:
        names = fields(prompt)
    except ValueError as exc:
        raise ConfigError(f"tool {tool_name}: approval_prompt {prompt!r} is not a valid format string ({exc})") from None
    for name in names:
        base = re.split(r"[.\[]", name, maxsplit=1)[0]
        if base not in parameters:
            known = ", ".join(parameters) or "none"
            what = "a positional field" if base == "" or base.isdigit() else f"{{{base}}}, which is not a parameter"
            raise ConfigError(
                f"tool {tool_name}: approval_prompt {prompt!r} names {what}; use the parameters by name ({known})"
            )


def _is_context(tool_name: str, pname: str, annotation: Any) -> bool:
    """Whether the parameter is the call's `ToolContext`: typed so, or optionally so (`ToolContext |
    None`, `Optional[ToolContext]`; the brain always fills it in). Offered to the model, either
    would be an object parameter it could set (a forged user_id). Any other union with it is
    refused: nobody could say which of its types a call would get."""
    if annotation is ToolContext:
        return True
    if get_origin(annotation) in (Union, types.UnionType):
        members = get_args(annotation)
        if ToolContext in members:
            if set(members) == {ToolContext, type(None)}:
                return True
            raise ConfigError(
                f"tool {tool_name}: parameter {pname!r} mixes ToolContext with other types; "
                "type it ToolContext (or ToolContext | None)"
            )
    return False


def make_tool(
    fn: Callable[..., Any],
    *,
    name: str | None = None,
    description: str | None = None,
    requires_approval: bool = False,
    report: ReportLevel = "name",
    timeout: float | None = None,
    approval_prompt: str | None = None,
) -> Tool:
    if report not in ("none", "name", "args", "full"):
        raise ConfigError(f"report must be one of none|name|args|full, not {report!r}")
    if timeout is not None and not timeout > 0:  # 0 meant the default, a negative one failed every call
        raise ConfigError(
            f"tool {name or fn.__name__}: timeout must be a number of seconds above 0, not {timeout!r} "
            "(None: BRAIN_TOOL_TIMEOUT)"
        )
    sig = inspect.signature(fn)
    hints = get_type_hints(fn)
    fields: dict[str, Any] = {}
    context_parameter: str | None = None
    for pname, param in sig.parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ConfigError(f"tool {fn.__name__}: *args/**kwargs are not supported")
        annotation = hints.get(pname, Any)
        if _is_context(name or fn.__name__, pname, annotation):  # the brain's to fill in, not the model's
            if context_parameter is not None:
                raise ConfigError(f"tool {name or fn.__name__}: more than one ToolContext parameter")
            context_parameter = pname
            continue
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[pname] = (annotation, default)
    try:
        args_model, parameters = _args_model(fn.__name__, fields)
    except Exception as exc:  # noqa: BLE001 - pydantic's schema errors: a type JSON cannot describe
        raise ConfigError(f"tool {name or fn.__name__}: {_unusable_parameter(fn.__name__, fields)}") from exc
    if approval_prompt:
        _check_prompt(name or fn.__name__, approval_prompt, list(fields))
    doc = inspect.getdoc(fn) or ""
    return Tool(
        name=name or fn.__name__,
        description=description or doc.strip() or fn.__name__,
        fn=fn,
        args_model=args_model,
        requires_approval=requires_approval,
        report=report,
        timeout=timeout,
        approval_prompt=approval_prompt,
        parameters=parameters,
        context_parameter=context_parameter,
    )


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    requires_approval: bool = False,
    report: ReportLevel = "name",
    timeout: float | None = None,
    approval_prompt: str | None = None,
) -> Any:
    """Decorator marking a function as a brain tool. The function stays callable as before."""

    def wrap(f: Callable[..., Any]) -> Callable[..., Any]:
        setattr(
            f,
            _TOOL_ATTR,
            make_tool(
                f,
                name=name,
                description=description,
                requires_approval=requires_approval,
                report=report,
                timeout=timeout,
                approval_prompt=approval_prompt,
            ),
        )
        return f

    return wrap(fn) if fn is not None else wrap


def as_tool(obj: Tool | Callable[..., Any]) -> Tool:
    if isinstance(obj, Tool):
        return obj
    found = getattr(obj, _TOOL_ATTR, None)
    if isinstance(found, Tool):
        return found
    if callable(obj):
        return make_tool(obj)
    raise ConfigError(f"not a tool: {obj!r}")


def load_tool_module(path: str) -> list[Tool]:
    """Every @tool-decorated function in `package.module`, in definition order."""
    try:
        module = importlib.import_module(path)
    except ConfigError as exc:  # a @tool the module defines is not usable
        raise ConfigError(f"tool module {path!r} (BRAIN_TOOLS): {exc.message}") from exc
    except Exception as exc:  # ImportError, or the module itself failed (SyntaxError, a raise)
        raise ConfigError(f"cannot import tool module {path!r} (BRAIN_TOOLS): {type(exc).__name__}: {exc}") from exc
    tools = [getattr(v, _TOOL_ATTR) for v in vars(module).values() if isinstance(getattr(v, _TOOL_ATTR, None), Tool)]
    if not tools:
        raise ConfigError(f"tool module {path!r} defines no @tool functions")
    return tools


def load_tool_modules(paths: Iterable[str]) -> list[Tool]:
    """The tools of every module of BRAIN_TOOLS, in order. Two modules may not offer different
    tools under one name (the model could only ever call one of them); a tool a module imports
    from another (the same tool) counts once."""
    found: dict[str, tuple[Tool, str]] = {}
    for path in paths:
        for t in load_tool_module(path):
            first = found.setdefault(t.name, (t, path))
            if first[0] is not t:
                raise ConfigError(
                    f"tool {t.name!r} is defined in both {first[1]!r} and {path!r} (BRAIN_TOOLS); "
                    "rename one with @tool(name=...)"
                )
    return [t for t, _ in found.values()]


class ToolSet:
    """The tools a brain may call, by name."""

    def __init__(self, tools: Iterable[Tool | Callable[..., Any]] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for t in tools:
            self.add(as_tool(t))

    def add(self, t: Tool) -> None:
        if t.name in self._tools:
            raise ConfigError(f"duplicate tool name {t.name!r}")
        self._tools[t.name] = t

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def names(self) -> list[str]:
        return list(self._tools)


async def _in_thread(name: str, call: Callable[[], Any]) -> Any:
    """Run a plain-function tool in a thread of its own, which ends when the function returns.

    Not a pool: a tool that hangs keeps its thread, and a bounded pool would fill up, after which
    every later plain-function call in the process would wait behind them (and time out unrun,
    with the model told it may have happened); nor asyncio's default executor (the threads it
    resolves host names in). A daemon thread: a hung tool does not keep the process from exiting
    (a pool's threads are joined at exit)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def settle(ok: bool, value: Any) -> None:
        if not future.done():  # cancelled meanwhile (barge-in, timeout)
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def run() -> None:
        try:
            outcome: tuple[bool, Any] = (True, context.run(call))
        except StopIteration as exc:
            # an asyncio future refuses it (the call would never settle and run into its timeout):
            # a tool error, as a coroutine tool's StopIteration is
            error = RuntimeError(f"tool {name} raised StopIteration")
            error.__cause__ = exc
            outcome = (False, error)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            outcome = (False, exc)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:  # the loop is closed: nobody waits for the result any more
            pass

    threading.Thread(target=run, name=f"brain-tool-{name}", daemon=True).start()
    return await future


MAX_RESULT_CHARS = 16_000
"""What the model is told of one result, at most: the result is resent with every later request
of the conversation's memory, so a 5 MB result would overflow the model's context for many turns."""


_CHANGED = "The user changed the arguments to "
_CHANGED_END = " before approving. "


def with_changed_arguments(arguments: Any, told: str) -> str:
    """What the model is told of a call the approver ran with other arguments: its history
    keeps the call as the model made it (a realtime model's history is not ours to edit)."""
    return f"{_CHANGED}{json.dumps(to_jsonable_python(arguments, fallback=str))}{_CHANGED_END}{told}"


def without_changed_arguments(told: str) -> str:
    """The result part of what `with_changed_arguments` wrote (`told` itself otherwise)."""
    if told.startswith(_CHANGED) and _CHANGED_END in told:
        return told.split(_CHANGED_END, 1)[1]
    return told


def jsonable(value: Any) -> Any:
    """A tool result as JSON values, for the model and the events: models, dataclasses, dates, sets
    and enums as JSON has them, anything else as its `str`. Bytes as UTF-8 text, or base64 when
    they are not UTF-8 (an image: that failed the turn). Never raises."""
    try:
        return to_jsonable_python(value, fallback=str)
    except Exception:  # noqa: BLE001 - bytes that are not UTF-8, a circular structure, a failing __str__
        try:
            return to_jsonable_python(value, fallback=str, bytes_mode="base64")
        except Exception:  # noqa: BLE001
            return f"<{type(value).__name__} that cannot be shown>"


def result_to_text(result: Any, limit: int | None = MAX_RESULT_CHARS) -> str:
    """What the model sees of a tool result (cut to `limit` characters, saying so; None: whole):
    JSON, its text as is (not \\u escapes, six characters each against the cut)."""
    if isinstance(result, str):
        text = result
    else:
        try:
            text = json.dumps(jsonable(result), ensure_ascii=False)
        except ValueError:  # e.g. a float NaN is fine; a circular list is not
            text = str(result)
    if limit is not None and len(text) > limit:
        text = text[:limit] + f"... [cut: the result was {len(text)} characters, only the first {limit} are shown]"
    return text

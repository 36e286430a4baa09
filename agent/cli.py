"""`python -m agent <command>`.

    simulate [AUDIO_FILE]   the voice pipeline on a file (or a synthesised question), no room, no keys
    doctor                  provider registry report + effective configuration (secrets masked)
    start | dev | connect | console | download-files
                            livekit-agents' own worker commands, running this agent
    token | web             join tokens / the browser page (agent.tokens, agent.web)
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings
from collections.abc import Callable

from pydantic import ValidationError

LIVEKIT_COMMANDS = ("start", "dev", "connect", "console", "download-files")
CONNECTING = ("start", "dev", "connect")
LAZY = {"token": ("agent.tokens", "token_command"), "web": ("agent.web", "web_command")}

USAGE = """usage: python -m agent <command> [options]

commands:
  simulate [AUDIO_FILE]  run the voice pipeline on an audio file (or a synthesised question)
                         without a LiveKit room; offline by default (try --help)
  doctor                 speech provider report and the effective configuration
  start                  run the worker in production mode (needs LIVEKIT_URL / _API_KEY / _API_SECRET)
  dev                    run the worker in development mode
  connect --room NAME    join one room directly
  console                talk to the agent with this machine's microphone and speaker
  download-files         fetch the files plugins need ahead of time
  token                  issue a join token for a web client
  web                    serve the browser page and its token endpoint
"""


class UsageError(Exception):
    pass


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):  # name the variable; never echo its value (it may be a secret)
        from brain.config import BrainConfig, describe_settings_error
        from bridge.config import BridgeConfig
        from providers.realtime import RealtimeSettings
        from providers.settings import SpeechSettings

        from .config import AgentSettings
        from .turns import TurnSettings

        classes = (AgentSettings, BrainConfig, TurnSettings, BridgeConfig, SpeechSettings, RealtimeSettings)
        return describe_settings_error(exc, classes)
    return str(exc)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def check_dotenv(path: str = ".env") -> list[str]:
    """Warnings about `.env`: one for the lines that cannot be parsed (they are ignored: a key on
    such a line is simply not set), instead of python-dotenv's one per line per settings class,
    and one per name with this project's prefixes that nothing reads (a misspelt variable is
    otherwise silently ignored). A file that is not UTF-8 is a `UsageError` naming the line
    (every settings object would fail to read it)."""
    import io

    from dotenv.parser import parse_stream

    from .config import unknown_variables

    try:
        with open(path, "rb") as fb:
            raw = fb.read()
    except OSError:
        return []
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UsageError(f"{path}: line {line} is not UTF-8 text (byte 0x{raw[exc.start]:02x}); "
                         "save the file as UTF-8") from None
    bindings = list(parse_stream(io.StringIO(text)))
    logging.getLogger("dotenv.main").setLevel(logging.ERROR)  # said once, here
    warnings_: list[str] = []
    bad = [b.original.line for b in bindings if b.error]
    if bad:
        lines = ", ".join(str(n) for n in bad)
        warnings_.append(f"{path}: line{'s' if len(bad) > 1 else ''} {lines} could not be parsed and "
                         f"{'are' if len(bad) > 1 else 'is'} ignored (write KEY=value; close every quote)")
    names = [b.key for b in bindings if b.key]
    for name, meant in unknown_variables(names):
        hint = f" (did you mean {meant}?)" if meant else ""
        warnings_.append(f"{path}: {name} is not a variable the agent reads{hint}; "
                         "it has no effect unless your own brain or tools read it")
    return warnings_


def check_config_file(dotenv: str = ".env") -> list[str]:
    """Warnings about the TOML file VOICE_CONFIG_FILE names (in the environment, else `.env`, as
    the settings find it): names in it that neither the speech nor the realtime settings read,
    which were silently ignored (a typo, or a BRAIN_* setting the file cannot hold)."""
    from dotenv import dotenv_values

    from providers.settings import CONFIG_FILE_VAR

    from .config import unknown_config_file_variables

    path = os.environ.get(CONFIG_FILE_VAR)
    if not path:
        values = dotenv_values(dotenv) if os.path.isfile(dotenv) else {}
        path = next((v for k, v in values.items() if k.upper() == CONFIG_FILE_VAR and v), None)
    return unknown_config_file_variables(path) if path else []


def log_level() -> str:
    """AGENT_LOG_LEVEL from the environment or `.env` (read before any settings object exists)."""
    from dotenv import dotenv_values

    def named(values: dict[str, str | None]) -> str | None:  # case-insensitive, as the settings read them
        return next((v for k, v in values.items() if k.upper() == "AGENT_LOG_LEVEL" and v), None)

    value = named(dict(os.environ)) or named(dotenv_values(".env")) or "WARNING"
    level = value.strip().upper()
    if level not in LOG_LEVELS:
        raise UsageError(f"AGENT_LOG_LEVEL={value.strip()!r}: use one of {', '.join(LOG_LEVELS)}")
    return level


def _flag_value(args: list[str], flag: str) -> str | None:
    """The value given to `flag` (`--url X` or `--url=X`), the last one if repeated."""
    value = None
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


def _run_livekit(command: str, rest: list[str]) -> int:
    if command == "download-files":  # livekit-agents' current entry point for it
        from livekit.agents.__main__ import main as livekit_main

        return livekit_main(["download-files", *rest])

    from livekit.agents import cli

    from .config import AgentSettings, livekit_url_problem
    from .worker import define_voice_agent

    settings = AgentSettings()
    if command in CONNECTING and not {"-h", "--help"} & set(rest):
        given = {a.split("=", 1)[0] for a in rest}  # the livekit CLI also takes them as flags
        flags = {"LIVEKIT_URL": "--url", "LIVEKIT_API_KEY": "--api-key", "LIVEKIT_API_SECRET": "--api-secret"}
        missing = [var for var in settings.missing_livekit() if flags[var] not in given]
        if missing:
            settings.require_livekit(missing)
        url_flag = _flag_value(rest, "--url")
        problem = livekit_url_problem(url_flag, "--url") if url_flag is not None else settings.livekit_url_problem()
        if problem:
            raise UsageError(problem)
    server = define_voice_agent(settings)
    sys.argv = [sys.argv[0], command, *rest]  # click names the program from the real __main__ path
    # livekit-agents 1.8 marks its in-process CLI as deprecated in favour of the external `lk`
    # tool; it is still the only way to offer start/dev/connect/console from `python -m agent`.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"livekit\.agents")
    try:
        cli.run_app(server)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0) if not isinstance(exc.code, str) else 1
    if code == 0 and getattr(server, "_connection_failed", False):
        # livekit-agents logs "worker failed" and returns normally once it gives up reaching
        # LiveKit: a supervisor restarting on failure (systemd, a one-shot job) must see one
        print(f"error: the worker gave up connecting to LiveKit at {_server_address(server)} (see the log "
              "above): check LIVEKIT_URL, LIVEKIT_API_KEY / LIVEKIT_API_SECRET and that the server is up",
              file=sys.stderr)
        return 1
    return code


def _server_address(server: object) -> str:
    """scheme://host:port of the server's LiveKit URL (no credentials, path or query)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(str(getattr(server, "_ws_url", "") or ""))
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "LIVEKIT_URL"
    return f"{parts.scheme}://{parts.hostname}{port}" if parts.hostname else "LIVEKIT_URL"


def _lazy(command: str) -> Callable[[list[str]], int]:
    module_name, attr = LAZY[command]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"the '{command}' command is not available ({module_name} does not import: {exc})") from exc
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise UsageError(f"the '{command}' command is not available ({module_name}.{attr} is missing)")
    return fn  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    from .log_redaction import install as redact_logs

    redact_logs()
    try:
        for problem in [*check_dotenv(), *check_config_file()]:
            print(f"warning: {problem}", file=sys.stderr)
        level = log_level()
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if command not in LIVEKIT_COMMANDS:
        logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        if command == "simulate":
            from .simulate import simulate_command

            return simulate_command(rest)
        if command == "doctor":
            from .doctor import doctor_command

            return doctor_command(rest)
        if command in LAZY:
            return int(_lazy(command)(rest) or 0)
        if command in LIVEKIT_COMMANDS:
            return _run_livekit(command, rest)
        raise UsageError(f"unknown command {command!r}\n\n{USAGE}")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:  # ConfigError, ProviderConfigError, AudioFileError, ValidationError ...
        print(f"error: {_describe(exc)}", file=sys.stderr)
        return 2

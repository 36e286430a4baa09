"""`python -m agent web`: serve the browser page, its vendored modules and the token endpoint.

Routes:

* ``GET /`` - ``web/public/index.html``; ``GET /assets/<file>`` - the rest of ``web/public/``.
* ``GET /vendor/livekit-client.esm.mjs`` - the pinned ``livekit-client`` from ``web/node_modules``
  (``npm ci`` in ``web/``); in test mode the fake room module ``web/tests/fake-livekit.mjs``.
* ``GET /vendor/bridge/<file>`` - the bridge's JS helper (``bridge/client/``).
* ``POST /token`` (JSON ``{room, name?}``) or ``GET /token?room=&name=`` - a join token from
  `agent.tokens` for a fresh identity the server picks (``web-`` + random hex; a client that
  could choose its identity could take another participant's place, or an approver's in
  ``BRIDGE_ALLOWED_IDENTITIES``); rooms must start with ``WEB_ROOM_PREFIX`` (``web-``), and each
  client address gets at most ``WEB_TOKENS_PER_MINUTE`` tokens (the address from
  ``X-Forwarded-For`` when the request comes from one of ``WEB_TRUSTED_PROXIES``). The response also names the
  bridge's events topic (``topic``, ``BRIDGE_TOPIC``), which the page listens on. Bad input is a
  400 with ``{"error", "field"}``, too many requests a 429.
* ``GET /healthz`` - liveness for container health checks.

Test mode (``--test-mode`` / ``WEB_TEST_MODE=1``) exists for the browser tests only.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import ipaddress
import json
import logging
import math
import re
import secrets
import signal
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from aiohttp import web
from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bridge.config import BridgeConfig
from bridge.protocol import DEFAULT_TOPIC

from .config import livekit_url_problem
from .tokens import TokenInputError, TokenSettings, describe_settings_error, issue_token

logger = logging.getLogger("agent.web")

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
LIVEKIT_CLIENT_DIST = Path("node_modules/livekit-client/dist/livekit-client.esm.mjs")
FAKE_LIVEKIT = Path("tests/fake-livekit.mjs")
MAX_BODY_BYTES = 4096
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# The page is same-origin only: scripts, styles and the token call come from this server; media
# and signalling go to LiveKit over ws(s) / WebRTC.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self' blob: mediastream:; connect-src 'self' ws: wss: http: https:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class WebPaths:
    """Where the page, livekit-client and the bridge helper live on disk."""

    web_root: Path
    bridge_client: Path

    @property
    def public(self) -> Path:
        return self.web_root / "public"

    def livekit_module(self, test_mode: bool) -> Path:
        return self.web_root / (FAKE_LIVEKIT if test_mode else LIVEKIT_CLIENT_DIST)

    @classmethod
    def discover(cls, web_root: Path | None = None) -> WebPaths:
        """`web_root` or the checkout's ``web/``; the bridge helper from the installed package."""
        if web_root is None:
            web_root = Path(__file__).resolve().parents[1] / "web"
        bridge_client = Path(str(resources.files("bridge"))) / "client"
        return cls(web_root=web_root.resolve(), bridge_client=bridge_client.resolve())


class WebSettings(BaseSettings):
    """The web server's own settings (`WEB_*`, from the environment or `.env`)."""

    model_config = SettingsConfigDict(allow_inf_nan=False, env_prefix="WEB_", env_file=".env", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    root: Path | None = None
    """Directory with public/ and node_modules/; default: web/ of this checkout."""
    test_mode: bool = False
    """Serve the fake room module instead of livekit-client (browser tests only)."""
    tokens_per_minute: int = Field(default=20, ge=0)
    """Tokens one client address may get per minute (0: no limit)."""
    trusted_proxies: Annotated[list[IPNetwork], NoDecode] = Field(default_factory=list)
    """Reverse proxies (addresses or networks, comma-separated) whose X-Forwarded-For names the
    client the limit counts. Without them every client behind a proxy has the proxy's address."""

    @field_validator("host", "port", "tokens_per_minute", mode="before")
    @classmethod
    def _blank_is_default(cls, v: object, info: ValidationInfo) -> object:
        """A blank `WEB_HOST=` is 127.0.0.1 (it bound every interface), blank numbers their defaults."""
        if isinstance(v, str) and not v.strip() and info.field_name is not None:
            return cls.model_fields[info.field_name].default
        return v

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, v: object) -> object:
        if not isinstance(v, str):
            return v
        nets: list[IPNetwork] = []
        for i, part in enumerate((p.strip() for p in v.split(",") if p.strip()), 1):
            try:
                nets.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                raise ValueError(f"entry {i} is not an address or network (such as 10.0.0.2 or 10.0.0.0/24)") from None
        return nets

    @field_validator("trusted_proxies", mode="after")
    @classmethod
    def _no_catch_all(cls, v: list[IPNetwork]) -> list[IPNetwork]:
        for net in v:
            if net.prefixlen == 0:  # every client could then name any address it likes
                raise ValueError(f"{net} trusts every address; name the proxies' own addresses")
        return v

    @field_validator("root", mode="before")
    @classmethod
    def _blank_root(cls, v: object) -> object:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("test_mode", mode="before")
    @classmethod
    def _blank_flag(cls, v: object) -> object:
        return False if isinstance(v, str) and not v.strip() else v


def _safe_file(root: Path, rel: str) -> Path | None:
    """`root/rel` if it is an existing file inside root with a servable extension."""
    if not rel or "\\" in rel or rel.startswith("/"):
        return None
    try:
        candidate = (root / rel).resolve()
        if not candidate.is_relative_to(root) or not candidate.is_file():
            return None
    except (OSError, ValueError):  # a NUL byte, a name or path too long: a 500 and a logged traceback
        return None
    if candidate.suffix not in CONTENT_TYPES:
        return None
    return candidate


def _file_response(path: Path, *, no_cache: bool = False) -> web.FileResponse:
    headers = {"Content-Type": CONTENT_TYPES[path.suffix], "X-Content-Type-Options": "nosniff"}
    if path.suffix == ".html":  # whichever route serves a page, it may not be framed elsewhere
        headers["Content-Security-Policy"] = CSP
    if no_cache:
        headers["Cache-Control"] = "no-cache"
    return web.FileResponse(path, headers=headers)


TOKEN_FIELDS = ("room", "name")
DEFAULT_ROOM_PREFIX = "web-"
"""What the page names new rooms with when WEB_ROOM_PREFIX is empty (any room is accepted)."""
ROOM_PREFIX_META = re.compile(r'<meta name="room-prefix" content="[^"]*">')


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address as X-Forwarded-For or the socket gives it; some proxies add a port
    (``192.0.2.1:4711``, ``[2001:db8::1]:4711``)."""
    text = text.strip()
    if text.startswith("[") and "]" in text:
        text = text[1:text.index("]")]
    elif text.count(":") == 1:
        text = text.split(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _client_address(remote: str | None, forwarded_for: list[str], trusted: Sequence[IPNetwork]) -> str | None:
    """The client's address: the peer's, unless the peer is a trusted proxy; then the nearest
    address in X-Forwarded-For (read from the right, as each proxy appends the one it saw) that is
    not a trusted proxy. Entries left of it are the client's own to write, so never believed."""
    current = _parse_ip(remote or "")
    if current is None or not trusted:
        return remote

    def is_proxy(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address.version == net.version and address in net for net in trusted)

    hops = [h for value in forwarded_for for h in value.split(",")]
    while is_proxy(current) and hops:
        previous = _parse_ip(hops.pop())
        if previous is None:  # not an address: the last proxy's own peer is all we know
            break
        current = previous
    return str(current)


def _client_key(remote: str | None) -> str:
    """What the rate limit counts per: the IPv4 address, or the IPv6 /64 (one site's block)."""
    try:
        address = ipaddress.ip_address(remote or "")
    except ValueError:
        return remote or "unknown"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)  # a dual-stack socket's IPv4 client
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class RateLimit:
    """At most `per_minute` events per key in any 60 s (a sliding window); bounded memory."""

    def __init__(self, per_minute: int, *, max_keys: int = 10_000) -> None:
        self.per_minute = per_minute
        self.max_keys = max_keys
        self._seen: dict[str, deque[float]] = {}

    def allow(self, key: str, now: float | None = None) -> bool:
        if self.per_minute <= 0:
            return True
        now = time.monotonic() if now is None else now
        times = self._seen.get(key)
        if times is None:
            if len(self._seen) >= self.max_keys:
                self._forget(now)
            times = self._seen[key] = deque()
        while times and now - times[0] >= 60:
            times.popleft()
        if len(times) >= self.per_minute:
            return False
        times.append(now)
        return True

    def retry_after(self, key: str, now: float | None = None) -> int:
        """Whole seconds until `key` may have another event (0: now)."""
        now = time.monotonic() if now is None else now
        recent = [t for t in self._seen.get(key, ()) if now - t < 60]
        if self.per_minute <= 0 or len(recent) < self.per_minute:
            return 0
        return max(1, math.ceil(60 - (now - recent[-self.per_minute])))

    def _forget(self, now: float) -> None:
        for key in [k for k, t in self._seen.items() if not t or now - t[-1] >= 60]:
            del self._seen[key]
        while len(self._seen) >= self.max_keys:  # all active: drop the oldest key
            del self._seen[next(iter(self._seen))]


def browser_url_problem(settings: TokenSettings) -> str | None:
    """Why the LiveKit URL the endpoint hands to every browser may not be handed out, or None.
    A user name or password in it (wss://user:pass@host, for a proxy in front of LiveKit) went to
    any caller of /token; a URL without ws(s):// or http(s):// failed in every browser."""
    url, name = (settings.public_url, "LIVEKIT_PUBLIC_URL") if settings.public_url else (settings.url, "LIVEKIT_URL")
    if url is None:
        return None
    problem = livekit_url_problem(url, name)
    if problem is not None:
        return problem
    parts = urlsplit(url.strip())
    if parts.username is not None or parts.password is not None:
        hint = "" if settings.public_url else " (LIVEKIT_URL is what the worker uses)"
        return (f"{name} carries a user name or password, which every browser asking for a token would get: "
                f"set LIVEKIT_PUBLIC_URL to the address browsers use, without it{hint}")
    return None


def _json_error(
    status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if field:
        body["field"] = field
    return web.json_response(body, status=status, headers={"Cache-Control": "no-store", **(headers or {})})


async def _read_token_request(request: web.Request) -> dict[str, Any]:
    if request.method == "GET":
        body: Any = dict(request.query)
    else:
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            raise TokenInputError("body", f"at most {MAX_BODY_BYTES} bytes")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:  # a chunked body past the limit
            raise TokenInputError("body", f"at most {MAX_BODY_BYTES} bytes") from None
        if len(raw) > MAX_BODY_BYTES:
            raise TokenInputError("body", f"at most {MAX_BODY_BYTES} bytes")
        try:
            body = json.loads(raw or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise TokenInputError("body", "must be a JSON object") from None
    if not isinstance(body, dict):
        raise TokenInputError("body", "must be a JSON object")
    if "identity" in body:
        raise TokenInputError("identity", "is assigned by the server (see the response); leave it out")
    for field in body:
        if field not in TOKEN_FIELDS:
            raise TokenInputError(str(field)[:40], f"unknown field; the endpoint takes {', '.join(TOKEN_FIELDS)}")
    return body  # type: ignore[no-any-return]


def create_app(
    settings: TokenSettings, *, paths: WebPaths | None = None, test_mode: bool = False, tokens_per_minute: int = 20,
    bridge_topic: str = DEFAULT_TOPIC, trusted_proxies: Sequence[IPNetwork] = (),
) -> web.Application:
    """The aiohttp application; `settings` supplies the keys, agent name, TTL and room prefix.
    `bridge_topic` (BRIDGE_TOPIC) is told to the page with its token: the agent's events topic.
    `trusted_proxies` (WEB_TRUSTED_PROXIES): peers whose X-Forwarded-For the rate limit believes."""
    paths = paths or WebPaths.discover()
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    limit = RateLimit(tokens_per_minute)
    url_problem = browser_url_problem(settings)  # web_command does not start with one

    async def index(_: web.Request) -> web.StreamResponse:
        page = paths.public / "index.html"
        if not page.is_file():
            logger.error("page not found: %s", page)  # the path is for the operator, not the visitor
            raise web.HTTPNotFound(text="page not found")
        # the page names new rooms with the prefix this endpoint accepts (WEB_ROOM_PREFIX; it
        # always made web-xxxxxx rooms, which a server with another prefix refused)
        prefix = html.escape(settings.room_prefix or DEFAULT_ROOM_PREFIX, quote=True)
        meta = f'<meta name="room-prefix" content="{prefix}">'
        text = ROOM_PREFIX_META.sub(lambda _: meta, page.read_text(encoding="utf-8"), count=1)  # taken as is
        headers = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": CSP, "Cache-Control": "no-cache"}
        return web.Response(text=text, content_type="text/html", charset="utf-8", headers=headers)

    async def asset(request: web.Request) -> web.StreamResponse:
        found = _safe_file(paths.public, request.match_info["path"])
        if found is None:
            raise web.HTTPNotFound()
        return _file_response(found, no_cache=True)

    async def livekit_client(_: web.Request) -> web.StreamResponse:
        module = paths.livekit_module(test_mode)
        if not module.is_file():
            hint = "" if test_mode else " - run `npm ci --omit=dev` in web/"
            logger.error("livekit-client module missing: %s%s", module, hint)
            raise web.HTTPNotFound(text="livekit-client module missing")
        return _file_response(module, no_cache=test_mode)

    async def bridge_client(request: web.Request) -> web.StreamResponse:
        found = _safe_file(paths.bridge_client, request.match_info["path"])
        if found is None or found.suffix != ".js":  # the helper, not its tests
            raise web.HTTPNotFound()
        return _file_response(found, no_cache=True)

    async def token(request: web.Request) -> web.Response:
        client = _client_address(request.remote, request.headers.getall("X-Forwarded-For", []), trusted_proxies)
        key = _client_key(client)
        if not limit.allow(key):
            wait = limit.retry_after(key)
            return _json_error(429, f"at most {limit.per_minute} tokens a minute; try again in {wait} s",
                               headers={"Retry-After": str(wait)})
        try:
            body = await _read_token_request(request)
            room = body.get("room", "")
            if settings.room_prefix and isinstance(room, str) and room and not room.startswith(settings.room_prefix):
                raise TokenInputError("room", f"must start with {settings.room_prefix!r}")
            # issue_token checks types and charsets itself
            identity = "web-" + secrets.token_hex(6)
            issued = issue_token(settings, room=room, identity=identity, name=body.get("name"))
        except TokenInputError as e:
            return _json_error(400, str(e), e.field)
        except ValueError as e:  # missing keys: a server problem, not the client's
            logger.error("token endpoint misconfigured: %s", e)
            return _json_error(503, "token service is not configured")
        if url_problem is not None:
            logger.error("token endpoint misconfigured: %s", url_problem)
            return _json_error(503, "token service is not configured")
        payload = {
            "token": issued.token,
            "url": settings.browser_url,
            "room": issued.room,
            "identity": issued.identity,
            "expires_at": issued.expires_at,
            "topic": bridge_topic,
        }
        return web.json_response(payload, headers={"Cache-Control": "no-store"})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app.router.add_get("/", index)
    app.router.add_get("/assets/{path:.+}", asset)
    app.router.add_get("/vendor/livekit-client.esm.mjs", livekit_client)
    app.router.add_get("/vendor/bridge/{path:.+}", bridge_client)
    app.router.add_post("/token", token)
    app.router.add_get("/token", token)
    app.router.add_get("/healthz", healthz)
    return app


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m agent web",
        description="Serve the web page and the token endpoint (defaults: WEB_HOST, WEB_PORT).",
    )
    p.add_argument("--host", default=None, help="interface to listen on (WEB_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port, 0 = any free one (WEB_PORT, 8080)")
    p.add_argument(
        "--test-mode",
        action="store_true",
        default=None,
        help="serve the fake room module instead of livekit-client (browser tests only)",
    )
    return p


async def _serve(app: web.Application, host: str, port: int) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0] if runner.addresses else (host, port)
    # One parseable line: the browser tests read the port from it when started with --port 0.
    print(f"web: listening on http://{bound[0]}:{bound[1]}/", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # as PID 1 in a container SIGTERM is ignored unless handled
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def web_command(argv: list[str]) -> int:
    """Run the web server until interrupted."""
    args = _parser().parse_args(argv)
    try:
        settings = TokenSettings()
        web_settings = WebSettings()
        bridge_topic = BridgeConfig().topic
    except ValidationError as e:
        print(f"error: bad web settings: {describe_settings_error(e)}", file=sys.stderr)
        return 2
    host = args.host or web_settings.host
    port = web_settings.port if args.port is None else args.port
    test_mode = bool(args.test_mode or web_settings.test_mode)
    try:
        settings.require_keys()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    problem = browser_url_problem(settings)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if not (settings.public_url or settings.url):
        print(
            "warning: neither LIVEKIT_PUBLIC_URL nor LIVEKIT_URL is set: tokens are issued without "
            "the server URL browsers connect to",
            file=sys.stderr,
        )
    paths = WebPaths.discover(web_settings.root)
    if not test_mode and not paths.livekit_module(False).is_file():
        print(
            f"warning: {paths.livekit_module(False)} is missing; run `npm ci --omit=dev` in web/",
            file=sys.stderr,
        )
    logging.basicConfig(level=logging.INFO)
    app = create_app(settings, paths=paths, test_mode=test_mode, tokens_per_minute=web_settings.tokens_per_minute,
                     bridge_topic=bridge_topic, trusted_proxies=web_settings.trusted_proxies)
    asyncio.run(_serve(app, host, port))
    return 0


if __name__ == "__main__":
    sys.exit(web_command(sys.argv[1:]))

"""The web server (`agent.web`): token endpoint and static routes, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import jwt
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from agent.tokens import TokenSettings
from agent.web import WebPaths, create_app

KEY = "APIwebkey"
SECRET = "web-secret-0123456789-abcdefghijklmnopq"
PUBLIC_URL = "ws://localhost:7880"

Factory = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def paths(tmp_path: Path) -> WebPaths:
    web_root = tmp_path / "web"
    (web_root / "public").mkdir(parents=True)
    (web_root / "public" / "index.html").write_text("<!doctype html><title>voice</title>")
    (web_root / "public" / "app.js").write_text("export const app = 1;")
    (web_root / "public" / "notes.txt").write_text("not servable")
    dist = web_root / "node_modules" / "livekit-client" / "dist"
    dist.mkdir(parents=True)
    (dist / "livekit-client.esm.mjs").write_text("export const real = true;")
    (web_root / "node_modules" / "livekit-client" / "package.json").write_text("{}")
    (web_root / "tests").mkdir()
    (web_root / "tests" / "fake-livekit.mjs").write_text("export const fake = true;")
    bridge = tmp_path / "bridge_client"
    bridge.mkdir()
    (bridge / "client.js").write_text("export const bridge = 1;")
    (bridge / "client.test.mjs").write_text("export const tests = 1;")
    (tmp_path / "secret.js").write_text("nope")
    return WebPaths(web_root=web_root, bridge_client=bridge)


@pytest.fixture
async def make_client(paths: WebPaths) -> AsyncIterator[Factory]:
    clients: list[TestClient] = []

    async def factory(test_mode: bool = False, tokens_per_minute: int = 20, **overrides: object) -> TestClient:
        values: dict[str, object] = {
            "api_key": KEY,
            "api_secret": SECRET,
            "public_url": PUBLIC_URL,
            "url": "ws://livekit:7880",
            "agent_name": "web-agent",
        }
        values.update(overrides)
        settings = TokenSettings(_env_file=None, **values)  # type: ignore[arg-type]
        app = create_app(settings, paths=paths, test_mode=test_mode, tokens_per_minute=tokens_per_minute)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield factory
    for c in clients:
        await c.close()


async def _error(resp: ClientResponse, status: int, field: str | None) -> dict:
    text = await resp.text()
    assert resp.status == status, text
    assert SECRET not in text
    body = await resp.json()
    assert body["error"]
    assert body.get("field") == field
    return body


async def test_post_token_issues_a_client_token(make_client: Factory) -> None:
    client = await make_client()
    resp = await client.post("/token", json={"room": "web-1", "name": "Alice"})
    text = await resp.text()
    assert resp.status == 200, text
    assert SECRET not in text
    assert resp.headers["Cache-Control"] == "no-store"
    body = await resp.json()
    assert set(body) == {"token", "url", "room", "identity", "expires_at", "topic"}
    assert body["topic"] == "voice-agent.events"  # BRIDGE_TOPIC's default: the page listens there
    assert body["url"] == PUBLIC_URL  # the browser-facing URL, not the compose-internal one
    claims = jwt.decode(body["token"], SECRET, algorithms=["HS256"], issuer=KEY)
    # the server picks the identity: a client that could choose one could take another
    # participant's place, or an approver's (BRIDGE_ALLOWED_IDENTITIES)
    assert re.fullmatch(r"web-[0-9a-f]{12}", claims["sub"]) and claims["sub"] == body["identity"]
    assert claims["name"] == "Alice"
    assert claims["video"]["room"] == "web-1" and claims["video"]["roomJoin"] is True
    assert "roomAdmin" not in claims["video"] and "roomCreate" not in claims["video"]
    assert claims["roomConfig"] == {"agents": [{"agentName": "web-agent"}], "maxParticipants": 3}
    assert claims["exp"] == body["expires_at"]
    assert claims["exp"] - claims["nbf"] == 600


async def test_get_token_with_query(make_client: Factory) -> None:
    client = await make_client()
    first = await client.get("/token", params={"room": "web-2"})
    second = await client.get("/token", params={"room": "web-2"})
    assert first.status == second.status == 200
    claims = [jwt.decode((await r.json())["token"], SECRET, algorithms=["HS256"]) for r in (first, second)]
    assert [c["video"]["room"] for c in claims] == ["web-2", "web-2"]
    assert claims[0]["sub"] != claims[1]["sub"]  # two visitors never share an identity


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "room"),
        ({"room": "web-1", "identity": "supervisor"}, "identity"),  # assigned by the server
        ({"room": "web-1", "ttl": 999999}, "ttl"),  # unknown fields are refused, not ignored
        ({"room": "web 1"}, "room"),
        ({"room": ["web-1"]}, "room"),
        ({"room": "support-internal-42"}, "room"),  # outside WEB_ROOM_PREFIX (web- by default)
        ({"room": "web-1", "name": "x" * 100}, "name"),
        (["web-1", "alice"], "body"),
    ],
)
async def test_bad_token_requests_are_400(make_client: Factory, body: object, field: str) -> None:
    client = await make_client()
    await _error(await client.post("/token", json=body), 400, field)


async def test_a_missing_room_is_reported_as_missing(make_client: Factory) -> None:
    client = await make_client()
    body = await _error(await client.post("/token", json={"name": "x"}), 400, "room")
    assert "required" in body["error"]  # not "must start with 'web-'"


async def test_non_json_and_oversized_bodies_are_400(make_client: Factory) -> None:
    client = await make_client()
    await _error(await client.post("/token", data=b"room=x&name=y"), 400, "body")
    big = b'{"room": "web-r", "name": "' + b"a" * 5000 + b'"}'
    await _error(await client.post("/token", data=big), 400, "body")

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: the limit hits while reading
        for _ in range(10):
            yield b" " * 1000

    await _error(await client.post("/token", data=chunked()), 400, "body")
    deep = b"[" * 2000 + b"]" * 2000  # valid JSON under 4 KB, nested past Python's recursion limit
    await _error(await client.post("/token", data=deep), 400, "body")


async def test_token_requests_are_rate_limited_per_client(make_client: Factory) -> None:
    client = await make_client(tokens_per_minute=3)
    statuses = [(await client.post("/token", json={"room": f"web-{i}"})).status for i in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    resp = await client.post("/token", json={"room": "web-x"})
    body = await resp.json()
    assert "at most 3 tokens a minute" in body["error"]
    # 429 says when to come back (it did not): the oldest of the 3 leaves the window within 60 s
    wait = int(resp.headers["Retry-After"])
    assert 1 <= wait <= 60 and f"try again in {wait} s" in body["error"]


def test_rate_limit_window_slides_and_memory_stays_bounded() -> None:
    from agent.web import RateLimit

    limit = RateLimit(2, max_keys=100)
    assert [limit.allow("a", now=t) for t in (0, 1, 2, 59.9, 60.5)] == [True, True, False, False, True]
    assert limit.retry_after("a", now=61) == 0  # the one of t=1 has just left the window
    assert limit.allow("a", now=61)
    assert limit.retry_after("a", now=62) == 59  # then t=60.5 is the oldest of the two
    assert limit.retry_after("a", now=120.4) == 1 and limit.retry_after("b", now=120.4) == 0
    assert [limit.allow("a", now=t) for t in (120.4, 120.5)] == [False, True]
    for i in range(1000):
        limit.allow(f"ip{i}", now=100 + i / 1000)
    assert len(limit._seen) <= 100


async def test_room_prefix_is_enforced(make_client: Factory) -> None:
    client = await make_client(room_prefix="demo-")
    await _error(await client.post("/token", json={"room": "web-x"}), 400, "room")
    assert (await client.post("/token", json={"room": "demo-x"})).status == 200
    anywhere = await make_client(room_prefix="")  # an explicit opt-out
    assert (await anywhere.post("/token", json={"room": "admin"})).status == 200


async def test_the_page_names_new_rooms_with_the_prefix_the_endpoint_accepts() -> None:
    """The page always made web-xxxxxx rooms: with another WEB_ROOM_PREFIX every Connect was
    refused ("room: must start with ...") until the user typed a room name."""
    seen = {}
    for prefix in ("demo-", "", 'a"><script>', "a\\1"):
        settings = TokenSettings(_env_file=None, api_key=KEY, api_secret=SECRET, public_url=PUBLIC_URL)  # type: ignore[call-arg]
        # the settings refuse the last two; the page escapes whatever it is given all the same
        settings = settings.model_copy(update={"room_prefix": prefix})
        client = TestClient(TestServer(create_app(settings, paths=WebPaths.discover()), host="127.0.0.1"))
        await client.start_server()
        try:
            page = await (await client.get("/")).text()
        finally:
            await client.close()
        seen[prefix] = re.findall(r'<meta name="room-prefix" content="([^"]*)">', page)
    assert seen == {"demo-": ["demo-"], "": ["web-"], 'a"><script>': ["a&quot;&gt;&lt;script&gt;"], "a\\1": ["a\\1"]}
    # that the page uses it: web/tests/page.test.mjs ("new rooms get the server's room prefix")


async def test_missing_keys_is_503_without_details(make_client: Factory) -> None:
    client = await make_client(api_secret=None)
    body = await _error(await client.post("/token", json={"room": "web-r"}), 503, None)
    assert "LIVEKIT" not in body["error"]


async def test_page_and_assets(make_client: Factory) -> None:
    client = await make_client()
    index = await client.get("/")
    assert index.status == 200
    assert "voice" in await index.text()
    assert "script-src 'self'" in index.headers["Content-Security-Policy"]
    asset = await client.get("/assets/app.js")
    assert asset.status == 200
    assert asset.headers["Content-Type"].startswith("text/javascript")
    assert (await client.get("/assets/notes.txt")).status == 404  # unknown type
    assert (await client.get("/assets/missing.js")).status == 404
    assert (await client.get("/healthz")).status == 200
    # the page under /assets/ too carries the policy (no framing by other sites)
    again = await client.get("/assets/index.html")
    assert again.status == 200 and "frame-ancestors 'none'" in again.headers["Content-Security-Policy"]


async def test_missing_files_do_not_tell_visitors_where_the_server_lives(paths: WebPaths, make_client: Factory) -> None:
    (paths.public / "index.html").unlink()
    client = await make_client()
    for route in ("/", "/vendor/livekit-client.esm.mjs"):
        (paths.web_root / "node_modules" / "livekit-client" / "dist" / "livekit-client.esm.mjs").unlink(missing_ok=True)
        resp = await client.get(route)
        assert resp.status == 404 and str(paths.web_root) not in await resp.text()


async def test_livekit_client_is_the_pinned_module_or_the_fake_in_test_mode(
    make_client: Factory,
) -> None:
    real = await make_client()
    resp = await real.get("/vendor/livekit-client.esm.mjs")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/javascript")
    assert "real" in await resp.text()

    fake = await make_client(test_mode=True)
    assert "fake" in await (await fake.get("/vendor/livekit-client.esm.mjs")).text()


async def test_bridge_helper_is_served(make_client: Factory) -> None:
    client = await make_client()
    resp = await client.get("/vendor/bridge/client.js")
    assert resp.status == 200
    assert "bridge" in await resp.text()
    assert (await client.get("/vendor/bridge/client.test.mjs")).status == 404  # its tests are not served


@pytest.mark.parametrize(
    "path",
    [
        "/assets/../secret.js",
        "/assets/%2e%2e/%2e%2e/secret.js",
        "/assets/..%2f..%2fsecret.js",
        "/vendor/bridge/../secret.js",
        "/assets/../node_modules/livekit-client/package.json",
        "/node_modules/livekit-client/package.json",
        "/tests/fake-livekit.mjs",
    ],
)
async def test_nothing_outside_the_served_dirs(make_client: Factory, path: str) -> None:
    client = await make_client()
    resp = await client.get(path)
    assert resp.status == 404
    assert "nope" not in await resp.text()


@pytest.mark.parametrize(
    "path",
    ["/assets/%00", "/assets/app%00.js", "/assets/" + "a" * 300 + ".js", "/assets/" + "a/" * 2100 + "a.js",
     "/vendor/bridge/client%00.js", "/vendor/bridge/" + "b" * 300 + ".js"],
)
async def test_unopenable_file_names_are_404_not_500(
    make_client: Factory, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A NUL byte or a name too long for the file system raised out of the handler: a 500, and
    a traceback in the server's log for every such request anyone cared to send."""
    client = await make_client()
    with caplog.at_level("ERROR"):
        resp = await client.get(path)
    assert resp.status == 404, await resp.text()
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_default_paths_point_at_the_checkout() -> None:
    paths = WebPaths.discover()
    assert (paths.public / "index.html").is_file()
    assert paths.bridge_client.name == "client"


def test_page_modules_resolve_to_served_files() -> None:
    """Every absolute import in web/public/*.js names a file the server has (checkout layout)."""
    import re

    paths = WebPaths.discover()
    targets = {
        "/vendor/livekit-client.esm.mjs": paths.livekit_module(test_mode=True),  # the fake; real one needs npm
    }
    found = 0
    for module in paths.public.glob("*.js"):
        for spec in re.findall(r"""from\s+['"](/[^'"]+)['"]""", module.read_text()):
            found += 1
            if spec in targets:
                target = targets[spec]
            elif spec.startswith("/vendor/bridge/"):
                target = paths.bridge_client / spec.removeprefix("/vendor/bridge/")
            else:
                raise AssertionError(f"{module.name} imports {spec}, which the server does not route")
            assert target.is_file(), f"{module.name} imports {spec}: {target} is missing"
    assert found >= 2


def test_web_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.web import WebSettings

    monkeypatch.setenv("WEB_PORT", "9000")
    monkeypatch.setenv("WEB_HOST", "0.0.0.0")
    monkeypatch.setenv("WEB_ROOT", "")
    monkeypatch.setenv("WEB_TEST_MODE", "")
    s = WebSettings(_env_file=None)  # type: ignore[call-arg]
    assert (s.host, s.port, s.root, s.test_mode) == ("0.0.0.0", 9000, None, False)



def test_blank_web_and_token_settings_mean_their_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """`WEB_HOST=` bound every interface (0.0.0.0) and blank numbers were errors; every other
    blank setting of the project means its default. An empty WEB_ROOM_PREFIX still means any room."""
    from agent.tokens import TokenSettings
    from agent.web import WebSettings

    for name in ("WEB_HOST", "WEB_PORT", "WEB_TOKENS_PER_MINUTE", "TOKEN_TTL", "ROOM_MAX_PARTICIPANTS", "AGENT_NAME", "WEB_ROOM_PREFIX"):
        monkeypatch.setenv(name, " ")
    w = WebSettings(_env_file=None)  # type: ignore[call-arg]
    assert (w.host, w.port, w.tokens_per_minute) == ("127.0.0.1", 8080, 20)
    t = TokenSettings(_env_file=None)  # type: ignore[call-arg]
    defaults = TokenSettings.model_fields
    assert (t.ttl_seconds, t.max_participants, t.agent_name) == (
        defaults["ttl_seconds"].default, 3, defaults["agent_name"].default
    )
    assert t.room_prefix == ""


@pytest.mark.parametrize("value", ["web/", "-web", "wéb-", "a" * 49, "web- x"])
def test_a_room_prefix_no_room_can_have_stops_the_server_by_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    """A prefix no room name can start with (a '/', 49 characters that leave no room for the
    page's 16 random ones, ...) started the server, which then refused every token request."""
    import agent.web
    from agent.web import web_command

    async def serve(*_: object) -> None:  # had it started, the test returns instead of serving
        pass

    monkeypatch.setattr(agent.web, "_serve", serve)
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.setenv("LIVEKIT_API_KEY", KEY)
    monkeypatch.setenv("LIVEKIT_API_SECRET", SECRET)
    monkeypatch.setenv("WEB_ROOM_PREFIX", value)
    assert web_command(["--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "WEB_ROOM_PREFIX" in err and SECRET not in err


@pytest.mark.parametrize("value", [" ", " demo- ", "a" * 48])
async def test_a_blank_or_padded_room_prefix_still_lets_rooms_in(
    monkeypatch: pytest.MonkeyPatch, make_client: Factory, value: str
) -> None:
    """`WEB_ROOM_PREFIX= ` (blank, as a template may leave it) meant rooms must start with ' ',
    which none can: every Connect failed with "room: must start with ' '"."""
    monkeypatch.setenv("WEB_ROOM_PREFIX", value)
    prefix = TokenSettings(_env_file=None).room_prefix  # type: ignore[call-arg]
    assert prefix == value.strip()
    client = await make_client(room_prefix=value)
    room = prefix + "abcdefghijklmnop"
    resp = await client.post("/token", json={"room": room})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["room"] == room


def test_web_command_names_missing_keys(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.web import web_command

    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.delenv("LIVEKIT_API_KEY", raising=False)
    monkeypatch.delenv("LIVEKIT_API_SECRET", raising=False)
    assert web_command(["--port", "0"]) == 2
    assert "LIVEKIT_API_KEY and LIVEKIT_API_SECRET" in capsys.readouterr().err


def test_rate_limit_counts_ipv4_addresses_and_ipv6_blocks() -> None:
    from agent.web import _client_key

    assert _client_key("203.0.113.7") == "203.0.113.7"
    assert _client_key("2001:db8:1:2::a") == _client_key("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    assert _client_key("2001:db8:1:3::a") != _client_key("2001:db8:1:2::a")
    assert _client_key(None) == "unknown"
    # on a dual-stack socket IPv4 clients arrive IPv4-mapped: each keeps its own count
    assert _client_key("::ffff:198.51.100.1") == "198.51.100.1" != _client_key("::ffff:198.51.100.2")


async def test_behind_trusted_proxies_the_limit_counts_each_forwarded_client(paths: WebPaths) -> None:
    """Behind a reverse proxy every request came from the proxy's address: WEB_TOKENS_PER_MINUTE
    was one budget for all visitors together (20 a minute for the whole site by default), so the
    docs said to turn it off. With WEB_TRUSTED_PROXIES the proxy's X-Forwarded-For names the client."""
    import ipaddress

    settings = TokenSettings(_env_file=None, api_key=KEY, api_secret=SECRET, public_url=PUBLIC_URL)  # type: ignore[call-arg]
    app = create_app(settings, paths=paths, tokens_per_minute=2, trusted_proxies=[ipaddress.ip_network("127.0.0.0/8")])
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        async def status(forwarded_for: str) -> int:
            resp = await client.post("/token", json={"room": "web-r"}, headers={"X-Forwarded-For": forwarded_for})
            return resp.status

        assert [await status("198.51.100.1") for _ in range(3)] == [200, 200, 429]
        assert await status("198.51.100.2") == 200  # another visitor has their own budget
        # what the client itself wrote (left of what the proxy saw) does not get it a new budget
        assert await status("203.0.113.50, 198.51.100.1") == 429
        assert await status("198.51.100.1, 127.0.0.5, 198.51.100.2") == 200  # two proxies in a row
        assert await status("198.51.100.1, 127.0.0.5, 198.51.100.2") == 429
    finally:
        await client.close()


def test_forwarded_addresses_are_believed_from_trusted_proxies_only() -> None:
    import ipaddress

    from agent.web import _client_address

    proxies = [ipaddress.ip_network("10.0.0.0/24"), ipaddress.ip_network("fd00::/64")]
    # a client that reaches the server directly cannot choose its address with the header
    assert _client_address("203.0.113.7", ["198.51.100.1"], proxies) == "203.0.113.7"
    assert _client_address("10.0.0.2", ["198.51.100.1"], []) == "10.0.0.2"  # no proxies configured
    assert _client_address("10.0.0.2", ["198.51.100.1"], proxies) == "198.51.100.1"
    assert _client_address("::ffff:10.0.0.2", ["203.0.113.9, 198.51.100.1"], proxies) == "198.51.100.1"
    assert _client_address("fd00::1", ["2001:db8::5", "10.0.0.3"], proxies) == "2001:db8::5"  # two headers
    assert _client_address("10.0.0.2", ["198.51.100.1:4711"], proxies) == "198.51.100.1"  # with a port
    assert _client_address("10.0.0.2", ["[2001:db8::5]:4711"], proxies) == "2001:db8::5"
    # no header, or one that is not an address: the proxy's own address (one shared budget)
    assert _client_address("10.0.0.2", [], proxies) == "10.0.0.2"
    assert _client_address("10.0.0.2", ["198.51.100.1, unknown"], proxies) == "10.0.0.2"


@pytest.mark.parametrize("value", ["proxy.internal", "0.0.0.0/0", "::/0", "10.0.0.2,,nope"])
def test_trusted_proxies_setting_is_checked(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    from pydantic import ValidationError

    from agent.tokens import describe_settings_error
    from agent.web import WebSettings

    monkeypatch.setenv("WEB_TRUSTED_PROXIES", " 10.0.0.2 , 172.18.0.0/16,fd00::1 ")
    assert [str(n) for n in WebSettings(_env_file=None).trusted_proxies] == [  # type: ignore[call-arg]
        "10.0.0.2/32", "172.18.0.0/16", "fd00::1/128",
    ]
    monkeypatch.setenv("WEB_TRUSTED_PROXIES", value)
    with pytest.raises(ValidationError) as e:
        WebSettings(_env_file=None)  # type: ignore[call-arg]
    assert describe_settings_error(e.value).startswith("WEB_TRUSTED_PROXIES: ")


@pytest.mark.parametrize("overrides", [
    {"public_url": "wss://lk-user:hunter2-proxy-pass@livekit.example.com"},
    {"public_url": None, "url": "wss://lk-user:hunter2-proxy-pass@livekit.internal"},
])
async def test_a_livekit_url_with_credentials_is_never_handed_to_browsers(
    make_client: Factory, overrides: dict[str, object]
) -> None:
    """/token answers every caller with LIVEKIT_PUBLIC_URL (else LIVEKIT_URL) as it is: a URL
    with a proxy's user and password in it gave that password to anyone who asked."""
    client = await make_client(**overrides)
    resp = await client.post("/token", json={"room": "web-r"})
    text = await resp.text()
    assert resp.status == 503, text
    assert "hunter2" not in text and "token" not in await resp.json()
    # the worker may keep its own URL with credentials: browsers get LIVEKIT_PUBLIC_URL
    ok = await make_client(public_url="wss://livekit.example.com", url="wss://lk-user:hunter2-proxy-pass@livekit.internal")
    resp = await ok.post("/token", json={"room": "web-r"})
    assert resp.status == 200 and (await resp.json())["url"] == "wss://livekit.example.com"


@pytest.mark.parametrize(("env", "named"), [
    ({"LIVEKIT_URL": "wss://lk-user:hunter2-proxy-pass@livekit.internal"}, "LIVEKIT_URL"),
    ({"LIVEKIT_PUBLIC_URL": "https://lk-user:hunter2-proxy-pass@livekit.example.com"}, "LIVEKIT_PUBLIC_URL"),
    ({"LIVEKIT_PUBLIC_URL": "livekit.example.com"}, "LIVEKIT_PUBLIC_URL"),  # no scheme: no browser connects
])
def test_web_command_refuses_a_browser_url_it_may_not_hand_out(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    env: dict[str, str], named: str,
) -> None:
    import agent.web
    from agent.web import web_command

    async def serve(*_: object) -> None:  # had it started, the test returns instead of serving
        pass

    monkeypatch.setattr(agent.web, "_serve", serve)
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.delenv("LIVEKIT_PUBLIC_URL", raising=False)
    monkeypatch.delenv("LIVEKIT_URL", raising=False)
    monkeypatch.setenv("LIVEKIT_API_KEY", KEY)
    monkeypatch.setenv("LIVEKIT_API_SECRET", SECRET)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert web_command(["--port", "0"]) == 2
    err = capsys.readouterr().err
    assert named in err and "hunter2" not in err

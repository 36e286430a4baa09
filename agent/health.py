"""The worker's HTTP health server, plus `GET /providers`.

livekit-agents' `AgentServer` builds its aiohttp health server (`GET /`, `GET /worker`) inside
`run()` and starts it a few steps later; it offers no hook to add routes. `VoiceAgentServer`
intercepts the assignment of that server (a property in the subclass) and adds
`GET /providers` before it starts: the provider rows of `python -m agent doctor` as JSON,
`{"mode": ..., "ok": bool, "providers": [...]}` (`ok`: every chosen provider is installed and
configured). Secrets are never part of it: the rows are redacted as doctor's report is (a
reason quotes a plugin's import error, which may carry a proxy URL with its password).
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from livekit.agents import AgentServer

from .config import AgentSettings
from .doctor import provider_rows, unusable_chosen
from .log_redaction import redact_value

log = logging.getLogger("agent.health")


def providers_payload(settings: AgentSettings) -> dict[str, Any]:
    rows = provider_rows(settings)
    payload = {"mode": settings.mode, "ok": not unusable_chosen(rows), "providers": rows}
    return redact_value(payload)  # type: ignore[no-any-return]


def add_provider_route(app: web.Application, settings: AgentSettings) -> None:
    async def providers(_: web.Request) -> web.Response:
        return web.json_response(providers_payload(settings))

    app.router.add_get("/providers", providers)


class VoiceAgentServer(AgentServer):
    """An `AgentServer` whose health server also answers `GET /providers`."""

    def __init__(self, settings: AgentSettings, **kwargs: Any) -> None:
        self._voice_settings = settings
        super().__init__(**kwargs)

    @property  # type: ignore[override]
    def _http_server(self) -> Any:
        return self.__dict__.get("_voice_http_server")

    @_http_server.setter
    def _http_server(self, server: Any) -> None:
        self.__dict__["_voice_http_server"] = server
        app = getattr(server, "app", None)
        if isinstance(app, web.Application) and not app.frozen:
            try:
                add_provider_route(app, self._voice_settings)
            except RuntimeError:  # the router is frozen: the server already runs
                log.warning("could not add GET /providers to the health server")

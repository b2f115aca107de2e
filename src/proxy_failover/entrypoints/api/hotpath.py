"""A short path for the hottest read, ``GET /proxy/{proxyId}/redundancy``, past FastAPI's machinery.

Clients poll redundancy (the active instance and its epoch) far more often than anything else, and
routing plus dependency resolution cost more than the cached read itself. This layer serves only
the successful case, with the same functions the route uses (token verifier, ownership, service,
response model); for anything else — no or bad token, not the caller's, missing, any error — it
steps aside and the full route answers, so errors keep their one code path.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from proxy_failover.core.model import RedundancyStatus
from proxy_failover.entrypoints.api.schemas import RedundancyPublic

_REDUNDANCY_PATH = re.compile(r"^/proxy/([A-Za-z0-9._:-]{1,128})/redundancy$")
_ROUTE_PATH = "/proxy/{proxyId}/redundancy"
_MESSAGE = json.dumps("Redundancy status retrieved").encode()
_HEADERS_BASE = [(b"content-type", b"application/json")]


class FastRedundancyRead:
    """Pure ASGI: answers the redundancy read itself when it can, else calls the app."""

    def __init__(self, app: ASGIApp, api: FastAPI) -> None:
        self.app = app
        self.api = api
        self._route: Any = _find_route(api.routes)
        # Last body rendered per proxy, reused while the service hands back the same value.
        self._rendered: dict[str, tuple[RedundancyStatus, bytes]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope["query_string"]:
            match = _REDUNDANCY_PATH.match(scope["path"])
            if match is not None and self._route is not None:
                body = await self._render(scope, match.group(1))
                if body is not None:
                    scope["route"] = self._route  # for metrics labels, as the router would
                    headers = [*_HEADERS_BASE, (b"content-length", str(len(body)).encode())]
                    await send({"type": "http.response.start", "status": 200, "headers": headers})
                    await send({"type": "http.response.body", "body": body})
                    return
        await self.app(scope, receive, send)

    async def _render(self, scope: Scope, proxy_id: str) -> bytes | None:
        token = _bearer_token(scope)
        if token is None:
            return None
        state = self.api.state
        try:
            caller = await state.verifier.verify(token)
            await state.ownership.check_proxy(caller, proxy_id)
            status = await state.runtime.service.get_redundancy_status(proxy_id)
        except Exception:  # the full route will answer this request, errors included
            return None
        if status is None:
            return None
        rendered = self._rendered.get(proxy_id)
        if rendered is not None and rendered[0] is status:
            return rendered[1]
        data = RedundancyPublic.model_validate(status).model_dump_json().encode()
        body = b'{"data":' + data + b',"message":' + _MESSAGE + b"}"
        if len(self._rendered) > 10_000:
            self._rendered.clear()
        self._rendered[proxy_id] = (status, body)
        return body


def _find_route(routes: list[Any]) -> Any:
    """The route object the router would match (inside included routers too), or None."""
    for route in routes:
        if getattr(route, "path", None) == _ROUTE_PATH and "GET" in getattr(route, "methods", ()):
            return route
        inner = getattr(getattr(route, "original_router", None), "routes", None)
        if inner is not None and (found := _find_route(inner)) is not None:
            return found
    return None


def _bearer_token(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            text: str = value.decode("latin-1")
            scheme, _, credentials = text.partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
            return None
    return None

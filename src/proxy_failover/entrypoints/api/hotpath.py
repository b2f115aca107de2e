"""Short paths for the hottest calls, past FastAPI's machinery: the redundancy read and the
health report (``GET /proxy/{proxyId}/redundancy``, ``PUT /proxy/instances/{instanceId}/health``).

Clients poll redundancy and report health far more often than anything else, and routing plus
dependency resolution cost as much CPU as the call itself. Each short path serves only the
successful case, with the same functions its route uses (token verifier, ownership, body parser
and schema, service, response model); for anything else — no or bad token, not the caller's,
missing, a body the schema refuses, any error before the change is made — it steps aside and the
full route answers, so errors keep their one code path. A body read here is replayed to the route.
The one exception is an unavailable database (503/018): the route would only wait on it again,
doubling the time to the answer (3.0 s instead of the 1.5 s deadline), so the short path answers it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy_failover.core.errors import StorageUnavailable
from proxy_failover.core.model import RedundancyStatus
from proxy_failover.entrypoints.api.auth import Caller
from proxy_failover.entrypoints.api.errors import error_response
from proxy_failover.entrypoints.api.middleware import parse_strict_json
from proxy_failover.entrypoints.api.routes.instances import instance_body
from proxy_failover.entrypoints.api.schemas import HealthRequest, RedundancyPublic

_ID = r"([A-Za-z0-9._:-]{1,128})"
_MESSAGE = json.dumps("Redundancy status retrieved").encode()
_HEADERS_BASE = [(b"content-type", b"application/json")]

#: ``handler(api, caller, path id, body)``: the response body, or (body, proxy id) when the call
#: changed something (the proxy id goes to the audit row, sparing it a parse of the bodies), or
#: None to let the route answer.
Handler = Callable[[FastAPI, Caller, str, bytes], Awaitable[bytes | tuple[bytes, str] | None]]


@dataclass(frozen=True, slots=True)
class ShortPath:
    """One route served past the router: its method, path (as a regex and as the route's
    template) and the name of its one path parameter."""

    method: str
    pattern: re.Pattern[str]
    route_path: str
    param: str
    handler: Handler
    reads_body: bool = False


class ShortPaths:
    """Pure ASGI: answers a short-path call itself when it can, else calls the app."""

    def __init__(self, app: ASGIApp, api: FastAPI, paths: tuple[ShortPath, ...] = ()) -> None:
        self.app = app
        self.api = api
        chosen = paths or (redundancy_read(), health_report())
        # Only paths whose route exists (inside included routers too); the route object is
        # put in the scope for metrics labels and the audit row, as the router would.
        self._paths = [
            (path, route)
            for path in chosen
            if (route := _find_route(api.routes, path.route_path, path.method)) is not None
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["query_string"]:
            for path, route in self._paths:
                if scope["method"] != path.method:
                    continue
                match = path.pattern.match(scope["path"])
                if match is None:
                    continue
                await self._serve(path, route, match.group(1), scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _serve(
        self, path: ShortPath, route: Any, value: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        body = b""
        if path.reads_body:
            first = await receive()
            if (
                first["type"] != "http.request"
                or first.get("more_body", False)
                or not _json_content(scope)
            ):
                await self.app(scope, _replay(first, receive), send)
                return
            body = first.get("body", b"")
            receive = _replay(first, receive)
        caller = await self._caller(scope)
        answer = None
        unavailable = None
        if caller is not None:
            try:
                answer = await path.handler(self.api, caller, value, body)
            except StorageUnavailable as error:  # the route would only wait on it again
                unavailable = error
        if answer is None and unavailable is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = route
        scope["path_params"] = {path.param: value}
        state = scope.setdefault("state", {})
        state["caller"] = caller  # who made the call, for the audit row
        if unavailable is not None:
            await error_response(unavailable.code, unavailable.message)(scope, receive, send)
            return
        assert answer is not None
        if isinstance(answer, tuple):
            answer, state["audit_proxy_id"] = answer
        headers = [*_HEADERS_BASE, (b"content-length", str(len(answer)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    async def _caller(self, scope: Scope) -> Caller | None:
        token = _bearer_token(scope)
        if token is None:
            return None
        try:
            caller: Caller = await self.api.state.verifier.verify(token)
        except Exception:  # the full route answers 401
            return None
        return caller


def redundancy_read() -> ShortPath:
    """``GET /proxy/{proxyId}/redundancy``; the last body rendered per proxy is reused while the
    service hands back the same value."""
    rendered: dict[str, tuple[RedundancyStatus, bytes]] = {}

    async def handle(api: FastAPI, caller: Caller, proxy_id: str, _body: bytes) -> bytes | None:
        state = api.state
        try:
            await state.ownership.check_proxy(caller, proxy_id)
            status = await state.runtime.service.get_redundancy_status(proxy_id)
        except StorageUnavailable:
            raise  # answered by the short path: the route would wait on the database again
        except Exception:  # the full route will answer this request, errors included
            return None
        if status is None:
            return None
        cached = rendered.get(proxy_id)
        if cached is not None and cached[0] is status:
            return cached[1]
        data = RedundancyPublic.model_validate(status).model_dump_json().encode()
        body = b'{"data":' + data + b',"message":' + _MESSAGE + b"}"
        if len(rendered) > 10_000:
            rendered.clear()
        rendered[proxy_id] = (status, body)
        return body

    return ShortPath(
        "GET",
        re.compile(rf"^/proxy/{_ID}/redundancy$"),
        "/proxy/{proxyId}/redundancy",
        "proxyId",
        handle,
    )


def health_report() -> ShortPath:
    """``PUT /proxy/instances/{instanceId}/health`` with a JSON body the route's parser and schema
    accept. A failed report changed nothing (its transaction rolled back), so the route may run it
    again to answer the error; once it succeeded, the answer is rendered as the route renders it."""

    async def handle(
        api: FastAPI, caller: Caller, instance_id: str, body: bytes
    ) -> tuple[bytes, str] | None:
        try:
            request = HealthRequest.model_validate(parse_strict_json(body))
            await api.state.ownership.check_instance(caller, instance_id)
            metrics = request.metrics.to_service() if request.metrics is not None else None
            service = api.state.runtime.service
            instance = await service.update_instance_health(
                instance_id, request.health_status, metrics
            )
        except StorageUnavailable:
            raise  # answered by the short path: the route would wait on the database again
        except Exception:  # nothing was changed: the full route answers, errors included
            return None
        return instance_body(instance, caller, "Instance health updated"), instance.proxy_id

    return ShortPath(
        "PUT",
        re.compile(rf"^/proxy/instances/{_ID}/health$"),
        "/proxy/instances/{instanceId}/health",
        "instanceId",
        handle,
        reads_body=True,
    )


def _replay(first: Message, receive: Receive) -> Receive:
    """``receive`` that hands out ``first`` again before asking for more."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return first
        return await receive()

    return replay


def _json_content(scope: Scope) -> bool:
    """FastAPI parses a body as JSON only without a content type or with a JSON one (else the
    route refuses it), so the short path takes exactly ``application/json`` or none."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.lower() in (b"application/json", b"application/json; charset=utf-8")
    return True


def _find_route(routes: list[Any], route_path: str, method: str) -> Any:
    """The route object the router would match (inside included routers too), or None."""
    for route in routes:
        if getattr(route, "path", None) == route_path and method in getattr(route, "methods", ()):
            return route
        inner = getattr(getattr(route, "original_router", None), "routes", None)
        if inner is not None and (found := _find_route(inner, route_path, method)) is not None:
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

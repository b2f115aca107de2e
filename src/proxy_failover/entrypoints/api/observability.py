"""Observability routes and middleware: ``/metrics`` and the audit log (the live event stream is
in ``streams.py``).

``ObservabilityMiddleware`` gives every request an id (``X-Request-ID``), counts and times it by
route template, and writes one audit row for every mutating call (who, what, target, result,
when).
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy_failover.adapters.metrics import CONTENT_TYPE
from proxy_failover.core import limits, pagination
from proxy_failover.entrypoints.api.deps import AdminDep, ServiceDep
from proxy_failover.entrypoints.api.responses import ADMIN_ERRORS, COMMON_ERRORS, ok_page
from proxy_failover.entrypoints.api.schemas import (
    ListLimit,
    PageCursor,
    PageEnvelope,
    ResponseModel,
    UtcDatetime,
    constraints,
)
from proxy_failover.entrypoints.api.webhooks import NotifierDep
from proxy_failover.entrypoints.logs import bound_request_id
from proxy_failover.service import ProxyFailoverService
from proxy_failover.store.audit import current_actor

log = logging.getLogger("proxy_failover.api")

router = APIRouter(responses=COMMON_ERRORS)

_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Reads made with POST (Envoy polls its xDS this way every second or so): not audited.
_READS_BY_POST = frozenset({"/v3/discovery:endpoints"})
_KNOWN_METHODS = frozenset({"GET", "HEAD", "OPTIONS", *_MUTATING})
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_CAPTURE_BYTES = 64 * 1024
_TARGET_PARAMS = ("instanceId", "eventId", "subscriptionId", "deliveryId")


# --- metrics and audit ---------------------------------------------------------------------------


@router.get(
    "/metrics",
    tags=["operations"],
    summary="Prometheus metrics (pfo_*)",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
async def metrics(notifier: NotifierDep) -> Response:
    await notifier.metrics.refresh(notifier.gauges)
    return Response(notifier.metrics.render(), media_type=CONTENT_TYPE)


class AuditPublic(ResponseModel):
    id: int | None
    occurred_at: UtcDatetime
    actor: str
    action: str
    proxy_id: str | None
    target: str | None
    result: str
    status_code: int | None
    request_id: str | None
    details: dict[str, Any]


@router.get(
    "/audit",
    tags=["operations"],
    response_model=PageEnvelope[AuditPublic],
    responses=ADMIN_ERRORS,
    summary="The audit log, newest first (admin)",
)
async def audit(
    request: Request,
    caller: AdminDep,
    service: ServiceDep,
    proxy_id: Annotated[
        str | None,
        Query(alias="proxyId", description="only this proxy", **constraints(limits.PROXY_ID)),
    ] = None,
    limit: ListLimit = 100,
    cursor: PageCursor = None,
) -> Response:
    entries = await service.list_audit(proxy_id or None, limit, cursor=cursor)
    request.state.listed_rows = len(entries)  # what the rate limit charges (ratelimit.py)
    last = entries[-1].id if len(entries) == limit else None
    next_cursor = None if last is None else pagination.sequence_cursor(pagination.AUDIT, last)
    return ok_page((AuditPublic.model_validate(e) for e in entries), next_cursor)


# --- the middleware ------------------------------------------------------------------------------


def _object(raw: bytearray) -> dict[str, Any]:
    """The JSON object in ``raw``, or an empty one (not JSON, truncated, or not an object)."""
    try:
        value = json.loads(bytes(raw)) if raw else None
    except (ValueError, RecursionError):  # malformed or absurdly nested: the API refused it
        return {}
    return value if isinstance(value, dict) else {}


#: Refusals whose request names a proxy the caller may not touch (or that does not exist).
_NOT_FILED_UNDER_PROXY = frozenset({401, 403, 404})


class ObservabilityMiddleware:
    """Request id, HTTP metrics, and the audit row of every mutating call."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        mutating = method in _MUTATING and scope["path"] not in _READS_BY_POST
        request_id = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                text = value.decode("latin-1")
                request_id = text if _REQUEST_ID.match(text) else ""
        request_id = request_id or uuid.uuid4().hex
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        request_body = bytearray()
        response_body = bytearray()
        status = 500

        async def receiving() -> Message:
            message = await receive()
            if mutating and message["type"] == "http.request":
                room = _CAPTURE_BYTES - len(request_body)
                if room > 0:
                    request_body.extend(message.get("body", b"")[:room])
            return message

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode()),
                ]
            elif mutating and message["type"] == "http.response.body":
                room = _CAPTURE_BYTES - len(response_body)
                if room > 0:
                    response_body.extend(message.get("body", b"")[:room])
            await send(message)

        started = time.perf_counter()
        token = current_actor.set("api") if mutating else None
        try:
            with bound_request_id(request_id):
                await self.app(scope, receiving, sending)
        finally:
            if token is not None:
                current_actor.reset(token)
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            notifier = _notifier_of(scope)
            try:
                if notifier is not None:
                    notifier.metrics.observe_http(
                        method if method in _KNOWN_METHODS else "OTHER",
                        route,
                        status,
                        time.perf_counter() - started,
                    )
                    if mutating:
                        await self._audit(
                            _runtime_of(scope).service,
                            scope,
                            state,
                            route,
                            status,
                            request_id,
                            request_body,
                            response_body,
                        )
            except Exception:  # the call already happened: never turn it into an error
                log.exception("observing %s %s failed (%s)", method, route, request_id)

    @staticmethod
    async def _audit(
        service: ProxyFailoverService,
        scope: Scope,
        state: dict[str, Any],
        route: str,
        status: int,
        request_id: str,
        request_body: bytearray,
        response_body: bytearray,
    ) -> None:
        caller = state.get("caller")
        if caller is None:  # unauthenticated: no row (an anonymous flood must not fill the log)
            return
        params: dict[str, Any] = scope.get("path_params") or {}
        known_proxy = state.get("audit_proxy_id")  # a short path's success: no body to parse
        sent = _object(request_body) if known_proxy is None else {"proxyId": known_proxy}
        answer = _object(response_body) if known_proxy is None else {}
        error = answer.get("error")
        error = error if isinstance(error, dict) else None
        data = answer.get("data")
        data = data if isinstance(data, dict) else {}
        proxy_id = params.get("proxyId") or sent.get("proxyId") or data.get("proxyId")
        if status in _NOT_FILED_UNDER_PROXY:  # not the caller's (or no such) proxy: file it
            proxy_id = None  # globally, so nobody writes into another owner's audit trail
        target = next((params[p] for p in _TARGET_PARAMS if p in params), None)
        if target is None:
            target = sent.get("targetInstanceId") or data.get("id")
        await service.record_audit(
            actor=getattr(caller, "user_id", None) or "anonymous",
            action=f"{scope['method']} {route if route != 'unmatched' else scope['path'][:100]}",
            result=str(error.get("code")) if error else ("success" if status < 400 else "error"),
            proxy_id=proxy_id if isinstance(proxy_id, str) else None,
            target=target if isinstance(target, str) else None,
            status_code=status,
            request_id=request_id,
        )


def _runtime_of(scope: Scope) -> Any:
    app = scope.get("app")
    return getattr(getattr(app, "state", None), "runtime", None)


def _notifier_of(scope: Scope) -> Any:
    return getattr(_runtime_of(scope), "notifier", None)

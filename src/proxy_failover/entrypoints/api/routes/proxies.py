"""Per-proxy routes: configuration, failover operations, redundancy, events, route, explain."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from proxy_failover.core import limits, pagination
from proxy_failover.core.errors import InvalidInput, config_not_found
from proxy_failover.core.model import EventStatus, EventType
from proxy_failover.entrypoints.api.deps import (
    AdminDep,
    CallerDep,
    OwnershipDep,
    ServiceDep,
)
from proxy_failover.entrypoints.api.middleware import StrictJsonRoute
from proxy_failover.entrypoints.api.responses import (
    ADMIN_ERRORS,
    COMMON_ERRORS,
    CONFLICT_ERRORS,
    ok,
    ok_list,
    ok_page,
)
from proxy_failover.entrypoints.api.schemas import (
    CompleteRequest,
    ConfigPublic,
    ConfigRequest,
    Envelope,
    EvaluateRequest,
    EvaluationPublic,
    EventPublic,
    ExecuteRequest,
    ExplanationPublic,
    ListEnvelope,
    ListLimit,
    PageCursor,
    PageEnvelope,
    ProxyIdPath,
    ProxySummaryPublic,
    RedundancyPublic,
    RedundancyRequest,
    RoutePublic,
    constraints,
    enum_filter_pattern,
)

router = APIRouter(route_class=StrictJsonRoute, responses=COMMON_ERRORS)

EventIdPath = Annotated[str, Path(alias="eventId", description="an event id (UUID)")]


@router.post(
    "/proxy/failover/config",
    status_code=201,
    response_model=Envelope[ConfigPublic],
    tags=["configuration"],
    summary="Create or update a proxy's failover configuration",
)
async def save_config(
    body: ConfigRequest, caller: CallerDep, service: ServiceDep, ownership: OwnershipDep
) -> Response:
    """Partial update on an existing proxy: only the fields given change (SPEC §3)."""
    await ownership.may_create(caller, body.proxy_id)
    config = await service.create_failover_configuration(
        body.proxy_id, caller.user_id, body.config.to_service()
    )
    return ok(ConfigPublic.model_validate(config), "Failover configuration saved", status_code=201)


@router.get(
    "/proxy/failover/config/{proxyId}",
    response_model=Envelope[ConfigPublic],
    tags=["configuration"],
    summary="A proxy's failover configuration",
)
async def get_config(
    proxy_id: ProxyIdPath, caller: CallerDep, service: ServiceDep, ownership: OwnershipDep
) -> Response:
    await ownership.check_proxy(caller, proxy_id)
    config = await service.get_failover_configuration(proxy_id)
    if config is None:
        raise config_not_found(proxy_id)
    return ok(ConfigPublic.model_validate(config), "Failover configuration retrieved")


@router.delete(
    "/proxy/failover/config/{proxyId}",
    response_model=Envelope[dict[str, str]],
    tags=["configuration"],
    summary="Delete a proxy: its configuration, instances and webhooks (events and audit stay)",
)
async def delete_config(
    proxy_id: ProxyIdPath, caller: CallerDep, service: ServiceDep, ownership: OwnershipDep
) -> Response:
    """Owner or admin. Open events close as failed; an active role passes to nobody (a completed
    switchover with a new epoch); pending webhook deliveries are cancelled."""
    await ownership.check_proxy(caller, proxy_id)
    await service.delete_failover_configuration(proxy_id, caller.user_id)
    ownership.forget_proxy(proxy_id)
    return ok({"proxyId": proxy_id}, "Failover configuration deleted")


@router.post(
    "/proxy/failover/evaluate",
    response_model=Envelope[EvaluationPublic],
    tags=["failover"],
    summary="Should this proxy fail over now? (no side effects)",
)
async def evaluate(
    body: EvaluateRequest, caller: CallerDep, service: ServiceDep, ownership: OwnershipDep
) -> Response:
    await ownership.check_proxy(caller, body.proxy_id)
    evaluation = await service.evaluate_failover(body.proxy_id, caller.user_id)
    return ok(EvaluationPublic.model_validate(evaluation), "Failover evaluated")


@router.post(
    "/proxy/failover/execute",
    response_model=Envelope[EventPublic],
    responses={**ADMIN_ERRORS, **CONFLICT_ERRORS},
    tags=["failover"],
    summary="Switch the active instance (admin; compare-and-swap on sourceInstanceId)",
)
async def execute(body: ExecuteRequest, caller: AdminDep, service: ServiceDep) -> Response:
    event = await service.execute_failover(
        body.proxy_id,
        caller.user_id,
        body.source_instance_id,
        body.target_instance_id,
        body.reason,
    )
    return ok(EventPublic.model_validate(event), "Failover executed")


@router.put(
    "/proxy/failover/events/{eventId}/complete",
    response_model=Envelope[EventPublic],
    responses={**ADMIN_ERRORS, **CONFLICT_ERRORS},
    tags=["failover"],
    summary="Close a failover event as completed or failed (admin; once)",
)
async def complete(
    event_id: EventIdPath, body: CompleteRequest, caller: AdminDep, service: ServiceDep
) -> Response:
    event = await service.complete_failover_event(
        event_id, body.status, body.error_message, body.duration_ms
    )
    return ok(EventPublic.model_validate(event), "Failover event completed")


@router.get(
    "/proxy/{proxyId}/redundancy",
    response_model=Envelope[RedundancyPublic],
    tags=["redundancy"],
    summary="A proxy's redundancy status and fencing epoch",
)
async def get_redundancy(
    proxy_id: ProxyIdPath, caller: CallerDep, service: ServiceDep, ownership: OwnershipDep
) -> Response:
    await ownership.check_proxy(caller, proxy_id)
    status = await service.get_redundancy_status(proxy_id)
    if status is None:
        raise config_not_found(proxy_id)
    return ok(RedundancyPublic.model_validate(status), "Redundancy status retrieved")


@router.put(
    "/proxy/{proxyId}/redundancy",
    response_model=Envelope[RedundancyPublic],
    responses=ADMIN_ERRORS,
    tags=["redundancy"],
    summary="Override the redundancy status until the next recompute (admin)",
)
async def put_redundancy(
    proxy_id: ProxyIdPath, body: RedundancyRequest, caller: AdminDep, service: ServiceDep
) -> Response:
    status = await service.update_redundancy_status(proxy_id, caller.user_id, body.to_service())
    return ok(RedundancyPublic.model_validate(status), "Redundancy status updated")


@router.get(
    "/proxy/{proxyId}/failover/events",
    response_model=PageEnvelope[EventPublic],
    tags=["failover"],
    summary="A proxy's failover events, newest first",
)
async def list_events(
    request: Request,
    proxy_id: ProxyIdPath,
    caller: CallerDep,
    service: ServiceDep,
    ownership: OwnershipDep,
    limit: ListLimit = 50,
    status: Annotated[
        str,
        Query(
            pattern=enum_filter_pattern(EventStatus),
            description="Only events with this status; empty = any.",
        ),
    ] = "",
    event_type: Annotated[
        str,
        Query(
            alias="type",
            pattern=enum_filter_pattern(EventType),
            description="Only events of this type; empty = any.",
        ),
    ] = "",
    before: Annotated[
        str,
        Query(
            description="ISO 8601 time; events started before it",
            **constraints(limits.TIMESTAMP_TEXT),
        ),
    ] = "",
    cursor: PageCursor = None,
) -> Response:
    await ownership.check_proxy(caller, proxy_id)
    if caller.is_admin and await ownership.owner_of(proxy_id) is None:
        raise config_not_found(proxy_id)
    events = await service.get_failover_events(
        proxy_id,
        limit,
        status=EventStatus(status) if status else None,
        event_type=EventType(event_type) if event_type else None,
        before=_parse_time(before) if before else None,
        cursor=cursor,
    )
    request.state.listed_rows = len(events)  # what the rate limit charges (ratelimit.py)
    next_cursor = None
    if len(events) == limit:
        last = events[-1]
        next_cursor = pagination.event_cursor(pagination.EventPosition(last.created_at, last.id))
    return ok_page((EventPublic.model_validate(event) for event in events), next_cursor)


def _parse_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
        # converting to UTC overflows at the ends of the calendar (0001-01-01T00:00+14:00)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (ValueError, OverflowError) as error:
        raise InvalidInput(
            "query parameter 'before' must be an ISO 8601 time", details={"before": text}
        ) from error


@router.get(
    "/proxy/{proxyId}/route",
    response_model=Envelope[RoutePublic],
    responses=CONFLICT_ERRORS,
    tags=["redundancy"],
    summary="The instance a client should use now (active, or load-balanced)",
)
async def get_route(
    proxy_id: ProxyIdPath, caller: CallerDep, service: ServiceDep, ownership: OwnershipDep
) -> Response:
    await ownership.check_proxy(caller, proxy_id)
    route = await service.get_route(proxy_id)
    return ok(RoutePublic.model_validate(route), "Route resolved")


@router.get(
    "/proxy/{proxyId}/explain",
    response_model=Envelope[ExplanationPublic],
    tags=["redundancy"],
    summary="Why the active instance is active and why each other one is or is not eligible",
)
async def explain(
    proxy_id: ProxyIdPath, caller: CallerDep, service: ServiceDep, ownership: OwnershipDep
) -> Response:
    await ownership.check_proxy(caller, proxy_id)
    explanation = await service.explain(proxy_id)
    return ok(ExplanationPublic.model_validate(explanation), "Explanation")


@router.get(
    "/proxies",
    response_model=ListEnvelope[ProxySummaryPublic],
    tags=["redundancy"],
    summary="The caller's proxies (every proxy for an admin) with their redundancy",
)
async def list_proxies(caller: CallerDep, service: ServiceDep) -> Response:
    proxies = await service.list_proxies(None if caller.is_admin else caller.user_id)
    return ok_list(ProxySummaryPublic.model_validate(proxy) for proxy in proxies)

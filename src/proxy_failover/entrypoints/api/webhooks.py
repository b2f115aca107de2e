"""Webhook subscription routes (SPEC §8): subscribe, list, remove, list deliveries, redeliver.

Owner or admin only; another's proxy answers 404/002 like a missing one. A secret is accepted at
creation and never returned. Unknown subscriptions and deliveries answer 404/020.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import Strict

from proxy_failover.adapters.webhooks import Notifier
from proxy_failover.core import limits, pagination
from proxy_failover.core.errors import config_not_found
from proxy_failover.core.model import NotificationType
from proxy_failover.core.webhooks import DeliveryStatus
from proxy_failover.entrypoints.api.auth import Caller
from proxy_failover.entrypoints.api.deps import (
    CallerDep,
    OutboundDep,
    Ownership,
    OwnershipDep,
    ServiceDep,
    check_outbound,
)
from proxy_failover.entrypoints.api.middleware import StrictJsonRoute
from proxy_failover.entrypoints.api.responses import COMMON_ERRORS, ok, ok_list, ok_page
from proxy_failover.entrypoints.api.schemas import (
    Envelope,
    ListEnvelope,
    ListLimit,
    PageCursor,
    PageEnvelope,
    ProxyIdPath,
    RequestModel,
    ResponseModel,
    UtcDatetime,
    constraints,
    field,
)

router = APIRouter(route_class=StrictJsonRoute, responses=COMMON_ERRORS, tags=["webhooks"])

EventTypeName = Annotated[NotificationType, Strict(False)]


class WebhookRequest(RequestModel):
    """``events`` omitted means every type; the secret (16-512 chars) signs each delivery."""

    url: str = field(limits.URL, examples=["https://ops.example/hook"])
    secret: str = field(limits.WEBHOOK_SECRET)
    events: list[EventTypeName] | None = field(limits.WEBHOOK_EVENTS, default=None)


class SubscriptionPublic(ResponseModel):
    id: str
    proxy_id: str
    user_id: str
    url: str
    events: list[str] | None
    created_at: UtcDatetime


class AttemptPublic(ResponseModel):
    attempt: int
    attempted_at: UtcDatetime
    success: bool
    status_code: int | None
    error: str | None
    latency_ms: float


class DeliveryPublic(ResponseModel):
    id: str
    subscription_id: str
    proxy_id: str
    event_id: str
    event_type: str
    status: DeliveryStatus
    attempts: int
    created_at: UtcDatetime
    next_attempt_at: UtcDatetime | None
    last_attempt_at: UtcDatetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: UtcDatetime | None
    attempt_log: list[AttemptPublic]


class DeletedPublic(ResponseModel):
    id: str
    deleted: bool


async def get_notifier(request: Request) -> Notifier:
    notifier: Notifier = request.app.state.runtime.notifier
    return notifier


NotifierDep = Annotated[Notifier, Depends(get_notifier)]


async def check_proxy(caller: Caller, proxy_id: str, ownership: Ownership) -> None:
    """Owner or admin of an existing proxy, else 404/002 (the live stream's check)."""
    await ownership.check_proxy(caller, proxy_id)
    if await ownership.owner_of(proxy_id) is None:
        raise config_not_found(proxy_id)


@router.post(
    "/proxy/{proxyId}/webhooks",
    status_code=201,
    response_model=Envelope[SubscriptionPublic],
    summary="Subscribe a URL to the proxy's notifications (the secret is never returned)",
)
async def subscribe(
    proxy_id: ProxyIdPath,
    body: WebhookRequest,
    caller: CallerDep,
    ownership: OwnershipDep,
    service: ServiceDep,
    outbound: OutboundDep,
) -> Response:
    await ownership.check_proxy(caller, proxy_id)
    await check_outbound(outbound, caller, {"url": body.url})
    sub = await service.create_webhook_subscription(
        proxy_id,
        caller.user_id,
        body.url,
        body.secret,
        body.events,
        include_health_detail=caller.is_admin,
    )
    return ok(
        SubscriptionPublic.model_validate(sub), "Webhook subscription created", status_code=201
    )


@router.get(
    "/proxy/{proxyId}/webhooks",
    response_model=ListEnvelope[SubscriptionPublic],
    summary="The proxy's webhook subscriptions",
)
async def list_subscriptions(
    proxy_id: ProxyIdPath, caller: CallerDep, ownership: OwnershipDep, service: ServiceDep
) -> Response:
    await ownership.check_proxy(caller, proxy_id)
    subs = await service.list_webhook_subscriptions(proxy_id)
    return ok_list(SubscriptionPublic.model_validate(s) for s in subs)


@router.get(
    "/proxy/{proxyId}/webhooks/deliveries",
    response_model=PageEnvelope[DeliveryPublic],
    summary="Deliveries, newest first, each with every attempt made",
)
async def list_deliveries(
    request: Request,
    proxy_id: ProxyIdPath,
    caller: CallerDep,
    ownership: OwnershipDep,
    service: ServiceDep,
    limit: ListLimit = 50,
    status: Annotated[
        DeliveryStatus | None, Query(description="Only deliveries with this status.")
    ] = None,
    subscription_id: Annotated[
        str | None,
        Query(
            alias="subscriptionId",
            description="Only this subscription's deliveries.",
            **constraints(limits.ID),
        ),
    ] = None,
    cursor: PageCursor = None,
) -> Response:
    await ownership.check_proxy(caller, proxy_id)
    deliveries = await service.list_webhook_deliveries(
        proxy_id, limit, status=status, subscription_id=subscription_id, cursor=cursor
    )
    request.state.listed_rows = len(deliveries)  # what the rate limit charges (ratelimit.py)
    next_cursor = None
    if len(deliveries) == limit:
        next_cursor = pagination.sequence_cursor(pagination.DELIVERIES, deliveries[-1].seq)
    return ok_page((DeliveryPublic.model_validate(d) for d in deliveries), next_cursor)


@router.post(
    "/proxy/{proxyId}/webhooks/deliveries/{deliveryId}/redeliver",
    response_model=Envelope[DeliveryPublic],
    summary="Queue a delivery again now (same delivery id, fresh 24 h of retries)",
)
async def redeliver(
    proxy_id: ProxyIdPath,
    delivery_id: Annotated[
        str,
        Path(
            alias="deliveryId", description="The delivery to send again.", **constraints(limits.ID)
        ),
    ],
    caller: CallerDep,
    ownership: OwnershipDep,
    service: ServiceDep,
    notifier: NotifierDep,
) -> Response:
    await ownership.check_proxy(caller, proxy_id)
    delivery = await service.redeliver_webhook(proxy_id, delivery_id)
    notifier.worker.wake()
    return ok(DeliveryPublic.model_validate(delivery), "Delivery queued again")


@router.delete(
    "/proxy/{proxyId}/webhooks/{subscriptionId}",
    response_model=Envelope[DeletedPublic],
    summary="Remove a subscription; its pending deliveries are cancelled",
)
async def unsubscribe(
    proxy_id: ProxyIdPath,
    subscription_id: Annotated[
        str,
        Path(
            alias="subscriptionId",
            description="The subscription to remove.",
            **constraints(limits.ID),
        ),
    ],
    caller: CallerDep,
    ownership: OwnershipDep,
    service: ServiceDep,
) -> Response:
    await ownership.check_proxy(caller, proxy_id)
    await service.delete_webhook_subscription(proxy_id, subscription_id)
    data: dict[str, Any] = {"id": subscription_id, "deleted": True}
    return ok(data, "Webhook subscription removed")

"""Webhook subscriptions and their deliveries (SPEC §8), for the API and library callers: every
read and write of them goes through here, with the service's clock.

Ownership is the caller's (the API checks it first); these functions answer 404/002 for a proxy
that does not exist and 404/020 for an unknown subscription or delivery.
"""

from __future__ import annotations

from proxy_failover.core import pagination
from proxy_failover.core import webhooks as core_webhooks
from proxy_failover.core.errors import ErrorCode, NotFound, config_not_found
from proxy_failover.core.pagination import DELIVERIES
from proxy_failover.core.webhooks import Delivery, DeliveryStatus, Subscription
from proxy_failover.service.common import parse_limit
from proxy_failover.service.configs import get_failover_configuration
from proxy_failover.service.context import ServiceContext
from proxy_failover.store import is_uuid


def _not_found(what: str, ident: str) -> NotFound:
    return NotFound(f"{what} {ident} not found", ErrorCode.NOT_FOUND)


async def _require_proxy(ctx: ServiceContext, proxy_id: str) -> None:
    if await get_failover_configuration(ctx, proxy_id) is None:
        raise config_not_found(proxy_id)


async def create_subscription(
    ctx: ServiceContext,
    proxy_id: str,
    user_id: str,
    url: object,
    secret: object,
    events: object = None,
    *,
    include_health_detail: bool = False,
) -> Subscription:
    """Subscribe ``url`` to the proxy's notifications (``events`` None: every type), signed with
    ``secret`` (001 when any is invalid); the secret is stored, never returned."""
    valid_url = core_webhooks.validate_url(url)
    valid_secret = core_webhooks.validate_secret(secret)
    valid_events = core_webhooks.validate_events(events)
    await _require_proxy(ctx, proxy_id)
    return await ctx.webhooks.create_subscription(
        proxy_id,
        user_id,
        valid_url,
        valid_secret,
        valid_events,
        ctx.now(),
        include_health_detail=include_health_detail,
    )


async def list_subscriptions(ctx: ServiceContext, proxy_id: str) -> list[Subscription]:
    await _require_proxy(ctx, proxy_id)
    return await ctx.webhooks.list_subscriptions(proxy_id)


async def delete_subscription(ctx: ServiceContext, proxy_id: str, subscription_id: str) -> None:
    """Remove a subscription; its pending deliveries are cancelled (404/020 when unknown)."""
    await _require_proxy(ctx, proxy_id)
    # Ids are server-made UUIDs: any other text finds nothing (SPEC §3) without a query, which
    # PostgreSQL would refuse for a NUL in it.
    if not is_uuid(subscription_id) or not await ctx.webhooks.delete_subscription(
        proxy_id, subscription_id, ctx.now()
    ):
        raise _not_found("webhook subscription", subscription_id)


async def list_deliveries(
    ctx: ServiceContext,
    proxy_id: str,
    limit: int = 50,
    *,
    status: DeliveryStatus | None = None,
    subscription_id: str | None = None,
    cursor: str | None = None,
) -> list[Delivery]:
    """Deliveries, newest first, each with every attempt made (limit and cursor as for
    events); a bad cursor is 001 before the proxy is looked up."""
    limit = parse_limit(limit)
    before_seq = None if cursor is None else pagination.parse_sequence_cursor(DELIVERIES, cursor)
    await _require_proxy(ctx, proxy_id)
    return await ctx.webhooks.list_deliveries(
        proxy_id, limit, status=status, subscription_id=subscription_id, before_seq=before_seq
    )


async def redeliver(ctx: ServiceContext, proxy_id: str, delivery_id: str) -> Delivery:
    """Queue a delivery again now: same delivery id, fresh retries (404/020 when unknown)."""
    await _require_proxy(ctx, proxy_id)
    delivery = (
        await ctx.webhooks.redeliver(proxy_id, delivery_id, ctx.now())
        if is_uuid(delivery_id)
        else None
    )
    if delivery is None:
        raise _not_found("delivery", delivery_id)
    return delivery

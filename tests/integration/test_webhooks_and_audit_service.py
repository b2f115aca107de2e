"""Webhook subscriptions, deliveries and the audit log through the service (what the API routes
call): validated by core, 404/002 for an unknown proxy, 404/020 for unknown ids, stamped with the
service's clock; on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from proxy_failover.core.errors import ErrorCode, InvalidInput, NotFound
from proxy_failover.service import ProxyFailoverService
from tests.helpers.clock import FakeClock
from tests.helpers.scenario import OWNER, proxy_with

SECRET = "s" * 32
HOOK = "https://ops.example/hook"


async def test_subscriptions_are_validated_listed_and_removed(
    service: ProxyFailoverService, clock: FakeClock
) -> None:
    await proxy_with(service, "p1", ["a"])
    for url, secret, events in (
        ("ftp://ops.example/hook", SECRET, None),
        (HOOK, "too-short", None),
        (HOOK, SECRET, ["failover.done"]),
        (HOOK, SECRET, []),
    ):
        with pytest.raises(InvalidInput):
            await service.create_webhook_subscription("p1", OWNER, url, secret, events)
    assert await service.list_webhook_subscriptions("p1") == []
    with pytest.raises(NotFound) as missing:
        await service.create_webhook_subscription("nope", OWNER, HOOK, SECRET)
    assert missing.value.code is ErrorCode.CONFIG_NOT_FOUND

    before = clock.now
    sub = await service.create_webhook_subscription(
        "p1", OWNER, HOOK, SECRET, ["failover.completed", "failover.completed"]
    )
    assert sub.events == ("failover.completed",)
    assert sub.user_id == OWNER
    assert before <= sub.created_at <= clock.now  # the service's clock, not the wall clock
    assert [s.id for s in await service.list_webhook_subscriptions("p1")] == [sub.id]

    await service.delete_webhook_subscription("p1", sub.id)
    assert await service.list_webhook_subscriptions("p1") == []
    for gone in (sub.id, "not-a-subscription"):
        with pytest.raises(NotFound) as unknown:
            await service.delete_webhook_subscription("p1", gone)
        assert unknown.value.code is ErrorCode.NOT_FOUND


async def test_deliveries_are_listed_and_unknown_ones_are_not_redelivered(
    service: ProxyFailoverService,
) -> None:
    await proxy_with(service, "p1", ["a"])
    assert await service.list_webhook_deliveries("p1") == []
    with pytest.raises(InvalidInput):
        await service.list_webhook_deliveries("p1", limit=0)
    for unknown in ("not-a-delivery", "00000000-0000-0000-0000-000000000000"):
        with pytest.raises(NotFound) as missing:
            await service.redeliver_webhook("p1", unknown)
        assert missing.value.code is ErrorCode.NOT_FOUND
    with pytest.raises(NotFound) as no_proxy:
        await service.list_webhook_deliveries("nope")
    assert no_proxy.value.code is ErrorCode.CONFIG_NOT_FOUND


async def test_audit_rows_are_stamped_with_the_service_clock_and_read_newest_first(
    service: ProxyFailoverService, clock: FakeClock
) -> None:
    for index in range(3):
        await service.record_audit(
            actor=OWNER,
            action=f"PUT /thing/{index}",
            result="success",
            proxy_id="p1" if index < 2 else None,
            status_code=200,
            request_id=f"req-{index}",
        )
    everything = await service.list_audit()
    assert [e.request_id for e in everything] == ["req-2", "req-1", "req-0"]
    assert all(e.occurred_at <= clock.now for e in everything)
    assert everything[0].occurred_at > everything[-1].occurred_at  # one clock reading each
    assert [e.request_id for e in await service.list_audit("p1", limit=1)] == ["req-1"]
    with pytest.raises(InvalidInput):
        await service.list_audit(limit=0)

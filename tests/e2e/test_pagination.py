"""Cursor pages of the lists that grow (events, audit, deliveries), on SQLite and PostgreSQL.

A walk from the first page to the last sees every row that existed when it began exactly once, in
order, while new rows keep arriving; a cursor that is not one is 400/001 in the envelope.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from proxy_failover.bootstrap import open_service
from proxy_failover.client import AsyncFailoverClient, FailoverClient
from proxy_failover.core.pagination import AUDIT, sequence_cursor
from proxy_failover.store.tables import (
    audit_log,
    events,
    notification_log,
    webhook_deliveries,
    webhook_subscriptions,
)
from tests.helpers.api import Api, Tokens
from tests.helpers.serve import ServeProcess


def _id() -> str:
    return str(uuid.uuid4())


async def _insert(api: Api, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    assert api.app is not None
    async with api.app.state.runtime.service.store.engine.begin() as conn:
        await conn.execute(sa.insert(table), rows)


async def _walk(api: Api, path: str, token: str, limit: int, between: Any) -> list[str]:
    """Every id of every page, following ``nextCursor``; ``between()`` runs after each page."""
    seen: list[str] = []
    cursor = None
    for _ in range(1000):
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        response = await api.call("GET", path, token, params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["count"] == len(page["data"]) <= limit
        seen.extend(str(item["id"]) for item in page["data"])
        cursor = page["nextCursor"]
        assert (cursor is None) == (page["count"] < limit)
        if cursor is None:
            return seen
        await between()
    raise AssertionError("the walk did not end")


def _event(proxy_id: str, at: datetime) -> dict[str, Any]:
    return {
        "id": _id(),
        "proxy_id": proxy_id,
        "user_id": "alice",
        "event_type": "failover",
        "reason": "seeded",
        "status": "completed",
        "triggered_by": "system",
        "epoch": 1,
        "created_at": at,
    }


async def test_event_pages_walk_every_event_once_while_new_ones_arrive(api: Api) -> None:
    alice = api.tokens.alice
    await api.ok("POST", "/proxy/failover/config", alice, 201, json={"proxyId": "p1"})
    start = datetime.now(UTC) + timedelta(seconds=1)
    # 95 events, three at a time sharing a start time: the id breaks the tie.
    seeded = [_event("p1", start + timedelta(milliseconds=n // 3)) for n in range(95)]
    await _insert(api, events, seeded)
    later = start + timedelta(hours=1)

    async def arrive() -> None:
        nonlocal later
        later += timedelta(seconds=1)
        await _insert(api, events, [_event("p1", later), _event("p1", later)])

    walked = await _walk(api, "/proxy/p1/failover/events", alice, 10, arrive)
    expected = sorted(seeded, key=lambda row: (row["created_at"], row["id"]), reverse=True)
    assert walked == [row["id"] for row in expected]


async def test_event_pages_keep_the_filters(api: Api) -> None:
    alice = api.tokens.alice
    await api.ok("POST", "/proxy/failover/config", alice, 201, json={"proxyId": "p1"})
    start = datetime.now(UTC) + timedelta(seconds=1)
    rows = [_event("p1", start + timedelta(seconds=n)) for n in range(6)]
    for row in rows[::2]:
        row["status"] = "failed"
    await _insert(api, events, rows)
    path = "/proxy/p1/failover/events"
    first = (await api.call("GET", path, alice, params={"status": "failed", "limit": 2})).json()
    assert [e["id"] for e in first["data"]] == [rows[4]["id"], rows[2]["id"]]
    params = {"status": "failed", "limit": 2, "cursor": first["nextCursor"]}
    second = (await api.call("GET", path, alice, params=params)).json()
    assert [e["id"] for e in second["data"]] == [rows[0]["id"]]
    assert second["nextCursor"] is None


async def test_audit_pages_walk_every_row_once_while_new_ones_arrive(api: Api) -> None:
    admin = api.tokens.admin
    await _insert(
        api,
        audit_log,
        [
            {"occurred_at": datetime.now(UTC), "actor": "seed", "action": "seed", "result": "ok"}
            for _ in range(45)
        ],
    )
    existing = [str(row["id"]) for row in await api.ok("GET", "/audit?limit=1000", admin)]
    assert len(existing) == 45

    async def arrive() -> None:  # an audited call: a new row each page
        await api.ok("POST", "/proxy/failover/config", admin, 201, json={"proxyId": "p-new"})

    assert await _walk(api, "/audit", admin, 10, arrive) == existing


async def test_delivery_pages_walk_every_delivery_once_while_new_ones_arrive(api: Api) -> None:
    alice = api.tokens.alice
    await api.ok("POST", "/proxy/failover/config", alice, 201, json={"proxyId": "p1"})
    now = datetime.now(UTC)
    subscription = _id()
    await _insert(
        api,
        webhook_subscriptions,
        [
            {"id": subscription, "proxy_id": "p1", "user_id": "alice"}
            | {"url": "https://h.example/", "secret": "s" * 32, "created_at": now}
        ],
    )

    async def deliveries(count: int) -> list[str]:
        log = [
            {"id": _id(), "proxy_id": "p1", "type": "instance.healthy", "epoch": 1}
            | {"occurred_at": now, "body": "{}"}
            for _ in range(count)
        ]
        await _insert(api, notification_log, log)
        rows = [
            {"id": _id(), "subscription_id": subscription, "notification_id": entry["id"]}
            | {"proxy_id": "p1", "event_type": "instance.healthy", "status": "dead"}
            | {"attempts": 0, "created_at": now}
            for entry in log
        ]
        await _insert(api, webhook_deliveries, rows)
        return [str(row["id"]) for row in rows]

    seeded = await deliveries(25)

    async def arrive() -> None:
        await deliveries(3)

    walked = await _walk(api, "/proxy/p1/webhooks/deliveries", alice, 7, arrive)
    assert walked == seeded[::-1]


@pytest.mark.parametrize(
    "path",
    ["/proxy/p1/failover/events", "/proxy/p1/webhooks/deliveries", "/audit"],
)
@pytest.mark.parametrize(
    "cursor",
    ["garbage!", "x" * 201, "eyJ0cnVuY2F0ZWQ", sequence_cursor("z", 1)],
)
async def test_a_bad_cursor_is_400_001(api: Api, path: str, cursor: str) -> None:
    admin = api.tokens.admin
    await api.ok("POST", "/proxy/failover/config", admin, 201, json={"proxyId": "p1"})
    status, code = await api.error("GET", path, admin, params={"cursor": cursor})
    assert (status, code) == (400, "PROXY_FAILOVER_001")


async def test_a_cursor_of_another_list_is_400_001(api: Api) -> None:
    admin = api.tokens.admin
    await api.ok("POST", "/proxy/failover/config", admin, 201, json={"proxyId": "p1"})
    newest = (await api.ok("GET", "/audit", admin))[0]["id"]
    audit_cursor = sequence_cursor(AUDIT, newest)
    for path in ("/proxy/p1/failover/events", "/proxy/p1/webhooks/deliveries"):
        response = await api.call("GET", path, admin, params={"cursor": audit_cursor})
        assert response.status_code == 400
        assert response.json()["error"]["details"]["field"] == "cursor"
    older = await api.ok("GET", "/audit", admin, params={"cursor": audit_cursor})
    assert all(row["id"] < newest for row in older)


async def test_limit_keeps_its_range_and_a_short_page_has_no_next_cursor(api: Api) -> None:
    alice = api.tokens.alice
    await api.ok("POST", "/proxy/failover/config", alice, 201, json={"proxyId": "p1"})
    page = (await api.call("GET", "/proxy/p1/failover/events?limit=1000", alice)).json()
    assert page == {"data": [], "count": 0, "nextCursor": None}
    status, code = await api.error("GET", "/proxy/p1/failover/events?limit=1001", alice)
    assert (status, code) == (400, "PROXY_FAILOVER_001")


async def test_the_client_walks_pages_of_events_within_one_millisecond(
    serve_process: ServeProcess, sqlite_url: str, tokens: Tokens
) -> None:
    """The API shows times to the millisecond; the cursor keeps the microseconds, so events that
    started within one millisecond are neither skipped nor repeated across pages."""
    async with AsyncFailoverClient(serve_process.url, tokens.alice) as alice:
        await alice.create_failover_configuration("p1", {})
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
        seeded = [_event("p1", start + timedelta(microseconds=n * 100)) for n in range(7)]
        async with (
            open_service(sqlite_url, migrate=False) as service,
            service.store.engine.begin() as conn,
        ):
            await conn.execute(sa.insert(events), seeded)
        page = await alice.failover_events_page("p1", 3)
        walked = [event.id for event in page.items]
        while page.next_cursor is not None:
            page = await alice.failover_events_page("p1", 3, cursor=page.next_cursor)
            walked.extend(event.id for event in page.items)
    assert walked == [row["id"] for row in reversed(seeded)]
    with FailoverClient(serve_process.url, tokens.alice) as client:
        first = client.failover_events_page("p1", 5)
        rest = client.failover_events_page("p1", 5, cursor=first.next_cursor)
    assert [e.id for e in first.items + rest.items] == walked
    assert rest.next_cursor is None

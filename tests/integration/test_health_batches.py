"""Group-committed health reports end exactly where the same reports one by one do, and one
report's failure is never another's."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest

from proxy_failover.core.errors import NotFound, StorageUnavailable
from proxy_failover.core.model import Instance, Notification
from proxy_failover.service import ProxyFailoverService
from tests.helpers.clock import FakeClock
from tests.helpers.scenario import (
    OWNER,
    Recorder,
    activate,
    fleet,
    fleet_state,
    notes_by_proxy,
    proxy_with,
)

# (proxy, instance, status, metrics): a (active) is reported unhealthy (a failover is due, not
# made: the service never switches by itself), b healthy twice, m is in maintenance, x recovers
# (health moves without a recovery event: reports are authoritative), y fails.
SCRIPT: list[tuple[str, str, str, dict[str, Any] | None]] = [
    ("1", "a", "unhealthy", None),
    ("2", "x", "healthy", {"connectionCount": 7}),
    ("1", "b", "healthy", None),
    ("1", "m", "healthy", {"averageLatencyMs": 3.5}),
    ("1", "a", "unhealthy", {"errorRate": 0.5}),
    ("2", "y", "unhealthy", None),
    ("2", "x", "healthy", None),
    ("1", "a", "healthy", None),
    ("1", "b", "healthy", {"connectionCount": 1}),
]


def _strip(instance: Instance | BaseException) -> Any:
    if isinstance(instance, BaseException):
        return type(instance)
    return dataclasses.replace(instance, id="", proxy_id="")


async def test_concurrent_reports_end_where_the_same_reports_one_by_one_do(
    service: ProxyFailoverService, database_url: str, clock: FakeClock
) -> None:
    clock.step = timedelta(0)  # both fleets live at the same instant, so timestamps compare
    one_by_one = await fleet(service, "s")
    batched = await fleet(service, "b")
    recorder = Recorder()
    service.on_change = recorder
    answers_one = [
        await service.update_instance_health(one_by_one[p, n].id, status, metrics)
        for p, n, status, metrics in SCRIPT
    ]
    notes_one = notes_by_proxy(recorder, "s")
    recorder.clear()
    transactions = service.health_reports.transactions
    # All submitted in one turn of the loop: they queue together, in this order.
    answers_batch = await asyncio.gather(
        *(
            service.update_instance_health(batched[p, n].id, status, metrics)
            for p, n, status, metrics in SCRIPT
        )
    )

    assert [_strip(i) for i in answers_batch] == [_strip(i) for i in answers_one]
    assert await fleet_state(service, "b") == await fleet_state(service, "s")
    state = await fleet_state(service, "b")
    assert [i.health_status.value for i in state["instances1"]] == ["healthy", "healthy", "unknown"]
    assert [i.health_status.value for i in state["instances2"]] == ["healthy", "unhealthy"]
    assert notes_by_proxy(recorder, "b") == notes_one
    assert "instance.unhealthy" in notes_one["1"]
    # the samples were stored, one per report that carried one
    samples = await service.get_instance_metrics(batched["1", "a"].id)
    assert [s.sample.error_rate for s in samples] == [0.5]
    # one transaction on SQLite (one writer), one per proxy on PostgreSQL (one lock each)
    expected = 1 if database_url.startswith("sqlite") else 2
    assert service.health_reports.transactions - transactions == expected


async def test_an_unknown_instance_in_a_batch_fails_alone(service: ProxyFailoverService) -> None:
    made = await proxy_with(service, "p1", ["a", "b"])
    await service.delete_instance(made["b"].id, OWNER)
    answers = await asyncio.gather(
        service.update_instance_health(made["a"].id, "unhealthy"),
        service.update_instance_health(made["b"].id, "healthy"),
        service.update_instance_health(made["a"].id, "healthy"),
        return_exceptions=True,
    )
    assert isinstance(answers[1], NotFound)
    first, last = answers[0], answers[2]
    assert isinstance(first, Instance)
    assert isinstance(last, Instance)
    assert (first.health_status.value, last.health_status.value) == ("unhealthy", "healthy")
    assert await service.get_instance(made["a"].id) == last


async def test_a_batch_that_fails_to_commit_is_retried_one_report_at_a_time(
    service: ProxyFailoverService, database_url: str
) -> None:
    good = await proxy_with(service, "good", ["a"])
    bad = await proxy_with(service, "bad", ["z"])
    failing: list[str] = []

    async def refuse_bad(_session: Any, notifications: Sequence[Notification]) -> None:
        if any(n.proxy_id == "bad" for n in notifications):
            failing.append("bad")
            raise StorageUnavailable("disk full")

    service.store.notification_writers.append(refuse_bad)
    before = service.health_reports.transactions
    answers = await asyncio.gather(
        service.update_instance_health(good["a"].id, "unhealthy"),  # moves: notifies
        service.update_instance_health(bad["z"].id, "unhealthy"),  # moves: the writer refuses
        return_exceptions=True,
    )
    assert isinstance(answers[1], StorageUnavailable)
    assert isinstance(answers[0], Instance)
    assert answers[0].health_status.value == "unhealthy"
    assert (await service.get_instance(good["a"].id)).health_status.value == "unhealthy"
    # the bad report changed nothing
    assert await service.get_instance(bad["z"].id) == bad["z"]
    # SQLite: one shared attempt, then each alone; PostgreSQL: one batch per proxy from the start
    expected = 3 if database_url.startswith("sqlite") else 2
    assert service.health_reports.transactions - before == expected
    assert failing == ["bad"] * (2 if database_url.startswith("sqlite") else 1)


async def test_a_cancelled_caller_does_not_cancel_the_shared_write(
    service: ProxyFailoverService,
) -> None:
    made = await proxy_with(service, "p1", ["a", "b"])
    first = asyncio.ensure_future(service.update_instance_health(made["a"].id, "unhealthy"))
    second = asyncio.ensure_future(service.update_instance_health(made["b"].id, "unhealthy"))
    await asyncio.sleep(0)  # both queued; the writer task holds the batch
    first.cancel()
    after = await second
    assert after.health_status.value == "unhealthy"
    with pytest.raises(asyncio.CancelledError):
        await first
    # the cancelled caller's report was committed with the batch all the same
    assert (await service.get_instance(made["a"].id)).health_status.value == "unhealthy"


async def test_reports_during_a_failover_keep_one_active_instance(
    service: ProxyFailoverService,
) -> None:
    made = await proxy_with(service, "p1", ["a", "b", "c"])
    await activate(service, "p1", made["a"])
    reports = [
        service.update_instance_health(made[name].id, status)
        for name, status in [("a", "unhealthy"), ("b", "healthy"), ("c", "unhealthy")] * 5
    ]
    switch = service.execute_failover("p1", OWNER, made["a"].id, made["b"].id, "moving on")
    await asyncio.gather(*reports, switch)
    instances = await service.get_proxy_instances("p1")
    status = await service.get_redundancy_status("p1")
    assert status is not None
    assert [i.instance_name for i in instances if i.is_active] == ["b"]
    assert status.active_instance_id == made["b"].id
    assert (status.healthy_instances, status.unhealthy_instances) == (1, 2)

"""Batched check results (the engine's probes) end exactly where the same results one by one do."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from proxy_failover.core.errors import InvalidInput, NotFound
from proxy_failover.core.model import CheckResult
from proxy_failover.service import ProxyFailoverService
from proxy_failover.service import checks as service_module
from proxy_failover.store import UnitOfWork
from tests.helpers.clock import FakeClock
from tests.helpers.scenario import (
    FLEET_CONFIG,
    OWNER,
    Recorder,
    fleet,
    fleet_state,
    notes_by_proxy,
    proxy_with,
)

CONFIG = FLEET_CONFIG
FAIL = CheckResult(False, 40.0, "connection refused")
OK = CheckResult(True, 10.0)
# (proxy, instance, result): a (active) fails over the threshold, b succeeds, m is in
# maintenance, x recovers (a recovery event), y fails once; interleaved across both proxies.
SCRIPT = [
    ("1", "a", FAIL),
    ("2", "x", OK),
    ("1", "b", OK),
    ("1", "m", OK),
    ("1", "a", FAIL),
    ("2", "y", FAIL),
    ("2", "x", OK),
    ("1", "a", CheckResult(False, None, None)),
    ("1", "b", CheckResult(True, None)),
]


def _counting_writes(service: ProxyFailoverService) -> list[int]:
    """Count the service's write transactions (one list entry per commit)."""
    commits: list[int] = []
    write = service.store.write

    @contextlib.asynccontextmanager
    async def counted() -> AsyncIterator[UnitOfWork]:
        async with write() as unit:
            yield unit
        commits.append(1)

    service.store.write = counted  # type: ignore[method-assign]
    return commits


@pytest.mark.parametrize("few", [8, 0], ids=["lookups", "one-list"])
async def test_a_batch_ends_where_the_same_results_one_by_one_do(
    service: ProxyFailoverService,
    database_url: str,
    clock: FakeClock,
    few: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(service_module, "_FEW_CHECKS", few)  # both ways of loading instances
    clock.step = timedelta(0)  # both fleets live at the same instant, so timestamps compare
    one_by_one = await fleet(service, "s")
    batched = await fleet(service, "b")
    recorder = Recorder()
    service.on_change = recorder
    answers_one = [await service.record_check_result(one_by_one[p, n].id, r) for p, n, r in SCRIPT]
    notes_one = notes_by_proxy(recorder, "s")
    recorder.clear()
    commits = _counting_writes(service)
    answers_batch = await service.record_check_results(
        [(batched[p, n].id, r) for p, n, r in SCRIPT]
    )

    strip = [dataclasses.replace(i, id="", proxy_id="") for i in answers_one]
    assert [
        None if i is None else dataclasses.replace(i, id="", proxy_id="") for i in answers_batch
    ] == strip
    assert await fleet_state(service, "b") == await fleet_state(service, "s")
    # what moved: a failed over the threshold (degraded), x recovered, m ignored
    state = await fleet_state(service, "b")
    assert [i.health_status.value for i in state["instances1"]] == [
        "unhealthy",
        "healthy",
        "unknown",
    ]
    assert ("recovery", "completed") in [e[:2] for e in state["events2"]]
    # the same notifications, told once per proxy after the batch's commit(s)
    assert notes_by_proxy(recorder, "b") == notes_one
    assert [proxy_id for proxy_id, _ in recorder.calls] == ["b1", "b2"]
    assert "instance.unhealthy" in notes_one["1"]
    assert "instance.healthy" in notes_one["2"]
    # one transaction for the whole batch on SQLite, one per proxy on PostgreSQL
    assert len(commits) == (1 if database_url.startswith("sqlite") else 2)


async def test_a_gone_instance_answers_none_and_fails_no_other_result(
    service: ProxyFailoverService,
) -> None:
    made = await proxy_with(service, "p1", ["a", "b"], config=CONFIG)
    await service.delete_instance(made["b"].id, OWNER)
    answers = await service.record_check_results(
        [(made["a"].id, FAIL), (made["b"].id, OK), ("no-such-instance", OK), (made["a"].id, FAIL)]
    )
    assert answers[1:3] == [None, None]
    first, last = answers[0], answers[3]
    assert first is not None
    assert last is not None
    assert (first.consecutive_failures, last.consecutive_failures) == (1, 2)
    assert last.health_status.value == "unhealthy"
    assert await service.get_instance(made["a"].id) == last
    with pytest.raises(NotFound):
        await service.record_check_result(made["b"].id, OK)
    assert await service.record_check_results([]) == []


async def test_a_batch_with_a_non_result_is_refused_whole(service: ProxyFailoverService) -> None:
    made = await proxy_with(service, "p1", ["a"], config=CONFIG)
    with pytest.raises(InvalidInput):
        await service.record_check_results([(made["a"].id, FAIL), (made["a"].id, "up")])  # type: ignore[list-item]
    assert await service.get_instance(made["a"].id) == made["a"]


async def test_probe_results_end_where_the_same_results_one_by_one_do(
    service: ProxyFailoverService, database_url: str, clock: FakeClock
) -> None:
    """The engine's form: routine successes go through one bulk UPDATE, the rest through the
    state machine; the rows must end exactly as one result at a time leaves them."""
    clock.step = timedelta(0)
    one_by_one = await fleet(service, "s")
    batched = await fleet(service, "b")
    # routine successes: b (healthy, never failed) several times, across two batches, with and
    # without a latency; plus everything SCRIPT moves
    script = [*SCRIPT, ("1", "b", OK), ("1", "b", CheckResult(True, None))]
    recorder = Recorder()
    service.on_change = recorder
    answers_one = [await service.record_check_result(one_by_one[p, n].id, r) for p, n, r in script]
    notes_one = notes_by_proxy(recorder, "s")
    recorder.clear()
    half = len(script) // 2
    health = []
    for part in (script[:half], script[half:]):
        health += await service.record_probe_results([(batched[p, n].id, r) for p, n, r in part])
    assert health == [i.health for i in answers_one]
    assert await fleet_state(service, "b") == await fleet_state(service, "s")
    assert notes_by_proxy(recorder, "b") == notes_one
    b = await service.get_instance(batched["1", "b"].id)
    assert (b.total_requests, b.successful_requests, b.consecutive_successes) == (4, 4, 5)


async def test_probe_results_for_a_gone_or_repeated_instance(service: ProxyFailoverService) -> None:
    made = await proxy_with(service, "p1", ["a", "b"], config=CONFIG)
    await service.delete_instance(made["b"].id, OWNER)
    answers = await service.record_probe_results(
        [(made["a"].id, OK), (made["b"].id, OK), (made["a"].id, FAIL), (made["a"].id, OK)]
    )
    assert answers[1] is None
    assert [a.consecutive_failures if a else None for a in answers] == [0, None, 1, 0]
    after = await service.get_instance(made["a"].id)
    assert (after.total_requests, after.failed_requests) == (3, 1)
    assert after.error_rate == pytest.approx(1 / 3)

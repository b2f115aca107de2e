"""Check results: one probe or external check (``record_check_result``), many in order
(``record_check_results``) and the engine's cheap bulk form (``record_probe_results``), each
through the rise/fall state machine and ``health.follow_health_change`` (the step every path
that applies several health changes of a proxy in one transaction takes)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from proxy_failover.core import health as core_health
from proxy_failover.core.errors import InvalidInput, NotFound, instance_not_found
from proxy_failover.core.model import (
    AdminState,
    CheckResult,
    FailoverConfig,
    FailoverEvent,
    HealthRules,
    HealthState,
    Instance,
)
from proxy_failover.service.context import ServiceContext
from proxy_failover.service.failover import log_switch
from proxy_failover.service.health import (
    active_of,
    counters_of,
    fail_over_if_due,
    follow_health_change,
    went_down,
    with_health,
)
from proxy_failover.store import RoutineSuccess, UnitOfWork

#: Up to this many instances of one proxy in a batch of check results are loaded one by one;
#: beyond, the proxy's whole instance list in one query.
_FEW_CHECKS = 8


async def record_check_result(
    ctx: ServiceContext, instance_id: str, result: CheckResult
) -> Instance:
    """One probe/external check through the rise/fall state machine, with request counters.

    An instance in maintenance is not health-checked: its results are ignored.
    """
    (after,) = await record_check_results(ctx, [(instance_id, result)])
    if after is None:
        raise instance_not_found(instance_id)
    return after


def _require_results(results: Sequence[tuple[str, CheckResult]]) -> None:
    for _, result in results:
        if not isinstance(result, CheckResult):
            raise InvalidInput("a check result is required", details={"field": "body"})


async def record_check_results(
    ctx: ServiceContext, results: Sequence[tuple[str, CheckResult]]
) -> list[Instance | None]:
    """Many check results (the engine's probes) in order, each as ``record_check_result`` does.

    One write transaction per proxy, and one for the whole batch on SQLite (a single writer
    anyway): at thousands of probes per second, commits and not the state machine are the
    cost. Each item's answer is the instance after its result, or None when the instance is
    gone (which fails no other item). ``on_change`` is called once per proxy after commit.
    """
    _require_results(results)
    answers: list[Instance | None] = [None] * len(results)
    by_proxy = await _indexes_by_proxy(ctx, results)
    if not by_proxy:
        return answers
    now = ctx.now()
    groups = sorted(by_proxy.items())  # one lock order: batches never deadlock each other
    batches = [groups] if ctx.store.dialect_name == "sqlite" else [[g] for g in groups]
    for batch in batches:
        applied: list[str] = []
        switches: list[FailoverEvent] = []
        for proxy_id, _ in batch:
            ctx.cache.invalidate(proxy_id)
        async with ctx.store.write() as unit:
            for proxy_id, indexes in batch:
                items = [results[i] for i in indexes]
                for index, after in zip(
                    indexes,
                    await _apply_checks(ctx, unit, proxy_id, items, now, switches),
                    strict=True,
                ):
                    answers[index] = after
                if any(answers[i] is not None for i in indexes):
                    applied.append(proxy_id)
        for proxy_id, _ in batch:
            ctx.cache.invalidate(proxy_id)
        for event in switches:
            log_switch(ctx, event)
        ctx.announce(unit, applied)
    return answers


async def record_probe_results(
    ctx: ServiceContext, results: Sequence[tuple[str, CheckResult]]
) -> list[HealthState | None]:
    """The engine's form of ``record_check_results``: each item's health afterwards (None when
    the instance is gone), and far cheaper for the common case.

    A routine success (``core.health.is_routine_success``) moves only counters and timestamps:
    those are written by one executemany with the values core computes, without loading the
    instance; everything else goes through the state machine as ``record_check_results``
    does, in the same transaction. Both end in exactly the same rows.
    """
    _require_results(results)
    answers: list[HealthState | None] = [None] * len(results)
    by_proxy = await _indexes_by_proxy(ctx, results)
    if not by_proxy:
        return answers
    now = ctx.now()
    # One transaction for the whole batch on both databases: the proxies are locked in one
    # order (sorted, ``lock_proxies``), so it never deadlocks with other writers, which
    # lock one proxy each; per-proxy transactions made the engine wait one round trip per
    # proxy before it could schedule those probes again.
    batch = sorted(by_proxy.items())
    seen = Counter(instance_id for instance_id, _ in results)
    loud: list[str] = []
    switches: list[FailoverEvent] = []
    for proxy_id, _ in batch:
        ctx.cache.invalidate(proxy_id)
    async with ctx.store.write() as unit:
        await unit.lock_proxies([proxy_id for proxy_id, _ in batch])
        candidates = [
            results[i][0]
            for _, indexes in batch
            for i in indexes
            if results[i][1].success and seen[results[i][0]] == 1
        ]
        states = await unit.routine_states(candidates) if candidates else {}
        routine: list[RoutineSuccess] = []
        for proxy_id, indexes in batch:
            rest: list[int] = []
            for i in indexes:
                instance_id, result = results[i]
                found = states.get(instance_id) if result.success else None
                if found is not None and seen[instance_id] == 1:
                    health, counters, in_maintenance, overridden, changed_at = found
                    if core_health.is_routine_success(
                        health, True, in_maintenance=in_maintenance, overridden=overridden
                    ) and not core_health.is_out_of_date(result.observed_at, changed_at):
                        # Routine: the state machine would only count (no rule applies), so
                        # the row is written in bulk with the values core computes.
                        health = core_health.count(health, True)
                        latency = result.latency_ms
                        total, successful, _, average, error_rate = core_health.count_check(
                            counters, True, latency
                        )
                        routine.append(
                            (
                                instance_id,
                                health.consecutive_successes,
                                total,
                                successful,
                                average,
                                error_rate,
                                latency,
                            )
                        )
                        answers[i] = health
                        continue
                rest.append(i)
            if rest:
                items = [results[i] for i in rest]
                applied = await _apply_checks(ctx, unit, proxy_id, items, now, switches)
                for i, after in zip(rest, applied, strict=True):
                    answers[i] = None if after is None else after.health
                loud.append(proxy_id)
        await unit.record_routine_successes(routine, now)
    for proxy_id, _ in batch:
        ctx.cache.invalidate(proxy_id)
    for event in switches:
        log_switch(ctx, event)
    ctx.announce(unit, loud)
    return answers


async def _indexes_by_proxy(
    ctx: ServiceContext, results: Sequence[tuple[str, CheckResult]]
) -> dict[str, list[int]]:
    """The positions of ``results`` by the proxy of their instance (gone instances left out)."""
    by_proxy: dict[str, list[int]] = {}
    known = ctx.instance_proxy  # an id's proxy never changes: no await for the ones seen before
    for index, (instance_id, _) in enumerate(results):
        proxy_id = known.get(instance_id)
        if proxy_id is None:
            try:
                proxy_id = await ctx.proxy_of_instance(instance_id)
            except NotFound:
                continue
        by_proxy.setdefault(proxy_id, []).append(index)
    return by_proxy


async def _apply_checks(
    ctx: ServiceContext,
    unit: UnitOfWork,
    proxy_id: str,
    items: Sequence[tuple[str, CheckResult]],
    now: datetime,
    switches: list[FailoverEvent],
) -> list[Instance | None]:
    """Lock ``proxy_id`` and apply its check results in order (core of one result and many);
    a failover they make due is applied too (``health.fail_over_if_due``) and added to
    ``switches``.

    Only the instances checked are loaded; the proxy's other instances only when a result
    moves a status (or the redundancy row was overridden): otherwise redundancy, events and
    notifications cannot change, and loading 100 instances for one routine success was most
    of a probe's cost.
    """
    locked = await unit.lock_proxy(proxy_id)
    current: dict[str, Instance] = {}
    everyone: dict[str, Instance] | None = None
    wanted = dict.fromkeys(i for i, _ in items)
    if locked is not None and len(wanted) > _FEW_CHECKS:  # one query beats many lookups
        everyone = {i.id: i for i in await unit.list_instances(proxy_id)}
        current = {i: everyone[i] for i in wanted if i in everyone}
    elif locked is not None:
        for instance_id in wanted:
            found = await unit.get_instance(instance_id)
            if found is not None and found.proxy_id == proxy_id:
                current[instance_id] = found
    answers: list[Instance | None] = []
    config: FailoverConfig | None = None
    active_at_start = active_of(locked, current)  # None unless the active one is checked
    for instance_id, result in items:
        before = current.get(instance_id)
        if locked is None or before is None:
            ctx.forget_instance(instance_id)
            answers.append(None)
            continue
        if before.admin_state is AdminState.MAINTENANCE or core_health.is_out_of_date(
            result.observed_at, before.status_changed_at
        ):
            answers.append(before)
            continue
        if config is None:
            config = await unit.get_config(proxy_id)
            assert config is not None
        state = core_health.observe(before.health, result.success, HealthRules.of(config))
        counters = core_health.count_check(counters_of(before), result.success, result.latency_ms)
        after = with_health(
            before,
            state,
            now,
            last_health_check=now,
            last_error=None if result.success else (result.error or "check failed"),
            last_latency_ms=result.latency_ms,
            total_requests=counters.total_requests,
            successful_requests=counters.successful_requests,
            failed_requests=counters.failed_requests,
            average_latency_ms=counters.average_latency_ms,
            error_rate=counters.error_rate,
        )
        await unit.save_instance(after)
        current[instance_id] = after
        if after.health_status is not before.health_status or locked.overridden:
            if everyone is None:
                everyone = {i.id: i for i in await unit.list_instances(proxy_id)}
            everyone.update(current)
            locked = await follow_health_change(
                unit, before, after, now, locked, everyone, record_recovery=True
            )
            current.update((i, everyone[i]) for i in current)  # the is_active mirror, if moved
        answers.append(after)
    if locked is not None and everyone is not None and went_down(active_at_start, everyone):
        switched = await fail_over_if_due(ctx, unit, locked, everyone, now)
        if switched is not None:
            switches.append(switched)
    return answers

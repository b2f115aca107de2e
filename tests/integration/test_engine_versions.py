"""The engine's periodic evaluation re-reads a proxy only when its change counter moved, and
still sees every change another replica commits (that replica never wakes this engine)."""

from __future__ import annotations

import random
from datetime import timedelta

from proxy_failover.bootstrap import open_service
from proxy_failover.core.model import CheckResult, DecisionAction
from proxy_failover.engine import Engine, EngineSettings
from proxy_failover.service import ProxyFailoverService
from tests.helpers.clock import FakeClock
from tests.helpers.scenario import activate, proxy_with
from tests.helpers.scripted_prober import ScriptedProber


async def test_unchanged_proxies_are_not_reloaded_but_another_replicas_change_is_seen(
    service: ProxyFailoverService, database_url: str, clock: FakeClock
) -> None:
    clock.step = timedelta(0)
    made = await proxy_with(service, "p1", ["a", "b", "c"], config={"enableAutoFailback": False})
    await activate(service, "p1", made["a"])
    loads: list[str] = []
    load_snapshot = service.load_snapshot

    async def counted(proxy_id: str):  # type: ignore[no-untyped-def]
        loads.append(proxy_id)
        return await load_snapshot(proxy_id)

    service.load_snapshot = counted  # type: ignore[method-assign]
    prober = ScriptedProber(clock)
    engine = Engine(
        service,
        prober,
        EngineSettings(first_probe_spread=0),
        clock=clock,
        rng=random.Random(1),
    )

    async def tick() -> list[DecisionAction]:
        clock.advance(1.1)
        outcomes = await engine.tick(clock.now)
        await engine.wait_for_probes()
        return [o.decision.action for o in outcomes if o.decision is not None]

    assert await tick() == [DecisionAction.NONE]  # first sight: loaded
    assert await tick() == [DecisionAction.NONE]  # counter now known: loaded once more
    before = len(loads)
    for _ in range(3):  # nothing changed: decided again, on the snapshot already held
        assert await tick() == [DecisionAction.NONE]
    assert len(loads) == before
    # Routine probe successes (the bulk path) do not move the counter either.
    await service.record_probe_results([(made["b"].id, CheckResult(True, 2.0))])
    assert await tick() == [DecisionAction.NONE]
    assert len(loads) == before

    async with open_service(database_url, clock=clock, migrate=False) as other_replica:
        await other_replica.update_instance_health(made["a"].id, "unhealthy")
    assert await tick() == [DecisionAction.FAILOVER]  # reloaded, and acted on it
    assert len(loads) == before + 1
    status = await service.get_redundancy_status("p1")
    assert status is not None
    assert status.active_instance_id == made["b"].id


async def test_every_locked_write_moves_the_counter_and_routine_successes_do_not(
    service: ProxyFailoverService,
) -> None:
    made = await proxy_with(service, "p1", ["a"])
    await proxy_with(service, "p2", ["z"])
    versions = await service.proxy_versions()
    await service.update_instance_health(made["a"].id, "healthy")  # a repeat still locks
    after_report = await service.proxy_versions()
    assert after_report["p1"] > versions["p1"]
    assert after_report["p2"] == versions["p2"]
    await service.record_probe_results([(made["a"].id, CheckResult(True, 1.0))])
    assert await service.proxy_versions() == after_report
    await service.record_probe_results([(made["a"].id, CheckResult(False, 1.0, "refused"))])
    assert (await service.proxy_versions())["p1"] > after_report["p1"]

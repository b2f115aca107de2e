"""``healthReportTtlSeconds`` on SQLite and PostgreSQL, with a fake clock and the real engine:
a reported status not refreshed in time turns unhealthy ("report expired") and the active role
moves as for any failure; refreshed reports and probed instances are unaffected; the expiry
survives a restart (a new service and engine on the same database)."""

from __future__ import annotations

import random
from datetime import timedelta

from proxy_failover.bootstrap import open_service
from proxy_failover.core.model import CheckResult, EventType, HealthStatus, NotificationType
from proxy_failover.engine import Engine, EngineSettings
from proxy_failover.service import ProxyFailoverService
from tests.helpers.clock import FakeClock
from tests.helpers.scenario import OWNER, Recorder, activate
from tests.helpers.scripted_prober import ScriptedProber

TTL = 30
QUICK = EngineSettings(first_probe_spread=0, flush_window=0.001)


def _engine(service: ProxyFailoverService, clock: FakeClock) -> Engine:
    return Engine(service, ScriptedProber(clock), QUICK, clock=clock, rng=random.Random(1))


async def test_an_unrefreshed_report_expires_and_fails_over_a_refreshed_one_holds(
    service: ProxyFailoverService, clock: FakeClock, database_url: str
) -> None:
    clock.step = timedelta(0)
    config = await service.create_failover_configuration(
        "p", OWNER, {"healthReportTtlSeconds": TTL, "healthCheckIntervalSeconds": 1}
    )
    assert config.health_report_ttl_seconds == TTL
    a = await service.register_proxy_instance("p", OWNER, {"instanceName": "a", "priority": 10})
    b = await service.register_proxy_instance("p", OWNER, {"instanceName": "b", "priority": 20})
    probed = await service.register_proxy_instance(
        "p", OWNER, {"instanceName": "c", "priority": 30, "endpoint": "127.0.0.1:9"}
    )
    for instance in (a, b, probed):
        await service.update_instance_health(instance.id, "healthy")
    await activate(service, "p", a)
    recorder = Recorder()
    engine = _engine(service, clock)
    service.on_change = recorder

    clock.advance(TTL - 10)
    await service.update_instance_health(b.id, "healthy")  # b's reporter is alive
    await engine.tick(clock.now)
    assert (await service.get_instance(a.id)).health_status is HealthStatus.HEALTHY

    clock.advance(10)  # a: exactly the TTL since its report; b: 10 s
    await engine.tick(clock.now)
    expired = await service.get_instance(a.id)
    assert expired.health_status is HealthStatus.UNHEALTHY
    assert expired.last_error == "report expired"
    status = await service.get_redundancy_status("p")
    assert status is not None
    assert status.active_instance_id == b.id
    (event, *_) = await service.get_failover_events("p")
    assert event.event_type is EventType.FAILOVER
    assert event.source_instance_id == a.id
    unhealthy = recorder.of_type(NotificationType.INSTANCE_UNHEALTHY)
    assert [n.data["instanceId"] for n in unhealthy] == [a.id]
    assert unhealthy[0].data["lastError"] == "report expired"
    assert (await service.get_instance(b.id)).health_status is HealthStatus.HEALTHY
    await engine.shutdown()

    # a restart: a new service and engine on the same database, much later
    clock.advance(3600)
    async with open_service(database_url, clock=clock, migrate=False) as restarted:
        engine = _engine(restarted, clock)
        await engine.tick(clock.now)
        assert (await restarted.get_instance(b.id)).last_error == "report expired"
        assert (await restarted.get_instance(b.id)).health_status is HealthStatus.UNHEALTHY
        # probed: its status is the probes' business, whatever a report said an hour ago
        assert (await restarted.get_instance(probed.id)).health_status is HealthStatus.HEALTHY

        # a new report brings a back, and clears the expiry's lastError
        back = await restarted.update_instance_health(a.id, "healthy")
        assert (back.health_status, back.last_error) == (HealthStatus.HEALTHY, None)
        await engine.tick(clock.now)
        assert (await restarted.get_instance(a.id)).health_status is HealthStatus.HEALTHY
        await engine.shutdown()


async def test_off_by_default_and_a_check_after_the_report_takes_over(
    service: ProxyFailoverService, clock: FakeClock
) -> None:
    clock.step = timedelta(0)
    config = await service.create_failover_configuration("p", OWNER, {})
    assert config.health_report_ttl_seconds is None
    a = await service.register_proxy_instance("p", OWNER, {"instanceName": "a"})
    b = await service.register_proxy_instance("p", OWNER, {"instanceName": "b"})
    for instance in (a, b):
        await service.update_instance_health(instance.id, "healthy")
    engine = _engine(service, clock)
    clock.advance(86400)
    await engine.tick(clock.now)
    assert (await service.get_instance(a.id)).health_status is HealthStatus.HEALTHY  # off

    await service.create_failover_configuration("p", OWNER, {"healthReportTtlSeconds": TTL})
    clock.advance(1)
    await service.record_check_result(
        a.id, CheckResult(success=True)
    )  # an external checker spoke last
    clock.advance(TTL)
    await engine.tick(clock.now)
    assert (await service.get_instance(a.id)).health_status is HealthStatus.HEALTHY
    assert (await service.get_instance(b.id)).health_status is HealthStatus.UNHEALTHY

    await service.create_failover_configuration("p", OWNER, {"healthReportTtlSeconds": None})
    stored = await service.get_failover_configuration("p")
    assert stored is not None
    assert stored.health_report_ttl_seconds is None
    await engine.shutdown()

"""Redundancy recompute and the seed's override, the route pick and the explanation."""

from __future__ import annotations

from collections import Counter

import pytest

from proxy_failover.core.errors import Conflict, ErrorCode, InvalidInput, NotFound
from proxy_failover.core.model import RedundancyLevel
from proxy_failover.service import ProxyFailoverService
from tests.helpers.scenario import ADMIN, OWNER, activate, proxy_with


async def test_redundancy_counts_level_and_degradation_follow_the_instances(
    service: ProxyFailoverService,
) -> None:
    made = await proxy_with(service, "p1", ["a", "b", "c"], healthy=["a", "b"], unhealthy=["c"])
    status = await service.get_redundancy_status("p1")
    assert status is not None
    assert (status.total_instances, status.healthy_instances, status.unhealthy_instances) == (
        3,
        2,
        1,
    )
    assert status.redundancy_level is RedundancyLevel.MULTI
    assert status.is_degraded  # no active instance, and one unhealthy
    await activate(service, "p1", made["a"])
    await service.update_instance_health(made["c"].id, "healthy")
    status = await service.get_redundancy_status("p1")
    assert status is not None
    assert not status.is_degraded
    assert status.backup_instance_ids == (made["b"].id, made["c"].id)
    assert status.updated_at is not None
    assert status.updated_at.tzinfo is not None


async def test_override_is_stored_as_given_until_the_next_recompute(
    service: ProxyFailoverService,
) -> None:
    made = await proxy_with(service, "p1", ["a", "b"])
    await activate(service, "p1", made["a"])
    before = await service.get_redundancy_status("p1")
    assert before is not None
    override = await service.update_redundancy_status(
        "p1",
        ADMIN,
        {
            "totalInstances": 2,
            "healthyInstances": 1,
            "activeInstanceId": made["a"].id,
            "redundancyLevel": "dual",
            "isDegraded": True,
        },
    )
    assert override.overridden
    assert (override.healthy_instances, override.unhealthy_instances) == (1, 1)
    assert override.is_degraded
    assert override.epoch == before.epoch
    assert override.active_instance_id == made["a"].id
    assert await service.get_redundancy_status("p1") == override
    await service.update_instance_health(made["b"].id, "healthy")  # any change recomputes
    recomputed = await service.get_redundancy_status("p1")
    assert recomputed is not None
    assert not recomputed.overridden
    assert recomputed.healthy_instances == 2
    assert not recomputed.is_degraded


async def test_invalid_override_is_refused_and_changes_nothing(
    service: ProxyFailoverService,
) -> None:
    made = await proxy_with(service, "p1", ["a", "b"])
    await activate(service, "p1", made["a"])
    before = await service.get_redundancy_status("p1")
    bodies: list[dict[str, object]] = [
        {"totalInstances": -1},
        {"totalInstances": 2, "healthyInstances": 3},
        {"totalInstances": 2, "redundancyLevel": "multi"},
        {"activeInstanceId": "00000000-0000-4000-8000-000000000000"},
        {"isDegraded": "yes"},
        {"bogus": 1},
        {},
    ]
    for body in bodies:
        with pytest.raises(InvalidInput) as caught:
            await service.update_redundancy_status("p1", ADMIN, body)
        assert caught.value.code is ErrorCode.INVALID_REDUNDANCY, body
    assert await service.get_redundancy_status("p1") == before


async def test_override_needs_a_proxy_and_a_body(service: ProxyFailoverService) -> None:
    with pytest.raises(NotFound) as missing:
        await service.update_redundancy_status("nope", ADMIN, {"totalInstances": 0})
    assert missing.value.code is ErrorCode.CONFIG_NOT_FOUND
    with pytest.raises(InvalidInput) as no_body:
        await service.update_redundancy_status("p1", ADMIN, None)  # type: ignore[arg-type]
    assert no_body.value.code is ErrorCode.INVALID_INPUT


async def test_route_without_load_balancing_is_the_active_instance(
    service: ProxyFailoverService,
) -> None:
    made = await proxy_with(service, "p1", ["a", "b"])
    with pytest.raises(Conflict) as none_active:
        await service.get_route("p1")
    assert none_active.value.code is ErrorCode.NO_ELIGIBLE_TARGET
    await activate(service, "p1", made["b"])
    route = await service.get_route("p1")
    assert (route.instance_id, route.instance_name, route.is_active) == (made["b"].id, "b", True)
    assert not route.load_balanced
    assert route.epoch == 1
    with pytest.raises(NotFound) as missing:
        await service.get_route("nope")
    assert missing.value.code is ErrorCode.CONFIG_NOT_FOUND


async def test_round_robin_route_visits_every_eligible_instance(
    service: ProxyFailoverService,
) -> None:
    made = await proxy_with(
        service,
        "p1",
        ["a", "b", "c"],
        healthy=["a", "b"],
        unhealthy=["c"],
        config={"enableLoadBalancing": True},
    )
    await activate(service, "p1", made["a"])
    picks = [(await service.get_route("p1")).instance_name for _ in range(4)]
    assert sorted(picks[:2]) == ["a", "b"]
    assert picks[2:] == picks[:2]
    route = await service.get_route("p1")
    assert route.load_balanced
    assert route.is_active == (route.instance_id == made["a"].id)


async def test_weighted_route_follows_the_weights(service: ProxyFailoverService) -> None:
    await service.create_failover_configuration(
        "p1", OWNER, {"enableLoadBalancing": True, "loadBalancingAlgorithm": "weighted"}
    )
    for name, weight in (("heavy", 300), ("light", 100)):
        instance = await service.register_proxy_instance(
            "p1", OWNER, {"instanceName": name, "weight": weight}
        )
        await service.update_instance_health(instance.id, "healthy")
    counts = Counter([(await service.get_route("p1")).instance_name for _ in range(8)])
    assert counts == {"heavy": 6, "light": 2}


async def test_load_balanced_route_with_nothing_eligible_is_a_conflict(
    service: ProxyFailoverService,
) -> None:
    await proxy_with(service, "p1", ["a"], healthy=[], config={"enableLoadBalancing": True})
    with pytest.raises(Conflict) as caught:
        await service.get_route("p1")
    assert caught.value.code is ErrorCode.NO_ELIGIBLE_TARGET


async def test_explain_says_why_each_instance_is_or_is_not_eligible(
    service: ProxyFailoverService,
) -> None:
    made = await proxy_with(service, "p1", ["a", "b"], healthy=["a"], unhealthy=["b"])
    await activate(service, "p1", made["a"])
    explanation = await service.explain("p1")
    assert explanation.active_instance_id == made["a"].id
    assert [i.instance_name for i in explanation.instances] == ["a", "b"]
    by_name = {i.instance_name: i for i in explanation.instances}
    assert by_name["a"].is_active
    assert not by_name["b"].is_eligible
    assert by_name["b"].reasons
    assert explanation.summary
    assert explanation.evaluation.proxy_id == "p1"
    with pytest.raises(NotFound) as missing:
        await service.explain("nope")
    assert missing.value.code is ErrorCode.CONFIG_NOT_FOUND

"""Redundancy assessment (SPEC §3): levels, counts that add up, degraded flag, backups."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy_failover.core.model import AdminState, HealthStatus, Instance, RedundancyLevel
from proxy_failover.core.redundancy import assess, level_for, next_epoch
from tests.helpers.factories import inst

H, U, K = HealthStatus.HEALTHY, HealthStatus.UNHEALTHY, HealthStatus.UNKNOWN


@pytest.mark.parametrize(
    ("total", "level"),
    [
        (-1, RedundancyLevel.NONE),
        (0, RedundancyLevel.NONE),
        (1, RedundancyLevel.SINGLE),
        (2, RedundancyLevel.DUAL),
        (3, RedundancyLevel.MULTI),
        (50, RedundancyLevel.MULTI),
    ],
)
def test_level_for(total: int, level: RedundancyLevel) -> None:
    assert level_for(total) is level


def test_all_healthy_with_healthy_active_is_not_degraded() -> None:
    result = assess([inst("a", order=0), inst("b", order=1), inst("c", order=2)], "a")
    assert (result.total_instances, result.healthy_instances, result.unhealthy_instances) == (
        3,
        3,
        0,
    )
    assert result.redundancy_level is RedundancyLevel.MULTI
    assert not result.is_degraded
    assert result.backup_instance_ids == ("b", "c")


@pytest.mark.parametrize(
    ("instances", "active"),
    [
        ([inst("a"), inst("b", order=1)], None),  # no active
        ([inst("a"), inst("b", order=1)], "gone"),  # active pointer to a missing instance
        ([inst("a", health=U), inst("b", order=1)], "b"),  # an unhealthy instance
        ([inst("a", health=K), inst("b", order=1)], "b"),  # an unknown instance
        ([], None),
    ],
)
def test_degraded_cases(instances: list[Instance], active: str | None) -> None:
    assert assess(instances, active).is_degraded


def test_maintenance_counts_by_its_unknown_health_and_is_no_backup() -> None:
    result = assess(
        [
            inst("a"),
            inst("m", health=K, admin=AdminState.MAINTENANCE, order=1),
            inst("d", admin=AdminState.DRAIN, order=2),
        ],
        "a",
    )
    assert (result.healthy_instances, result.unhealthy_instances) == (2, 0)
    assert result.backup_instance_ids == ()
    assert result.is_degraded


def test_backups_follow_preference_order() -> None:
    result = assess(
        [
            inst("late", priority=5, order=9),
            inst("a", priority=1),
            inst("heavy", priority=5, weight=500),
        ],
        "a",
    )
    assert result.backup_instance_ids == ("heavy", "late")


def test_next_epoch_grows() -> None:
    assert next_epoch(0) == 1
    assert next_epoch(41) == 42


instance_lists = st.lists(
    st.tuples(st.sampled_from([H, U, K]), st.sampled_from(list(AdminState)), st.integers(0, 3)),
    max_size=8,
).map(
    lambda rows: [inst(f"i{n}", health=h, admin=a, priority=p) for n, (h, a, p) in enumerate(rows)]
)


@settings(max_examples=150, deadline=None)
@given(instances=instance_lists, active_index=st.integers(-1, 8))
def test_counts_always_add_up(instances: list[Instance], active_index: int) -> None:
    typed = list(instances)
    active = typed[active_index].id if 0 <= active_index < len(typed) else None
    result = assess(typed, active)
    assert result.total_instances == len(typed)
    assert result.healthy_instances + result.unhealthy_instances <= result.total_instances
    assert result.redundancy_level is level_for(len(typed))
    assert active not in result.backup_instance_ids
    assert len(set(result.backup_instance_ids)) == len(result.backup_instance_ids)
    assert len(result.backup_instance_ids) <= result.healthy_instances
    assert result.is_degraded == (
        result.healthy_instances < result.total_instances
        or active is None
        or any(i.id == active and i.health_status is not H for i in typed)
    )

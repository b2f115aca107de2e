"""Redundancy assessment (SPEC §3): counts, level, degraded flag and backups; the fencing epoch."""

from __future__ import annotations

from collections.abc import Sequence

from proxy_failover.core.model import Instance, RedundancyAssessment, RedundancyLevel


def level_for(total_instances: int) -> RedundancyLevel:
    raise NotImplementedError


def assess(instances: Sequence[Instance], active_instance_id: str | None) -> RedundancyAssessment:
    """Counts over all instances; backups are eligible non-active instances in preference order."""
    raise NotImplementedError


def next_epoch(epoch: int) -> int:
    """The fencing token after a change of the active instance: strictly greater, never reused."""
    raise NotImplementedError

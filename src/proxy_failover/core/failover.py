"""The failover decision (SPEC §5): evaluate for people and execute, decide for the engine."""

from __future__ import annotations

from datetime import datetime

from proxy_failover.core.model import Decision, EventType, Evaluation, Explanation, ProxySnapshot


def evaluate(snapshot: ProxySnapshot, now: datetime) -> Evaluation:
    """Side-effect-free answer: should the active role move, from where, to where, and why."""
    raise NotImplementedError


def check_execute(
    snapshot: ProxySnapshot, source_id: str | None, target_id: str
) -> EventType:
    """Validate a manual execute (compare-and-swap) in SPEC's order 004, 011, 010, 009.

    Returns the event type it records: ``failover`` for an activation or an unhealthy/not-enabled
    source, ``switchover`` for a healthy enabled source.
    """
    raise NotImplementedError


def decide(snapshot: ProxySnapshot, now: datetime) -> Decision:
    """The engine's one decision: activate, fail over, fail back, or nothing — with its sentence."""
    raise NotImplementedError


def explain(snapshot: ProxySnapshot, now: datetime) -> Explanation:
    """Why the active instance is active and why each other one is or is not eligible."""
    raise NotImplementedError

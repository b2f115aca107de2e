"""Retention (SPEC §10): delete history older than the policy's cut-offs, one batch per table.

Each table's batch is one short transaction of at most ``policy.batch`` rows, so a large backlog
never holds SQLite's write lock (or PostgreSQL's row locks) for long. One call prunes at most one
batch per table; the engine leader calls again soon while a table reports a full batch (more is
waiting) and once a minute otherwise. Deliveries go before the notification-log entries they
refer to.
"""

from __future__ import annotations

from proxy_failover.core.retention import RetentionPolicy, cutoffs
from proxy_failover.service.context import ServiceContext
from proxy_failover.store.notifications import prune_notifications


async def prune_history(ctx: ServiceContext, policy: RetentionPolicy) -> dict[str, int]:
    """Prune one batch of each table; returns rows deleted per table (== ``policy.batch``: more
    may be waiting)."""
    cut = cutoffs(ctx.now(), policy)
    limit = policy.batch
    return {
        "events": await ctx.store.prune_events(cut.history, limit),
        "metric_samples": await ctx.store.prune_metric_samples(cut.history, limit),
        "audit": await ctx.audit.prune(cut.history, limit),
        "deliveries": await ctx.webhooks.prune_deliveries(cut.deliveries, limit),
        "notifications": await prune_notifications(ctx.store.engine, cut.history, limit),
    }

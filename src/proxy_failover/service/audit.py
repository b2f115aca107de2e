"""The audit log: API calls recorded with their caller and result, read back by admins.

Automatic actions are audited by the notification writer in the transaction of the change
(``store.notifications``); this module is the API's way in, stamped with the service's clock.
"""

from __future__ import annotations

from typing import Any

from proxy_failover.core import pagination
from proxy_failover.core.pagination import AUDIT
from proxy_failover.core.webhooks import AuditEntry
from proxy_failover.service.common import parse_limit
from proxy_failover.service.context import ServiceContext


async def record_call(
    ctx: ServiceContext,
    *,
    actor: str,
    action: str,
    result: str,
    proxy_id: str | None = None,
    target: str | None = None,
    status_code: int | None = None,
    request_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Record one API call now; returns once its row is committed (rows are group-committed)."""
    await ctx.audit.record_audit(
        AuditEntry(
            occurred_at=ctx.now(),
            actor=actor,
            action=action,
            result=result,
            proxy_id=proxy_id,
            target=target,
            status_code=status_code,
            request_id=request_id,
            details=details or {},
        )
    )


async def list_entries(
    ctx: ServiceContext, proxy_id: str | None = None, limit: int = 100, cursor: str | None = None
) -> list[AuditEntry]:
    """Newest first; ``proxy_id`` None: every entry (limit as for events); ``cursor``: the page
    after the one whose last entry it names (``core.pagination``, 001 when it is no cursor)."""
    limit = parse_limit(limit)
    before_id = None if cursor is None else pagination.parse_sequence_cursor(AUDIT, cursor)
    return await ctx.audit.list_audit(proxy_id or None, limit, before_id)

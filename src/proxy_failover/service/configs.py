"""Failover configurations: create or change a proxy's config, read it, list the proxies."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from proxy_failover.core import validation
from proxy_failover.core.errors import InvalidInput
from proxy_failover.core.model import FailoverConfig, ProxySummary
from proxy_failover.service.common import require_text
from proxy_failover.service.context import ServiceContext
from proxy_failover.service.redundancy import ensure_proxy
from proxy_failover.store import Reader


async def create_failover_configuration(
    ctx: ServiceContext, proxy_id: str, user_id: str, config: Mapping[str, Any]
) -> FailoverConfig:
    """Create the proxy's config (caller becomes owner) or change only the given fields."""
    proxy_id = validation.validate_proxy_id(proxy_id)
    user = require_text(user_id, "userId")
    assert user is not None
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        raise InvalidInput("config must be an object", details={"field": "config"})
    now = ctx.now()
    async with ctx.write(proxy_id) as (unit, locked):
        existing, _status, created = await ensure_proxy(unit, proxy_id, user, locked, config, now)
        if created:
            ctx.logger.info("proxy %s: configuration created by %s", proxy_id, user)
            return existing
        updated = validation.build_config(proxy_id, user, config, existing, now)
        updated = dataclasses.replace(
            updated,
            id=existing.id,
            proxy_id=proxy_id,
            user_id=existing.user_id,
            created_at=existing.created_at,
            updated_at=now,
        )
        await unit.save_config(updated)
        return updated


async def get_failover_configuration(ctx: ServiceContext, proxy_id: str) -> FailoverConfig | None:
    if not isinstance(proxy_id, str):
        return None

    async def load(reader: Reader) -> FailoverConfig | None:
        return await reader.get_config(proxy_id)

    return await ctx.cached("config", proxy_id, load)


async def list_proxies(ctx: ServiceContext, user_id: str | None = None) -> list[ProxySummary]:
    """Every proxy with its redundancy (``user_id`` None = all, else the ones it owns)."""
    async with ctx.store.read() as reader:
        return await reader.list_proxies(user_id)

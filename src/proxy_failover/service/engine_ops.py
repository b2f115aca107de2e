"""What the engine reads: the proxies, their change counters and one consistent snapshot."""

from __future__ import annotations

from proxy_failover.core.errors import config_not_found
from proxy_failover.core.model import ProxySnapshot
from proxy_failover.service.context import ServiceContext, read_snapshot


async def list_proxy_ids(ctx: ServiceContext) -> list[str]:
    async with ctx.store.read() as reader:
        return await reader.list_proxy_ids()


async def proxy_versions(ctx: ServiceContext) -> dict[str, int]:
    """Every proxy's change counter: it moves with every committed change of the proxy (any
    process, any replica) except routine probe successes, so an unchanged counter means an
    unchanged snapshot but for probe counters and timestamps (the engine's periodic check)."""
    async with ctx.store.read() as reader:
        return await reader.proxy_versions()


async def load_snapshot(ctx: ServiceContext, proxy_id: str) -> ProxySnapshot:
    """One consistent view of a proxy, read in one transaction (002 if it has no config)."""
    if not isinstance(proxy_id, str):
        raise config_not_found(str(proxy_id))
    async with ctx.store.read() as reader:
        status = await reader.get_redundancy(proxy_id)
        if status is None:
            raise config_not_found(proxy_id)
        return await read_snapshot(reader, proxy_id, status)

"""Request dependencies as ``Annotated`` aliases: the service, the caller, admin, ownership.

Ownership (SPEC §7): a proxy belongs to the user who created its configuration. A non-admin asking
about another's proxy gets the very 404 a missing one gets (002/004/012), so existence never leaks.
A proxy's owner and an instance's proxy never change, so both are remembered per process.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from proxy_failover.adapters.outbound import OutboundGuard, OutboundRefused
from proxy_failover.bootstrap import Runtime
from proxy_failover.core.dataplane import endpoint_address
from proxy_failover.core.errors import (
    Forbidden,
    InvalidInput,
    Unauthenticated,
    config_not_found,
    instance_not_found,
)
from proxy_failover.core.model import Instance
from proxy_failover.entrypoints.api.auth import Caller, TokenVerifier
from proxy_failover.service import ProxyFailoverService

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    bearerFormat="JWT",
    description="`Authorization: Bearer <JWT>`; `sub` is the user id, `role: admin` is admin.",
)

_CACHE_LIMIT = 100_000


class Ownership:
    """Answers "may this caller touch this proxy / instance?" with the SPEC's 404s."""

    def __init__(self, service: ProxyFailoverService) -> None:
        self._service = service
        self._instance_proxy: dict[str, str] = {}
        self._owners: dict[str, tuple[float, str]] = {}  # proxy -> (good until, owner)

    async def owner_of(self, proxy_id: str) -> str | None:
        """The proxy's owner, remembered as long as the service caches reads (1 s), not for good:
        a deleted proxy's id may be created again by another owner, also through another replica.

        Remembered here rather than read through the service's cache, which every write of the
        proxy clears: each health report made the next request's owner check a database read
        (half the throughput of ``PUT …/health``). Only a delete and re-create changes an owner;
        this process forgets at its own deletes, other replicas' are seen within the TTL."""
        now = time.monotonic()
        known = self._owners.get(proxy_id)
        if known is not None and known[0] > now:
            return known[1]
        config = await self._service.get_failover_configuration(proxy_id)
        if config is None:
            return None  # not remembered: a configuration created next is seen at once
        if len(self._owners) >= _CACHE_LIMIT:
            self._owners.clear()
        self._owners[proxy_id] = (now + self._service.cache_ttl_seconds, config.user_id)
        return config.user_id

    async def check_proxy(self, caller: Caller, proxy_id: str) -> None:
        """Admins pass; others only for a proxy they own, else 404/002."""
        if caller.is_admin:
            return
        if await self.owner_of(proxy_id) != caller.user_id:
            raise config_not_found(proxy_id)

    async def may_create(self, caller: Caller, proxy_id: str) -> None:
        """Creating a config or the first instance: the proxy is new, or the caller's (or admin)."""
        if caller.is_admin:
            return
        owner = await self.owner_of(proxy_id)
        if owner is not None and owner != caller.user_id:
            raise config_not_found(proxy_id)

    async def check_instance(self, caller: Caller, instance_id: str) -> str:
        """The instance's proxy id, if the caller may touch it; 404/004 otherwise."""
        proxy_id = self._instance_proxy.get(instance_id)
        if proxy_id is None:
            instance = await self._service.get_instance(instance_id)
            proxy_id = self.remember_instance(instance)
        if not caller.is_admin and await self.owner_of(proxy_id) != caller.user_id:
            raise instance_not_found(instance_id)
        return proxy_id

    def remember_instance(self, instance: Instance) -> str:
        return self._remember(self._instance_proxy, instance.id, instance.proxy_id)

    def forget_instance(self, instance_id: str) -> None:
        self._instance_proxy.pop(instance_id, None)

    def forget_proxy(self, proxy_id: str) -> None:
        """After a delete: its owner and its instances are gone."""
        self._owners.pop(proxy_id, None)
        for instance_id in [i for i, p in self._instance_proxy.items() if p == proxy_id]:
            del self._instance_proxy[instance_id]

    @staticmethod
    def _remember(cache: dict[str, str], key: str, value: str) -> str:
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[key] = value
        return value


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_service(request: Request) -> ProxyFailoverService:
    service: ProxyFailoverService = request.app.state.runtime.service
    return service


async def get_outbound(request: Request) -> OutboundGuard:
    guard: OutboundGuard = request.app.state.runtime.outbound
    return guard


async def check_outbound(
    guard: OutboundGuard, caller: Caller, destinations: Mapping[str, object]
) -> None:
    """400/001 for a URL or endpoint (``{field: value}``) the outbound policy refuses to this
    caller (``core.outbound``), before anything is stored. Malformed values pass: the service's
    validation refuses them with its own message."""
    for field, value in destinations.items():
        address = endpoint_address(value) if isinstance(value, str) else None
        if address is None:
            continue
        try:
            await guard.check_at_registration(*address, trusted=caller.is_admin)
        except OutboundRefused as exc:
            raise InvalidInput(
                f"{field} is refused by the outbound policy: {exc}", details={"field": field}
            ) from None


async def get_ownership(request: Request) -> Ownership:
    ownership: Ownership = request.app.state.ownership
    return ownership


async def get_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """401/015 unless a valid bearer token is presented."""
    if credentials is None or not credentials.credentials:
        raise Unauthenticated("authentication required: Authorization: Bearer <JWT>")
    verifier: TokenVerifier = request.app.state.verifier
    caller = await verifier.verify(credentials.credentials)
    request.state.caller = caller  # the audit middleware records who made the call
    return caller


async def require_admin(caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
    """403/016 for an authenticated caller without the admin role."""
    if not caller.is_admin:
        raise Forbidden("admin role required")
    return caller


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
ServiceDep = Annotated[ProxyFailoverService, Depends(get_service)]
OwnershipDep = Annotated[Ownership, Depends(get_ownership)]
OutboundDep = Annotated[OutboundGuard, Depends(get_outbound)]
CallerDep = Annotated[Caller, Depends(get_caller)]
AdminDep = Annotated[Caller, Depends(require_admin)]

"""Outbound connections a user cannot turn against us: checked addresses, capped responses.

Webhook receivers, probe endpoints and recovery URLs are chosen by users. Every connection goes
only to addresses ``core.outbound``'s policy allows for whoever registered it (``OutboundGuard``),
checked when it is opened. What a receiver answers is only a status to us, so bodies are read up
to ``RESPONSE_READ_LIMIT`` (enough for keep-alive to reuse the connection after an ordinary
answer) and discarded; a receiver streaming gigabytes costs nothing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpcore
import httpx

from proxy_failover.core.outbound import (
    OutboundPolicy,
    literal_address,
    normalize_host,
    refusal,
    unmapped,
)

#: Bytes of a response body read (and dropped) at most; past it the connection is closed.
RESPONSE_READ_LIMIT = 64 * 1024


async def post_for_status(
    client: httpx.AsyncClient, url: str, *, limit: int = RESPONSE_READ_LIMIT, **request: Any
) -> int:
    """POST and return the response status, reading at most ``limit`` bytes of its body.

    Bound the whole exchange with ``asyncio.timeout`` at the caller: httpx's timeouts are per
    network operation, so a body dripped a byte at a time would never trip them."""
    async with client.stream("POST", url, **request) as response:
        read = 0
        async for chunk in response.aiter_raw():
            read += len(chunk)
            if read >= limit:
                break  # leaving the block closes the connection instead of draining it
        return response.status_code


#: How long a registration waits for DNS; a name not resolved by then is judged by its name.
REGISTRATION_RESOLVE_SECONDS = 2.0


class OutboundRefused(PermissionError):
    """The outbound policy refuses the address; the message says why (shown to the user)."""


Resolver = Callable[[str, int], Awaitable[list[str]]]


async def _system_resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class OutboundGuard:
    """Resolves a host once and applies ``core.outbound``'s policy to every address it gave.

    Callers then connect to the very addresses that were checked, never to the name again, so a
    name that resolves to a public address at the check and to an internal one a moment later (DNS
    rebinding) gains nothing."""

    def __init__(self, policy: OutboundPolicy, resolve: Resolver = _system_resolve) -> None:
        self.policy = policy
        self._resolve = resolve

    async def addresses(self, host: str, port: int, *, trusted: bool) -> list[str]:
        """The checked addresses to connect to, in the resolver's order; ``OutboundRefused``, or
        ``OSError`` when the name does not resolve."""
        literal = literal_address(host)
        if literal is not None:
            found = [literal]
        else:
            found = [
                unmapped(ipaddress.ip_address(a.split("%", 1)[0]))
                for a in await self._resolve(normalize_host(host), port)
            ]
        reason = refusal(self.policy, host, found, trusted=trusted)
        if reason is not None:
            raise OutboundRefused(reason)
        return [str(a) for a in found]

    async def check_at_registration(self, host: str, port: int, *, trusted: bool) -> None:
        """The registration check: a name that does not resolve (yet, or within
        ``REGISTRATION_RESOLVE_SECONDS``) is judged by its name only; the connect-time check
        judges its addresses once it does."""
        try:
            async with asyncio.timeout(REGISTRATION_RESOLVE_SECONDS):
                await self.addresses(host, port, trusted=trusted)
        except OutboundRefused:
            raise
        except (OSError, TimeoutError):
            reason = refusal(self.policy, host, [], trusted=trusted)
            if reason is not None:
                raise OutboundRefused(reason) from None


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to addresses the guard has checked."""

    def __init__(self, guard: OutboundGuard, trusted: bool) -> None:
        self._guard = guard
        self._trusted = trusted
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await self._guard.addresses(host, port, trusted=self._trusted)
        except OutboundRefused as exc:
            raise httpcore.ConnectError(f"refused by the outbound policy: {exc}") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        error: Exception | None = None
        for address in addresses:  # TLS still verifies and sends SNI for ``host`` (httpcore)
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except httpcore.ConnectError as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not outbound destinations")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


#: httpx's default pool limits, which the replaced pool keeps.
_POOL_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport with the guarded network backend in its connection pool.

    httpx 0.28 offers no hook for the backend, so the pool it built is replaced by an equal one
    (``tests/unit/test_outbound_guard.py`` pins that this still takes effect)."""

    def __init__(
        self,
        guard: OutboundGuard,
        *,
        trusted: bool,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        limits = _POOL_LIMITS
        super().__init__(verify=verify, trust_env=False, limits=limits)
        ssl_context = self._pool._ssl_context  # the context httpx built from ``verify``
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_GuardedBackend(guard, trusted),
        )

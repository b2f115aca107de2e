"""HAProxy driven through its Runtime API (the stats socket): no reload, no config file rewrite.

Each mapped backend is owned by the agent. Its servers are matched to the proxy's instances by
``instanceName``: a missing one is added (``add server``) at the instance's traffic address, one
whose address moved is re-pointed (``set server ... addr``), one that matches no instance is put in
maintenance, its sessions shut and then deleted (``del server``). Serving instances are ``ready``
(at their weight when load balancing), the others ``maint``; new servers are enabled before old
ones are disabled. A server that stops taking traffic keeps its sessions on a planned switchover
(``--on-switchover drain``) and has them shut (``shutdown sessions server``) when it left unhealthy,
unknown or removed. Every apply starts from ``show servers state``, so a reloaded or restarted
HAProxy gets its runtime state back at the next reconcile.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from proxy_failover.adapters.dataplanes.agent import DataPlaneError
from proxy_failover.adapters.dataplanes.metrics import AgentMetrics
from proxy_failover.core.dataplane import (
    DesiredState,
    SwitchPolicy,
    TrafficTarget,
    leaving_policy,
)

log = logging.getLogger("proxy_failover.agent.haproxy")

#: HAProxy's weight range (``set server ... weight``).
MAX_HAPROXY_WEIGHT = 256
#: srv_admin_state bits of ``show servers state`` (HAProxy's SRV_ADMF_*).
_FORCED_MAINT = 0x01
_FORCED_DRAIN = 0x08
#: Characters HAProxy accepts in a server name.
_SERVER_NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")


class RuntimeApi:
    """HAProxy's Runtime API at a UNIX socket path or ``HOST:PORT``, one connection per command."""

    def __init__(self, address: str, timeout: float = 2.0) -> None:
        self.address = address
        self.timeout = timeout
        host, sep, port = address.rpartition(":")
        self._tcp = (host, int(port)) if sep and port.isdigit() and "/" not in address else None

    async def execute(self, command: str) -> str:
        """Send one command and return its whole answer; ``DataPlaneError`` when unreachable."""
        try:
            async with asyncio.timeout(self.timeout):
                if self._tcp is not None:
                    reader, writer = await asyncio.open_connection(*self._tcp)
                else:
                    reader, writer = await asyncio.open_unix_connection(self.address)
                try:
                    writer.write(command.encode() + b"\n")
                    await writer.drain()
                    answer = await reader.read()
                finally:
                    writer.close()
        except (OSError, TimeoutError) as error:
            raise DataPlaneError(f"HAProxy Runtime API at {self.address}: {error}") from error
        return answer.decode(errors="replace")


@dataclass(frozen=True, slots=True)
class ServerState:
    """One server of a backend as ``show servers state`` reports it."""

    name: str
    address: str
    port: int
    admin_state: int
    weight: int

    @property
    def is_maint(self) -> bool:
        return bool(self.admin_state & _FORCED_MAINT)

    @property
    def is_ready(self) -> bool:
        return not self.admin_state & (_FORCED_MAINT | _FORCED_DRAIN)


def parse_servers_state(backend: str, text: str) -> dict[str, ServerState]:
    """Servers of ``backend`` by name from the output of ``show servers state <backend>``."""
    lines = text.splitlines()
    header = next((line for line in lines if line.startswith("# be_id")), None)
    if header is None:
        raise DataPlaneError(f"HAProxy backend {backend!r}: {text.strip() or 'no answer'}")
    columns = header[2:].split()
    servers: dict[str, ServerState] = {}
    for line in lines:
        values = line.split()
        if len(values) < len(columns) or line.startswith("#"):
            continue
        row = dict(zip(columns, values, strict=False))
        if row["be_name"] != backend:
            continue
        servers[row["srv_name"]] = ServerState(
            name=row["srv_name"],
            address=row["srv_addr"],
            port=int(row["srv_port"]),
            admin_state=int(row["srv_admin_state"]),
            weight=int(row["srv_uweight"]),
        )
    return servers


def haproxy_weights(state: DesiredState) -> dict[str, int]:
    """Instance weights (0-1000) scaled into HAProxy's 0-256 when any exceeds 256 (a non-zero
    weight never becomes 0); without load balancing the one serving server gets at least 1."""
    top = max((t.weight for t in state.targets), default=0)
    weights: dict[str, int] = {}
    for target in state.targets:
        weight = target.weight
        if top > MAX_HAPROXY_WEIGHT:
            weight = max(1, round(weight * MAX_HAPROXY_WEIGHT / top)) if weight else 0
        if not state.load_balanced:
            weight = max(1, weight)
        weights[target.instance_id] = weight
    return weights


async def _resolve(host: str, port: int) -> str:
    """An IP address for ``host`` (HAProxy compares and stores addresses, not names)."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise DataPlaneError(f"cannot resolve {host}: {error}") from error
    return str(infos[0][4][0])


class HaproxyDataPlane:
    """Applies desired states to HAProxy backends (``proxy id -> backend``)."""

    def __init__(
        self,
        api: RuntimeApi,
        backends: Mapping[str, str],
        metrics: AgentMetrics,
        *,
        on_switchover: SwitchPolicy = SwitchPolicy.DRAIN,
    ) -> None:
        self.api = api
        self.backends = dict(backends)
        self.metrics = metrics
        self.on_switchover = on_switchover

    async def _run(self, command: str, *expect: str) -> None:
        """Run ``command``; success is an empty answer, or one starting with an ``expect``."""
        answer = (await self.api.execute(command)).strip()
        if not (answer.startswith(expect) if expect else not answer):
            raise DataPlaneError(f"HAProxy refused {command!r}: {answer}")
        log.debug("haproxy: %s", command)

    async def apply(self, state: DesiredState) -> None:
        backend = self.backends[state.proxy_id]
        servers = parse_servers_state(
            backend, await self.api.execute(f"show servers state {backend}")
        )
        weights = haproxy_weights(state)
        problems: list[str] = []
        matched: set[str] = set()
        # 1. every instance has its server, at its address (and weight)
        for target in state.targets:
            if target.address is None or not _SERVER_NAME.match(target.name):
                if target.serving:
                    problems.append(f"{target.name}: no traffic address or invalid server name")
                continue
            matched.add(target.name)
            try:
                await self._ensure_server(backend, target, servers.get(target.name), weights)
            except DataPlaneError as error:
                problems.append(str(error))
        # 2. make before break: enable the serving ones, then disable the others
        refreshed = parse_servers_state(
            backend, await self.api.execute(f"show servers state {backend}")
        )
        for target in state.serving:
            server = refreshed.get(target.name)
            if target.name in matched and server is not None and not server.is_ready:
                await self._run(f"set server {backend}/{target.name} state ready")
        for target in state.targets:
            server = refreshed.get(target.name)
            if target.serving or server is None:
                continue
            if not server.is_maint:
                await self._stop(backend, server, target, state.proxy_id)
            elif leaving_policy(target) is SwitchPolicy.CUT:
                # Sessions drained by a planned move stay only while the instance stays healthy.
                await self._run(f"shutdown sessions server {backend}/{target.name}")
        # 3. servers that belong to no instance take nothing and go away
        for name, server in refreshed.items():
            if name in matched:
                continue
            if not server.is_maint:
                await self._stop(backend, server, None, state.proxy_id)
            answer = (await self.api.execute(f"del server {backend}/{name}")).strip()
            if not answer.startswith("Server deleted"):
                log.info("haproxy: %s/%s not deleted yet: %s", backend, name, answer)
        if problems:
            raise DataPlaneError("; ".join(problems))

    async def _ensure_server(
        self,
        backend: str,
        target: TrafficTarget,
        server: ServerState | None,
        weights: Mapping[str, int],
    ) -> None:
        assert target.address is not None
        host, port = target.address
        address = await _resolve(host, port)
        weight = weights[target.instance_id]
        path = f"{backend}/{target.name}"
        if server is None:
            # Added servers start in maintenance; step 2 enables the serving ones.
            await self._run(f"add server {path} {address}:{port} weight {weight}", "New server")
            log.info("haproxy: added server %s at %s:%d", path, address, port)
            return
        if (server.address, server.port) != (address, port):
            await self._run(
                f"set server {path} addr {address} port {port}",
                "IP changed",
                "no need to change the addr",
            )
        if target.serving and server.weight != weight:
            await self._run(f"set server {path} weight {weight}")

    async def _stop(
        self, backend: str, server: ServerState, target: TrafficTarget | None, proxy_id: str
    ) -> None:
        """Maintenance, and the sessions shut unless this is a planned move that drains."""
        path = f"{backend}/{server.name}"
        await self._run(f"set server {path} state maint")
        policy = leaving_policy(target, planned=self.on_switchover)
        if policy is SwitchPolicy.CUT:
            await self._run(f"shutdown sessions server {path}")
        self.metrics.switches.labels(proxy_id, policy.value).inc()
        log.info("haproxy: %s out of traffic (%s)", path, policy.value)

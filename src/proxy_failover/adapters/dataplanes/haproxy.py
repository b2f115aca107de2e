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

Standby backups: beside each instance's server the agent adds ``<name>.backup``, a ``backup``
server at the same address (HAProxy cannot turn a server into a backup at runtime, hence a second
one). The backups of the eligible standbys are ``ready``; with HAProxy's own checks on the servers
(``--server-options``), HAProxy sends new connections to them as soon as *it* sees the active
instance down, in the gap before the control plane decides; the control plane's choice then
becomes the one active server, as before. The state changes of one apply go in one Runtime API
connection (commands separated by ``;``); those of a state told by an event go on a connection
opened ahead of time, so a cut's ``shutdown sessions`` reaches HAProxy without a connect first.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

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
#: Name of the backup server beside an instance's server: ``<instanceName>.backup``.
BACKUP_SUFFIX = ".backup"
#: Server options of the servers the agent adds: HAProxy's own TCP check, and a refused or timed
#: out connection marks the server down at once (HAProxy's passive detection).
DEFAULT_SERVER_OPTIONS = (
    "check inter 1s fall 2 rise 2 observe layer4 error-limit 1 on-error mark-down"
)
#: A word of ``--server-options`` (no ';', spaces or control characters reach the Runtime API).
_OPTION_WORD = re.compile(r"^[A-Za-z0-9_.:%/@+=,-]+$")
#: Keywords the agent sets itself on the servers it adds.
_OWNED_KEYWORDS = frozenset({"backup", "weight", "disabled", "enabled", "addr", "id"})
#: Longest line of commands sent in one connection (HAProxy's CLI reads a line into one buffer).
_BATCH_BYTES = 8000


def parse_server_options(text: str) -> tuple[str, ...]:
    """``--server-options`` as words for ``add server``; ValueError for a word HAProxy's Runtime
    API could misread (``;``, control characters) or one the agent sets itself."""
    words = tuple(text.split())
    for word in words:
        if not _OPTION_WORD.match(word):
            raise ValueError(f"invalid server option {word!r}")
        if word.lower() in _OWNED_KEYWORDS:
            raise ValueError(f"server option {word!r} is set by the agent")
    return words


class RuntimeApi:
    """HAProxy's Runtime API at a UNIX socket path or ``HOST:PORT``, one connection per command
    line (HAProxy answers it and closes).

    The connection for the next line told by an event can be opened ahead of time (``prepare``,
    one idle connection of the socket's ``stats maxconn``): that line is then written at once,
    with no connect on the cut's path. Full applies always open their own: a connection opened
    before an HAProxy reload still reaches the old, stopping worker (and keeps it alive until
    HAProxy's idle timeout closes it), so the spare is replaced after every full apply: never
    older than one reconcile period, the bound within which the reconcile restores a reload.
    """

    def __init__(self, address: str, timeout: float = 2.0) -> None:
        self.address = address
        self.timeout = timeout
        host, sep, port = address.rpartition(":")
        self._tcp = (host, int(port)) if sep and port.isdigit() and "/" not in address else None
        self._spare: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._tcp is not None:
            return await asyncio.open_connection(*self._tcp)
        return await asyncio.open_unix_connection(self.address)

    async def prepare(self) -> None:
        """Open the connection the next ``execute(..., spare=True)`` writes on, replacing an
        older one; nothing when HAProxy cannot be reached (that command then connects itself)."""
        await self.aclose()
        try:
            async with asyncio.timeout(self.timeout):
                self._spare = await self._connect()
        except (OSError, TimeoutError) as error:
            log.debug("haproxy: no spare Runtime API connection: %s", error)

    async def aclose(self) -> None:
        """Close the connection opened ahead of time, if any, and wait until it is closed."""
        if self._spare is not None:
            writer = self._spare[1]
            self._spare = None
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def execute(self, command: str, *, spare: bool = False) -> str:
        """Send one command line and return its whole answer; ``DataPlaneError`` when
        unreachable. With ``spare``, on the connection ``prepare`` opened if it is still open.

        A line HAProxy processed is answered with at least one line end (an empty line ends each
        command's output), so an empty answer on the spare means HAProxy had closed it (idle
        longer than its ``stats timeout``): the line is sent again on a new connection (the
        agent's commands can be repeated)."""
        connection = None
        if spare:
            connection, self._spare = self._spare, None
        try:
            async with asyncio.timeout(self.timeout):
                if connection is not None and not connection[0].at_eof():
                    with contextlib.suppress(OSError):
                        answer = await self._exchange(*connection, command)
                        if answer:
                            return answer.decode(errors="replace")
                    log.debug("haproxy: the spare Runtime API connection was closed")
                answer = await self._exchange(*await self._connect(), command)
        except (OSError, TimeoutError) as error:
            raise DataPlaneError(f"HAProxy Runtime API at {self.address}: {error}") from error
        finally:
            if connection is not None:
                connection[1].close()
        return answer.decode(errors="replace")

    @staticmethod
    async def _exchange(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, command: str
    ) -> bytes:
        try:
            writer.write(command.encode() + b"\n")
            await writer.drain()
            return await reader.read()
        finally:
            writer.close()

    async def execute_all(self, commands: Sequence[str], *, spare: bool = False) -> None:
        """Run commands whose success is an empty answer, several per connection (``;``-
        separated, in order; the first line on the spare connection with ``spare``);
        ``DataPlaneError`` with HAProxy's answer when any is refused."""
        batch: list[str] = []
        size = 0
        for command in [*commands, None]:
            if batch and (command is None or size + len(command) > _BATCH_BYTES):
                answer = (await self.execute(";".join(batch), spare=spare)).strip()
                if answer:
                    raise DataPlaneError(f"HAProxy refused one of {batch!r}: {answer}")
                log.debug("haproxy: %s", ";".join(batch))
                batch, size, spare = [], 0, False
            if command is not None:
                batch.append(command)
                size += len(command) + 1


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
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise DataPlaneError(f"cannot resolve {host}: {error}") from error
    return str(infos[0][4][0])


async def _resolve_all(addresses: Sequence[tuple[str, int]]) -> list[str | BaseException]:
    """IP addresses for ``(host, port)`` pairs, in order, an error in place of one that does not
    resolve: names concurrently, IP addresses as they are (without a turn of the event loop,
    which would let other work in before an event's commands are written)."""
    resolved: list[str | BaseException | None] = []
    for host, _port in addresses:
        try:
            resolved.append(str(ipaddress.ip_address(host)))
        except ValueError:
            resolved.append(None)
    names = [i for i, address in enumerate(resolved) if address is None]
    if names:
        answers = await asyncio.gather(
            *(_resolve(*addresses[i]) for i in names), return_exceptions=True
        )
        for i, answer in zip(names, answers, strict=True):
            resolved[i] = answer
    return [address for address in resolved if address is not None]


@dataclass(slots=True)
class _Plan:
    """The commands of one apply, in order: the serving servers enabled, the standbys' backups,
    then the rest disabled (make before break)."""

    enable: list[str]
    disable: list[str]
    backups: list[str] = field(default_factory=list)
    admin: dict[str, int] = field(default_factory=dict)  # server admin states once applied


class HaproxyDataPlane:
    """Applies desired states to HAProxy backends (``proxy id -> backend``)."""

    def __init__(
        self,
        api: RuntimeApi,
        backends: Mapping[str, str],
        metrics: AgentMetrics,
        *,
        on_switchover: SwitchPolicy = SwitchPolicy.DRAIN,
        server_options: Sequence[str] = (),
        standby_backups: bool = False,
    ) -> None:
        self.api = api
        self.backends = dict(backends)
        self.metrics = metrics
        self.on_switchover = on_switchover
        self.server_options = tuple(server_options)
        self.standby_backups = standby_backups
        self._checks = "check" in self.server_options
        # Each backend's servers as the last apply left them: a move told by an event is applied
        # from here in one round trip; every other apply reads ``show servers state`` first.
        self._known: dict[str, dict[str, ServerState]] = {}

    async def _run(self, command: str, *expect: str) -> None:
        """Run ``command``; success is an empty answer, or one starting with an ``expect``."""
        answer = (await self.api.execute(command)).strip()
        if not (answer.startswith(expect) if expect else not answer):
            raise DataPlaneError(f"HAProxy refused {command!r}: {answer}")
        log.debug("haproxy: %s", command)

    def _backup_name(self, target: TrafficTarget, names: set[str]) -> str | None:
        """The backup server's name, or None (backups off, or the name is an instance's)."""
        name = target.name + BACKUP_SUFFIX
        return name if self.standby_backups and name not in names else None

    async def apply(self, state: DesiredState) -> None:
        # Then the next event's connection is opened: after every full apply, so never older
        # than one reconcile period (not after an event's own apply: that would count in the
        # agent's event-to-applied time, and the full read follows every event).
        try:
            await self._apply(state, cached=False)
        except DataPlaneError:
            await self.api.prepare()
            raise
        await self.api.prepare()

    async def apply_from_event(self, state: DesiredState) -> None:
        """A move told by an event: the state commands from the servers as the last apply left
        them, in one round trip, on the connection opened after the last full apply. If HAProxy
        changed meanwhile (a reload), a command is refused or does nothing, and the full read
        and apply that follows every event puts it right."""
        await self._apply(state, cached=True)

    async def _apply(self, state: DesiredState, *, cached: bool) -> None:
        backend = self.backends[state.proxy_id]
        known = self._known.pop(backend, None)
        if cached and known is not None:
            servers = known
        else:
            servers = parse_servers_state(
                backend, await self.api.execute(f"show servers state {backend}")
            )
        weights = haproxy_weights(state)
        names = {t.name for t in state.targets}
        problems: list[str] = []
        plan = _Plan([], [])
        usable = [t for t in state.targets if t.address is not None and _SERVER_NAME.match(t.name)]
        problems += [
            f"{t.name}: no traffic address or invalid server name"
            for t in state.serving
            if t not in usable
        ]
        addresses = await _resolve_all([t.address for t in usable if t.address is not None])
        matched: set[str] = set()
        # 1. every instance has its server (and its backup), at its address and weight
        for target, address in zip(usable, addresses, strict=True):
            if isinstance(address, BaseException):
                problems.append(str(address))
                continue
            backup = self._backup_name(target, names)
            for name in (target.name, backup):
                if name is None:
                    continue
                matched.add(name)
                try:
                    servers[name] = await self._ensure_server(
                        backend, name, target, address, servers.get(name), weights, plan
                    )
                except DataPlaneError as error:
                    problems.append(str(error))
                    servers.pop(name, None)
            # 2. make before break: enable the serving ones, then disable the others
            self._plan_states(backend, state, target, servers, backup, plan)
        # An event's line goes on the connection opened ahead of time (no connect on its path).
        await self.api.execute_all(plan.enable + plan.backups + plan.disable, spare=cached)
        self._known[backend] = {
            name: dataclasses.replace(server, admin_state=plan.admin.get(name, server.admin_state))
            for name, server in servers.items()
            if name in matched
        }
        # 3. servers that belong to no instance take nothing and go away
        for name, server in servers.items():
            if name in matched:
                continue
            if not server.is_maint:
                path = f"{backend}/{name}"
                await self.api.execute_all(
                    [f"set server {path} state maint", f"shutdown sessions server {path}"]
                )
                self.metrics.switches.labels(state.proxy_id, SwitchPolicy.CUT.value).inc()
                log.info("haproxy: %s out of traffic (cut)", path)
            answer = (await self.api.execute(f"del server {backend}/{name}")).strip()
            if not answer.startswith("Server deleted"):
                log.info("haproxy: %s/%s not deleted yet: %s", backend, name, answer)
        if problems:
            raise DataPlaneError("; ".join(problems))

    def _plan_states(
        self,
        backend: str,
        state: DesiredState,
        target: TrafficTarget,
        servers: Mapping[str, ServerState],
        backup: str | None,
        plan: _Plan,
    ) -> None:
        """State commands for the instance's server and its backup."""
        server = servers.get(target.name)
        path = f"{backend}/{target.name}"
        if server is not None and target.serving and not server.is_ready:
            plan.enable.append(f"set server {path} state ready")
            plan.admin[target.name] = 0
        elif server is not None and not target.serving:
            policy = leaving_policy(target, planned=self.on_switchover)
            if not server.is_maint:
                plan.disable.append(f"set server {path} state maint")
                plan.admin[target.name] = _FORCED_MAINT
                self.metrics.switches.labels(state.proxy_id, policy.value).inc()
                log.info("haproxy: %s out of traffic (%s)", path, policy.value)
            if policy is SwitchPolicy.CUT and (
                not server.is_maint or leaving_policy(target) is SwitchPolicy.CUT
            ):
                # Sessions drained by a planned move stay only while the instance stays healthy.
                plan.disable.append(f"shutdown sessions server {path}")
        standby = backups_ready(state, target)
        spare = servers.get(backup) if backup is not None else None
        if spare is None:
            return
        path = f"{backend}/{backup}"
        if standby and not spare.is_ready:
            plan.backups.append(f"set server {path} state ready")
            plan.admin[spare.name] = 0
        elif not standby and not spare.is_maint:
            plan.disable.append(f"set server {path} state maint")
            plan.admin[spare.name] = _FORCED_MAINT
        if not standby and not target.healthy:
            plan.disable.append(f"shutdown sessions server {path}")

    async def _ensure_server(
        self,
        backend: str,
        name: str,
        target: TrafficTarget,
        address: str,
        server: ServerState | None,
        weights: Mapping[str, int],
        plan: _Plan,
    ) -> ServerState:
        """The server ``name`` of ``target`` exists at its address; its state as it is now."""
        assert target.address is not None
        port = target.address[1]
        weight = weights[target.instance_id]
        path = f"{backend}/{name}"
        if server is None:
            # Added servers start in maintenance; the plan enables the serving ones.
            words = [f"add server {path} {address}:{port} weight {max(1, weight)}"]
            if name != target.name:
                words.append("backup")
            words.extend(self.server_options)
            await self._run(" ".join(words), "New server")
            if self._checks:
                plan.enable.append(f"enable health {path}")
            log.info("haproxy: added server %s at %s:%d", path, address, port)
            return ServerState(name, address, port, _FORCED_MAINT, max(1, weight))
        if (server.address, server.port) != (address, port):
            await self._run(
                f"set server {path} addr {address} port {port}",
                "IP changed",
                "no need to change the addr",
            )
        if name == target.name and target.serving and server.weight != weight:
            plan.enable.append(f"set server {path} weight {weight}")
        return server


def backups_ready(state: DesiredState, target: TrafficTarget) -> bool:
    """An instance's backup server takes connections when HAProxy sees every active server
    down: the backups of the eligible standbys (none when load balancing: every eligible
    instance already serves; none before the control plane has chosen an active one)."""
    return (
        not state.load_balanced
        and state.active_instance_id is not None
        and target.eligible
        and not target.serving
    )

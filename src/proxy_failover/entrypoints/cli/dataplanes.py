"""``proxy-failover agent haproxy ...`` and ``proxy-failover forward ...``: data-plane commands.

Both are API clients (URL + token); they run until interrupted (SIGINT/SIGTERM end them cleanly).
Registered on the main CLI by ``register(app)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
import tempfile
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from proxy_failover.adapters.dataplanes.haproxy import DEFAULT_SERVER_OPTIONS
from proxy_failover.core.dataplane import SwitchPolicy, split_host_port
from proxy_failover.entrypoints.cli.common import DEFAULT_URL, TokenOption, UrlOption, fail

if TYPE_CHECKING:  # the commands import the agent library when they run, not when listed
    from proxy_failover.adapters.dataplanes.agent import DataPlane
    from proxy_failover.adapters.dataplanes.metrics import AgentMetrics

agent_app = typer.Typer(
    help="Data-plane agents that make traffic follow the control plane.",
    no_args_is_help=True,
)

_RECONCILE = Annotated[
    float,
    typer.Option("--reconcile-seconds", min=0.1, help="Full reconcile period"),
]
_METRICS_PORT = Annotated[
    int | None,
    typer.Option("--metrics-port", min=1, max=65535, help="Serve pfo_agent_* metrics here"),
]
_LOG_LEVEL = Annotated[str, typer.Option("--log-level", help="debug, info, warning, error")]


def _run_until_signalled(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main``; SIGINT/SIGTERM cancel it and the command exits 0.

    The loop is uvloop when installed (``adapters.event_loop``, as ``serve``'s): the forwarder's
    per-connection path (accept, upstream connect, forwarding) costs about half the CPU it does
    on asyncio's own loop.

    Everything imported and built so far lives as long as the process: it is frozen out of the
    collector's full passes first (as ``serve`` does). The command's imports (the CLI brings
    SQLAlchemy and Alembic too: ~100,000 objects) made each full pass stop the event loop for
    30-70 ms now and then, and the allocations of a cut (clients reconnecting, a full read)
    brought one on: the forwarder held every reconnecting client's first bytes that long.
    """
    from proxy_failover.adapters.event_loop import loop_factory

    gc.collect()
    gc.freeze()

    async def runner() -> None:
        task = asyncio.ensure_future(main)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    with asyncio.Runner(loop_factory=loop_factory()) as run:
        run.run(runner())


def _setup(token: str | None, log_level: str) -> str:
    """Logging as JSON lines on stderr; the token an agent cannot run without."""
    from proxy_failover.entrypoints.logs import configure_logging

    if not token:
        fail("--token (or PFO_TOKEN) is required: agents call the API as the proxies' owner", 2)
    configure_logging(log_level.lower())
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return token


def _maps(
    maps: list[str], target: str, valid: Callable[[str], bool] = bool, rule: str = ""
) -> dict[str, str]:
    """``--map PROXY_ID=TARGET`` items (repeatable) as proxy id -> target; a bad one is a usage
    error naming the ``target`` and its ``rule``."""
    parsed: dict[str, str] = {}
    for item in maps:
        proxy_id, sep, value = item.partition("=")
        if not sep or not proxy_id or not valid(value):
            raise typer.BadParameter(
                f"expected PROXY_ID={target}{rule}, got {item!r}", param_hint="--map"
            )
        parsed[proxy_id] = value
    return parsed


def _run_agent(
    kind: str,
    plane: Callable[[AgentMetrics], DataPlane],
    proxy_ids: Sequence[str],
    *,
    url: str,
    token: str | None,
    reconcile_seconds: float,
    metrics_port: int | None,
    log_level: str,
) -> None:
    """What every ``agent ...`` command does once its options are checked: logging, the
    ``pfo_agent_*`` metrics of ``kind``, then one ``Agent`` over ``plane(metrics)`` following
    ``proxy_ids`` until SIGINT/SIGTERM."""
    from proxy_failover.adapters.dataplanes.agent import Agent, AgentSettings
    from proxy_failover.adapters.dataplanes.metrics import AgentMetrics
    from proxy_failover.client import AsyncFailoverClient

    token = _setup(token, log_level)
    metrics = AgentMetrics(kind)
    if metrics_port is not None:
        metrics.serve(metrics_port)

    async def main() -> None:
        async with AsyncFailoverClient(url, token) as client:
            settings = AgentSettings(reconcile_seconds=reconcile_seconds)
            await Agent(client, plane(metrics), list(proxy_ids), metrics, settings).run()

    _run_until_signalled(main())


def _listen_address(text: str, option: str) -> tuple[str, int]:
    address = split_host_port(text)
    if address is None:
        raise typer.BadParameter(f"expected HOST:PORT, got {text!r}", param_hint=option)
    return address


@agent_app.command("haproxy")
def agent_haproxy(
    socket_address: Annotated[
        str,
        typer.Option("--socket", help="HAProxy Runtime API: stats socket path or HOST:PORT"),
    ],
    maps: Annotated[
        list[str],
        typer.Option("--map", help="PROXY_ID=BACKEND (repeatable)"),
    ],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    on_switchover: Annotated[
        SwitchPolicy,
        typer.Option("--on-switchover", help="Open sessions on a planned switchover"),
    ] = SwitchPolicy.DRAIN,
    standby_backups: Annotated[
        bool,
        typer.Option(
            "--standby-backups/--no-standby-backups",
            help="Add '<name>.backup' backup servers, ready for the eligible standbys, so HAProxy "
            "fails over by itself (with its checks) before the control plane decides",
        ),
    ] = True,
    server_options: Annotated[
        str,
        typer.Option(
            "--server-options",
            help="HAProxy server keywords for the servers the agent adds ('' = none)",
        ),
    ] = DEFAULT_SERVER_OPTIONS,
    reconcile_seconds: _RECONCILE = 5.0,
    metrics_port: _METRICS_PORT = None,
    log_level: _LOG_LEVEL = "info",
) -> None:
    """Drive HAProxy backends through the Runtime API: servers follow the proxies' instances."""
    from proxy_failover.adapters.dataplanes.haproxy import (
        HaproxyDataPlane,
        RuntimeApi,
        parse_server_options,
    )

    backends = _maps(maps, "BACKEND")
    try:
        options = parse_server_options(server_options)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--server-options") from error

    def plane(metrics: AgentMetrics) -> HaproxyDataPlane:
        return HaproxyDataPlane(
            RuntimeApi(socket_address),
            backends,
            metrics,
            on_switchover=on_switchover,
            server_options=options,
            standby_backups=standby_backups,
        )

    _run_agent(
        "haproxy",
        plane,
        list(backends),
        url=url,
        token=token,
        reconcile_seconds=reconcile_seconds,
        metrics_port=metrics_port,
        log_level=log_level,
    )


@agent_app.command("envoy")
def agent_envoy(
    directory: Annotated[
        Path,
        typer.Option(
            "--dir",
            file_okay=False,
            dir_okay=True,
            writable=True,
            help="Where to write <proxy id>.json, Envoy's watched_directory",
        ),
    ],
    proxies: Annotated[
        list[str], typer.Option("--proxy", help="A proxy id = Envoy cluster (repeatable)")
    ],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    reconcile_seconds: _RECONCILE = 5.0,
    metrics_port: _METRICS_PORT = None,
    log_level: _LOG_LEVEL = "info",
) -> None:
    """Write Envoy EDS files (one DiscoveryResponse per proxy), renamed into place atomically."""
    from proxy_failover.adapters.dataplanes.envoy import EnvoyFileDataPlane

    if not directory.is_dir():
        raise typer.BadParameter(f"{directory} is not a directory", param_hint="--dir")
    _run_agent(
        "envoy",
        lambda metrics: EnvoyFileDataPlane(directory, metrics),
        list(dict.fromkeys(proxies)),
        url=url,
        token=token,
        reconcile_seconds=reconcile_seconds,
        metrics_port=metrics_port,
        log_level=log_level,
    )


def forward(
    proxy_id: Annotated[str, typer.Option("--proxy", help="The proxy whose traffic to forward")],
    listen: Annotated[str, typer.Option("--listen", help="HOST:PORT to accept clients on")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    on_switch: Annotated[
        SwitchPolicy | None,
        typer.Option(
            "--on-switch",
            help="Open connections when the instance changes [default: cut when the old one is "
            "unhealthy or removed, drain on a planned switchover]",
        ),
    ] = None,
    connect_timeout: Annotated[
        float, typer.Option("--connect-timeout", min=0.01, help="Seconds per connect attempt")
    ] = 1.0,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            max=64,
            help="Forwarder processes sharing the address (SO_REUSEPORT); more than one for "
            "more than a core's worth of connections",
        ),
    ] = 1,
    listen_fd: Annotated[
        int | None, typer.Option("--listen-fd", hidden=True, help="A worker's socket (internal)")
    ] = None,
    reconcile_seconds: _RECONCILE = 5.0,
    metrics_port: _METRICS_PORT = None,
    log_level: _LOG_LEVEL = "info",
) -> None:
    """Forward TCP connections to the proxy's active instance (or load-balanced pick)."""
    host, port = _listen_address(listen, "--listen")
    token = _setup(token, log_level)
    if workers > 1:
        if listen_fd is not None:
            raise typer.BadParameter("a worker runs alone", param_hint="--workers")
        arguments = _worker_arguments(
            proxy_id, listen, url, on_switch, connect_timeout, reconcile_seconds, log_level
        )
        _run_workers(
            arguments,
            proxy_id,
            (host, port),
            workers,
            url,
            token,
            reconcile_seconds,
            metrics_port,
        )
        return

    from proxy_failover.adapters.dataplanes.agent import Agent, AgentSettings
    from proxy_failover.adapters.dataplanes.forwarder import Forwarder
    from proxy_failover.adapters.dataplanes.metrics import AgentMetrics
    from proxy_failover.adapters.dataplanes.workers import until_parent_ends
    from proxy_failover.client import AsyncFailoverClient

    metrics = AgentMetrics("forwarder")
    if metrics_port is not None and listen_fd is None:
        metrics.serve(metrics_port)
    if listen_fd is not None:
        sock = socket.socket(fileno=listen_fd)  # a worker: its parent bound it
    else:
        try:
            sock = socket.create_server((host, port), backlog=1024)
        except OSError as error:
            fail(f"cannot listen on {host}:{port}: {error}")

    async def main() -> None:
        async with AsyncFailoverClient(url, token) as client:
            forwarder = Forwarder(
                proxy_id,
                client,
                metrics,
                on_switch=on_switch,
                connect_timeout=connect_timeout,
                report_counts=listen_fd is None,  # a worker's parent reports the sum
            )
            settings = AgentSettings(reconcile_seconds=reconcile_seconds)
            agent = Agent(client, forwarder, [proxy_id], metrics, settings)
            async with forwarder.listening(host, port, sock=sock):
                if listen_fd is None:
                    await agent.run()
                    return
                async with asyncio.TaskGroup() as group:  # the agent failing ends the worker
                    following = group.create_task(agent.run())
                    await until_parent_ends()  # the parent is gone: stop, as on SIGTERM
                    following.cancel()

    _run_until_signalled(main())


#: The options of ``forward`` a worker is not given: its parent's alone, or passed another way.
PARENT_ONLY_OPTIONS = frozenset({"workers", "listen_fd", "metrics_port", "token"})


def _worker_arguments(
    proxy_id: str,
    listen: str,
    url: str,
    on_switch: SwitchPolicy | None,
    connect_timeout: float,
    reconcile_seconds: float,
    log_level: str,
) -> list[str]:
    """A worker's ``forward`` options: every option but ``PARENT_ONLY_OPTIONS`` (the token goes
    by the environment, never a command line; a test keeps this list whole)."""
    return [
        *("--proxy", proxy_id, "--listen", listen, "--url", url),
        *(["--on-switch", on_switch.value] if on_switch is not None else []),
        *("--connect-timeout", str(connect_timeout)),
        *("--reconcile-seconds", str(reconcile_seconds), "--log-level", log_level),
    ]


def _run_workers(
    worker_arguments: list[str],
    proxy_id: str,
    address: tuple[str, int],
    workers: int,
    url: str,
    token: str,
    reconcile_seconds: float,
    metrics_port: int | None,
) -> None:
    """``forward --workers N``: bind the N sockets here (a taken address fails now, once), then
    run and supervise a worker per socket (``adapters.dataplanes.workers``)."""
    from proxy_failover.adapters.dataplanes.workers import ForwarderWorkers, listening_sockets
    from proxy_failover.client import AsyncFailoverClient

    try:
        sockets = listening_sockets(*address, workers)
    except OSError as error:
        fail(f"cannot listen on {address[0]}:{address[1]}: {error}")
    with tempfile.TemporaryDirectory(prefix="pfo-forward-metrics-") as metrics_dir:
        parent = ForwarderWorkers(worker_arguments, sockets, Path(metrics_dir), token)
        if metrics_port is not None:
            parent.serve_metrics(metrics_port)

        async def main() -> None:
            async with AsyncFailoverClient(url, token) as client:
                await parent.run(client, proxy_id, reconcile_seconds)

        try:
            _run_until_signalled(main())
        finally:
            for sock in sockets:
                sock.close()


def register(app: typer.Typer) -> None:
    """Add ``agent ...`` and ``forward`` to the ``proxy-failover`` command."""
    app.add_typer(agent_app, name="agent")
    app.command("forward")(forward)

"""``proxy-failover forward --workers N``: N forwarder processes on one address, and their parent.

A forwarder is one Python process on one core; HAProxy serves connections on a thread per core. A
burst of reconnecting clients (a cut) or a high connection rate needs more than a core, so the
parent binds N listening sockets to the address with ``SO_REUSEPORT`` (the kernel spreads new
connections across them by their addresses) and runs a worker per socket: a whole forwarder
(``forward --listen-fd``) that follows the event stream itself, so a switch reaches every worker
as fast as it reaches one. The parent never accepts; it:

- keeps every socket open, so a worker that dies loses only the connections it had open: clients
  queued on its socket wait for its successor, started at once (a second later if it had run less
  than ten: ``RESTART_DELAY``);
- serves the workers' ``pfo_agent_*`` metrics together on ``--metrics-port`` (prometheus_client's
  multiprocess mode: each worker writes its values to files in a private directory);
- reports the open connections summed over the workers as ``connectionCount`` (each worker
  balances ``least_connections`` over its own connections, a like share of the whole);
- stops the workers on SIGTERM/SIGINT; a worker whose parent is gone (kill -9) sees its stdin
  close and stops too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import stat
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from proxy_failover.adapters.dataplanes.agent import fetch_desired_state
from proxy_failover.adapters.dataplanes.forwarder import report_connection_counts
from proxy_failover.client import AsyncFailoverClient
from proxy_failover.core.dataplane import TrafficTarget
from proxy_failover.core.errors import FailoverError

log = logging.getLogger("proxy_failover.forwarder")

#: A worker that ends is restarted at once; one that ran less than ``STEADY_SECONDS`` only after
#: ``RESTART_DELAY`` (a worker that cannot start must not spin).
RESTART_DELAY = 1.0
STEADY_SECONDS = 10.0
STOP_TIMEOUT = 10.0
#: The environment variable that puts prometheus_client in multiprocess mode (read at import).
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` sockets listening on ``host:port`` with ``SO_REUSEPORT`` (port 0: the port the
    first one was given). Raises ``OSError`` when the address cannot be bound, or when another
    process listens there, even with ``SO_REUSEPORT`` (a second ``forward`` started by mistake
    would otherwise take a share of the clients)."""
    if port:
        socket.create_server((host, port)).close()  # raises when anyone listens there
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_server((host, port), reuse_port=True, backlog=1024)
            port = sock.getsockname()[1]
            sock.setblocking(False)
            sockets.append(sock)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class ForwarderWorkers:
    """The parent of ``forward --workers``: starts, restarts and stops one worker per socket."""

    def __init__(
        self,
        worker_arguments: Sequence[str],
        sockets: Sequence[socket.socket],
        metrics_dir: Path,
        token: str,
    ) -> None:
        self.worker_arguments = list(worker_arguments)  # ``forward`` options but --listen-fd
        self.sockets = list(sockets)
        self.metrics_dir = metrics_dir
        self.environment = {
            **os.environ,
            METRICS_DIR_VARIABLE: str(metrics_dir),
            "PFO_TOKEN": token,
        }
        self.collector = MultiProcessCollector(None, path=str(metrics_dir))  # type: ignore[no-untyped-call]
        self.processes: dict[int, asyncio.subprocess.Process] = {}  # socket index -> worker
        self.restarts = 0
        self._stopping = False

    def serve_metrics(self, port: int, host: str = "127.0.0.1") -> None:
        """Serve every worker's metrics together on ``host:port`` (a daemon thread), with the
        parent's own: workers running and restarts."""
        registry = CollectorRegistry()
        registry.register(self.collector)
        registry.register(self)
        start_http_server(port, addr=host, registry=registry)

    def collect(self) -> Iterator[Metric]:
        """The parent's own metrics (a prometheus_client collector: read at each scrape)."""
        running = sum(p.returncode is None for p in list(self.processes.values()))
        yield GaugeMetricFamily(
            "pfo_agent_workers", "Forwarder workers running (forward --workers)", value=running
        )
        yield CounterMetricFamily(
            "pfo_agent_worker_restarts",
            "Forwarder workers restarted after they ended",
            value=self.restarts,
        )

    def open_connections(self, proxy_id: str) -> dict[str, int]:
        """Open connections per instance name, summed over the live workers."""
        counts: dict[str, int] = {}
        for family in self.collector.collect():  # type: ignore[no-untyped-call]
            if family.name != "pfo_agent_open_connections":
                continue
            for sample in family.samples:
                if sample.labels.get("proxy_id") == proxy_id:
                    name = sample.labels["instance"]
                    counts[name] = counts.get(name, 0) + int(sample.value)
        return counts

    async def run(
        self, client: AsyncFailoverClient, proxy_id: str, reconcile_seconds: float
    ) -> None:
        """Run the workers until cancelled (then stop them), reporting connection counts."""
        try:
            for index in range(len(self.sockets)):
                await self._start(index)
            async with asyncio.TaskGroup() as group:
                for index in range(len(self.sockets)):
                    group.create_task(self._supervise(index))
                group.create_task(self._report_counts(client, proxy_id, reconcile_seconds))
        finally:
            self._stopping = True
            await asyncio.shield(self._stop_all())

    async def _start(self, index: int) -> None:
        sock = self.sockets[index]
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "proxy_failover",
            "forward",
            *self.worker_arguments,
            *("--listen-fd", str(sock.fileno())),
            pass_fds=(sock.fileno(),),
            stdin=asyncio.subprocess.PIPE,  # the lifeline: closed when this process ends
            env=self.environment,
        )
        self.processes[index] = process
        log.info("forwarder: worker %d started (pid %d)", index, process.pid)

    async def _supervise(self, index: int) -> None:
        """Restart worker ``index`` whenever it ends, until the parent stops."""
        loop = asyncio.get_running_loop()
        while True:
            process, started = self.processes[index], loop.time()
            code = await process.wait()
            self._forget(process.pid)
            if process.stdin is not None:
                process.stdin.close()
            if self._stopping:
                return
            delay = RESTART_DELAY if loop.time() - started < STEADY_SECONDS else 0.0
            log.warning(
                "forwarder: worker %d (pid %d) ended with %s; restarting in %.0f s",
                *(index, process.pid, code, delay),
            )
            self.restarts += 1
            await asyncio.sleep(delay)
            await self._start(index)

    async def _report_counts(
        self, client: AsyncFailoverClient, proxy_id: str, every: float
    ) -> None:
        """Every ``every`` seconds, the workers' open connections per instance as
        ``connectionCount`` samples (when they changed), as one forwarder reports its own."""
        reported: dict[str, int] = {}
        while True:
            await asyncio.sleep(every)
            try:
                state = await fetch_desired_state(client, proxy_id)
            except (FailoverError, httpx.HTTPError) as failure:
                log.debug("forwarder %s: counts not reported: %s", proxy_id, failure)
                continue
            by_name = self.open_connections(proxy_id)
            await report_connection_counts(client, state, _counted_in(by_name), reported)

    def _forget(self, pid: int) -> None:
        """A worker that ended: its gauges leave the sums (its counters stay in the totals)."""
        mark_process_dead(pid, str(self.metrics_dir))  # type: ignore[no-untyped-call]

    async def _stop_all(self) -> None:
        """SIGTERM every worker, SIGKILL what is left after ``STOP_TIMEOUT``."""
        running = [p for p in self.processes.values() if p.returncode is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        waits = [asyncio.ensure_future(p.wait()) for p in running]
        if waits:
            _, late = await asyncio.wait(waits, timeout=STOP_TIMEOUT)
            for process in running:
                if process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            if late:
                await asyncio.wait(late)
        for process in self.processes.values():
            self._forget(process.pid)
            if process.stdin is not None:
                process.stdin.close()


def _counted_in(by_name: dict[str, int]) -> Callable[[TrafficTarget], int]:
    return lambda target: by_name.get(target.name, 0)


async def until_parent_ends(fd: int | None = None) -> None:
    """Return when ``fd`` (this worker's stdin), a pipe or socket pair from its parent, reaches
    end of file: the parent is gone. Never returns when it is neither (a terminal, /dev/null)."""
    fd = sys.stdin.fileno() if fd is None else fd
    loop = asyncio.get_running_loop()
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        await loop.create_future()
    ended = loop.create_future()

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data and not ended.done():
            ended.set_result(None)

    os.set_blocking(fd, False)
    loop.add_reader(fd, readable)
    try:
        await ended
    finally:
        loop.remove_reader(fd)

"""The data planes' own pickup, without a control plane: from the moment the agent has its new
state in hand to the data plane sending new connections to the new active relay.

What ``bench/dataplane.py`` calls the follow time after the event is the agent's part (its
receipt of the event, its apply) plus this part (the data plane taking the change up). Here the
agents' apply code runs in this process on a state built in memory, so nothing of the control
plane, the event stream or the agent's loop is in the figure:

- (g) Envoy, file EDS: ``EnvoyFileDataPlane.apply`` (render, write, rename: what ``agent envoy``
  does) then Envoy's ``watched_directory`` inotify, its parse and its workers' update;
- (e) nginx ``stream``: ``NginxDataPlane.apply`` (render, write, rename, then the reload: the
  command ``kill -HUP $(cat nginx.pid)`` through a shell, or with ``--reload-pid-file`` the
  agent's own SIGHUP), then nginx's reload: it parses its configuration, starts new workers,
  sleeps 100 ms (hard-coded in its master: "allow new processes to start") and only then tells
  the old ones to stop accepting;
- (e') nginx ``stream`` with ``--mode njs``: ``NginxNjsDataPlane.apply`` (render, write and
  rename the state file; the blocks do not change on a switch between eligible relays, so no
  reload), then the njs module reading the state file on the next connection.

For each switch (edge-a → edge-b → edge-a ..., ``--switches`` of them, 0.3 s apart) under a
closed loop of ``--clients`` clients making requests back to back (``GET /``, each on a new
connection): ``apply`` = the apply call's own duration; ``pickup`` = the last request *started*
after the apply began that was still answered by the old relay, minus that beginning (0 when
none was); ``first new`` = the first request started after it answered by the new relay. With
``--nginx-workers`` the nginx reload is measured with that many worker processes. Last, what
njs costs: 16 closed-loop clients (new connection per request, 3 s) through (e) and (e').

Run: ``.venv/bin/python bench/dataplane_pickup.py [--record dataplane-pickup]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _dataplane_load import closed_loop, one_request, wait_answered_by  # noqa: E402
from _dataplane_procs import PROXY, Launch, Relay, free_port  # noqa: E402
from _envoy_plane import envoy_command  # noqa: E402
from _polled_planes import nginx_files  # noqa: E402
from _report import Table, save  # noqa: E402
from tests.helpers.factories import inst  # noqa: E402

from proxy_failover.adapters.dataplanes.agent import DataPlaneError  # noqa: E402
from proxy_failover.adapters.dataplanes.envoy import EnvoyFileDataPlane  # noqa: E402
from proxy_failover.adapters.dataplanes.metrics import AgentMetrics  # noqa: E402
from proxy_failover.adapters.dataplanes.nginx import NginxDataPlane, NginxNjsDataPlane  # noqa: E402
from proxy_failover.core.dataplane import DesiredState, desired_state  # noqa: E402
from proxy_failover.core.nginx import render_upstreams  # noqa: E402

Apply = Callable[[DesiredState], Awaitable[None]]


def state_for(relays: dict[str, Relay], active: str, epoch: int) -> DesiredState:
    """The proxy's state with ``active`` active and the other relays eligible standbys."""
    instances = [
        inst(name, priority=n, endpoint=f"127.0.0.1:{relay.port}")
        for n, (name, relay) in enumerate(relays.items(), start=1)
    ]
    return desired_state(PROXY, instances, active, epoch, load_balanced=False)


def _clients_process(port: int, clients: int, go: Any, done: Any, sink: Any) -> None:
    """In a child process (the load must not share the apply's event loop): ``clients``
    closed-loop clients from ``go`` until ``done``, then every (start, answer) to ``sink``."""

    async def run() -> list[tuple[float, str | None]]:
        answers: list[tuple[float, str | None]] = []

        async def client() -> None:
            while not done.is_set():
                result = await one_request(port)
                answers.append((result.started, result.name))

        await asyncio.gather(*(client() for _ in range(clients)))
        return answers

    go.set()
    sink.send(asyncio.run(run()))
    sink.close()


async def switch_once(
    port: int, apply: Apply, state: DesiredState, old: str, new: str, clients: int, settle: float
) -> dict[str, float | None]:
    """One switch under ``clients`` closed-loop clients, who go on for ``settle`` s after the
    apply; times in ms from the apply's start."""
    context = multiprocessing.get_context("fork")
    go, done = context.Event(), context.Event()
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_clients_process, args=(port, clients, go, done, send))
    child.start()
    await asyncio.to_thread(go.wait, 5)
    await asyncio.sleep(0.15)
    began = time.time()
    await apply(state)
    applied = time.time()
    await asyncio.sleep(settle)
    done.set()
    answers: list[tuple[float, str | None]] = await asyncio.to_thread(receive.recv)
    await asyncio.to_thread(child.join, 10)
    after = [(t, name) for t, name in answers if t >= began]
    last_old = max((t for t, name in after if name == old), default=None)
    first_new = min((t for t, name in after if name == new), default=None)
    return {
        "apply_ms": (applied - began) * 1000,
        "pickup_ms": 0.0 if last_old is None else (last_old - began) * 1000,
        "first_new_ms": None if first_new is None else (first_new - began) * 1000,
        "errors": sum(1 for _, name in after if name is None),
        "requests": len(after),
    }


async def run_switches(
    port: int,
    apply: Apply,
    relays: dict[str, Relay],
    switches: int,
    clients: int,
    settle: float = 0.3,
) -> list[dict[str, float | None]]:
    order = list(relays)
    results = []
    for n in range(1, switches + 1):
        old, new = order[(n - 1) % 2], order[n % 2]
        await wait_answered_by(port, old)
        results.append(
            await switch_once(port, apply, state_for(relays, new, n + 1), old, new, clients, settle)
        )
        await asyncio.sleep(0.3)
    return results


def summary(plane: str, results: list[dict[str, Any]]) -> list[Any]:
    def stats(key: str) -> list[float | None]:
        values = sorted(r[key] for r in results if r[key] is not None)
        if not values:
            return [None, None, None]
        p90 = values[min(len(values) - 1, round(0.9 * (len(values) - 1)))]
        return [round(statistics.median(values), 2), round(p90, 2), round(values[-1], 2)]

    errors = sum(r["errors"] for r in results)
    requests = sum(r["requests"] for r in results)
    return [
        plane,
        len(results),
        *stats("apply_ms"),
        *stats("pickup_ms"),
        *stats("first_new_ms"),
        requests,
        errors,
    ]


async def main(switches: int, clients: int, workers: int, record_name: str | None) -> None:
    directory = Path(tempfile.mkdtemp(prefix="pfo-pickup-"))
    relays = {name: Relay(name) for name in ("edge-a", "edge-b")}
    launch = Launch(directory, [])
    metrics = AgentMetrics("bench")
    rows: list[list[Any]] = []
    cost: list[list[Any]] = []
    try:
        for relay in relays.values():
            relay.start()
        first = state_for(relays, "edge-a", 1)

        eds = directory / "eds"
        eds.mkdir()
        envoy_plane = EnvoyFileDataPlane(eds, metrics)
        await envoy_plane.apply(first)
        envoy_port = free_port()
        launch.start(
            envoy_command(
                directory,
                {"g_envoy_file": envoy_port},
                free_port(),
                ("127.0.0.1", 1),
                "",
                PROXY,
                1.0,
            ),
            "envoy.log",
        )
        await wait_answered_by(envoy_port, "edge-a")
        envoy = await run_switches(envoy_port, envoy_plane.apply, relays, switches, clients)
        rows.append(summary("(g) Envoy, file EDS", envoy))
        print(rows[-1], flush=True)

        nginx_port = free_port()
        command, upstreams, reload = nginx_files(directory, nginx_port)
        config = directory / "nginx.conf"
        config.write_text(
            config.read_text().replace("worker_processes 1;", f"worker_processes {workers};")
        )
        # The file nginx starts on; the plane finds it and reloads only on a change.
        upstreams.write_text(render_upstreams([("relays", first)]))
        maps = {PROXY: "relays"}
        launch.start(command, "nginx.log")
        await wait_answered_by(nginx_port, "edge-a")
        pid_file = directory / "nginx.pid"
        for how, plane in (
            ("--reload 'kill -HUP $(cat pid)'", NginxDataPlane(upstreams, maps, reload, metrics)),
            (
                "--reload-pid-file",
                NginxDataPlane(upstreams, maps, None, metrics, reload_pid_file=pid_file),
            ),
        ):
            nginx = await run_switches(nginx_port, plane.apply, relays, switches, clients, 0.8)
            rows.append(summary(f"(e) nginx stream, {workers} worker(s), {how}", nginx))
            print(rows[-1], flush=True)

        njs_port = free_port()
        njs_dir = directory / "njs"
        njs_dir.mkdir()
        command, upstreams, _reload = nginx_files(njs_dir, njs_port, njs=True)
        config = njs_dir / "nginx.conf"
        config.write_text(
            config.read_text().replace("worker_processes 1;", f"worker_processes {workers};")
        )
        njs_plane = NginxNjsDataPlane(
            upstreams, maps, None, metrics, reload_pid_file=njs_dir / "nginx.pid"
        )
        with contextlib.suppress(DataPlaneError):  # the files written; no nginx to signal yet
            await njs_plane.apply(first)
        launch.start(command, "nginx-njs.log")
        await wait_answered_by(njs_port, "edge-a")
        await njs_plane.apply(first)  # the reload that failed before nginx ran, done now
        reloads = njs_plane.reloads
        njs = await run_switches(njs_port, njs_plane.apply, relays, switches, clients)
        rows.append(summary(f"(e') nginx stream, {workers} worker(s), --mode njs", njs))
        print(rows[-1], flush=True)
        assert njs_plane.reloads == reloads, "a switch between eligible relays reloaded nginx"

        for label, port in (
            ("(e) nginx stream, reload mode", nginx_port),
            ("(e') nginx stream, --mode njs", njs_port),
            ("direct to the relay", relays["edge-a"].port),
        ):
            await wait_answered_by(port, "edge-a")
            loop = await closed_loop(port)
            cost.append(
                [label, loop["requests_per_s"], loop["p50_ms"], loop["p99_ms"], loop["errors"]]
            )
            print(cost[-1], flush=True)
    finally:
        launch.stop_all()
        for relay in relays.values():
            relay.kill()
    if record_name:
        save(
            record_name,
            title="Data planes' own pickup of a new state (no control plane)",
            tables=[
                Table(
                    title=f"{switches} switches under {clients} closed-loop clients; ms from the "
                    "apply's start",
                    columns=[
                        "data plane",
                        "switches",
                        "apply p50",
                        "apply p90",
                        "apply max",
                        "pickup p50",
                        "pickup p90",
                        "pickup max",
                        "first new p50",
                        "first new p90",
                        "first new max",
                        "requests",
                        "errors",
                    ],
                    rows=rows,
                ),
                Table(
                    title="what njs costs: 16 closed-loop clients, a new connection per "
                    "request, 3 s",
                    columns=["path", "requests/s", "p50 ms", "p99 ms", "errors"],
                    rows=cost,
                ),
            ],
            notes=[
                "pickup: the last request started after the apply began that the old relay "
                "still answered, minus that beginning (0: none did).",
                "apply: the agent's own apply (render, write, rename; nginx: and the reload "
                "signal), run in the benchmark's process on an in-memory state.",
            ],
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--switches", type=int, default=20, help="an even number")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--nginx-workers", type=int, default=1)
    parser.add_argument("--record", default=None, help="name of the JSON record (none: print)")
    arguments = parser.parse_args()
    asyncio.run(
        main(arguments.switches, arguments.clients, arguments.nginx_workers, arguments.record)
    )

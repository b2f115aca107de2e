"""Several ``proxy-failover serve`` replicas on one database: only the engine lease holder probes.

Real processes: two (then three) ``serve`` subprocesses, one real instance process that counts the
probes it receives, ``/metrics`` of each replica parsed with prometheus-client's parser. kill -9
of the leader hands the engine to a standby once the lease expires; a clean stop (SIGTERM)
releases it at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.api import SECRET, Tokens
from tests.helpers.processes import InstanceProcess, wait_for
from tests.helpers.serve import ServeProcess, start_serve, stop_serve

pytestmark = pytest.mark.slow

LEASE_SECONDS = "2"


def engine_figures(server: ServeProcess) -> tuple[bool, float]:
    """(holds the engine lease, probes its engine started) from the replica's ``/metrics``."""
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    found = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in ("pfo_engine_leader", "pfo_engine_probes_started_total")
    }
    return found["pfo_engine_leader"] == 1, found["pfo_engine_probes_started_total"]


def health_requests(instance: InstanceProcess) -> int:
    return int(instance.request("GET", "/stats")["healthRequests"])


@pytest.fixture
def instance() -> Iterator[InstanceProcess]:
    with InstanceProcess() as proc:
        yield proc


@pytest.fixture
def replicas(database_url: str, tmp_path: Path) -> Iterator[list[ServeProcess]]:
    """Two ``serve`` processes on one database, started one after the other; more can be added."""
    started: list[ServeProcess] = []

    def start(name: str) -> ServeProcess:
        env = {"PFO_JWT_SECRET": SECRET, "PFO_ENGINE_LEASE_SECONDS": LEASE_SECONDS}
        server = start_serve(database_url, tmp_path / f"{name}.log", env)
        started.append(server)
        return server

    start("first")
    start("second")
    try:
        yield started
    finally:
        for server in started:
            if server.proc.poll() is None:
                stop_serve(server)


async def test_only_the_lease_holder_probes_and_a_standby_takes_over(
    replicas: list[ServeProcess],
    instance: InstanceProcess,
    tokens: Tokens,
    database_url: str,
    tmp_path: Path,
) -> None:
    headers = {"Authorization": f"Bearer {tokens.alice}"}
    config = {"healthCheckIntervalSeconds": 0.2, "healthCheckTimeoutSeconds": 0.15}
    async with httpx.AsyncClient(base_url=replicas[1].url, headers=headers) as http:
        response = await http.post(
            "/proxy/failover/config", json={"proxyId": "edge", "config": config}
        )
        assert response.status_code == 201, response.text
        response = await http.post(
            "/proxy/instances",
            json={
                "proxyId": "edge",
                "instanceData": {"instanceName": "edge-a", "endpoint": instance.endpoint},
            },
        )
        assert response.status_code == 201, response.text

    async def sole_prober(servers: list[ServeProcess]) -> ServeProcess | None:
        """The one replica that leads and has probed a few times (the others never did)."""
        figures = await asyncio.gather(*(asyncio.to_thread(engine_figures, s) for s in servers))
        leading = [s for s, (leader, probes) in zip(servers, figures, strict=True) if leader]
        if len(leading) != 1:
            return None
        probes = dict(zip((s.url for s in servers), figures, strict=True))
        if probes[leading[0].url][1] < 5:
            return None
        assert all(probes[s.url][1] == 0 for s in servers if s is not leading[0])
        return leading[0]

    leader = await wait_for(lambda: sole_prober(replicas), within=20)
    assert leader is not None
    standby = next(s for s in replicas if s is not leader)
    # every probe the instance received came from the leader: the standby sends none
    received = health_requests(instance)
    _, leader_probes = await asyncio.to_thread(engine_figures, leader)
    assert 0 < received <= leader_probes
    assert (await asyncio.to_thread(engine_figures, standby)) == (False, 0)

    leader.proc.kill()  # kill -9: no release, the lease has to expire
    leader.proc.wait(timeout=5)
    survivor = await wait_for(lambda: sole_prober([standby]), within=20)
    assert survivor is standby
    before = health_requests(instance)
    await wait_for(lambda: asyncio.to_thread(lambda: health_requests(instance) > before))

    # a clean stop gives the lease back: the replica started now takes over from the survivor
    env = {"PFO_JWT_SECRET": SECRET, "PFO_ENGINE_LEASE_SECONDS": LEASE_SECONDS}
    newcomer = start_serve(database_url, tmp_path / "third.log", env)
    replicas.append(newcomer)
    assert (await asyncio.to_thread(engine_figures, newcomer)) == (False, 0)
    stop_serve(survivor)
    assert survivor.proc.returncode is not None
    assert "released the engine lease" in survivor.log.read_text()
    successor = await wait_for(lambda: sole_prober([newcomer]), within=20)
    assert successor is newcomer

"""The engine's own counters, schedule lag and leadership on ``/metrics``.

The app runs its engine (``create_app(..., run_engine=True)``, as ``serve`` does) against real
instance processes; ``/metrics`` is parsed with prometheus-client's own parser.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy_failover.adapters.metrics import Metrics
from proxy_failover.entrypoints.api import create_app
from proxy_failover.leadership import ENGINE_LEASE
from proxy_failover.store.leases import Leases
from tests.helpers.api import Api, Tokens, api_settings, in_process
from tests.helpers.processes import InstanceProcess, wait_for

pytestmark = pytest.mark.slow

PROXY = "edge-engine-metrics"
COUNTERS = (
    "pfo_engine_probes_started_total",
    "pfo_engine_probes_completed_total",
    "pfo_engine_probe_failures_total",
    "pfo_engine_evaluations_total",
    "pfo_engine_decisions_applied_total",
    "pfo_engine_inconclusive_probes_total",
    "pfo_engine_early_probes_total",
    "pfo_engine_connection_drops_total",
)


def scalars(text: str) -> dict[str, float]:
    """Label-less samples (and the lag histogram's buckets by ``le``) of one scrape."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.labels:
                found[sample.name] = sample.value
            elif sample.name == "pfo_engine_schedule_lag_seconds_bucket":
                found[f"{sample.name}:{sample.labels['le']}"] = sample.value
    return found


@pytest.fixture
def instances() -> Iterator[list[InstanceProcess]]:
    started = [InstanceProcess().start() for _ in range(2)]
    yield started
    for proc in started:
        proc.kill()


@pytest.fixture
async def engine_api(sqlite_url: str, tokens: Tokens) -> AsyncIterator[Api]:
    """The app with its engine running (the lease is free: this process leads at once)."""
    app = create_app(api_settings(sqlite_url), run_engine=True)
    async with in_process(app, tokens) as api:
        yield api


async def test_engine_counters_lag_and_leadership_move_as_the_engine_works(
    engine_api: Api, instances: list[InstanceProcess]
) -> None:
    api = engine_api
    token = api.tokens.alice
    config = {"healthCheckIntervalSeconds": 0.2, "healthCheckTimeoutSeconds": 0.15}
    config |= {"unhealthyThreshold": 2, "healthyThreshold": 2}
    await api.ok(
        "POST", "/proxy/failover/config", token, 201, json={"proxyId": PROXY, "config": config}
    )
    ids = []
    for n, proc in enumerate(instances):
        body = {"instanceName": f"e-{n}", "endpoint": proc.endpoint, "priority": n + 1}
        data = await api.ok(
            "POST", "/proxy/instances", token, 201, json={"proxyId": PROXY, "instanceData": body}
        )
        ids.append(data["id"])

    async def scrape() -> dict[str, float]:
        response = await api.call("GET", "/metrics")
        assert response.status_code == 200
        return scalars(response.text)

    async def activated() -> dict[str, float] | None:
        samples = await scrape()
        return samples if samples["pfo_engine_decisions_applied_total"] >= 1 else None

    before = await wait_for(activated)  # the first decision: activate e-0
    assert before is not None
    assert before["pfo_engine_leader"] == 1
    assert before["pfo_engine_probes_started_total"] >= 2
    assert before["pfo_engine_evaluations_total"] >= 1
    assert before["pfo_engine_schedule_lag_seconds_count"] >= 1
    assert (
        before["pfo_engine_schedule_lag_seconds_count"]
        == before["pfo_engine_schedule_lag_seconds_bucket:+Inf"]
    )

    instances[0].kill()  # the active one: its probes fail, its idle connection drops

    async def failed_over() -> dict[str, float] | None:
        samples = await scrape()
        return samples if samples["pfo_engine_decisions_applied_total"] >= 2 else None

    after = await wait_for(failed_over)
    assert after is not None
    redundancy = await api.ok("GET", f"/proxy/{PROXY}/redundancy", token)
    assert redundancy["activeInstanceId"] == ids[1]
    for grew in (
        "pfo_engine_probes_started_total",
        "pfo_engine_probes_completed_total",
        "pfo_engine_probe_failures_total",
        "pfo_engine_evaluations_total",
        "pfo_engine_schedule_lag_seconds_count",
    ):
        assert after[grew] > before[grew], grew
    assert after["pfo_engine_probes_completed_total"] <= after["pfo_engine_probes_started_total"]
    assert after["pfo_engine_schedule_lag_seconds_sum"] >= 0
    for name in COUNTERS:
        assert after[name] >= before[name], name


@dataclass
class Stats:
    """Counters as the engine keeps them (``EngineStats``), set by hand."""

    probes_started: int = 0
    probes_completed: int = 0
    probe_failures: int = 0
    evaluations: int = 0
    decisions_applied: int = 0
    inconclusive: int = 0
    early_probes: int = 0
    connection_drops: int = 0
    lags: deque[float] = field(default_factory=lambda: deque(maxlen=4))

    def start(self, *lags: float) -> None:
        for lag in lags:
            self.probes_started += 1
            self.lags.append(lag)


def test_lag_histogram_counts_each_started_probe_once_across_scrapes() -> None:
    stats, leading = Stats(), [False]
    metrics = Metrics()
    metrics.watch_engine(stats, lambda: leading[0])

    def scrape() -> dict[str, Any]:
        return scalars(metrics.render().decode())

    first = scrape()
    assert first["pfo_engine_leader"] == 0
    assert first["pfo_engine_schedule_lag_seconds_count"] == 0
    stats.start(0.0005, 0.003, 0.2)
    leading[0] = True
    second = scrape()
    assert second["pfo_engine_leader"] == 1
    assert second["pfo_engine_probes_started_total"] == 3
    assert second["pfo_engine_schedule_lag_seconds_count"] == 3
    assert second["pfo_engine_schedule_lag_seconds_bucket:0.001"] == 1
    assert second["pfo_engine_schedule_lag_seconds_bucket:0.005"] == 2
    assert second["pfo_engine_schedule_lag_seconds_bucket:0.25"] == 3
    assert second["pfo_engine_schedule_lag_seconds_sum"] == pytest.approx(0.2035)
    assert scrape()["pfo_engine_schedule_lag_seconds_count"] == 3  # nothing new: nothing added
    stats.start(20.0)
    third = scrape()
    assert third["pfo_engine_schedule_lag_seconds_count"] == 4
    assert third["pfo_engine_schedule_lag_seconds_bucket:10.0"] == 3
    assert third["pfo_engine_schedule_lag_seconds_bucket:+Inf"] == 4
    # more probes than the engine keeps lags for: only the kept ones are counted
    stats.start(0.01, 0.01, 0.01, 0.01, 0.01, 0.01)
    fourth = scrape()
    assert fourth["pfo_engine_probes_started_total"] == 10
    assert fourth["pfo_engine_schedule_lag_seconds_count"] == 8


async def test_api_only_replica_runs_no_engine_and_takes_no_lease(
    sqlite_url: str, tokens: Tokens
) -> None:
    app = create_app(api_settings(sqlite_url, engine_enabled=False), run_engine=True)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as http,
    ):
        assert app.state.runtime.engine is None
        assert (await http.get("/readyz")).status_code == 200
        samples = scalars((await http.get("/metrics")).text)
        leases = Leases(app.state.runtime.store.engine)
        assert await leases.holder_of(ENGINE_LEASE) is None
    assert "pfo_engine_leader" not in samples
    assert "pfo_engine_probes_started_total" not in samples

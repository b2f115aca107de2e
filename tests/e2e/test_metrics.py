"""``/metrics`` scraped over HTTP and parsed with prometheus-client's own parser."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client.parser import text_string_to_metric_families

from proxy_failover.adapters.metrics import Metrics, ObservedProber
from proxy_failover.adapters.probes import Prober
from proxy_failover.core.model import FailoverConfig, Instance, Notification
from tests.helpers.api import Api
from tests.helpers.live_app import fail_over, setup_proxy
from tests.helpers.processes import free_port

PROXY = "edge-metrics"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def test_scrape_after_a_failover_shows_state_counts_and_timings(
    sqlite_api: Api,
) -> None:
    api = sqlite_api
    first, second = await setup_proxy(api, PROXY, "edge-a", "edge-b")
    await api.ok(
        "POST",
        f"/proxy/{PROXY}/webhooks",
        api.tokens.alice,
        201,
        json={"url": f"http://127.0.0.1:{free_port()}/x", "secret": "s" * 16},
    )
    await fail_over(api, PROXY, None, first)
    await fail_over(api, PROXY, first, second)
    await api.ok(
        "PUT",
        f"/proxy/instances/{first}/health",
        api.tokens.alice,
        json={"healthStatus": "unhealthy"},
    )

    response = await api.call("GET", "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = parse(response.text)

    assert value(samples, "pfo_proxy_epoch", proxy_id=PROXY) == 2
    assert value(samples, "pfo_proxy_instances", proxy_id=PROXY) == 2
    assert value(samples, "pfo_proxy_healthy_instances", proxy_id=PROXY) == 1
    assert value(samples, "pfo_proxy_degraded", proxy_id=PROXY) == 1
    ids = {"edge-a": first, "edge-b": second}
    for name, instance_id in ids.items():
        labels = {"proxy_id": PROXY, "instance_id": instance_id, "instance_name": name}
        assert value(samples, "pfo_instance_active", **labels) == (name == "edge-b")
    a_labels = {"proxy_id": PROXY, "instance_id": first, "instance_name": "edge-a"}
    assert value(samples, "pfo_instance_health", status="unhealthy", **a_labels) == 1
    assert value(samples, "pfo_instance_health", status="healthy", **a_labels) == 0
    completed = {"proxy_id": PROXY, "type": "failover", "outcome": "completed"}
    assert value(samples, "pfo_failovers_total", **completed) == 1
    switch = {"proxy_id": PROXY, "type": "switchover", "outcome": "completed"}
    assert value(samples, "pfo_failovers_total", **switch) == 1
    assert value(samples, "pfo_failover_switch_seconds_count", proxy_id=PROXY) == 2
    last_switch = value(samples, "pfo_failover_last_switch_seconds", proxy_id=PROXY)
    assert last_switch is not None
    assert last_switch >= 0
    # every commit queued a delivery to a receiver that is not there: all still pending
    backlog = value(samples, "pfo_webhook_backlog", proxy_id=PROXY)
    assert backlog is not None
    assert backlog >= 5
    execute = {"method": "POST", "route": "/proxy/failover/execute", "status": "200"}
    assert value(samples, "pfo_http_requests_total", **execute) == 2
    assert (
        value(
            samples,
            "pfo_http_request_duration_seconds_count",
            method="POST",
            route="/proxy/failover/execute",
        )
        == 2
    )


def test_each_app_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()  # the global registry would refuse the second
    first.observe_http("GET", "/x", 200, 0.01)
    assert value(parse(first.render().decode()), "pfo_http_requests_total", method="GET",
                 route="/x", status="200") == 1  # fmt: skip
    assert value(parse(second.render().decode()), "pfo_http_requests_total", method="GET",
                 route="/x", status="200") is None  # fmt: skip


async def test_time_to_detect_runs_from_first_failed_probe_to_unhealthy() -> None:
    """Real probes against a closed port, then the service's notifications, in order."""
    metrics = Metrics()
    prober = ObservedProber(Prober(), metrics)
    instance = Instance(
        id="i-1", proxy_id=PROXY, user_id="alice", instance_name="edge-a",
        endpoint=f"127.0.0.1:{free_port()}",
    )  # fmt: skip
    config = FailoverConfig(proxy_id=PROXY, user_id="alice", health_check_timeout_seconds=1.0)
    target = prober.prepare(instance, config)
    started = datetime.now(UTC)
    for _ in range(3):
        assert not (await prober.probe(target)).success
    await prober.aclose()
    unhealthy_at = started + timedelta(seconds=4)
    metrics.observe_notifications(
        PROXY, [Notification("instance.unhealthy", PROXY, 3, unhealthy_at, {"instanceId": "i-1"})]
    )
    metrics.observe_notifications(
        PROXY,
        [
            Notification(
                "failover.completed",
                PROXY,
                4,
                unhealthy_at,
                {"eventType": "failover", "sourceInstanceId": "i-1", "durationMs": 250},
            )
        ],
    )
    samples = parse(metrics.render().decode())
    assert value(samples, "pfo_probes_total", proxy_id=PROXY, result="failure") == 3
    assert value(samples, "pfo_probe_duration_seconds_count", proxy_id=PROXY) == 3
    detect = value(samples, "pfo_failover_last_detect_seconds", proxy_id=PROXY)
    assert detect is not None
    assert 3.9 <= detect <= 4.0  # from the first failed probe's start
    assert value(samples, "pfo_failover_last_switch_seconds", proxy_id=PROXY) == 0.25
    assert value(samples, "pfo_failover_detect_seconds_count", proxy_id=PROXY) == 1

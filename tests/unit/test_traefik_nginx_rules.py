"""core.traefik and core.nginx: the state → configuration rules of the polled and the rendered
data planes (Traefik's HTTP provider, nginx upstream blocks)."""

from __future__ import annotations

import pytest

from proxy_failover.core.dataplane import desired_state
from proxy_failover.core.model import AdminState, HealthStatus, ServerScheme
from proxy_failover.core.nginx import HEADER, render_upstream, render_upstreams
from proxy_failover.core.traefik import service_name, traefik_configuration
from tests.helpers.factories import PROXY, inst

A, B, C = (
    inst("a", priority=1, endpoint="10.0.0.1:1935"),
    inst("b", priority=2, endpoint="http://10.0.0.2:8080/health"),
    inst("c", priority=3, traffic_address="[fd00::3]:1935"),
)


def test_traefik_one_server_the_active_instance_for_http_and_tcp() -> None:
    state = desired_state(PROXY, [A, B, C], "b", 4, load_balanced=False)
    config = traefik_configuration([state], standby=False)
    name = f"pfo-{PROXY}"
    assert config == {
        "http": {
            "services": {name: {"loadBalancer": {"servers": [{"url": "http://10.0.0.2:8080"}]}}}
        },
        "tcp": {"services": {name: {"loadBalancer": {"servers": [{"address": "10.0.0.2:8080"}]}}}},
    }
    https = traefik_configuration([state], scheme=ServerScheme.HTTPS, standby=False)
    assert https["http"]["services"][name]["loadBalancer"]["servers"] == [
        {"url": "https://10.0.0.2:8080"}
    ]


def test_traefik_http_service_fails_over_to_the_standbys_in_preference_order() -> None:
    state = desired_state(PROXY, [A, B, C], "b", 4, load_balanced=False)
    config = traefik_configuration([state], scheme=ServerScheme.HTTPS)
    name = service_name(PROXY)
    errors = {"status": ["502", "504"]}
    assert config["http"]["services"] == {
        name: {
            "failover": {"service": f"{name}-b", "fallback": f"{name}-standby-1", "errors": errors}
        },
        f"{name}-standby-1": {
            "failover": {"service": f"{name}-a", "fallback": f"{name}-c", "errors": errors}
        },
        f"{name}-a": {"loadBalancer": {"servers": [{"url": "https://10.0.0.1:1935"}]}},
        f"{name}-b": {"loadBalancer": {"servers": [{"url": "https://10.0.0.2:8080"}]}},
        f"{name}-c": {"loadBalancer": {"servers": [{"url": "https://[fd00::3]:1935"}]}},
    }
    # TCP has no failover service in Traefik: the active instance alone.
    assert config["tcp"]["services"] == {
        name: {"loadBalancer": {"servers": [{"address": "10.0.0.2:8080"}]}}
    }
    # One standby: one link; unhealthy or disabled instances are no standby.
    two = desired_state(
        PROXY,
        [A, B, inst("c", priority=3, endpoint="10.0.0.3:1", health=HealthStatus.UNHEALTHY)],
        "a",
        4,
        load_balanced=False,
    )
    services = traefik_configuration([two])["http"]["services"]
    assert services[name] == {
        "failover": {"service": f"{name}-a", "fallback": f"{name}-b", "errors": errors}
    }
    assert set(services) == {name, f"{name}-a", f"{name}-b"}
    # No standby at all: the plain one-server load balancer.
    alone = desired_state(PROXY, [A], "a", 4, load_balanced=False)
    assert traefik_configuration([alone])["http"]["services"] == {
        name: {"loadBalancer": {"servers": [{"url": "http://10.0.0.1:1935"}]}}
    }


def test_traefik_no_active_instance_is_an_empty_load_balancer() -> None:
    state = desired_state(PROXY, [A, B], None, 0, load_balanced=False)
    config = traefik_configuration([state])
    assert config["http"]["services"] == {f"pfo-{PROXY}": {"loadBalancer": {"servers": []}}}
    balanced = desired_state(
        PROXY, [inst("a", health=HealthStatus.UNHEALTHY)], None, 0, load_balanced=True
    )
    assert traefik_configuration([balanced])["tcp"]["services"] == {
        f"pfo-{PROXY}": {"loadBalancer": {"servers": []}}
    }


def test_traefik_load_balancing_is_a_weighted_service_over_one_service_per_instance() -> None:
    instances = [
        inst("a", weight=300, endpoint="10.0.0.1:80"),
        inst("b", weight=100, endpoint="10.0.0.2:80"),
        inst("c", weight=100, endpoint="10.0.0.3:80", health=HealthStatus.UNHEALTHY),
        inst("d", weight=0, endpoint="10.0.0.4:80"),
    ]
    state = desired_state(PROXY, instances, "a", 1, load_balanced=True)
    services = traefik_configuration([state])["tcp"]["services"]
    assert services[service_name(PROXY)] == {
        "weighted": {
            "services": [
                {"name": service_name(PROXY, "a"), "weight": 300},
                {"name": service_name(PROXY, "b"), "weight": 100},
            ]
        }
    }
    assert services[service_name(PROXY, "b")] == {
        "loadBalancer": {"servers": [{"address": "10.0.0.2:80"}]}
    }
    assert set(services) == {service_name(PROXY), *(service_name(PROXY, i) for i in "ab")}


def test_traefik_several_proxies_and_instances_without_an_address() -> None:
    first = desired_state("one", [inst("x")], "x", 1, load_balanced=False)  # no address
    second = desired_state("two", [A], "a", 1, load_balanced=False)
    services = traefik_configuration([first, second], standby=False)["http"]["services"]
    assert services == {
        "pfo-one": {"loadBalancer": {"servers": []}},
        "pfo-two": {"loadBalancer": {"servers": [{"url": "http://10.0.0.1:1935"}]}},
    }
    assert traefik_configuration([]) == {"http": {"services": {}}, "tcp": {"services": {}}}


def test_nginx_active_first_eligible_others_backup_ineligible_down() -> None:
    d = inst("d", priority=4, endpoint="10.0.0.4:1935", admin=AdminState.MAINTENANCE)
    state = desired_state(PROXY, [A, B, C, d], "b", 9, load_balanced=False)
    assert render_upstream("relays", state) == (
        f"# proxy {PROXY}\n"
        "upstream relays {\n"
        "    server 10.0.0.2:8080;  # b (active)\n"
        "    server 10.0.0.1:1935 backup;  # a (standby)\n"
        "    server [fd00::3]:1935 backup;  # c (standby)\n"
        "    server 10.0.0.4:1935 down;  # d (not eligible)\n"
        "}\n"
    )


def test_nginx_no_serving_instance_marks_every_server_down() -> None:
    # nginx refuses an upstream of backups alone: without an active instance all are down.
    state = desired_state(PROXY, [A, B], None, 0, load_balanced=False)
    text = render_upstream("relays", state)
    assert "backup" not in text
    assert text.count(" down;") == 2
    empty = desired_state(PROXY, [inst("x")], "x", 1, load_balanced=False)
    assert "server 127.0.0.1:1 down;" in render_upstream("relays", empty)


def test_nginx_load_balancing_gives_weights_and_no_backups() -> None:
    instances = [
        inst("a", weight=300, endpoint="10.0.0.1:80"),
        inst("b", endpoint="10.0.0.2:80", health=HealthStatus.UNHEALTHY),
        inst("c", weight=100, endpoint="10.0.0.3:80"),
    ]
    state = desired_state(PROXY, instances, "a", 1, load_balanced=True)
    lines = render_upstream("lb", state).splitlines()
    assert lines[2:5] == [
        "    server 10.0.0.1:80 weight=300;  # a (active)",
        "    server 10.0.0.3:80 weight=100;  # c (serving)",
        "    server 10.0.0.2:80 down;  # b (not eligible)",
    ]


def test_nginx_file_is_deterministic_and_names_are_checked() -> None:
    one = desired_state("one", [A], "a", 1, load_balanced=False)
    two = desired_state("two", [B], "b", 1, load_balanced=False)
    text = render_upstreams([("up_one", one), ("up_two", two)])
    assert text.startswith(HEADER)
    assert text.index("upstream up_one {") < text.index("upstream up_two {")
    # a new epoch that moves no traffic renders the same text: no reload
    again = desired_state("one", [A], "a", 2, load_balanced=False)
    assert render_upstreams([("up_one", again), ("up_two", two)]) == text
    with pytest.raises(ValueError, match="invalid nginx upstream name"):
        render_upstream("bad name;", one)

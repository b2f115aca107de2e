"""``pfo_agent_*`` Prometheus metrics of a data-plane agent or forwarder, served on --metrics-port.

One registry per agent process (not the global one), so tests can run several agents side by side.
Under ``forward --workers`` each worker writes prometheus_client's multiprocess files and the
parent serves them together (``dataplanes.workers``): every gauge says how its workers' values
combine (open connections: the sum; "up", epochs and timestamps: the least, so one lagging
worker shows); counters and histograms add up.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)


class AgentMetrics:
    """What an operator needs to trust (or distrust) the traffic path."""

    def __init__(self, data_plane: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        info = Gauge(
            "pfo_agent_info",
            "The agent's data plane",
            ["data_plane"],
            registry=r,
            multiprocess_mode="livemax",
        )
        info.labels(data_plane).set(1)
        self.control_plane_up = Gauge(
            "pfo_agent_control_plane_up",
            "1 when the last read of the desired state succeeded; 0 = keeping the last known state",
            ["proxy_id"],
            registry=r,
            multiprocess_mode="livemin",
        )
        self.data_plane_up = Gauge(
            "pfo_agent_data_plane_up",
            "1 when the last apply to the data plane succeeded",
            ["proxy_id"],
            registry=r,
            multiprocess_mode="livemin",
        )
        self.stream_up = Gauge(
            "pfo_agent_stream_up",
            "1 while the event stream of the proxy is connected",
            ["proxy_id"],
            registry=r,
            multiprocess_mode="livemin",
        )
        self.applied_epoch = Gauge(
            "pfo_agent_applied_epoch",
            "Epoch of the state last applied",
            ["proxy_id"],
            registry=r,
            multiprocess_mode="livemin",
        )
        self.last_applied = Gauge(
            "pfo_agent_last_applied_timestamp_seconds",
            "Unix time of the last successful apply",
            ["proxy_id"],
            registry=r,
            multiprocess_mode="livemin",
        )
        self.last_fetched = Gauge(
            "pfo_agent_last_fetch_timestamp_seconds",
            "Unix time the desired state was last read from the control plane",
            ["proxy_id"],
            registry=r,
            multiprocess_mode="livemin",
        )
        self.applies = Counter(
            "pfo_agent_applies",
            "Successful applies of the desired state, by what triggered them",
            ["proxy_id", "trigger"],
            registry=r,
        )
        self.apply_failures = Counter(
            "pfo_agent_apply_failures",
            "Applies the data plane refused or could not be reached for",
            ["proxy_id"],
            registry=r,
        )
        self.fetch_failures = Counter(
            "pfo_agent_fetch_failures",
            "Failed reads of the desired state from the control plane",
            ["proxy_id"],
            registry=r,
        )
        self.stale_ignored = Counter(
            "pfo_agent_stale_ignored",
            "States or events ignored because their epoch was older than the applied one",
            ["proxy_id"],
            registry=r,
        )
        self.stream_connects = Counter(
            "pfo_agent_stream_connects",
            "Connections of the event stream (the first and every reconnect)",
            ["proxy_id"],
            registry=r,
        )
        self.event_apply = Histogram(
            "pfo_agent_event_apply_seconds",
            "From a stream event's arrival to the data plane having applied what it told (a move, "
            "a health change): the agent's own part of the follow time",
            ["proxy_id"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.switches = Counter(
            "pfo_agent_switches",
            "Instances that stopped taking traffic, by what happened to their open connections",
            ["proxy_id", "policy"],
            registry=r,
        )
        self.open_connections = Gauge(
            "pfo_agent_open_connections",
            "Open client connections per instance (forwarder)",
            ["proxy_id", "instance"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.connections = Counter(
            "pfo_agent_connections",
            "Client connections forwarded per instance (forwarder)",
            ["proxy_id", "instance"],
            registry=r,
        )
        self.connect_failures = Counter(
            "pfo_agent_connect_failures",
            "Failed connects to an instance, each reported as a failed check (forwarder)",
            ["proxy_id", "instance"],
            registry=r,
        )
        self.redispatches = Counter(
            "pfo_agent_redispatches",
            "Connections retried on another instance after a failed connect (forwarder)",
            ["proxy_id"],
            registry=r,
        )
        self.refused = Counter(
            "pfo_agent_refused_connections",
            "Client connections closed because no instance could take them (forwarder)",
            ["proxy_id"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Serve ``/metrics`` on ``host:port`` from a daemon thread (prometheus_client's server)."""
        start_http_server(port, addr=host, registry=self.registry)

"""The engine's tuning, as one frozen object (``bootstrap`` builds it; tests shorten its times).

The defaults are what ``serve`` runs; each says why it has its value. SPEC's own timing rule
(every proxy evaluated at least once a second) is ``MAX_EVALUATION_PERIOD``, not a setting.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from proxy_failover.core.retention import RetentionPolicy

#: Every proxy is evaluated at least this often (SPEC §4), more often when its interval is shorter.
MAX_EVALUATION_PERIOD = 1.0


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """How the engine paces its work. Times in seconds."""

    #: The first probe of a newly seen instance starts within this (spread, not a burst); the
    #: first evaluations of newly seen proxies are spread over it too.
    first_probe_spread: float = 1.0
    #: How often stale in-progress switch events are looked for (they only matter after 300 s).
    stale_check_period: float = 5.0
    #: How often the set of proxies is re-read, in case a change callback was missed.
    discovery_period: float = 1.0
    #: ``run()`` starts the probes due within this window together (added schedule lag that buys
    #: an order of magnitude fewer loop turns at 10,000 probes/s).
    batch_window: float = 0.005
    #: Periodic evaluations due within this of each other are made in the same tick, with one
    #: read of the change counters: evaluating a proxy up to this much early costs nothing, while
    #: 100 proxies at random phases made ~100 counter reads a second (one per evaluation).
    evaluation_window: float = 0.05
    #: Routine results (a success on a steadily healthy instance) are recorded together at most
    #: this long after the first of them ...
    flush_window: float = 0.25
    #: ... and at most this share of the instance's interval (a probe stays in flight until
    #: recorded: a longer wait would stretch short intervals and mute early probes) ...
    flush_interval_share: float = 0.25
    #: ... or at once when this many are pending. A result that may move a state goes at once.
    flush_size: int = 2000
    #: At most this many results per transaction (on SQLite a transaction runs on the loop).
    flush_chunk: int = 500
    #: Flushes that may run at once, each over proxies no other running flush holds (so they
    #: never wait on each other's row locks). 1 on SQLite (one writer at a time anyway); more
    #: on PostgreSQL, where a transaction's time is mostly round trips (``bootstrap`` decides).
    concurrent_flushes: int = 1
    #: Each probe comes up to this share of its interval early (uniform), never late: no lock-step
    #: across instances, and the interval stays the longest gap between probes.
    jitter: float = 0.10
    #: A probe starting this late (or half its interval, if more) means the engine is overloaded.
    overload_lag: float = 0.25
    #: Pace of first probes (new connections) at a cold start: 10,000 instances start over 5 s ...
    first_probes_per_second: float = 2000.0
    #: ... after a first burst of this many, which start at once (within the first-probe spread).
    first_probe_burst: int = 500
    #: An early probe (after a dropped keep-alive connection) waits at least this share of the
    #: interval since the last probe, so a server that closes idle connections cannot cause a storm.
    early_probe_gap: float = 0.25
    #: After this many early probes in a row found the instance fine, drops no longer trigger them.
    max_benign_drops: int = 2
    #: What history is kept (``PFO_RETENTION_DAYS``, ``PFO_DELIVERY_RETENTION_DAYS``); the leader
    #: prunes one batch per table this often ...
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)
    retention_period: float = 60.0
    #: ... and this soon again while a table had a full batch (a backlog: more is waiting).
    retention_backlog_period: float = 1.0

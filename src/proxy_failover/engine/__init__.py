"""The health and failover engine: probes instances on schedule and applies one decision per proxy.

Split by job: ``schedule`` (when each instance is probed), ``recording`` (running probes and
recording their results in batches), ``recovery`` (SPEC §5 recovery actions) and the
``coordinator`` that ticks them; ``settings`` is its tuning, ``ports`` what it needs and gives.
"""

from proxy_failover.engine.coordinator import Engine, can_change_decision
from proxy_failover.engine.ports import EngineService, EngineStats, Outcome, ProbeAdapter
from proxy_failover.engine.settings import MAX_EVALUATION_PERIOD, EngineSettings

__all__ = [
    "MAX_EVALUATION_PERIOD",
    "Engine",
    "EngineService",
    "EngineSettings",
    "EngineStats",
    "Outcome",
    "ProbeAdapter",
    "can_change_decision",
]

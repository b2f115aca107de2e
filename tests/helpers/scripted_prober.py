"""A prober whose answers a test scripts: the engine's probes without sockets, on a fake clock."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from typing import Any

from proxy_failover.core.model import CheckResult, FailoverConfig, Instance
from tests.helpers.clock import FakeClock


class ScriptedProber:
    """Answers each instance's probes from its script (True = success); default: success."""

    def __init__(self) -> None:
        self.script: dict[str, list[bool]] = defaultdict(list)
        self.down: set[str] = set()
        self.calls: list[tuple[str, datetime]] = []
        self.recovery_posts: list[tuple[str, dict[str, Any]]] = []
        self.forgotten: list[str] = []
        self.clock: FakeClock | None = None
        self.on_connection_lost: Callable[[str], None] | None = None
        self.duration = 0.0

    def prepare(self, instance: Instance, config: FailoverConfig) -> Any:
        if not instance.endpoint or instance.endpoint == "bad":
            raise ValueError("no usable endpoint")
        return instance.id

    async def probe(self, target: Any) -> CheckResult:
        assert self.clock is not None
        self.calls.append((target, self.clock.now))
        self.clock.advance(self.duration)  # a slow answer (a timeout when >= the timeout)
        planned = self.script[target]
        ok = planned.pop(0) if planned else target not in self.down
        return CheckResult(ok, 1.0, None if ok else "connection refused")

    def forget(self, instance_id: str) -> None:
        self.forgotten.append(instance_id)

    async def request_recovery(
        self, url: str, payload: dict[str, Any], timeout_s: float
    ) -> CheckResult:
        self.recovery_posts.append((url, payload))
        return CheckResult(True, 1.0)

    def probed_ids(self) -> set[str]:
        return {c[0] for c in self.calls}

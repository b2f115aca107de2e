"""A prober that answers from a script instead of the network, for engine tests on a fake clock.

It is the edge fake of ``engine.ports.ProbeAdapter``: which probe succeeds, how long it takes and
which recovery POSTs were sent. Every rule stays in the real engine and service.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

from proxy_failover.core.model import CheckResult, FailoverConfig, Instance


class _Clock(Protocol):
    now: datetime


class ScriptedProber:
    """Answers each instance's probes from its script (True = success); default: success.

    Probes are always awaited (``start`` never finds a pooled connection), and take ``duration``
    seconds of the fake clock (a timeout when at least the instance's timeout).
    """

    def __init__(self, clock: _Clock) -> None:
        self.clock = clock
        self.script: dict[str, list[bool]] = defaultdict(list)
        self.down: set[str] = set()
        self.calls: list[tuple[str, datetime]] = []
        self.recovery_posts: list[tuple[str, dict[str, Any]]] = []
        self.forgotten: list[str] = []
        self.on_connection_lost: Callable[[str], None] | None = None
        self.duration = 0.0
        #: Probes of these instances wait until their event is set (an answer still in flight).
        self.held: dict[str, asyncio.Event] = {}

    def prepare(self, instance: Instance, config: FailoverConfig) -> Any:
        if not instance.endpoint or instance.endpoint.startswith("unprobeable"):
            raise ValueError("no usable endpoint")
        return instance.id

    def start(self, target: Any, on_result: Callable[[CheckResult], None]) -> bool:
        return False  # no pooled connections here: every probe is awaited

    async def probe(self, target: Any) -> CheckResult:
        self.calls.append((target, self.clock.now))
        if (gate := self.held.get(target)) is not None:
            await gate.wait()
        self.clock.now += timedelta(seconds=self.duration)  # a slow answer
        planned = self.script[target]
        ok = planned.pop(0) if planned else target not in self.down
        return CheckResult(ok, 1.0, None if ok else "connection refused")

    def forget(self, instance_id: str) -> None:
        self.forgotten.append(instance_id)

    async def request_recovery(
        self, url: str, payload: dict[str, Any], timeout_s: float, *, trusted: bool
    ) -> CheckResult:
        self.recovery_posts.append((url, payload))
        return CheckResult(True, 1.0)

    def probed_ids(self) -> set[str]:
        return {c[0] for c in self.calls}

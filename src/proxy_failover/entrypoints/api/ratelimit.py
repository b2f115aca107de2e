"""Per-caller rate limits in front of the API: 429/022 with ``Retry-After`` in the error envelope.

A pure ASGI guard, outside routing (the short paths too): it names the caller (the JWT's ``sub``
when the token is valid, else the client's address), sorts the request into one of three budgets
and charges it to ``core.ratelimit``'s bucket of that caller and budget:

* ``requests``: every call, one token each;
* ``heavy``: the event, audit and delivery lists additionally cost the rows they return: one
  is let in while the caller's budget is not in debt, charged its ``limit`` at once (so many
  sent together cannot all pass on one token) and refunded what it did not list once served (a
  route leaves the count in ``scope["state"][LISTED_ROWS]``). One greedy reader cannot keep the
  database and the event loop busy, while polling a short list stays cheap;
* ``reports``: health reports, raw checks and metric samples have a budget of their own, so a
  busy reporter is never starved by its own reads and never starves the others.

Liveness, readiness and metrics are never limited: orchestrators and scrapers must always get in.
A refused request writes no audit row and reaches no route. Settings: ``PFO_RATE_LIMIT_*``.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from proxy_failover.config import Settings
from proxy_failover.core.errors import ErrorCode
from proxy_failover.core.ratelimit import Rate, RateLimiter, Verdict
from proxy_failover.entrypoints.api.auth import Caller, TokenVerifier
from proxy_failover.entrypoints.api.errors import error_payload

#: Paths no limit applies to.
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
#: Where a heavy read's route leaves how many rows it listed (``request.state.listed_rows``).
LISTED_ROWS = "listed_rows"

_ID = r"[^/]+"
#: Heavy reads, the lists that grow: (pattern, the route's default ``limit``).
_HEAVY: tuple[tuple[re.Pattern[str], int], ...] = (
    (re.compile(rf"^/proxy/{_ID}/failover/events$"), 50),
    (re.compile(rf"^/proxy/{_ID}/webhooks/deliveries$"), 50),
    (re.compile(r"^/audit$"), 100),
)
_LIMIT = re.compile(rb"(?:^|&)limit=(\d{1,4})(?:&|$)")
_REPORTS = re.compile(rf"^/proxy/instances/{_ID}/(health|checks|metrics)$")
_REPORT_METHODS = frozenset({"PUT", "POST"})


@dataclass(frozen=True, slots=True)
class RateLimits:
    """The three budgets and the admins' factor; ``enabled`` False turns the guard off."""

    requests: Rate
    heavy_rows: Rate
    reports: Rate
    admin_factor: float = 10.0

    @property
    def enabled(self) -> bool:
        return not self.requests.is_unlimited

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimits:
        return cls(
            requests=Rate(settings.rate_limit_per_second, settings.rate_limit_burst),
            heavy_rows=Rate(
                settings.rate_limit_heavy_rows_per_second, settings.rate_limit_heavy_rows_burst
            ),
            reports=Rate(settings.rate_limit_reports_per_second, settings.rate_limit_reports_burst),
            admin_factor=settings.rate_limit_admin_factor,
        )


def requested_rows(method: str, path: str, query_string: bytes) -> int:
    """The rows a read of a list that grows asks for (its ``limit``, else the route's default;
    at most 1,000), 0 for any other request. An unreadable ``limit`` counts as the default: the
    route answers it 400, and refunds it."""
    if method != "GET":
        return 0
    for pattern, default in _HEAVY:
        if pattern.match(path):
            found = _LIMIT.search(query_string)
            asked = int(found.group(1)) if found else default
            return min(asked, 1000) if asked > 0 else default
    return 0


class RateLimitMiddleware:
    """Charges every request to its caller's budgets; answers 429/022 when one is spent."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limits: RateLimits,
        verifier: TokenVerifier,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.limits = limits
        self.verifier = verifier
        self.clock = clock
        self.limiter = RateLimiter()
        factor = limits.admin_factor
        self._admin = RateLimits(
            limits.requests.scaled(factor),
            limits.heavy_rows.scaled(factor),
            limits.reports.scaled(factor),
            factor,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.limits.enabled or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        caller = await self._caller(scope)
        if caller is None:
            client = scope.get("client")
            who: str = f"address {client[0] if client else 'unknown'}"
            limits = self.limits
        else:
            who = f"caller {caller.user_id}"
            limits = self._admin if caller.is_admin else self.limits
        estimate = requested_rows(scope["method"], scope["path"], scope["query_string"])
        verdict, budget = self._admit(scope, who, limits, estimate)
        if not verdict.allowed:
            await _refuse(send, verdict, budget, who)
            return
        if not estimate:
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        try:
            await self.app(scope, receive, send)
        finally:  # settle: what it listed (nothing, if it failed) instead of what it asked
            rows = state.pop(LISTED_ROWS, 0)
            self.limiter.charge(("heavy", who), limits.heavy_rows, rows - estimate, self.clock())

    def _admit(
        self, scope: Scope, who: str, limits: RateLimits, estimate: int
    ) -> tuple[Verdict, str]:
        """The verdict and the budget it came from; a heavy read must pass both its request
        budget and (not in debt) its rows budget."""
        now = self.clock()
        path: str = scope["path"]
        if scope["method"] in _REPORT_METHODS and _REPORTS.match(path):
            return self.limiter.check(("reports", who), limits.reports, 1, now), "reports"
        verdict = self.limiter.check(("requests", who), limits.requests, 1, now)
        if verdict.allowed and estimate:
            heavy = limits.heavy_rows
            return self.limiter.admit(("heavy", who), heavy, estimate, now), "heavy"
        return verdict, "requests"

    async def _caller(self, scope: Scope) -> Caller | None:
        """The token's caller when it is valid (verified tokens are cached), else None."""
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                if scheme.lower() != "bearer" or not token.strip():
                    return None
                try:
                    return await self.verifier.verify(token.strip())
                except Exception:  # the route answers 401; limited by address meanwhile
                    return None
        return None


def retry_after(verdict: Verdict) -> int:
    """Whole seconds for ``Retry-After`` (HTTP has no fractions), at least 1."""
    return max(1, math.ceil(verdict.retry_after_seconds))


async def _refuse(send: Send, verdict: Verdict, budget: str, who: str) -> None:
    seconds = retry_after(verdict)
    payload = error_payload(
        ErrorCode.TOO_MANY_REQUESTS,
        f"rate limit of {who} reached ({budget}); retry after {seconds} s",
        {"limit": budget, "retryAfterSeconds": seconds},
    )
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(seconds).encode()),
    ]
    start: dict[str, Any] = {"type": "http.response.start", "status": 429, "headers": headers}
    await send(start)
    await send({"type": "http.response.body", "body": body})

"""Per-caller rate limits: the token-bucket rule, pure, with ``now`` always passed in.

A bucket holds up to ``burst`` tokens and refills at ``per_second``; a request costs tokens and
passes only if the bucket holds them all, otherwise it is refused with how long until it would
pass (``Retry-After``). Refused requests take nothing, so a client that waits as told gets in.
The API keeps one bucket per caller and kind of request (``entrypoints/api/ratelimit.py``).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Rate:
    """``per_second`` tokens added per second, at most ``burst`` held; ``per_second <= 0`` means
    no limit."""

    per_second: float
    burst: float

    @property
    def is_unlimited(self) -> bool:
        return self.per_second <= 0

    def scaled(self, factor: float) -> Rate:
        """The same rate ``factor`` times as generous (admins)."""
        return Rate(self.per_second * factor, self.burst * factor)


@dataclass(frozen=True, slots=True)
class Bucket:
    """``tokens`` held at time ``updated`` (seconds of the caller's monotonic clock)."""

    tokens: float
    updated: float


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether the request passes; if not, the seconds until the same request would."""

    allowed: bool
    retry_after_seconds: float = 0.0


ALLOWED = Verdict(allowed=True)
#: The shortest wait a refusal names: a deficit too small for a float still means "not yet".
MIN_WAIT_SECONDS = 1e-6


def _wait(deficit: float, rate: Rate) -> float:
    return max(deficit / rate.per_second, MIN_WAIT_SECONDS)


def refill(bucket: Bucket | None, rate: Rate, now: float) -> Bucket:
    """The bucket at ``now``: a new one is full; a clock going back adds nothing."""
    if bucket is None:
        return Bucket(rate.burst, now)
    elapsed = max(0.0, now - bucket.updated)
    return Bucket(min(rate.burst, bucket.tokens + elapsed * rate.per_second), now)


def take(bucket: Bucket | None, rate: Rate, cost: float, now: float) -> tuple[Bucket, Verdict]:
    """Charge ``cost`` tokens at ``now``: the bucket after, and the verdict.

    A cost above ``burst`` is charged as ``burst`` (a request that could never pass would be a
    refusal for ever, not a limit). Refused requests leave the tokens where they were.
    """
    current = refill(bucket, rate, now)
    cost = min(max(cost, 0.0), rate.burst)
    if current.tokens >= cost:
        return Bucket(current.tokens - cost, now), ALLOWED
    return current, Verdict(False, _wait(cost - current.tokens, rate))


def admit(bucket: Bucket | None, rate: Rate, estimate: float, now: float) -> tuple[Bucket, Verdict]:
    """For a request whose cost is known only once served (rows listed): it passes while the
    bucket holds a token and is charged ``estimate`` at once, into debt if it must, so requests
    in flight together cannot all pass on one token; ``charge`` settles the difference after."""
    current = refill(bucket, rate, now)
    if current.tokens >= 1:
        return Bucket(current.tokens - max(estimate, 0.0), now), ALLOWED
    return current, Verdict(False, _wait(1 - current.tokens, rate))


def charge(bucket: Bucket | None, rate: Rate, cost: float, now: float) -> Bucket:
    """The bucket after paying ``cost`` at ``now`` (negative: a refund, up to the burst);
    below zero is a debt the refill pays off before ``admit`` lets the next request in."""
    current = refill(bucket, rate, now)
    return Bucket(min(rate.burst, current.tokens - cost), now)


class RateLimiter:
    """Buckets by key (caller and kind of request); bounded memory.

    Past ``max_keys`` buckets, those refilled to full are forgotten (a full bucket and no bucket
    behave the same); if that is not enough, all are: a flood of distinct keys then costs its
    senders nothing more than fresh buckets, never the process its memory.
    """

    def __init__(self, max_keys: int = 100_000) -> None:
        self._max_keys = max_keys
        self._buckets: dict[Hashable, Bucket] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, key: Hashable, rate: Rate, cost: float, now: float) -> Verdict:
        """Charge ``cost`` to ``key``'s bucket at ``now`` (always allowed when unlimited)."""
        if rate.is_unlimited:
            return ALLOWED
        bucket, verdict = take(self._buckets.get(key), rate, cost, now)
        self._store(key, bucket, rate, now)
        return verdict

    def admit(self, key: Hashable, rate: Rate, estimate: float, now: float) -> Verdict:
        """``admit`` on ``key``'s bucket (always allowed when unlimited)."""
        if rate.is_unlimited:
            return ALLOWED
        bucket, verdict = admit(self._buckets.get(key), rate, estimate, now)
        self._store(key, bucket, rate, now)
        return verdict

    def charge(self, key: Hashable, rate: Rate, cost: float, now: float) -> None:
        """``charge`` ``cost`` to ``key``'s bucket (nothing when unlimited)."""
        if not rate.is_unlimited:
            self._store(key, charge(self._buckets.get(key), rate, cost, now), rate, now)

    def _store(self, key: Hashable, bucket: Bucket, rate: Rate, now: float) -> None:
        if key not in self._buckets and len(self._buckets) >= self._max_keys:
            self._prune(rate, now)
        self._buckets[key] = bucket

    def _prune(self, rate: Rate, now: float) -> None:
        # Judged by the rate at hand: buckets of kinds with other rates may go early, which only
        # gives their callers a full bucket sooner.
        self._buckets = {
            key: bucket
            for key, bucket in self._buckets.items()
            if refill(bucket, rate, now).tokens < rate.burst
        }
        if len(self._buckets) >= self._max_keys:
            self._buckets.clear()


class Slots:
    """Caps on things held open at once (event streams): ``per_key`` each, ``total`` in all;
    0 means no cap. ``acquire`` says which cap refused, or None and the slot is taken."""

    PER_KEY = "per_key"
    TOTAL = "total"

    def __init__(self, per_key: int, total: int) -> None:
        self.per_key = per_key
        self.total = total
        self._held: dict[Hashable, int] = {}
        self._count = 0

    @property
    def in_use(self) -> int:
        return self._count

    def held_by(self, key: Hashable) -> int:
        return self._held.get(key, 0)

    def acquire(self, key: Hashable) -> str | None:
        """Take a slot for ``key``; the name of the cap reached instead (total checked first:
        a full server is no caller's fault)."""
        if self.total and self._count >= self.total:
            return self.TOTAL
        held = self._held.get(key, 0)
        if self.per_key and held >= self.per_key:
            return self.PER_KEY
        self._held[key] = held + 1
        self._count += 1
        return None

    def release(self, key: Hashable) -> None:
        """Give back a slot ``acquire`` gave; releasing one never taken changes nothing."""
        held = self._held.get(key, 0)
        if held == 0:
            return
        self._count -= 1
        if held == 1:
            del self._held[key]
        else:
            self._held[key] = held - 1

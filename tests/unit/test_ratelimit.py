"""``core.ratelimit``: the token bucket and the slot caps, as plain values over a given ``now``."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy_failover.core.ratelimit import (
    ALLOWED,
    Bucket,
    Rate,
    RateLimiter,
    Slots,
    Verdict,
    admit,
    charge,
    refill,
    take,
)

TEN_PER_SECOND = Rate(per_second=10, burst=20)


def test_a_new_bucket_is_full_and_serves_its_burst_at_once() -> None:
    bucket = None
    for _ in range(20):
        bucket, verdict = take(bucket, TEN_PER_SECOND, 1, now=0.0)
        assert verdict == ALLOWED
    bucket, verdict = take(bucket, TEN_PER_SECOND, 1, now=0.0)
    assert not verdict.allowed
    assert verdict.retry_after_seconds == pytest.approx(0.1)
    assert bucket.tokens == 0


def test_refused_requests_take_nothing_and_pass_after_the_time_told() -> None:
    bucket = Bucket(tokens=0.0, updated=0.0)
    bucket, verdict = take(bucket, TEN_PER_SECOND, 5, now=0.0)
    assert not verdict.allowed
    assert verdict.retry_after_seconds == pytest.approx(0.5)
    assert bucket.tokens == 0
    bucket, verdict = take(bucket, TEN_PER_SECOND, 5, now=0.5)
    assert verdict.allowed
    assert bucket.tokens == pytest.approx(0)


def test_refill_stops_at_the_burst_and_ignores_a_clock_going_back() -> None:
    assert refill(Bucket(0.0, 0.0), TEN_PER_SECOND, 100.0) == Bucket(20.0, 100.0)
    assert refill(Bucket(3.0, 10.0), TEN_PER_SECOND, 5.0) == Bucket(3.0, 5.0)
    assert refill(None, TEN_PER_SECOND, 7.0) == Bucket(20.0, 7.0)


def test_a_cost_above_the_burst_is_charged_as_the_burst() -> None:
    bucket, verdict = take(None, TEN_PER_SECOND, 1000, now=0.0)
    assert verdict.allowed
    assert bucket.tokens == 0
    _, verdict = take(bucket, TEN_PER_SECOND, 1000, now=1.0)
    assert verdict == Verdict(False, 1.0)


def test_a_negative_cost_is_free() -> None:
    bucket, verdict = take(Bucket(0.0, 0.0), TEN_PER_SECOND, -5, now=0.0)
    assert verdict.allowed
    assert bucket.tokens == 0


def test_scaled_rates_and_unlimited() -> None:
    assert TEN_PER_SECOND.scaled(10) == Rate(100, 200)
    assert Rate(0, 5).is_unlimited
    assert not TEN_PER_SECOND.is_unlimited


def test_limiter_keeps_one_bucket_per_key() -> None:
    limiter = RateLimiter()
    rate = Rate(1, 2)
    assert [limiter.check("greedy", rate, 1, 0.0).allowed for _ in range(3)] == [True, True, False]
    assert limiter.check("other", rate, 1, 0.0).allowed  # the greedy key costs others nothing
    assert limiter.check("greedy", rate, 1, 1.0).allowed  # one token back after a second
    assert len(limiter) == 2


def test_an_unlimited_rate_allows_everything_and_keeps_no_state() -> None:
    limiter = RateLimiter()
    assert all(limiter.check("k", Rate(0, 0), 10**9, 0.0).allowed for _ in range(100))
    assert len(limiter) == 0


def test_past_max_keys_full_buckets_are_forgotten_first() -> None:
    limiter = RateLimiter(max_keys=3)
    rate = Rate(1, 10)
    limiter.check("busy", rate, 10, now=0.0)  # empty: it must be kept
    limiter.check("idle-1", rate, 1, now=0.0)
    limiter.check("idle-2", rate, 1, now=0.0)
    limiter.check("new", rate, 1, now=2.0)  # idle ones have refilled by now, busy has not
    assert len(limiter) == 2
    assert not limiter.check("busy", rate, 10, now=2.0).allowed


def test_when_nothing_can_be_forgotten_everything_is() -> None:
    limiter = RateLimiter(max_keys=2)
    rate = Rate(1, 10)
    limiter.check("a", rate, 10, now=0.0)
    limiter.check("b", rate, 10, now=0.0)
    limiter.check("c", rate, 1, now=0.0)
    assert len(limiter) == 1
    assert limiter.check("a", rate, 10, now=0.0).allowed  # a fresh bucket


@given(
    st.lists(
        st.tuples(st.floats(0, 5), st.floats(0, 30)),
        min_size=1,
        max_size=50,
    )
)
def test_never_more_passes_than_the_burst_plus_the_refill(steps: list[tuple[float, float]]) -> None:
    """Over any run, what passed costs at most burst + elapsed * rate."""
    bucket = None
    now = 0.0
    passed = 0.0
    for gap, cost in steps:
        now += gap
        bucket, verdict = take(bucket, TEN_PER_SECOND, cost, now)
        assert bucket.tokens >= -1e-9
        assert verdict.allowed == (verdict.retry_after_seconds == 0)
        if verdict.allowed:
            passed += min(cost, TEN_PER_SECOND.burst)
    assert passed <= TEN_PER_SECOND.burst + now * TEN_PER_SECOND.per_second + 1e-6


def test_slots_cap_each_key_and_the_total() -> None:
    slots = Slots(per_key=2, total=3)
    assert slots.acquire("a") is None
    assert slots.acquire("a") is None
    assert slots.acquire("a") == Slots.PER_KEY
    assert slots.acquire("b") is None
    assert slots.acquire("c") == Slots.TOTAL
    assert (slots.in_use, slots.held_by("a"), slots.held_by("c")) == (3, 2, 0)
    slots.release("a")
    assert slots.held_by("a") == 1
    assert slots.acquire("c") is None
    slots.release("b")
    slots.release("b")  # never held: no change
    assert slots.in_use == 2
    assert slots.held_by("b") == 0


def test_zero_slots_means_no_cap() -> None:
    slots = Slots(per_key=0, total=0)
    assert all(slots.acquire("a") is None for _ in range(1000))
    assert slots.in_use == 1000


def test_admit_lets_in_while_a_token_is_held_and_charges_the_estimate_at_once() -> None:
    rate = Rate(per_second=100, burst=500)
    bucket, verdict = admit(None, rate, 400, now=0.0)
    assert verdict == ALLOWED
    assert bucket.tokens == 100  # the estimate is taken at once...
    bucket, verdict = admit(bucket, rate, 400, now=0.0)
    assert verdict.allowed
    assert bucket.tokens == -300  # ...so a second one sent together runs into debt
    bucket, verdict = admit(bucket, rate, 400, now=0.0)
    assert not verdict.allowed  # and a third waits until the debt is paid off
    assert verdict.retry_after_seconds == pytest.approx(3.01)
    assert bucket.tokens == -300  # refused: nothing taken


def test_charge_settles_the_difference_refunds_up_to_the_burst() -> None:
    rate = Rate(per_second=100, burst=500)
    bucket = Bucket(tokens=-300, updated=0.0)
    assert charge(bucket, rate, -350, now=0.0).tokens == 50  # it listed 50 of the 400 asked
    assert charge(bucket, rate, 100, now=1.0).tokens == -300  # listed more than estimated
    assert charge(Bucket(450, 0.0), rate, -400, now=0.0).tokens == 500
    bucket, verdict = admit(Bucket(0.5, 0.0), rate, 1, now=0.0)
    assert not verdict.allowed
    assert verdict.retry_after_seconds == pytest.approx(0.005)


def test_limiter_admit_and_charge_share_the_key_and_ignore_unlimited_rates() -> None:
    limiter = RateLimiter()
    rate = Rate(1, 10)
    assert limiter.admit("reader", rate, 50, 0.0).allowed
    assert not limiter.admit("reader", rate, 50, 0.0).allowed
    assert limiter.admit("other", rate, 5, 0.0).allowed
    limiter.charge("reader", rate, -50, 0.0)  # it listed nothing
    assert limiter.admit("reader", rate, 5, 0.0).allowed
    unlimited = Rate(0, 1)
    limiter.charge("free", unlimited, 10**6, 0.0)
    assert limiter.admit("free", unlimited, 10**6, 0.0).allowed
    assert len(limiter) == 2

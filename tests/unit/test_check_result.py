"""``CheckResult.observed`` is ``dataclasses.replace(result, observed_at=...)``, made cheap (the
engine stamps every probe result with it): equal for every field, and a new field fails here
until ``observed`` carries it."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from proxy_failover.core.model import CheckResult

_AT = st.datetimes(timezones=st.just(UTC))


def test_observed_knows_every_field() -> None:
    names = [f.name for f in dataclasses.fields(CheckResult)]
    assert names == ["success", "latency_ms", "error", "observed_at"]


@given(
    success=st.booleans(),
    latency=st.none() | st.floats(0, 1e6),
    error=st.none() | st.text(max_size=20),
    before=st.none() | _AT,
    at=_AT,
)
def test_observed_equals_replace(
    success: bool, latency: float | None, error: str | None, before: datetime | None, at: datetime
) -> None:
    result = CheckResult(success, latency, error, before)
    assert result.observed(at) == dataclasses.replace(result, observed_at=at)

"""Probe intervals a config implies (SPEC §3/§4): fastinter defaults to min(interval, 2 s),
downinter to the interval."""

from __future__ import annotations

import pytest

from proxy_failover.core.model import FailoverConfig


@pytest.mark.parametrize(
    ("interval", "fast", "down", "expected_fast", "expected_down"),
    [
        (30.0, None, None, 2.0, 30.0),  # the default config: confirmed within seconds
        (1.0, None, None, 1.0, 1.0),  # never slower than the interval itself
        (0.5, None, None, 0.5, 0.5),
        (30.0, 5.0, 60.0, 5.0, 60.0),  # configured values win
        (30.0, 0.2, None, 0.2, 30.0),
    ],
)
def test_fast_and_down_intervals_default_like_haproxy(
    interval: float,
    fast: float | None,
    down: float | None,
    expected_fast: float,
    expected_down: float,
) -> None:
    config = FailoverConfig(
        proxy_id="p",
        user_id="u",
        health_check_interval_seconds=interval,
        fast_interval_seconds=fast,
        down_interval_seconds=down,
    )
    assert config.effective_fast_interval_seconds == expected_fast
    assert config.effective_down_interval_seconds == expected_down

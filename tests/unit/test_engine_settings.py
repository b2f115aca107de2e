"""The engine's tuning: concurrent flushes only where writers do not serialise; retention from
the ``PFO_*`` settings."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from proxy_failover.bootstrap import POSTGRES_CONCURRENT_FLUSHES, engine_settings, retention_policy
from proxy_failover.config import load_settings
from proxy_failover.core.retention import RetentionPolicy


@pytest.mark.parametrize(
    ("url", "flushes"),
    [
        (None, 1),  # the default SQLite file
        ("sqlite:///./pfo.db", 1),
        ("postgresql://u@db/pfo", POSTGRES_CONCURRENT_FLUSHES),
        ("postgres://u@db/pfo", POSTGRES_CONCURRENT_FLUSHES),
        ("postgresql+asyncpg://u@db/pfo", POSTGRES_CONCURRENT_FLUSHES),
    ],
)
def test_concurrent_flushes_follow_the_database(url: str | None, flushes: int) -> None:
    assert engine_settings(url).concurrent_flushes == flushes


def test_retention_comes_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PFO_RETENTION_DAYS", raising=False)
    monkeypatch.delenv("PFO_DELIVERY_RETENTION_DAYS", raising=False)
    assert retention_policy(load_settings()) == RetentionPolicy(90, 14)
    assert engine_settings(None).retention == RetentionPolicy(90, 14)
    monkeypatch.setenv("PFO_RETENTION_DAYS", "30")
    monkeypatch.setenv("PFO_DELIVERY_RETENTION_DAYS", "2.5")
    policy = retention_policy(load_settings())
    assert policy == RetentionPolicy(30, 2.5)
    assert engine_settings("postgresql://u@db/pfo", policy).retention == policy


@pytest.mark.parametrize("days", ["0", "-1", "36501", "soon"])
def test_retention_days_must_keep_something(monkeypatch: pytest.MonkeyPatch, days: str) -> None:
    monkeypatch.setenv("PFO_RETENTION_DAYS", days)
    with pytest.raises(ValidationError, match="retention_days"):
        load_settings()

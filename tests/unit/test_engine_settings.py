"""The engine's tuning per database: concurrent flushes only where writers do not serialise."""

from __future__ import annotations

import pytest

from proxy_failover.bootstrap import POSTGRES_CONCURRENT_FLUSHES, engine_settings


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

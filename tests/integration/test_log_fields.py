"""Log records name what they are about as JSON fields (proxy_id, instance_id, epoch, event_id),
not only inside the sentence: on SQLite and PostgreSQL through the real service."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from proxy_failover.entrypoints.logs import configure_logging
from proxy_failover.service import ProxyFailoverService


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging("info", stream)
    try:
        yield stream
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def _records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


async def test_service_logs_carry_proxy_instance_epoch_and_event_fields(
    service: ProxyFailoverService, log_lines: io.StringIO
) -> None:
    await service.create_failover_configuration("edge", "alice", {})
    a = await service.register_proxy_instance("edge", "alice", {"instanceName": "a"})
    await service.update_instance_health(a.id, "healthy")
    event = await service.execute_failover("edge", "root", None, a.id, "manual")
    records = _records(log_lines)
    created = next(r for r in records if "configuration created" in r["event"])
    assert created["proxy_id"] == "edge"
    assert "instance_id" not in created  # only the ids a record is about
    registered = next(r for r in records if "registered" in r["event"])
    assert (registered["proxy_id"], registered["instance_id"]) == ("edge", a.id)
    started = next(r for r in records if "started by" in r["event"])
    assert started["proxy_id"] == "edge"
    assert started["instance_id"] == a.id
    assert started["epoch"] == event.epoch == 1
    assert started["event_id"] == event.id

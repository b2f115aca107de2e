"""Webhook rules: retry schedule, signature, event matching, payload shape, subscription input."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from proxy_failover.core import webhooks
from proxy_failover.core.errors import ErrorCode, InvalidInput
from proxy_failover.core.model import Notification
from proxy_failover.core.webhooks import DeliveryStatus

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def _schedule(time_scale: float = 1.0) -> list[float]:
    """Seconds after the first attempt of every attempt made, until the delivery dies."""
    offsets = [0.0]
    now = T0
    failed = 0
    while True:
        failed += 1
        nxt = webhooks.next_attempt_at(T0, failed, now, time_scale)
        if nxt is None:
            return offsets
        offsets.append((nxt - T0).total_seconds())
        now = nxt


@pytest.mark.parametrize(
    ("failed", "delay"),
    [(1, 1.0), (2, 5.0), (3, 30.0), (4, 300.0), (5, 3600.0), (6, 3600.0), (30, 3600.0)],
)
def test_retry_delay_follows_spec_schedule(failed: int, delay: float) -> None:
    assert webhooks.retry_delay(failed) == delay


def test_retry_delay_rejects_zero_failures() -> None:
    with pytest.raises(ValueError, match="starts at 1"):
        webhooks.retry_delay(0)


def test_schedule_retries_hourly_until_24h_after_first_attempt_then_dies() -> None:
    offsets = _schedule()
    assert offsets[:6] == [0.0, 1.0, 6.0, 36.0, 336.0, 3936.0]
    assert all(b - a == 3600.0 for a, b in itertools.pairwise(offsets[5:]))
    assert offsets[-1] <= 24 * 3600
    assert offsets[-1] + 3600 > 24 * 3600
    assert len(offsets) == 28  # 6 attempts in the first ~66 min, then 22 hourly ones


def test_time_scale_shrinks_delays_and_horizon_alike() -> None:
    full = _schedule()
    scaled = _schedule(0.001)
    assert len(scaled) == len(full)
    assert scaled == pytest.approx([o * 0.001 for o in full])


def test_retry_measured_from_the_failed_attempt_not_the_first() -> None:
    late = T0 + timedelta(seconds=100)
    assert webhooks.next_attempt_at(T0, 2, late) == late + timedelta(seconds=5)


@pytest.mark.parametrize(
    ("success", "retry_at", "status"),
    [
        (True, None, DeliveryStatus.DELIVERED),
        (True, T0, DeliveryStatus.DELIVERED),
        (False, T0, DeliveryStatus.PENDING),
        (False, None, DeliveryStatus.DEAD),
    ],
)
def test_status_after_an_attempt(
    success: bool, retry_at: datetime | None, status: DeliveryStatus
) -> None:
    assert webhooks.status_after_attempt(success, retry_at) is status


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"a":1}'
    expected = hmac.new(b"s" * 16, b"1700000000." + body, hashlib.sha256).hexdigest()
    assert webhooks.sign("s" * 16, 1700000000, body) == "sha256=" + expected


def test_verify_accepts_fresh_signature_and_rejects_tampering_or_replay() -> None:
    secret = "0123456789abcdef"
    body = b'{"type":"failover.completed"}'
    ts = int(T0.timestamp())
    sig = webhooks.sign(secret, ts, body)
    assert webhooks.verify(secret, str(ts), body, sig, T0)
    assert not webhooks.verify(secret, str(ts), body + b" ", sig, T0)
    assert not webhooks.verify("x" * 16, str(ts), body, sig, T0)
    assert not webhooks.verify(secret, str(ts + 1), body, sig, T0)
    assert not webhooks.verify(secret, "nan", body, sig, T0)
    replayed_at = T0 + timedelta(seconds=webhooks.DEFAULT_TOLERANCE_SECONDS + 1)
    assert not webhooks.verify(secret, str(ts), body, sig, replayed_at)


@pytest.mark.parametrize(
    ("events", "event_type", "expected"),
    [
        (None, "failover.completed", True),
        (("failover.completed",), "failover.completed", True),
        (("failover.completed",), "failover.failed", False),
        (("instance.unhealthy", "redundancy.degraded"), "redundancy.degraded", True),
    ],
)
def test_wants_matches_event_types(
    events: tuple[str, ...] | None, event_type: str, expected: bool
) -> None:
    assert webhooks.wants(events, event_type) is expected


def test_payload_has_spec_shape_and_encodes_deterministically() -> None:
    n = Notification(
        type="failover.completed",
        proxy_id="edge",
        epoch=7,
        occurred_at=datetime(2026, 1, 1, 13, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1))),
        data={"targetInstanceId": "b", "sourceInstanceId": "a"},
    )
    payload = webhooks.build_payload("ev-1", n)
    assert payload == {
        "id": "ev-1",
        "type": "failover.completed",
        "proxyId": "edge",
        "occurredAt": "2026-01-01T12:00:00.123Z",
        "epoch": 7,
        "data": {"targetInstanceId": "b", "sourceInstanceId": "a"},
    }
    body = webhooks.encode_payload(payload)
    assert json.loads(body) == payload
    assert body == webhooks.encode_payload(dict(reversed(list(payload.items()))))


def test_format_timestamp_refuses_naive_times() -> None:
    with pytest.raises(ValueError, match="naive"):
        webhooks.format_timestamp(datetime(2026, 1, 1))


@pytest.mark.parametrize(
    "url",
    ["https://hooks.example.com/pfo", "http://127.0.0.1:9000/x?y=1", "http://[::1]:80/"],
)
def test_valid_urls_pass(url: str) -> None:
    assert webhooks.validate_url(url) == url


@pytest.mark.parametrize(
    "url",
    [None, "", "ftp://example.com/", "file:///etc/passwd", "https://", "example.com/x",
     "http://h:99999/", "https://x/" + "a" * 2048, 5],
)  # fmt: skip
def test_invalid_urls_are_001(url: object) -> None:
    with pytest.raises(InvalidInput) as err:
        webhooks.validate_url(url)
    assert err.value.code is ErrorCode.INVALID_INPUT


@pytest.mark.parametrize("secret", [None, "", "short", "x" * 15, "x" * 513, 1234567890123456789])
def test_secrets_outside_16_to_512_chars_are_001(secret: object) -> None:
    with pytest.raises(InvalidInput):
        webhooks.validate_secret(secret)


def test_secret_of_16_chars_passes() -> None:
    assert webhooks.validate_secret("x" * 16) == "x" * 16


def test_events_omitted_means_all_and_lists_are_deduplicated_and_sorted() -> None:
    assert webhooks.validate_events(None) is None
    assert webhooks.validate_events(["instance.healthy", "failover.failed", "failover.failed"]) == (
        "failover.failed",
        "instance.healthy",
    )


@pytest.mark.parametrize("events", [[], "failover.completed", ["failover.done"], [3], {"a": 1}])
def test_bad_event_lists_are_001(events: object) -> None:
    with pytest.raises(InvalidInput):
        webhooks.validate_events(events)


def test_health_detail_is_removed_from_data_and_the_rest_is_kept() -> None:
    body = webhooks.encode_payload(
        {
            "id": "e1",
            "type": "instance.unhealthy",
            "data": {"instanceId": "a", "lastError": "connect refused", "lastLatencyMs": 3.5},
        }
    )
    redacted = json.loads(webhooks.without_health_detail(body))
    assert redacted["data"] == {"instanceId": "a"}
    assert (redacted["id"], redacted["type"]) == ("e1", "instance.unhealthy")


@pytest.mark.parametrize(
    "payload",
    [
        {"id": "e1", "data": {"instanceId": "a"}},
        {"id": "e1", "data": None},
        {"id": "e1"},
        # the names appear, but not as keys of data: nothing to remove
        {"id": "e1", "data": {"note": "lastError"}},
        {"id": "e1", "lastLatencyMs": 5, "data": None},
    ],
)
def test_payloads_without_health_detail_are_delivered_byte_for_byte(
    payload: dict[str, object],
) -> None:
    body = webhooks.encode_payload(payload)
    assert webhooks.without_health_detail(body) is body

"""Times in API answers: ISO 8601 in UTC with milliseconds and ``Z``, whatever zone they carry.

``iso_z`` formats by hand for speed; here it is held equal to the plain ``strftime`` rendering
it replaced, over every field's range."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from proxy_failover.entrypoints.api.schemas import iso_z

ZONES = st.one_of(
    st.none(),
    st.just(UTC),
    st.integers(-14 * 60, 14 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes))),
)


def _by_strftime(value: datetime) -> str:
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


@given(
    st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30)),
    ZONES,
)
def test_iso_z_equals_the_strftime_rendering(moment: datetime, zone: timezone | None) -> None:
    value = moment.replace(tzinfo=zone)
    assert iso_z(value) == _by_strftime(value)


def test_iso_z_pads_years_and_truncates_to_milliseconds() -> None:
    assert iso_z(datetime(1, 1, 1, tzinfo=UTC)) == "0001-01-01T00:00:00.000Z"
    assert iso_z(datetime(2026, 12, 3, 8, 30, 5, 999_999)) == "2026-12-03T08:30:05.999Z"
    plus_two = timezone(timedelta(hours=2))
    assert iso_z(datetime(2026, 1, 1, 1, 0, tzinfo=plus_two)) == "2025-12-31T23:00:00.000Z"

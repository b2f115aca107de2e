"""serve's heap freezing: once the start has settled, then hourly; never on every tick."""

from __future__ import annotations

import gc

from proxy_failover.entrypoints.heap import REFREEZE_SECONDS, SETTLE_SECONDS, HeapTender


def test_the_heap_is_frozen_once_the_start_settled_and_refrozen_hourly() -> None:
    now = [1000.0]
    tender = HeapTender(clock=lambda: now[0])
    try:
        gc.unfreeze()
        now[0] += SETTLE_SECONDS - 1
        assert not tender.tend()
        assert gc.get_freeze_count() == 0
        now[0] += 1
        assert tender.tend()
        assert gc.get_freeze_count() > 0
        first = tender.frozen_at
        now[0] += 60
        assert not tender.tend()  # not every tick
        assert tender.frozen_at == first
        now[0] = 1000.0 + SETTLE_SECONDS + REFREEZE_SECONDS
        assert tender.next_due() == now[0]
        assert tender.tend()
        assert tender.frozen_at == now[0]
    finally:
        gc.unfreeze()

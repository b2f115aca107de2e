"""The store's notification side for tests that drive it directly: the repositories on one
engine, with the notification log written inside every change's transaction (as bootstrap wires
it). Fixtures ``store`` and ``repos`` in tests/e2e/conftest.py hand them out."""

from __future__ import annotations

from dataclasses import dataclass

from proxy_failover.store.audit import AuditLog
from proxy_failover.store.deliveries import DeliveryQueue
from proxy_failover.store.gauges import Gauges
from proxy_failover.store.notifications import NotificationLog
from proxy_failover.store.repository import Store
from proxy_failover.store.webhooks import WebhookStore


@dataclass(frozen=True)
class Repositories:
    """The store's notification-side repositories, on one engine."""

    webhooks: WebhookStore
    queue: DeliveryQueue
    audit: AuditLog
    gauges: Gauges


def repositories(store: Store) -> Repositories:
    """The repositories of ``store``, its notification log writing in every transaction."""
    store.notification_writers.append(NotificationLog(store.engine).write_notifications)
    engine = store.engine
    return Repositories(
        WebhookStore(engine), DeliveryQueue(engine), AuditLog(engine), Gauges(engine)
    )

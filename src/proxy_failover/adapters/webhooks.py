"""The webhook delivery worker: posts due queued deliveries, signed, and records every attempt.

Everything it knows lives in the database (``store.deliveries``): a worker killed at any moment
loses nothing; a delivery in flight keeps its lease until it expires and is then retried
(at-least-once; receivers de-duplicate by ``X-PFO-Delivery``). Several workers, in one process or
several replicas, share the queue safely: claims are leased, and a subscription has at most one
delivery in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime

import httpx

from proxy_failover.adapters.metrics import Metrics
from proxy_failover.adapters.outbound import GuardedTransport, OutboundGuard, post_for_status
from proxy_failover.core import webhooks
from proxy_failover.core.model import Notification
from proxy_failover.core.outbound import OutboundPolicy
from proxy_failover.core.webhooks import ClaimedDelivery, DeliveryStatus, LoggedBatch
from proxy_failover.store.deliveries import DeliveryQueue
from proxy_failover.store.gauges import Gauges
from proxy_failover.store.notifications import NotificationLog

log = logging.getLogger("proxy_failover.webhooks")

USER_AGENT = "proxy-failover-webhooks/1"
_MAX_ERROR_CHARS = 500

#: Called after every attempt with the proxy id, the delivery's new status and the latency (s).
AttemptObserver = Callable[[str, DeliveryStatus, float], None]


def utc_now() -> datetime:
    return datetime.now(UTC)


def _describe(error: BaseException) -> str:
    text = str(error).strip()
    name = type(error).__name__
    return (f"{name}: {text}" if text else name)[:_MAX_ERROR_CHARS]


class DeliveryWorker:
    """Claims due deliveries, posts them and reschedules failures on the SPEC §8 schedule.

    ``time_scale`` shrinks the retry schedule (tests use 0.001); ``clock`` is injectable.
    """

    def __init__(
        self,
        queue: DeliveryQueue,
        *,
        clock: Callable[[], datetime] = utc_now,
        time_scale: float = 1.0,
        timeout_seconds: float = 10.0,
        poll_interval_seconds: float = 1.0,
        batch_size: int = 20,
        on_attempt: AttemptObserver | None = None,
        guard: OutboundGuard | None = None,
    ) -> None:
        self.queue = queue
        self.clock = clock
        self.time_scale = time_scale
        self.timeout_seconds = timeout_seconds
        # A claim outlives the (bounded) POST, so a live worker keeps what it is posting; a dead
        # worker's claims are free again this long after it died.
        self.lease_seconds = timeout_seconds + 2.0
        self.poll_interval_seconds = poll_interval_seconds
        self.batch_size = batch_size
        self.on_attempt = on_attempt
        self.owner = f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        #: Receivers are reached only at addresses the outbound policy allows the subscriber.
        self._guard = guard or OutboundGuard(OutboundPolicy())
        self._clients: dict[bool, httpx.AsyncClient] = {}  # by the subscriber's trust
        self._wakeup = asyncio.Event()
        self.wakes = 0  # commits that queued deliveries (tests look)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._in_flight: set[asyncio.Task[None]] = set()
        self._claims_failing = False
        self._failing_since: dict[str, str] = {}  # subscription id -> last error (log once)

    # --- lifecycle -----------------------------------------------------------------------------

    def _http(self, trusted: bool) -> httpx.AsyncClient:
        client = self._clients.get(trusted)
        if client is None:
            transport = GuardedTransport(self._guard, trusted=trusted)
            client = self._clients[trusted] = httpx.AsyncClient(
                timeout=self.timeout_seconds,
                follow_redirects=False,
                transport=transport,
                headers={"User-Agent": USER_AGENT},
            )
        return client

    def start(self) -> None:
        """Run ``run()`` in the background until ``stop()``."""
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self.run(), name="pfo-webhook-worker")

    async def stop(self) -> None:
        """Stop claiming, cancel posts in flight and give their claims back at once."""
        self._stopping = True
        if self._task is not None:
            await _cancel_until_done(self._task)
            self._task = None
        in_flight = list(self._in_flight)
        for task in in_flight:
            task.cancel()
        await asyncio.gather(*in_flight, return_exceptions=True)
        if in_flight:
            with contextlib.suppress(Exception):  # else the leases simply expire
                await self.queue.release(self.owner)
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()

    def wake(self) -> None:
        """New deliveries may be due: look now rather than at the next poll."""
        self.wakes += 1
        self._wakeup.set()

    # --- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver until cancelled; a database or network problem only delays the next round.

        Each claimed delivery starts a task that posts it and then the subscription's next due
        ones, so a receiver that hangs until the timeout holds back only its own subscription.
        The loop claims new heads when woken (a commit, a task ending), when a retry falls due,
        or every poll interval (work committed by other replicas).
        """
        while not self._stopping:
            self._wakeup.clear()  # cleared before claiming: a wake-up during the round counts
            free = self.batch_size - len(self._in_flight)
            claimed: list[ClaimedDelivery] = []
            if free > 0:
                try:
                    claimed = await self.queue.claim_due(
                        self.owner, self.clock(), self.lease_seconds, free
                    )
                except Exception as exc:
                    if not self._claims_failing:  # log the outage once, not every poll
                        log.error("claiming webhook deliveries fails (retrying): %s", exc)
                    self._claims_failing = True
                else:
                    if self._claims_failing:
                        log.info("claiming webhook deliveries works again")
                    self._claims_failing = False
            for delivery in claimed:
                self._spawn(delivery)
            await self._sleep(at_capacity=len(claimed) >= free)

    def _spawn(self, delivery: ClaimedDelivery) -> None:
        task = asyncio.create_task(self._drain(delivery), name=f"pfo-webhook-{delivery.id}")
        self._in_flight.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._in_flight.discard(finished)
            if not finished.cancelled() and finished.exception() is not None:
                log.error(
                    "webhook delivery failed to record (retried when its claim expires): %s",
                    finished.exception(),
                )
            self._wakeup.set()

        task.add_done_callback(done)

    async def _drain(self, delivery: ClaimedDelivery | None) -> None:
        """Post a delivery, then the subscription's next ones while they are due (one by one)."""
        while delivery is not None:
            _, delivery = await self._attempt(delivery, chain=True)

    async def _sleep(self, *, at_capacity: bool) -> None:
        """Until woken, the next delivery falls due, or the poll interval (other replicas)."""
        timeout = self.poll_interval_seconds
        if not at_capacity:
            with contextlib.suppress(Exception):
                now = self.clock()
                due = await self.queue.next_due_at(now)
                if due is not None:
                    timeout = max(0.0, min(timeout, (due - now).total_seconds()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout)

    async def run_once(self) -> int:
        """Claim one batch of due deliveries and attempt each (step by step, for tests and tools);
        returns how many were attempted.

        The batch holds at most one delivery per subscription, so posting them concurrently keeps
        each subscription's order.
        """
        claimed = await self.queue.claim_due(
            self.owner, self.clock(), self.lease_seconds, self.batch_size
        )
        if not claimed:
            return 0
        try:
            await asyncio.gather(*(self._attempt(delivery) for delivery in claimed))
        except BaseException:
            # Cancelled mid-batch: hand back what was not recorded so nobody waits for the lease.
            with contextlib.suppress(Exception):
                await asyncio.shield(self.queue.release(self.owner))
            raise
        return len(claimed)

    async def _attempt(
        self, delivery: ClaimedDelivery, *, chain: bool = False
    ) -> tuple[DeliveryStatus, ClaimedDelivery | None]:
        """One signed POST, recorded; with ``chain``, also claims the subscription's next one."""
        body = delivery.body.encode("utf-8")
        attempted_at = self.clock()
        timestamp = int(attempted_at.timestamp())
        headers = {
            "Content-Type": "application/json",
            "X-PFO-Event": delivery.event_type,
            "X-PFO-Delivery": delivery.id,
            "X-PFO-Timestamp": str(timestamp),
            "X-PFO-Signature": webhooks.sign(delivery.secret, timestamp, body),
        }
        status_code: int | None = None
        error: str | None = None
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_seconds):  # bounds the whole exchange
                status_code = await post_for_status(
                    self._http(delivery.made_by_admin), delivery.url, content=body, headers=headers
                )
            if not 200 <= status_code < 300:
                error = f"HTTP {status_code}"
        except TimeoutError:
            error = f"timed out after {self.timeout_seconds:g} s"
        except httpx.HTTPError as exc:
            error = _describe(exc)
        latency = time.perf_counter() - started
        success = error is None
        finished_at = self.clock()
        next_at = (
            None
            if success
            else webhooks.next_attempt_at(
                delivery.first_attempt_at or attempted_at,
                delivery.attempts + 1,
                finished_at,
                self.time_scale,
            )
        )
        status, following = await self.queue.record_attempt(
            delivery,
            self.owner,
            attempted_at,
            success=success,
            status_code=status_code,
            error=error,
            latency_ms=latency * 1000.0,
            next_attempt_at=next_at,
            claim_next_for=self.lease_seconds if chain else None,
            now=finished_at,
        )
        self._log_transition(delivery, status, error)
        if self.on_attempt is not None:
            self.on_attempt(delivery.proxy_id, status, latency)
        return status, following

    def _log_transition(
        self, delivery: ClaimedDelivery, status: DeliveryStatus, error: str | None
    ) -> None:
        """Log when a subscription starts or stops failing, and every dead delivery."""
        sub = delivery.subscription_id
        if status is DeliveryStatus.DEAD:
            log.error(
                "webhook delivery %s to %s is dead after %d attempts: %s",
                delivery.id,
                delivery.url,
                delivery.attempts + 1,
                error,
            )
        if error is not None and sub not in self._failing_since:
            self._failing_since[sub] = error
            log.warning("webhook deliveries to %s are failing: %s", delivery.url, error)
        elif error is None and sub in self._failing_since:
            del self._failing_since[sub]
            log.info("webhook deliveries to %s succeed again", delivery.url)


class Feed:
    """One live stream's inbox: the log entries this process committed for its proxy, handed
    over from memory, and a flag telling it to read the log instead (news from elsewhere, or
    more than it can hold)."""

    #: Batches held for a stream that is not reading (a slow client); past it, the log is read.
    LIMIT = 100

    def __init__(self) -> None:
        self.woken = asyncio.Event()
        self._batches: list[LoggedBatch] = []
        self._must_read = False

    def offer(self, batch: LoggedBatch) -> None:
        if self._must_read:
            pass  # the stream reads the log anyway, which holds this batch too
        elif len(self._batches) >= self.LIMIT:
            self._batches.clear()
            self._must_read = True
        else:
            self._batches.append(batch)
        self.woken.set()

    def read_log(self) -> None:
        """The log has news this feed was not handed (another replica's commit)."""
        self._must_read = True
        self.woken.set()

    def take(self) -> tuple[list[LoggedBatch], bool]:
        """The batches handed over since the last take, and whether to read the log."""
        self.woken.clear()
        batches, self._batches = self._batches, []
        must_read, self._must_read = self._must_read, False
        return batches, must_read


class Notifier:
    """The notification side of a running process: the notification log and gauges it reads,
    the delivery worker, metrics, live feeds. (Subscriptions and the audit log are the
    service's: ``ProxyFailoverService.create_webhook_subscription``, ``record_audit``, ...)

    ``on_change`` is the service's after-commit listener: it counts what happened. ``logged``
    is the notification log's: each commit's entries go to the live streams of their proxy from
    memory, and the delivery worker is woken when the commit queued deliveries. The streams
    read the durable log to resume, to catch up, and for other replicas' commits.
    """

    def __init__(
        self,
        worker: DeliveryWorker,
        metrics: Metrics,
        *,
        notification_log: NotificationLog,
        gauges: Gauges,
    ) -> None:
        self.notification_log = notification_log
        self.gauges = gauges
        self.worker = worker
        self.metrics = metrics
        self._feeds: dict[str, set[Feed]] = {}
        #: The loop the feeds and the worker live on (set by ``start``); commits made on another
        #: thread (the engine's) are handed over to it.
        self._loop: asyncio.AbstractEventLoop | None = None
        notification_log.on_logged = self.logged

    def on_change(self, proxy_id: str, notifications: Sequence[Notification]) -> None:
        if notifications:
            self.metrics.observe_notifications(proxy_id, notifications)

    def logged(self, batches: Sequence[LoggedBatch], queued_deliveries: bool) -> None:
        """After a commit (any thread): hand its entries to the live streams, wake the worker."""
        loop = self._loop
        if loop is not None and _running_loop() is not loop:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._hand_over, batches, queued_deliveries)
            return
        self._hand_over(batches, queued_deliveries)

    def _hand_over(self, batches: Sequence[LoggedBatch], queued_deliveries: bool) -> None:
        for batch in batches:
            for feed in self._feeds.get(batch.proxy_id, ()):
                feed.offer(batch)
        if queued_deliveries:
            self.worker.wake()

    def wake(self, proxy_id: str) -> None:
        """The log has news for ``proxy_id`` from elsewhere: its live streams read it."""
        for feed in self._feeds.get(proxy_id, ()):
            feed.read_log()

    def watched_proxies(self) -> set[str]:
        """The proxies some live stream of this process follows."""
        return set(self._feeds)

    @contextlib.contextmanager
    def feed(self, proxy_id: str) -> Iterator[Feed]:
        """The feed of one live stream of ``proxy_id``, on the running loop."""
        self._loop = asyncio.get_running_loop()
        feed = Feed()
        self._feeds.setdefault(proxy_id, set()).add(feed)
        try:
            yield feed
        finally:
            feeds = self._feeds.get(proxy_id)
            if feeds is not None:
                feeds.discard(feed)
                if not feeds:
                    del self._feeds[proxy_id]

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.worker.start()

    async def stop(self) -> None:
        await self.worker.stop()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # a thread without a loop
        return None


async def _cancel_until_done(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait for it, cancelling again if a library swallowed the first one.

    A cancellation that lands inside a database driver's connection set-up can be absorbed by it;
    waiting once would then hang ``stop()`` forever while the loop keeps running.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.5)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()

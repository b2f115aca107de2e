"""The live event stream (SSE) and what keeps many of them cheap and bounded.

``GET /proxy/{proxyId}/stream`` sends a proxy's notifications as the durable event log holds them
(``id`` is the entry's ``seq``), so ``Last-Event-ID`` resumes where a client left off. A stream
waits, doing nothing, until it is woken. Commits of this process hand their entries to it from
memory right after the commit (``Notifier.logged``, a ``LoggedBatch`` per proxy): a stream that
has sent exactly up to the entry the batch follows sends it without reading the log, the shortest
path from a commit to the data planes that follow the stream. Anything else reads the log: the
first round (what committed before the stream was following), a batch that does not follow on
(another replica's entries lie in between), and the proxies one shared watch per process finds
with news when it reads the log's newest entries once a second (other replicas' commits). Before
the watch, every stream re-read the log every second on its own, and 1,000 idle streams cost 85 %
of a core. Streams are capped per caller and in total (``PFO_STREAM_MAX_PER_CALLER``,
``PFO_STREAM_MAX_TOTAL``): a held connection is a resource.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask
from starlette.types import Receive, Scope, Send

from proxy_failover.adapters.webhooks import Feed, Notifier
from proxy_failover.core import fields, limits, webhooks
from proxy_failover.core.errors import ErrorCode, TooBusy
from proxy_failover.core.ratelimit import Slots
from proxy_failover.entrypoints.api.auth import Caller
from proxy_failover.entrypoints.api.deps import CallerDep, OwnershipDep
from proxy_failover.entrypoints.api.responses import COMMON_ERRORS
from proxy_failover.entrypoints.api.schemas import ProxyIdPath, constraints
from proxy_failover.entrypoints.api.webhooks import NotifierDep, check_proxy

log = logging.getLogger("proxy_failover.api")

router = APIRouter(responses=COMMON_ERRORS)

#: How often the shared watch reads the event log for other replicas' commits.
STREAM_POLL_SECONDS = 1.0
#: Events read from the log per query.
STREAM_BATCH = 100
#: A comment line this often keeps proxies and load balancers from closing an idle stream.
STREAM_KEEPALIVE_SECONDS = 15.0
#: What a refused stream is told to wait: streams are long-lived, slots free up slowly.
STREAM_RETRY_AFTER_SECONDS = 5
#: Entries this recent wake their streams again: an entry committed late with a lower ``seq``
#: than one already seen (concurrent transactions on PostgreSQL) still arrives within a second.
LATE_COMMIT_SECONDS = 5.0


class StreamHub:
    """The streams of one process: their slots, and the one watch of the log they share."""

    def __init__(
        self, notifier: Notifier, slots: Slots, poll_seconds: float = STREAM_POLL_SECONDS
    ) -> None:
        self.notifier = notifier
        self.slots = slots
        self.poll_seconds = poll_seconds
        self._open = 0
        self._watch: asyncio.Task[None] | None = None
        self.watch_reads = 0  # log reads made by the watch (tests and benchmarks look)
        self.log_reads = 0  # log reads made by the streams (the rest came from memory)

    def take_slot(self, caller: Caller) -> Callable[[], None]:
        """A slot for one more stream of ``caller`` and the function giving it back (once);
        429/022 past the caller's cap, 503/023 past the total."""
        refused = self.slots.acquire(caller.user_id)
        if refused == Slots.TOTAL:
            raise TooBusy(
                f"too many event streams open on this server ({self.slots.total}); retry later",
                STREAM_RETRY_AFTER_SECONDS,
                ErrorCode.SERVER_BUSY,
                {"limit": "streams"},
            )
        if refused == Slots.PER_KEY:
            raise TooBusy(
                f"caller {caller.user_id} holds {self.slots.per_key} event streams already; "
                "close one or retry later",
                STREAM_RETRY_AFTER_SECONDS,
                details={"limit": "streams"},
            )
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.slots.release(caller.user_id)

        return release

    @contextlib.contextmanager
    def follow(self, proxy_id: str) -> Iterator[Feed]:
        """The feed of ``proxy_id``'s news; the shared watch runs while any is held."""
        with self.notifier.feed(proxy_id) as feed:
            self._open += 1
            if self._watch is None or self._watch.done():
                self._watch = asyncio.create_task(self._watch_log(), name="pfo-stream-watch")
            try:
                yield feed
            finally:
                self._open -= 1

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch

    async def _watch_log(self) -> None:
        """One read a second for every stream of the process; ends when the last one closes."""
        stored = self.notifier.notification_log
        seen: int | None = None
        while self._open:
            try:
                since = datetime.now(UTC) - timedelta(seconds=LATE_COMMIT_SECONDS)
                seen, proxies = await stored.proxies_with_news(seen, since)
                self.watch_reads += 1
                for proxy_id in proxies & self.notifier.watched_proxies():
                    self.notifier.wake(proxy_id)
            except Exception as error:  # a database outage: the streams wait, the watch goes on
                log.warning("event stream watch: %s", error)
            await asyncio.sleep(self.poll_seconds)


class _SlotHoldingResponse(StreamingResponse):
    """Gives the stream's slot back however the response ends (finished, failed, cancelled)."""

    def __init__(self, content: AsyncIterator[bytes], release: Callable[[], None]) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            background=BackgroundTask(release),
        )
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


def _for_caller(body: str, is_admin: bool) -> str:
    """The event body as this caller may see it: without health-check detail for non-admins."""
    return body if is_admin else webhooks.without_health_detail(body)


def _sse(seq: int, event: str, data: str) -> bytes:
    # The body is compact JSON: it never contains a newline, so one data line suffices.
    return f"id: {seq}\nevent: {event}\ndata: {data}\n\n".encode()


@router.get(
    "/proxy/{proxyId}/stream",
    tags=["observability"],
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}},
        429: COMMON_ERRORS[429],
        503: COMMON_ERRORS[503],
    },
    summary="Server-sent events: health changes, failovers, redundancy changes",
)
async def stream(
    request: Request,
    proxy_id: ProxyIdPath,
    caller: CallerDep,
    ownership: OwnershipDep,
    notifier: NotifierDep,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            description="Resume after this event id (the id of the last event received).",
            **constraints(limits.STREAM_CURSOR),
        ),
    ] = None,
) -> StreamingResponse:
    """Each event: ``id`` (resume with ``Last-Event-ID``), ``event`` (its type), ``data`` (the
    same JSON object a webhook receives; for non-admins without ``lastError``/``lastLatencyMs``)."""
    if last_event_id:  # 400 comes before 404
        fields.integer(int(last_event_id), "Last-Event-ID", limits.EVENT_SEQUENCE)
    await check_proxy(caller, proxy_id, ownership)
    stored = notifier.notification_log
    start = int(last_event_id) if last_event_id else await stored.last_notification_seq(proxy_id)
    hub: StreamHub = request.app.state.streams
    release = hub.take_slot(caller)  # last: nothing below can fail before the response owns it

    async def events() -> AsyncIterator[bytes]:
        last = start
        yield b"retry: 2000\n: connected\n\n"
        with hub.follow(proxy_id) as feed:
            catching_up = True  # the first round reads the log: what came before the feed
            while True:  # ends when the client goes: the response cancels this generator
                batches, must_read = feed.take()
                for batch in batches:
                    if must_read or catching_up:
                        break  # the log has these too
                    if batch.entries[-1].seq <= last:
                        continue  # already sent, read from the log
                    if batch.after_seq != last:
                        must_read = True  # entries this stream has not seen lie in between
                        break
                    # One write per commit: a client reads its events (an instance's health and
                    # the failover it caused) together and acts on them once, not once each.
                    last = batch.entries[-1].seq
                    yield b"".join(
                        _sse(item.seq, item.type, _for_caller(item.body, caller.is_admin))
                        for item in batch.entries
                    )
                if must_read or catching_up:
                    hub.log_reads += 1
                    page = await stored.notifications_after(proxy_id, last, STREAM_BATCH)
                    if page:
                        last = page[-1].seq
                        yield b"".join(
                            _sse(item.seq, item.type, _for_caller(item.body, caller.is_admin))
                            for item in page
                        )
                    catching_up = len(page) == STREAM_BATCH
                    if catching_up:
                        continue  # a client catching up: read on without waiting
                try:
                    async with asyncio.timeout(STREAM_KEEPALIVE_SECONDS):
                        await feed.woken.wait()
                except TimeoutError:
                    yield b": keepalive\n\n"

    return _SlotHoldingResponse(events(), release)

"""The shared part of every data-plane agent (SPEC §9): follow the control plane, apply the state.

An agent is an ordinary API client (a token, the REST API and ``GET /proxy/:id/stream``); it never
touches the database. For each proxy it:

- reads the desired state (configuration, instances, redundancy) and applies it on start, on every
  event of the stream, every ``reconcile_seconds``, and after reconnecting to either side;
- resumes the stream with ``Last-Event-ID`` after a disconnect, so no event is skipped;
- fences: a state or event whose epoch is older than the one it last applied is ignored (a lagging
  replica, a late event);
- keeps the data plane as it is when the control plane is unreachable, and says so once in its
  logs and continuously in ``pfo_agent_control_plane_up``.

A data plane implements ``DataPlane.apply``: make the traffic follow one ``DesiredState``,
idempotently, comparing with what the data plane itself reports; and ``apply_from_event``, the
same for a state a stream event told (a faster path where it has one, else ``apply``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import httpx

from proxy_failover.adapters.dataplanes.metrics import AgentMetrics
from proxy_failover.client import AsyncFailoverClient, StreamEvent
from proxy_failover.core.dataplane import (
    DesiredState,
    desired_state,
    is_newer_or_same,
    told_by_event,
)
from proxy_failover.core.errors import FailoverError, config_not_found

log = logging.getLogger("proxy_failover.agent")

#: Pause before reconnecting a failed stream or retrying a failed apply (then doubling, capped).
RETRY_SECONDS = 0.5
MAX_RETRY_SECONDS = 2.0
#: The full read that follows an event waits this long: the event's own state is applied at once,
#: and the read (three requests, parsing, a data-plane apply) would otherwise compete for the CPU
#: with the traffic the event just moved (clients reconnecting after a cut).
EVENT_READ_DELAY_SECONDS = 0.1


class DataPlaneError(Exception):
    """The data plane could not be reached or refused a change; the agent retries."""


class DataPlane(Protocol):
    """One data plane (HAProxy, the forwarder...) made to follow desired states."""

    async def apply(self, state: DesiredState) -> None:
        """Make the data plane match ``state`` (idempotent); raise ``DataPlaneError`` on failure."""
        ...

    async def apply_from_event(self, state: DesiredState) -> None:
        """Apply a state told by a stream event (a move, a health change; ``told_by_event``):
        a data plane that can do it faster does (HAProxy: no read first), others call
        ``apply``."""
        ...


@dataclass(frozen=True, slots=True)
class AgentSettings:
    reconcile_seconds: float = 5.0
    retry_seconds: float = RETRY_SECONDS
    event_read_delay: float = EVENT_READ_DELAY_SECONDS


async def fetch_desired_state(client: AsyncFailoverClient, proxy_id: str) -> DesiredState:
    """The proxy's desired state read through the REST API (three reads made concurrently)."""
    config, instances, redundancy = await asyncio.gather(
        client.get_failover_configuration(proxy_id),
        client.get_proxy_instances(proxy_id),
        client.get_redundancy_status(proxy_id),
    )
    if config is None or redundancy is None:
        raise config_not_found(proxy_id)
    return desired_state(
        proxy_id,
        instances,
        redundancy.active_instance_id,
        redundancy.epoch,
        load_balanced=config.enable_load_balancing,
        algorithm=config.load_balancing_algorithm,
    )


def _describe(error: BaseException) -> str:
    if isinstance(error, FailoverError):
        return f"{error.code.value}: {error.message}"
    return f"{type(error).__name__}: {error}"


class ProxyFollower:
    """Follows one proxy: the stream, the reconcile timer and the applies, one at a time."""

    def __init__(
        self,
        proxy_id: str,
        client: AsyncFailoverClient,
        plane: DataPlane,
        metrics: AgentMetrics,
        settings: AgentSettings,
    ) -> None:
        self.proxy_id = proxy_id
        self.client = client
        self.plane = plane
        self.metrics = metrics
        self.settings = settings
        self.applied: DesiredState | None = None
        self.last_event_id: int | None = None
        self._wake = asyncio.Event()
        # A state told by events (a switch, a health change), applied at once by its own task,
        # without waiting for a full read in flight; the lock keeps data-plane applies whole.
        # It stays the base for the next event until a full read begun after it is applied.
        self._told: DesiredState | None = None
        self._told_at = 0  # events seen when it was told
        self._told_received = 0.0  # perf_counter() when its event arrived
        self._events_seen = 0
        self._announce = asyncio.Event()
        self._apply_lock = asyncio.Lock()
        self._trigger = "start"
        self._control_plane_ok: bool | None = None
        self._data_plane_ok: bool | None = None
        for gauge in (metrics.control_plane_up, metrics.data_plane_up, metrics.stream_up):
            gauge.labels(proxy_id).set(0)

    def request_sync(self, trigger: str) -> None:
        """Ask for a full fetch-and-apply soon (requests made meanwhile are coalesced)."""
        if not self._wake.is_set():
            self._trigger = trigger
        self._wake.set()

    def is_stale(self, epoch: int | None) -> bool:
        """Fencing: ``epoch`` is older than the state last applied."""
        if epoch is None or self.applied is None:
            return False
        return not is_newer_or_same(epoch, self.applied.epoch)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._apply_loop())
            group.create_task(self._event_loop())
            group.create_task(self._stream_loop())
            group.create_task(self._timer_loop())

    async def _timer_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reconcile_seconds)
            self.request_sync("reconcile")

    async def _apply_loop(self) -> None:
        self.request_sync("start")
        while True:
            await self._wake.wait()
            if self._trigger == "event" and self.settings.event_read_delay > 0:
                # Requests made meanwhile join this read (EVENT_READ_DELAY_SECONDS).
                await asyncio.sleep(self.settings.event_read_delay)
            self._wake.clear()
            if not await self.sync(self._trigger):
                # Retry soon rather than at the next period: "after reconnecting to either side".
                await asyncio.sleep(self.settings.retry_seconds)
                self.request_sync("retry")

    async def sync(self, trigger: str) -> bool:
        """Fetch the desired state and apply it; False when either side failed."""
        seen = self._events_seen
        try:
            state = await fetch_desired_state(self.client, self.proxy_id)
        except (FailoverError, httpx.HTTPError, OSError) as error:
            self.metrics.fetch_failures.labels(self.proxy_id).inc()
            self._control_plane_changed(False, error)
            return False
        self._control_plane_changed(True)
        self.metrics.last_fetched.labels(self.proxy_id).set(time.time())
        applied = await self.apply(state, trigger)
        if applied and seen >= self._told_at:
            self._told = None  # this read knows everything the events told
        return applied

    async def _event_loop(self) -> None:
        """Applies what events told as soon as they arrive, then asks for the full read."""
        done: DesiredState | None = None
        while True:
            await self._announce.wait()
            self._announce.clear()
            told = self._told
            if told is not None and told is not done:
                done = told
                received = self._told_received
                await self.apply(told, "event")
                if self.applied is told:
                    elapsed = time.perf_counter() - received
                    self.metrics.event_apply.labels(self.proxy_id).observe(elapsed)
            self.request_sync("event")

    async def apply(self, state: DesiredState, trigger: str) -> bool:
        """Apply ``state`` to the data plane unless it is older than the applied one (fencing,
        checked under the lock: an event may have moved the traffic while this state was read);
        False (and logged once) when the data plane failed."""
        async with self._apply_lock:
            if self.is_stale(state.epoch):
                assert self.applied is not None
                self.metrics.stale_ignored.labels(self.proxy_id).inc()
                log.warning(
                    "proxy %s: ignoring a state of epoch %d older than the applied epoch %d",
                    self.proxy_id,
                    state.epoch,
                    self.applied.epoch,
                )
                return True
            # A data plane may apply a state told by an event faster than a whole state.
            apply = self.plane.apply_from_event if trigger == "event" else self.plane.apply
            try:
                await apply(state)
            except DataPlaneError as error:
                self.metrics.apply_failures.labels(self.proxy_id).inc()
                self._data_plane_changed(False, error)
                return False
            self._applied(state, trigger)
        return True

    def _applied(self, state: DesiredState, trigger: str) -> None:
        self._data_plane_changed(True)
        if self.applied is None or self.applied.active_instance_id != state.active_instance_id:
            active = state.target(state.active_instance_id)
            log.info(
                "proxy %s: traffic to %s (epoch %d, %s)",
                self.proxy_id,
                ", ".join(t.name for t in state.serving) or "nothing",
                state.epoch,
                f"active {active.name}" if active is not None else "no active instance",
            )
        self.applied = state
        self.metrics.applies.labels(self.proxy_id, trigger).inc()
        self.metrics.applied_epoch.labels(self.proxy_id).set(state.epoch)
        self.metrics.last_applied.labels(self.proxy_id).set(time.time())

    async def _stream_loop(self) -> None:
        delay = self.settings.retry_seconds
        while True:
            try:
                async for event in self.client.stream_events(
                    self.proxy_id, self.last_event_id, on_open=self._stream_opened
                ):
                    delay = self.settings.retry_seconds
                    self._on_event(event)
                reason = "the server closed it"
            except (FailoverError, httpx.HTTPError, OSError) as error:
                reason = _describe(error)
            self.metrics.stream_up.labels(self.proxy_id).set(0)
            log.warning(
                "proxy %s: event stream lost (%s); reconnecting in %.1fs",
                self.proxy_id,
                reason,
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_SECONDS)

    def _stream_opened(self) -> None:
        self.metrics.stream_up.labels(self.proxy_id).set(1)
        self.metrics.stream_connects.labels(self.proxy_id).inc()
        # Whatever happened while disconnected (or before the first event) is read in full.
        self.request_sync("stream-connect")

    def _on_event(self, event: StreamEvent) -> None:
        log.debug(
            "proxy %s: event %s %s (epoch %s)", self.proxy_id, event.id, event.type, event.epoch
        )
        if event.id is not None:
            self.last_event_id = event.id
        if self.is_stale(event.epoch):
            self.metrics.stale_ignored.labels(self.proxy_id).inc()
            log.info(
                "proxy %s: ignoring %s of epoch %s (applied %d)",
                self.proxy_id,
                event.type,
                event.epoch,
                self.applied.epoch if self.applied else -1,
            )
            return
        self._events_seen += 1
        details = event.data.get("data")
        known = self.applied  # the latest state: told by events, or else applied
        if self._told is not None and not self.is_stale(self._told.epoch):
            known = self._told
        if known is not None and isinstance(details, dict):
            announced = told_by_event(known, event.type, details, event.epoch)
            if announced is not None:
                self._told, self._told_at = announced, self._events_seen
                self._told_received = time.perf_counter()
                self._announce.set()
                return  # the full read follows the apply (its requests would delay it)
        self.request_sync("event")

    def _control_plane_changed(self, ok: bool, error: BaseException | None = None) -> None:
        self.metrics.control_plane_up.labels(self.proxy_id).set(1 if ok else 0)
        if ok == self._control_plane_ok:
            return
        self._control_plane_ok = ok
        if not ok:
            kept = f"epoch {self.applied.epoch}" if self.applied else "nothing applied yet"
            log.error(
                "proxy %s: control plane unreachable (%s); the data plane keeps the last known "
                "state (%s)",
                self.proxy_id,
                _describe(error) if error else "?",
                kept,
            )
        elif self.applied is not None:
            log.warning("proxy %s: control plane reachable again; reconciling", self.proxy_id)

    def _data_plane_changed(self, ok: bool, error: BaseException | None = None) -> None:
        self.metrics.data_plane_up.labels(self.proxy_id).set(1 if ok else 0)
        if ok == self._data_plane_ok:
            return
        previous, self._data_plane_ok = self._data_plane_ok, ok
        if not ok:
            log.error("proxy %s: data plane apply failed: %s", self.proxy_id, error)
        elif previous is False:
            log.warning("proxy %s: data plane reachable again; state restored", self.proxy_id)


class Agent:
    """Runs one ``ProxyFollower`` per proxy against one data plane until cancelled."""

    def __init__(
        self,
        client: AsyncFailoverClient,
        plane: DataPlane,
        proxy_ids: Sequence[str],
        metrics: AgentMetrics,
        settings: AgentSettings | None = None,
    ) -> None:
        self.settings = settings or AgentSettings()
        self.followers = {
            proxy_id: ProxyFollower(proxy_id, client, plane, metrics, self.settings)
            for proxy_id in proxy_ids
        }

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for follower in self.followers.values():
                group.create_task(follower.run())


async def cancel_quietly(task: asyncio.Task[object]) -> None:
    """Cancel ``task`` and wait for it, swallowing its cancellation."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

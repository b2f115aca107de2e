"""Envoy's file-based EDS: one ``DiscoveryResponse`` file per proxy, renamed into place.

Envoy watches a ``path_config_source`` (with ``watched_directory``) and reloads the file when a new
one is moved over it, so a write is ``<dir>/.<proxy>.json.tmp`` + ``rename`` onto
``<dir>/<proxy>.json``: Envoy never reads half a file. No ``fsync``: it costs tens of
milliseconds on a busy disk, on the switch's path, and protects nothing the agent does not redo
(after a host crash it rewrites every file it finds different at start). The content is
``core.envoy``'s, the same the REST endpoint answers; a state whose file already holds that
content is not written again. A full apply (start, reconcile) compares with the file as it is
(so a file changed or removed behind the agent's back is rewritten); a state told by a stream
event compares with what the agent wrote last, without reading the file on the switch's path.

The write runs on the event loop, not in a thread: a ~1 KB write into the page cache and a
rename take about 0.2 ms, less than handing them to a worker thread and waking it costs on a
busy machine, and they are the whole of the switch's path in the agent.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

from proxy_failover.adapters.dataplanes.agent import DataPlaneError
from proxy_failover.adapters.dataplanes.metrics import AgentMetrics
from proxy_failover.core.dataplane import DesiredState
from proxy_failover.core.envoy import discovery_response

log = logging.getLogger("proxy_failover.agent.envoy")


def eds_path(directory: Path, proxy_id: str) -> Path:
    """Where the proxy's EDS file lives (proxy ids are ``[A-Za-z0-9._:-]``, safe as names)."""
    return directory / f"{proxy_id}.json"


def render(state: DesiredState) -> bytes:
    """The file's bytes: the proxy's ``DiscoveryResponse`` as indented JSON."""
    return (json.dumps(discovery_response([state]), indent=2) + "\n").encode()


def write_atomically(path: Path, content: bytes) -> None:
    """Write beside ``path`` and rename over it: readers see the old file or the new one."""
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("wb") as sink:
        sink.write(content)
    os.replace(temporary, path)


class EnvoyFileDataPlane:
    """Keeps ``<directory>/<proxy id>.json`` equal to each proxy's desired state."""

    def __init__(self, directory: Path, metrics: AgentMetrics) -> None:
        self.directory = directory
        self.metrics = metrics
        self._active: dict[str, str | None] = {}
        self._written: dict[Path, bytes] = {}

    async def apply(self, state: DesiredState) -> None:
        await self._apply(state, read=True)

    async def apply_from_event(self, state: DesiredState) -> None:
        await self._apply(state, read=False)

    async def _apply(self, state: DesiredState, *, read: bool) -> None:
        content = render(state)
        path = eds_path(self.directory, state.proxy_id)
        try:
            self._write_if_changed(path, content, read)
        except OSError as error:
            raise DataPlaneError(f"cannot write {path}: {error}") from error
        previous = self._active.get(state.proxy_id, "?")
        if previous != state.active_instance_id:
            self._active[state.proxy_id] = state.active_instance_id
            target = state.target(state.active_instance_id)
            log.info(
                "envoy: %s now sends proxy %s to %s (epoch %d)",
                path,
                state.proxy_id,
                target.name if target else "nobody",
                state.epoch,
            )

    def _write_if_changed(self, path: Path, content: bytes, read: bool) -> None:
        if read or path not in self._written:
            # Also after a restart of the agent: the same bytes, nothing for Envoy to reload.
            self._written.pop(path, None)
            with contextlib.suppress(FileNotFoundError):
                self._written[path] = path.read_bytes()
        if self._written.get(path) == content:
            return
        write_atomically(path, content)
        self._written[path] = content

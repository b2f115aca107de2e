"""nginx driven through a rendered file of ``upstream`` blocks and a reload command.

nginx has no runtime API in its open-source build, so the agent owns one file (``--output``) that
nginx ``include``s in its ``http`` or ``stream`` context: one ``upstream`` block per mapped proxy
(``core.nginx``). Every apply renders the whole file from the latest state of every proxy; when
the text differs from what was last loaded it is written atomically (a temporary file in the same
directory, rename: nginx never reads half a file) and nginx is reloaded: by the reload command
(``nginx -s reload`` or ``kill -HUP <master pid>``), or, with a pid file, by the agent sending
SIGHUP to the master itself (no shell to start: tens of milliseconds less on a busy machine).
nginx reloads gracefully: new workers take new connections with the new upstreams, old workers
finish the open ones, so every move drains. No ``fsync``: it sits on the switch's path, and after
a host crash the agent rewrites (and reloads) a file that differs from the state at start.

``NginxNjsDataPlane`` (``--mode njs``) renders one block per instance and names the one to use in
a state file an njs function reads per request: a switch rewrites that file and reloads nothing.

Nothing is written until every mapped proxy has a state (a file without one of the upstreams the
configuration names would fail nginx's reload). A failed reload is retried by the agent (the text
counts as loaded only after the command succeeded).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import tempfile
from collections.abc import Mapping
from pathlib import Path

from proxy_failover.adapters.dataplanes.agent import DataPlaneError
from proxy_failover.adapters.dataplanes.metrics import AgentMetrics
from proxy_failover.core.dataplane import DesiredState, SwitchPolicy, stopped_serving
from proxy_failover.core.nginx import (
    render_njs_module,
    render_njs_state,
    render_njs_upstreams,
    render_upstreams,
)

log = logging.getLogger("proxy_failover.agent.nginx")

#: Seconds a reload command may take before it counts as failed.
RELOAD_TIMEOUT = 10.0


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` so that a reader sees the old file or the new one, whole."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


class NginxDataPlane:
    """Renders the mapped proxies' upstreams into ``output`` and reloads nginx on a change."""

    def __init__(
        self,
        output: Path,
        upstreams: Mapping[str, str],
        reload_command: str | None,
        metrics: AgentMetrics,
        *,
        reload_timeout: float = RELOAD_TIMEOUT,
        reload_pid_file: Path | None = None,
    ) -> None:
        if (reload_command is None) == (reload_pid_file is None):
            raise ValueError("one of reload_command and reload_pid_file")
        self.output = output
        self.upstreams = dict(upstreams)  # proxy id -> upstream name, in --map order
        self.reload_command = reload_command
        self.reload_pid_file = reload_pid_file
        self.metrics = metrics
        self.reload_timeout = reload_timeout
        self.states: dict[str, DesiredState] = {}
        self._lock = asyncio.Lock()
        # What nginx runs now, as far as the agent knows: the file as found at start.
        try:
            self.loaded: str | None = output.read_text(encoding="utf-8")
        except OSError:
            self.loaded = None
        self.reloads = 0

    async def apply_from_event(self, state: DesiredState) -> None:
        """No faster path for a state a stream event told: the same as ``apply``."""
        await self.apply(state)

    async def apply(self, state: DesiredState) -> None:
        async with self._lock:
            before = self.states.get(state.proxy_id)
            self.states[state.proxy_id] = state
            missing = [p for p in self.upstreams if p not in self.states]
            if missing:
                log.debug("nginx: waiting for the state of %s before writing", ", ".join(missing))
                return
            text = render_upstreams([(self.upstreams[p], self.states[p]) for p in self.upstreams])
            if text == self.loaded:
                return
            try:
                write_atomically(self.output, text)
            except OSError as error:
                raise DataPlaneError(f"cannot write {self.output}: {error}") from error
            await self._reload()
            self.loaded = text
            self.reloads += 1
            for _instance, _target in stopped_serving(before, state):
                # A reload drains every move: old workers finish their open connections.
                self.metrics.switches.labels(state.proxy_id, SwitchPolicy.DRAIN.value).inc()
            log.info("nginx: %s written and reloaded", self.output)

    async def _reload(self) -> None:
        if self.reload_pid_file is not None:
            self._signal_master(self.reload_pid_file)
            return
        assert self.reload_command is not None
        try:
            process = await asyncio.create_subprocess_shell(
                self.reload_command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # its own process group: a hung command dies whole
            )
        except OSError as error:
            raise DataPlaneError(f"reload command failed to start: {error}") from error
        try:
            async with asyncio.timeout(self.reload_timeout):
                output, _ = await process.communicate()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            raise DataPlaneError(
                f"reload command still running after {self.reload_timeout:g}s: killed"
            ) from None
        if process.returncode != 0:
            said = output.decode(errors="replace").strip()[-500:]
            raise DataPlaneError(f"reload command exited {process.returncode}: {said}")

    @staticmethod
    def _signal_master(pid_file: Path) -> None:
        """SIGHUP to the pid in nginx's pid file: what ``nginx -s reload`` does, without a shell
        or a second nginx process on the switch's path."""
        try:
            pid = int(pid_file.read_text().strip())
            os.kill(pid, signal.SIGHUP)
        except (OSError, ValueError) as error:
            raise DataPlaneError(f"cannot signal nginx's master ({pid_file}): {error}") from error


class NginxNjsDataPlane(NginxDataPlane):
    """``--mode njs``: a switch rewrites a small state file that an njs function reads per request
    or connection; nginx reloads only when the blocks change (``core.nginx``, njs mode).

    Beside ``output`` it writes ``<output stem>.state.json`` (the switch) and ``<output stem>.js``
    (the njs module nginx imports, naming the state file by its absolute path). The state file is
    written before any reload, so the traffic never waits for one: a worker whose configuration
    lacks the new block (a reload under way) takes the next block of the list that it defines.
    """

    def __init__(
        self,
        output: Path,
        upstreams: Mapping[str, str],
        reload_command: str | None,
        metrics: AgentMetrics,
        *,
        reload_timeout: float = RELOAD_TIMEOUT,
        reload_pid_file: Path | None = None,
    ) -> None:
        super().__init__(
            output,
            upstreams,
            reload_command,
            metrics,
            reload_timeout=reload_timeout,
            reload_pid_file=reload_pid_file,
        )
        self.state_file = njs_state_path(output)
        self.module_file = njs_module_path(output)
        self.module = render_njs_module(list(self.upstreams.values()), str(self.state_file))
        self.state_text: str | None = _read_or_none(self.state_file)
        if _read_or_none(self.module_file) != self.module:
            self.loaded = None  # a new module needs a reload, even for the same blocks

    async def apply(self, state: DesiredState) -> None:
        async with self._lock:
            before = self.states.get(state.proxy_id)
            self.states[state.proxy_id] = state
            if any(p not in self.states for p in self.upstreams):
                return
            blocks = [(self.upstreams[p], self.states[p]) for p in self.upstreams]
            state_text = render_njs_state(blocks)
            if state_text != self.state_text:
                self._write(self.state_file, state_text)
                self.state_text = state_text
                for _instance, _target in stopped_serving(before, state):
                    # Open connections stay where they are; new ones read the new state.
                    self.metrics.switches.labels(state.proxy_id, SwitchPolicy.DRAIN.value).inc()
                log.info("nginx: %s written", self.state_file)
            text = render_njs_upstreams(blocks)
            if text == self.loaded:
                return
            if _read_or_none(self.module_file) != self.module:
                self._write(self.module_file, self.module)
            self._write(self.output, text)
            await self._reload()
            self.loaded = text
            self.reloads += 1
            log.info("nginx: %s written and reloaded", self.output)

    @staticmethod
    def _write(path: Path, text: str) -> None:
        try:
            write_atomically(path, text)
        except OSError as error:
            raise DataPlaneError(f"cannot write {path}: {error}") from error


def njs_state_path(output: Path) -> Path:
    """The state file of njs mode, beside the upstreams file: ``<stem>.state.json``."""
    return output.absolute().with_name(f"{output.stem}.state.json")


def njs_module_path(output: Path) -> Path:
    """The njs module of njs mode, beside the upstreams file: ``<stem>.js``."""
    return output.absolute().with_name(f"{output.stem}.js")


def _read_or_none(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None

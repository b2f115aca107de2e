"""The nginx walkthrough's stack, shared by the agent's two modes' tests: ``serve``, three relays,
Debian's nginx (an HTTP and a stream listener) and ``proxy-failover agent nginx``, each reload
logged so tests can count them."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import pytest

from tests.helpers.dataplanes import poll_until, stop
from tests.helpers.polled_planes import Nginx
from tests.helpers.relay_stack import ListenersStack


class NginxStack(ListenersStack):
    nginx: Nginx
    agent: subprocess.Popen[str] | None = None
    #: The agent's njs mode (``--mode njs``) and nginx with njs; else the rendered upstreams.
    njs: bool = False

    @property
    def reload_log(self) -> Path:
        return self.directory / "reloads.log"

    def reloads(self) -> int:
        return len(self.reload_log.read_text().splitlines()) if self.reload_log.exists() else 0

    def start_agent(self) -> None:
        # Each reload is logged, then nginx's own `-s reload` signals the master.
        reload = f"echo reload >> {self.reload_log} && {self.nginx.reload_command}"
        self.agent = self.run_agent(
            *("agent", "nginx", *(("--mode", "njs") if self.njs else ())),
            *("--output", str(self.nginx.upstreams)),
            *("--map", f"live={self.nginx.upstream}", "--reload", reload),
            log="agent.log",
        )

    @property
    def listeners(self) -> tuple[int, int]:
        return (self.nginx.http_port, self.nginx.tcp_port)

    @classmethod
    @contextlib.contextmanager
    def with_nginx(
        cls, tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path, name: str
    ) -> Iterator[Self]:
        """The stack running, the agent started first (nginx's configuration reads the file it
        writes); agent and nginx stopped on the way out."""
        with cls.running(tmp_path_factory, sqlite_template, name) as built:
            built.nginx = Nginx(built.directory, njs=cls.njs)
            try:
                built.start_agent()
                poll_until(built.nginx.upstreams.exists, within=15)
                built.nginx.start()
                yield built
            finally:
                stop(built.agent)
                built.nginx.stop()

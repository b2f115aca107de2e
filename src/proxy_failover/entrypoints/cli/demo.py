"""``proxy-failover demo``: a whole failover told in under 30 s, on a throw-away database.

It starts the real service (``serve``, engine included) on a temporary SQLite file and a free port,
three stand-in relays (``demo_relay.py``, real processes answering ``/health``), registers them,
waits for the engine to activate the preferred one, kills it with SIGKILL and narrates what the
control plane sees through the REST API: the first failed probe, the instance turning unhealthy,
the failover and its epoch; then restarts the relay and narrates the recovery. Everything it
started is stopped and deleted on the way out, also on Ctrl-C or failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, TypeVar

import httpx
import typer

from proxy_failover.client import FailoverClient
from proxy_failover.core.model import EventType, HealthStatus, Instance

T = TypeVar("T")

_RELAY_SCRIPT = Path(__file__).with_name("demo_relay.py")
#: The demo's proxy: fast probes so the story fits in seconds (production keeps the defaults).
DEMO_CONFIG = {
    "healthCheckIntervalSeconds": 1.0,
    "healthCheckTimeoutSeconds": 0.5,
    "fastIntervalSeconds": 0.25,
    "unhealthyThreshold": 3,
    "healthyThreshold": 2,
}
_RELAYS = (("relay-a", 10), ("relay-b", 20), ("relay-c", 30))
#: Variables of the caller's environment that would point the demo's service elsewhere.
_FOREIGN_SETTINGS = (
    "PFO_JWT_PUBLIC_KEY",
    "PFO_JWT_JWKS_URL",
    "PFO_JWT_ALGORITHM",
    "PFO_JWT_ISSUER",
    "PFO_JWT_AUDIENCE",
    "PFO_CONFIG_FILE",
)


class DemoFailed(Exception):
    """A step did not happen within its deadline."""


@dataclass
class Relay:
    name: str
    priority: int
    port: int = 0
    proc: subprocess.Popen[str] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(_RELAY_SCRIPT), "--port", str(self.port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip():
            raise DemoFailed(f"{self.name} did not start")
        self.port = int(line)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=5)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


@dataclass
class Story:
    """The narration: each line with the seconds since the story (or a phase) started."""

    started: float = field(default_factory=time.monotonic)
    timings: dict[str, float] = field(default_factory=dict)

    def say(self, text: str, since: float | None = None) -> None:
        elapsed = time.monotonic() - (self.started if since is None else since)
        mark = f"+{elapsed:5.2f}s" if since is not None else f"{elapsed:6.2f}s"
        typer.echo(f"[{mark}] {text}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait(what: str, condition: Callable[[], T | None], within: float) -> T:
    """Poll ``condition`` every 50 ms until it returns something; DemoFailed at the deadline."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    raise DemoFailed(f"{what}: not within {within:g} s")


@contextmanager
def _service(directory: Path, story: Story) -> Iterator[tuple[str, str]]:
    """``proxy-failover serve`` on a temporary database; yields (url, admin token)."""
    from proxy_failover.entrypoints.api.auth import mint_token, random_secret

    secret = random_secret()
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if key not in _FOREIGN_SETTINGS}
    env.update(
        PFO_DATABASE_URL=f"sqlite+aiosqlite:///{directory / 'demo.db'}",
        PFO_JWT_SECRET=secret,
        PFO_ENGINE_ENABLED="true",
        PFO_LOG_LEVEL="warning",
    )
    log = directory / "serve.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "proxy_failover", "serve", "--port", str(port)],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise DemoFailed(f"the service exited:\n{log.read_text()[-2000:]}")
            with suppress(httpx.TransportError):
                return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
            return False

        _wait("the service to answer /readyz", ready, within=20)
        story.say(f"service ready at {url} (database {directory / 'demo.db'})")
        yield url, mint_token(secret, "demo", admin=True, ttl_seconds=600)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _by_name(client: FailoverClient, proxy: str) -> dict[str, Instance]:
    return {i.instance_name: i for i in client.get_proxy_instances(proxy)}


def _tell(client: FailoverClient, relays: list[Relay], story: Story) -> None:
    proxy = "demo-edge"
    client.create_failover_configuration(proxy, DEMO_CONFIG)
    story.say(
        f"proxy {proxy}: probe every {DEMO_CONFIG['healthCheckIntervalSeconds']:g} s "
        f"({DEMO_CONFIG['fastIntervalSeconds']:g} s while a change is pending), unhealthy after "
        f"{DEMO_CONFIG['unhealthyThreshold']} failures, healthy after "
        f"{DEMO_CONFIG['healthyThreshold']} successes"
    )
    for relay in relays:
        client.register_proxy_instance(
            proxy,
            {"instanceName": relay.name, "endpoint": relay.endpoint, "priority": relay.priority},
        )
    story.say(
        "registered " + ", ".join(f"{r.name} ({r.endpoint}, priority {r.priority})" for r in relays)
    )
    phase = time.monotonic()

    def activated() -> Instance | None:
        return next((i for i in client.get_proxy_instances(proxy) if i.is_active), None)

    first = _wait("the engine to activate an instance", activated, within=10)
    redundancy = client.get_redundancy_status(proxy)
    epoch = redundancy.epoch if redundancy else "?"
    story.say(f"first probes answered: {first.instance_name} is active (epoch {epoch})", phase)
    story.timings["activation"] = time.monotonic() - phase
    victim = next(r for r in relays if r.name == first.instance_name)

    victim.kill()
    killed = time.monotonic()
    story.say(f"killed {victim.name} with SIGKILL (its port now refuses connections)")

    def failed_probe() -> Instance | None:
        instance = _by_name(client, proxy)[victim.name]
        return instance if instance.consecutive_failures >= 1 else None

    seen = _wait("the first failed probe", failed_probe, within=10)
    story.say(f"detected: probe of {victim.name} failed ({seen.last_error or 'no answer'})", killed)
    story.timings["detection"] = time.monotonic() - killed

    def unhealthy() -> Instance | None:
        instance = _by_name(client, proxy)[victim.name]
        return instance if instance.health_status is HealthStatus.UNHEALTHY else None

    down = _wait(f"{victim.name} to turn unhealthy", unhealthy, within=10)
    story.say(
        f"confirmed: {victim.name} unhealthy after {down.consecutive_failures} failures in a row",
        killed,
    )

    def failed_over() -> Instance | None:
        active = activated()
        return active if active is not None and active.instance_name != victim.name else None

    successor = _wait("the failover", failed_over, within=10)
    story.timings["failover"] = time.monotonic() - killed
    event = next(
        e
        for e in client.get_failover_events(proxy, 10)
        if e.event_type is EventType.FAILOVER and e.target_instance_id == successor.id
    )
    story.say(
        f"failover: {successor.instance_name} is active (epoch {event.epoch}, event {event.status},"
        f" {event.duration_ms} ms from detection to commit): {event.reason}",
        killed,
    )

    victim.start()
    restarted = time.monotonic()
    story.say(f"restarted {victim.name} on {victim.endpoint}")

    def healthy() -> Instance | None:
        instance = _by_name(client, proxy)[victim.name]
        return instance if instance.health_status is HealthStatus.HEALTHY else None

    back = _wait(f"{victim.name} to recover", healthy, within=10)
    story.timings["recovery"] = time.monotonic() - restarted
    still = activated()
    story.say(
        f"recovered: {victim.name} healthy after {back.consecutive_successes} successful probes; "
        f"{still.instance_name if still else 'nobody'} stays active (automatic failback is off, "
        "so a flapping relay cannot bounce traffic)",
        restarted,
    )
    typer.echo("\nevents, newest first:")
    names = {i.id: i.instance_name for i in client.get_proxy_instances(proxy)}
    for item in client.get_failover_events(proxy, 10):
        source = names.get(item.source_instance_id or "", "-")
        target = names.get(item.target_instance_id or "", "-")
        typer.echo(
            f"  {item.event_type:<10} {item.status:<10} {source:>8} -> {target:<8} "
            f"epoch {item.epoch}  {item.reason}"
        )


def demo(
    keep: Annotated[
        bool, typer.Option(help="Keep the temporary directory (database, service log).")
    ] = False,
) -> None:
    """Start a service and three relays, kill the active relay, narrate failover and recovery.

    Uses a temporary database and free local ports; touches nothing else. Exits 0 when the whole
    story happened (about 10 s), 1 with the step that did not.
    """
    story = Story()
    directory = Path(tempfile.mkdtemp(prefix="pfo-demo-"))
    relays = [Relay(name, priority) for name, priority in _RELAYS]
    try:
        for relay in relays:
            relay.start()
        story.say("started " + ", ".join(f"{r.name} on {r.endpoint}" for r in relays))
        with (
            _service(directory, story) as (url, token),
            FailoverClient(url, token) as client,
        ):
            _tell(client, relays, story)
    except DemoFailed as error:
        typer.echo(f"error: demo failed: {error}", err=True)
        raise typer.Exit(code=1) from None
    finally:
        for relay in relays:
            relay.kill()
        if keep:
            typer.echo(f"kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
    total = time.monotonic() - story.started
    summary = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in story.timings.items())
    typer.echo(f"\ndone in {total:.1f} s ({summary})")


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command()(demo)

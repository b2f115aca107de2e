"""The CLI's client commands against a real ``serve`` process: status, events, explain,
switchover, drain/maintain/enable, errors as one line, --version and help texts."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from proxy_failover import __version__
from proxy_failover.client import FailoverClient
from proxy_failover.core.model import AdminState, EventStatus, EventType
from proxy_failover.entrypoints.api.auth import mint_token
from proxy_failover.entrypoints.cli import app
from tests.helpers.api import SECRET
from tests.helpers.serve import ServeProcess

runner = CliRunner()
ADMIN = mint_token(SECRET, "root", admin=True)
ALICE = mint_token(SECRET, "alice")


def cli(server: ServeProcess, *args: str, token: str = ADMIN, input: str | None = None) -> str:
    """Run the command; return its output after asserting exit code 0."""
    result = runner.invoke(
        app, list(args), env={"PFO_URL": server.url, "PFO_TOKEN": token}, input=input
    )
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def alice(serve_process: ServeProcess) -> Iterator[FailoverClient]:
    """Alice's client, with her proxy ``edge``: three instances reported healthy, relay-a
    activated by the engine."""
    with FailoverClient(serve_process.url, ALICE) as client:
        client.create_failover_configuration("edge", {"healthCheckIntervalSeconds": 30})
        for name, priority in (("relay-a", 10), ("relay-b", 20), ("relay-c", 30)):
            instance = client.register_proxy_instance(
                "edge", {"instanceName": name, "priority": priority}
            )
            client.update_instance_health(instance.id, "healthy")
        deadline = time.monotonic() + 15
        while not client.get_proxy_instances("edge")[0].is_active:
            assert time.monotonic() < deadline, "the engine did not activate relay-a"
            time.sleep(0.05)
        yield client


def test_version_flag_prints_the_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == __version__


@pytest.mark.parametrize(
    ("command", "text"),
    [
        (["serve"], "[default: 127.0.0.1]"),
        (["token"], "[default: 3600; x>=1]"),
        (["events"], "[default: 20; 1<=x<=1000]"),
        (["status"], "[env var: PFO_URL; default: http://127.0.0.1:8080]"),
    ],
)
def test_help_keeps_square_brackets(command: list[str], text: str) -> None:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert text in " ".join(result.stdout.split())  # whatever the wrapping


def test_every_command_and_option_has_a_help_text() -> None:
    import typer.main

    group = typer.main.get_command(app)
    assert group.help
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        assert command.help, name
        for parameter in command.params:
            assert getattr(parameter, "help", None), f"{name} {parameter.name}"


@pytest.mark.slow
def test_status_lists_proxies_and_instances_like_patronictl(
    serve_process: ServeProcess, alice: FailoverClient
) -> None:
    output = cli(serve_process, "status", token=ALICE)
    assert "Proxy: edge" in output
    assert "multi, 3/3 healthy, ok, epoch 1" in output
    lines = {line.split()[1]: line for line in output.splitlines() if "relay-" in line}
    assert "active" in lines["relay-a"]
    assert "backup" in lines["relay-b"]
    assert "healthy" in lines["relay-c"]
    # bob owns nothing: he sees no proxy, and naming alice's proxy is a clear error
    bob = mint_token(SECRET, "bob")
    assert "no proxies yet" in cli(serve_process, "status", token=bob)
    missing = runner.invoke(
        app, ["status", "edge"], env={"PFO_URL": serve_process.url, "PFO_TOKEN": bob}
    )
    assert missing.exit_code == 1
    assert "error: proxy 'edge' not found" in missing.output


@pytest.mark.slow
def test_switchover_drain_maintain_enable_and_events(
    serve_process: ServeProcess, alice: FailoverClient
) -> None:
    client = alice
    output = cli(serve_process, "switchover", "edge", "--to", "relay-c", input="y\n")
    assert "switch over from relay-a to relay-c: done (switchover, epoch 2" in output
    by_name = {i.instance_name: i for i in client.get_proxy_instances("edge")}
    assert by_name["relay-c"].is_active

    # default target: the first backup in preference order
    output = cli(serve_process, "switchover", "edge", "--yes")
    assert "from relay-c to relay-a" in output

    # drain by PROXY/NAME moves the active role away; enable brings the instance back
    output = cli(serve_process, "drain", "edge/relay-a", token=ALICE)
    assert "edge/relay-a: enabled -> drain; active instance: relay-b" in output
    output = cli(serve_process, "maintain", by_name["relay-c"].id, token=ALICE)
    assert "edge/relay-c: enabled -> maintenance" in output
    assert client.get_instance(by_name["relay-c"].id).admin_state is AdminState.MAINTENANCE
    output = cli(serve_process, "enable", "edge/relay-a", token=ALICE)
    assert "drain -> enabled" in output

    events = client.get_failover_events("edge")
    assert [e.event_type for e in events[:3]] == [
        EventType.FAILOVER,  # drained away from relay-a
        EventType.SWITCHOVER,
        EventType.SWITCHOVER,
    ]
    assert all(e.status is EventStatus.COMPLETED for e in events)
    output = cli(serve_process, "events", "edge", "--limit", "3", token=ALICE)
    assert output.count("completed") == 3
    assert "relay-c" in output
    assert "root" in output  # who triggered the switchovers

    # a full page says how to read on; the next page holds the older events, then none
    (more,) = [line for line in output.splitlines() if line.startswith("older: ")]
    cursor = more.rsplit("--cursor ", 1)[1]
    older = cli(serve_process, "events", "edge", "--limit", "3", "--cursor", cursor, token=ALICE)
    rest = client.get_failover_events("edge", 100)[3:]
    assert 0 < len(rest) < 3  # the activation: so a page that ignored the cursor would show 3
    assert older.count("completed") == len(rest)
    assert "older: " not in older  # the last page


@pytest.mark.slow
def test_switchover_refused_cases_are_one_line_errors(
    serve_process: ServeProcess, alice: FailoverClient
) -> None:
    env = {"PFO_URL": serve_process.url, "PFO_TOKEN": ALICE}
    result = runner.invoke(app, ["switchover", "edge", "--yes"], env=env)
    assert result.exit_code == 1
    assert result.output.startswith("error: PROXY_FAILOVER_016: ")
    assert len(result.output.strip().splitlines()) == 1
    env["PFO_TOKEN"] = ADMIN
    result = runner.invoke(app, ["switchover", "edge", "--to", "relay-a", "--yes"], env=env)
    assert result.exit_code == 1
    assert "relay-a is already the active instance" in result.output
    result = runner.invoke(app, ["switchover", "edge", "--to", "nope", "--yes"], env=env)
    assert "has no instance named 'nope' (instances: relay-a, relay-b, relay-c)" in result.output
    result = runner.invoke(app, ["switchover", "edge"], env=env, input="n\n")
    assert result.exit_code == 1
    assert "aborted" in result.output
    result = runner.invoke(app, ["drain", "no-slash"], env=env)
    assert result.exit_code == 2
    assert "neither an instance id nor PROXY/NAME" in result.output
    result = runner.invoke(app, ["status"], env={"PFO_URL": serve_process.url})
    assert result.exit_code == 1
    assert "PROXY_FAILOVER_015" in result.output
    assert "set PFO_TOKEN" in result.output


@pytest.mark.slow
def test_explain_prints_the_reasons(serve_process: ServeProcess, alice: FailoverClient) -> None:
    client = alice
    b = next(i for i in client.get_proxy_instances("edge") if i.instance_name == "relay-b")
    client.update_instance(b.id, {"adminState": "drain"})
    output = cli(serve_process, "explain", "edge", token=ALICE)
    assert output.startswith("edge: ")
    line_b = next(line for line in output.splitlines() if "relay-b" in line)
    assert "no" in line_b
    assert "drain" in line_b
    assert "evaluation: no failover" in output


def test_an_unreachable_service_is_one_line() -> None:
    result = runner.invoke(app, ["status", "--url", "http://127.0.0.1:9"], env={"PFO_TOKEN": "x"})
    assert result.exit_code == 1
    assert result.output.startswith("error: cannot reach the service at http://127.0.0.1:9")
    assert len(result.output.strip().splitlines()) == 1

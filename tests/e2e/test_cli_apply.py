"""``proxy-failover apply -f``: declarative proxies and instances by name, against a real ``serve``.

The plan is a diff, a second apply changes nothing, ``--dry-run`` writes nothing, ``--prune``
deletes what the file no longer names, and bad files are refused before anything is sent.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner, Result

from proxy_failover.client import FailoverClient
from proxy_failover.core.model import AdminState
from proxy_failover.entrypoints.api.auth import mint_token
from proxy_failover.entrypoints.cli import app
from tests.helpers.api import SECRET
from tests.helpers.processes import InstanceProcess
from tests.helpers.serve import ServeProcess

pytestmark = pytest.mark.slow

runner = CliRunner()
ALICE = mint_token(SECRET, "alice")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "proxies.yaml"


def apply(server: ServeProcess, file: Path, *flags: str) -> Result:
    env = {"PFO_URL": server.url, "PFO_TOKEN": ALICE}
    return runner.invoke(app, ["apply", "-f", str(file), *flags], env=env)


def writes_by_alice(server: ServeProcess) -> int:
    """Audit rows of alice's calls (the engine's own actions on the probed relays excluded)."""
    admin = mint_token(SECRET, "root", admin=True)
    response = httpx.get(
        f"{server.url}/audit",
        params={"limit": 1000},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert response.status_code == 200, response.text
    return sum(row["actor"] == "alice" for row in response.json()["data"])


def test_the_example_applies_and_a_second_apply_changes_nothing(
    serve_process: ServeProcess,
) -> None:
    dry = apply(serve_process, EXAMPLE, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "+ create proxy edge" in dry.output
    assert "+ create instance edge/relay-a" in dry.output
    assert "  + endpoint: 127.0.0.1:9101" in dry.output
    assert "plan: 4 to create, 0 to update, 0 to delete" in dry.output
    assert "dry run: nothing was changed" in dry.output
    with FailoverClient(serve_process.url, ALICE) as client:
        assert client.list_proxies() == []

        first = apply(serve_process, EXAMPLE)
        assert first.exit_code == 0, first.output
        assert "applied 4 change(s)" in first.output
        config = client.get_failover_configuration("edge")
        assert config is not None
        assert config.health_check_interval_seconds == 5
        assert config.health_check.path == "/"
        instances = {i.instance_name: i for i in client.get_proxy_instances("edge")}
        assert [i.priority for i in instances.values()] == [10, 20, 30]
        assert instances["relay-c"].metadata == {"region": "backup-site"}
        before = writes_by_alice(serve_process)

        second = apply(serve_process, EXAMPLE)
        assert second.exit_code == 0, second.output
        assert second.output.strip() == "no changes: the service already matches the file"
        assert before == 4
        assert writes_by_alice(serve_process) == before  # nothing was written


def test_changes_show_as_a_diff_and_prune_deletes_what_the_file_drops(
    serve_process: ServeProcess, tmp_path: Path
) -> None:
    assert apply(serve_process, EXAMPLE).exit_code == 0
    changed = tmp_path / "changed.yaml"
    changed.write_text(
        """
proxies:
  edge:
    config: {healthCheckIntervalSeconds: 10, unhealthyThreshold: 3}
    instances:
      relay-a: {endpoint: "127.0.0.1:9101", priority: 10}
      relay-b: {endpoint: "127.0.0.1:9102", priority: 5, adminState: drain}
      relay-d: {endpoint: "127.0.0.1:9104", trafficAddress: "127.0.0.1:1935"}
"""
    )
    dry = apply(serve_process, changed, "--dry-run")
    assert dry.exit_code == 0, dry.output
    lines = dry.output.splitlines()
    assert "~ update proxy edge" in lines
    assert "  - healthCheckIntervalSeconds: 5" in lines
    assert "  + healthCheckIntervalSeconds: 10" in lines
    assert "~ update instance edge/relay-b" in lines
    assert "  - priority: 20" in lines
    assert "  + adminState: drain" in lines
    assert "+ create instance edge/relay-d" in lines
    assert "  + trafficAddress: 127.0.0.1:1935" in lines
    assert not any("relay-c" in line for line in lines)  # kept: no --prune
    assert "plan: 1 to create, 2 to update, 0 to delete" in lines

    pruned = apply(serve_process, changed, "--prune")
    assert pruned.exit_code == 0, pruned.output
    assert "- delete instance edge/relay-c" in pruned.output
    with FailoverClient(serve_process.url, ALICE) as client:
        instances = {i.instance_name: i for i in client.get_proxy_instances("edge")}
        assert sorted(instances) == ["relay-a", "relay-b", "relay-d"]
        assert instances["relay-b"].admin_state is AdminState.DRAIN
        assert instances["relay-b"].priority == 5
    again = apply(serve_process, changed, "--prune")
    assert again.output.strip() == "no changes: the service already matches the file"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("proxies: [1, 2]", "proxies must be a mapping"),
        ("proxies:\n  edge:\n    instances:\n      a: {}\n      a: {}\n", "duplicate key 'a'"),
        ("proxies:\n  failover: {}\n", "reserved word"),
        ("proxies:\n  edge: {config: {unhealthyThreshold: 0}}\n", "proxies.edge.config"),
        ("proxies:\n  edge: {config: {bogus: 1}}\n", "bogus"),
        ("proxies:\n  edge: {instances: {a: {weight: 5000}}}\n", "proxies.edge.instances.a"),
        ("proxies:\n  edge: {extra: 1}\n", "unknown key(s) extra"),
        ("oops: {}\n", "unknown top-level key(s): oops"),
        ("proxies: {edge: [\n", "while parsing"),
    ],
)
def test_a_bad_file_is_refused_before_anything_is_written(
    serve_process: ServeProcess, tmp_path: Path, content: str, message: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(content)
    result = apply(serve_process, bad)
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: {bad}: ")
    assert message in result.output
    with FailoverClient(serve_process.url, ALICE) as client:
        assert client.list_proxies() == []


def test_instance_type_cannot_change_in_place(serve_process: ServeProcess, tmp_path: Path) -> None:
    file = tmp_path / "typed.yaml"
    file.write_text("proxies:\n  edge:\n    instances:\n      a: {instanceType: srt}\n")
    assert apply(serve_process, file).exit_code == 0
    file.write_text("proxies:\n  edge:\n    instances:\n      a: {instanceType: rtmp}\n")
    result = apply(serve_process, file)
    assert result.exit_code == 2
    assert "instanceType cannot change in place" in result.output


def test_what_the_service_keeps_of_an_instance_is_never_a_change(
    serve_process: ServeProcess, tmp_path: Path
) -> None:
    """Health, counters, timestamps and the active role move on the service's side; a file
    declares only what core lets a client change in place, so applying it again writes nothing."""
    file = tmp_path / "kept.yaml"
    file.write_text("proxies:\n  kept:\n    instances:\n      a: {priority: 1, weight: 5}\n")
    assert apply(serve_process, file).exit_code == 0
    with FailoverClient(serve_process.url, ALICE) as client:
        (instance,) = client.get_proxy_instances("kept")
        reported = client.update_instance_health(instance.id, "unhealthy")
        assert (reported.health_status.value, reported.consecutive_failures) == ("unhealthy", 1)
    again = apply(serve_process, file)
    assert again.exit_code == 0, again.output
    assert again.output.strip() == "no changes: the service already matches the file"


def test_prune_deletes_a_probed_proxy_and_the_engine_stops_probing_it(
    serve_process: ServeProcess, tmp_path: Path
) -> None:
    with InstanceProcess() as relay, FailoverClient(serve_process.url, ALICE) as client:
        file = tmp_path / "probed.yaml"
        file.write_text(
            "proxies:\n"
            "  gone:\n"
            "    config: {healthCheckIntervalSeconds: 0.2, healthCheckTimeoutSeconds: 0.1}\n"
            f"    instances: {{r: {{endpoint: '{relay.endpoint}'}}}}\n"
            "  kept: {}\n"
        )
        assert apply(serve_process, file).exit_code == 0
        deadline = time.monotonic() + 15
        while not client.get_proxy_instances("gone")[0].is_active:
            assert time.monotonic() < deadline, "the engine did not activate the probed relay"
            time.sleep(0.05)

        file.write_text("proxies:\n  kept: {}\n")
        result = apply(serve_process, file, "--prune")
        assert result.exit_code == 0, result.output
        assert "- delete proxy gone" in result.output
        assert [p.proxy_id for p in client.list_proxies()] == ["kept"]

        # probes stop: the relay's count settles (over 5 intervals) well before the deadline
        deadline = time.monotonic() + 15
        seen = relay.request("GET", "/stats")["healthRequests"]
        while True:
            time.sleep(1.0)
            now = relay.request("GET", "/stats")["healthRequests"]
            if now == seen:
                break
            assert time.monotonic() < deadline, "the deleted proxy's relay is still probed"
            seen = now
    assert "Traceback" not in serve_process.log.read_text()

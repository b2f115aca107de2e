"""Look and act through the REST API, like ``patronictl``: status, events, explain, switchover,
drain, maintain, enable.

Instances are named by id or by ``PROXY/NAME`` (``edge/relay-a``): proxy ids cannot contain a
``/``, so the pair is never ambiguous. Acting needs an admin token for ``switchover``; ``drain``,
``maintain`` and ``enable`` need the owner's or an admin's.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from proxy_failover.client import FailoverClient
from proxy_failover.core.model import AdminState, HealthStatus, Instance, RedundancyStatus
from proxy_failover.entrypoints.cli.common import (
    DEFAULT_URL,
    TokenOption,
    UrlOption,
    ago,
    connect,
    console,
    fail,
    instance_named,
    names_by_id,
    resolve_instance,
)

ProxyArgument = Annotated[str, typer.Argument(help="Proxy id.", show_default=False)]
InstanceArgument = Annotated[
    str, typer.Argument(help="Instance id, or PROXY/NAME (e.g. edge/relay-a).", show_default=False)
]

#: How long drain/maintain wait for the engine to move the active role away (it is woken at once).
_MOVE_WAIT_SECONDS = 5.0

_HEALTH_STYLE = {
    HealthStatus.HEALTHY: "green",
    HealthStatus.UNHEALTHY: "red",
    HealthStatus.UNKNOWN: "yellow",
}


def _role(instance: Instance, redundancy: RedundancyStatus) -> str:
    if instance.is_active:
        return "active"
    if instance.id in redundancy.backup_instance_ids:
        return "backup"
    return "-"


def _instance_row(instance: Instance, redundancy: RedundancyStatus, now: datetime) -> list[str]:
    health = instance.health_status
    return [
        instance.instance_name,
        instance.endpoint or "(reports)",
        f"[bold]{_role(instance, redundancy)}[/bold]"
        if instance.is_active
        else _role(instance, redundancy),
        f"[{_HEALTH_STYLE[health]}]{health}[/]",
        str(instance.admin_state),
        str(instance.priority),
        str(instance.consecutive_failures),
        "-" if instance.last_latency_ms is None else f"{instance.last_latency_ms:.0f}",
        ago(instance.last_health_check, now),
    ]


def _proxy_title(redundancy: RedundancyStatus) -> str:
    state = "[red]degraded[/red]" if redundancy.is_degraded else "[green]ok[/green]"
    return (
        f"Proxy: [bold]{redundancy.proxy_id}[/bold]  {redundancy.redundancy_level}, "
        f"{redundancy.healthy_instances}/{redundancy.total_instances} healthy, {state}, "
        f"epoch {redundancy.epoch}"
    )


def status(
    proxy: Annotated[
        list[str] | None, typer.Argument(help="Only these proxies (default: every proxy you see).")
    ] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Table of proxies and their instances: role, health, admin state, failures, last probe."""
    out = console()
    now = datetime.now(UTC)
    with connect(url, token) as client:
        summaries = {summary.proxy_id: summary for summary in client.list_proxies()}
        wanted = proxy or sorted(summaries)
        if not wanted:
            out.print("no proxies yet (create one with `proxy-failover apply -f FILE.yaml`)")
            return
        for proxy_id in wanted:
            if proxy_id not in summaries:
                fail(f"proxy {proxy_id!r} not found")
            redundancy = summaries[proxy_id].redundancy
            table = Table(title=_proxy_title(redundancy), title_justify="left", expand=False)
            for column in ("Instance", "Endpoint", "Role", "Health", "Admin", "Prio", "Fails"):
                table.add_column(column)
            table.add_column("Latency ms", justify="right")
            table.add_column("Last probe")
            for instance in client.get_proxy_instances(proxy_id):
                table.add_row(*_instance_row(instance, redundancy, now))
            out.print(table)


def events(
    proxy: ProxyArgument,
    limit: Annotated[
        int, typer.Option(min=1, max=1000, help="How many events, newest first.")
    ] = 20,
    cursor: Annotated[
        str | None,
        typer.Option(help="Continue after the page that printed this cursor (older events)."),
    ] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """The proxy's failover, failback, switchover and recovery events, newest first."""
    out = console()
    with connect(url, token) as client:
        names = names_by_id(client.get_proxy_instances(proxy))
        page = client.failover_events_page(proxy, limit, cursor=cursor)
    found = page.items
    if not found:
        out.print(f"no {'more ' if cursor else ''}events for {proxy}")
        return
    table = Table(title=f"Events of {proxy}", title_justify="left")
    for column in ("Started (UTC)", "Type", "Status", "From", "To", "Epoch", "Took", "By"):
        table.add_column(column)
    table.add_column("Reason", overflow="fold")
    for event in found:
        took = "-" if event.duration_ms is None else f"{event.duration_ms} ms"
        table.add_row(
            event.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            str(event.event_type),
            str(event.status),
            _name(names, event.source_instance_id),
            _name(names, event.target_instance_id),
            str(event.epoch),
            took,
            event.triggered_by,
            event.reason + (f" ({event.error_message})" if event.error_message else ""),
        )
    out.print(table)
    if page.next_cursor is not None:
        more = f"proxy-failover events {proxy} --limit {limit} --cursor {page.next_cursor}"
        out.print(f"older: {more}", soft_wrap=True)  # one line, to copy whole


def _name(names: dict[str, str], instance_id: str | None) -> str:
    if instance_id is None:
        return "-"
    return names.get(instance_id, f"{instance_id[:8]} (deleted)")


def explain(proxy: ProxyArgument, url: UrlOption = DEFAULT_URL, token: TokenOption = None) -> None:
    """Why the active instance is active and why each other one is or is not eligible."""
    out = console()
    with connect(url, token) as client:
        explanation = client.explain(proxy)
    out.print(f"[bold]{proxy}[/bold]: {explanation.summary}")
    out.print(
        f"strategy {explanation.strategy}, unhealthy after {explanation.unhealthy_threshold} "
        f"failures, healthy after {explanation.healthy_threshold} successes"
    )
    table = Table(title_justify="left")
    for column in ("#", "Instance", "Active", "Eligible", "Health", "Admin", "Why"):
        table.add_column(column)
    for item in explanation.instances:
        table.add_row(
            str(item.preference_rank),
            item.instance_name,
            "yes" if item.is_active else "",
            "[green]yes[/green]" if item.is_eligible else "[red]no[/red]",
            str(item.health_status),
            str(item.admin_state),
            "; ".join(item.reasons),
        )
    out.print(table)
    evaluation = explanation.evaluation
    verdict = "failover due" if evaluation.should_failover else "no failover"
    out.print(f"evaluation: {verdict}: {evaluation.reason} [{evaluation.reason_code}]")


def switchover(
    proxy: ProxyArgument,
    to: Annotated[
        str | None,
        typer.Option(
            "--to", help="Instance name to switch to (default: the first backup in order)."
        ),
    ] = None,
    reason: Annotated[str, typer.Option(help="Reason recorded with the event.")] = (
        "Switchover requested from the CLI"
    ),
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Move the active role to another eligible instance (admin).

    A compare-and-swap on the current active instance: if it changed meanwhile, nothing moves.
    The event is recorded and completed at once: the control plane's part of a switch ends when
    the pointer moves; data planes follow it through their agents.
    """
    out = console()
    with connect(url, token) as client:
        instances = client.get_proxy_instances(proxy)
        names = names_by_id(instances)
        redundancy = client.get_redundancy_status(proxy)
        if redundancy is None:
            fail(f"proxy {proxy!r} not found")
        source = redundancy.active_instance_id
        target = _target(client, proxy, to, redundancy)
        if target.id == source:
            fail(f"{target.instance_name} is already the active instance")
        what = f"{proxy}: switch over from {_name(names, source)} to {target.instance_name}"
        if not yes and not typer.confirm(f"{what}?"):
            fail("aborted")
        event = client.execute_failover(proxy, source, target.id, reason)
        client.complete_failover_event(event.id, "completed")
    out.print(f"{what}: done ({event.event_type}, epoch {event.epoch}, event {event.id})")


def _target(
    client: FailoverClient, proxy: str, to: str | None, redundancy: RedundancyStatus
) -> Instance:
    if to is not None:
        return instance_named(client, proxy, to)
    if not redundancy.backup_instance_ids:
        fail(f"proxy {proxy!r} has no eligible backup instance to switch to")
    return client.get_instance(redundancy.backup_instance_ids[0])


def _set_admin_state(reference: str, state: AdminState, url: str, token: str | None) -> None:
    """PATCH the admin state; when that takes the active instance out of the pool, wait (up to
    ``_MOVE_WAIT_SECONDS``) for the engine to move the role, so the line printed is the outcome."""
    out = console()
    with connect(url, token) as client:
        before = resolve_instance(client, reference)
        after = client.update_instance(before.id, {"adminState": str(state)})
        redundancy = client.get_redundancy_status(after.proxy_id)
        deadline = time.monotonic() + _MOVE_WAIT_SECONDS
        while (
            state is not AdminState.ENABLED
            and redundancy is not None
            and redundancy.active_instance_id == after.id
            and time.monotonic() < deadline
        ):
            time.sleep(0.1)
            redundancy = client.get_redundancy_status(after.proxy_id)
        names = names_by_id(client.get_proxy_instances(after.proxy_id))
    active_id = redundancy.active_instance_id if redundancy else None
    active = _name(names, active_id)
    if state is not AdminState.ENABLED and active_id == after.id:
        active += " (still: no eligible instance to move the role to yet)"
    out.print(
        f"{after.proxy_id}/{after.instance_name}: {before.admin_state} -> {after.admin_state}; "
        f"active instance: {active}"
    )


def drain(
    instance: InstanceArgument, url: UrlOption = DEFAULT_URL, token: TokenOption = None
) -> None:
    """Take an instance out of the eligible pool; it is still probed (HAProxy's drain)."""
    _set_admin_state(instance, AdminState.DRAIN, url, token)


def maintain(
    instance: InstanceArgument, url: UrlOption = DEFAULT_URL, token: TokenOption = None
) -> None:
    """Put an instance in maintenance: out of the pool, not probed, health reads unknown."""
    _set_admin_state(instance, AdminState.MAINTENANCE, url, token)


def enable(
    instance: InstanceArgument, url: UrlOption = DEFAULT_URL, token: TokenOption = None
) -> None:
    """Return a drained or maintained instance to the pool (eligible once healthy)."""
    _set_admin_state(instance, AdminState.ENABLED, url, token)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    for command in (status, events, explain, switchover, drain, maintain, enable):
        app.command()(command)

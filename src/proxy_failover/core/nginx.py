"""nginx ``upstream`` blocks for proxies (``proxy-failover agent nginx``, SPEC §9).

One block per mapped proxy, valid in both nginx's ``http`` and ``stream`` contexts (the same
``server`` parameters exist in both). Without load balancing the active instance is the one
primary server and the other eligible instances follow as ``backup`` in preference order, so
nginx itself moves a request to the next one when the active fails to connect, before the control
plane has decided (``proxy_next_upstream``). Instances that are not eligible (unhealthy,
disabled, draining) are ``down``. With load balancing every serving instance is a primary at its
weight, the others ``down``.

The text is deterministic and carries nothing that changes without the traffic changing (no
epoch, no time), so the agent reloads nginx only when the routing really changed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from proxy_failover.core.dataplane import DesiredState, TrafficTarget, format_address

#: What nginx accepts as an upstream name here (no spaces, quotes, braces or semicolons).
UPSTREAM_NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")
#: An upstream must name at least one server: this one while no instance has an address.
PLACEHOLDER = "127.0.0.1:1 down"
HEADER = "# Written by proxy-failover agent nginx: do not edit, every change is overwritten.\n"


def _server_line(state: DesiredState, target: TrafficTarget, backups: bool) -> str:
    address = format_address(target.address)
    if target.serving:
        weight = f" weight={target.weight}" if state.load_balanced else ""
        role = "active" if target.instance_id == state.active_instance_id else "serving"
        return f"    server {address}{weight};  # {target.name} ({role})\n"
    if backups and target.eligible:
        return f"    server {address} backup;  # {target.name} (standby)\n"
    return f"    server {address} down;  # {target.name} (not eligible)\n"


def render_upstream(upstream: str, state: DesiredState) -> str:
    """One ``upstream`` block for ``state``: primary, ``backup`` and ``down`` servers."""
    if not UPSTREAM_NAME.match(upstream):
        raise ValueError(f"invalid nginx upstream name {upstream!r}")
    # ``backup`` beside no primary is refused by nginx: then every server is down.
    backups = not state.load_balanced and any(t.serving for t in state.targets)
    # Primaries first (nginx does not care, a reader does), each group in preference order.
    ordered = sorted(state.targets, key=lambda target: not target.serving)
    body = "".join(
        _server_line(state, target, backups) for target in ordered if target.address is not None
    )
    body = body or f"    server {PLACEHOLDER};  # no instance with an address\n"
    return f"# proxy {state.proxy_id}\nupstream {upstream} {{\n{body}}}\n"


def render_upstreams(blocks: Sequence[tuple[str, DesiredState]]) -> str:
    """The whole file: a header and one block per (upstream name, state), in the given order."""
    return HEADER + "".join(render_upstream(name, state) for name, state in blocks)

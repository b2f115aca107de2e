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

import dataclasses
import json
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


# --- njs mode: switches without a reload -------------------------------------------------------
# ``agent nginx --mode njs`` renders, per mapped proxy, one block per instance (``UP.<id>``: that
# instance primary, the other eligible ones ``backup``, as if it were the active one), ``UP.lb``
# with load balancing, and ``UP.none`` (no live server); a ``js_var`` names every block the file
# defines. A small JSON state file says which block each upstream uses now; an njs ``js_set``
# function reads it per request (HTTP) or connection (stream) and ``proxy_pass`` takes the
# variable. A switch between eligible instances rewrites the state file only; the blocks change
# (and nginx reloads) when instances, addresses, eligibility or load balancing change.

#: Upstream names usable in njs mode: the module exports a function by that name (``pfo.NAME``).
NJS_UPSTREAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: The variable (in the rendered file) naming every block the running configuration defines.
NJS_KNOWN_VARIABLE = "pfo_upstreams"


def njs_block(upstream: str, instance_id: str) -> str:
    """The block of ``upstream`` in which ``instance_id`` is the primary server."""
    return f"{upstream}.{instance_id}"


def _as_active(state: DesiredState, instance_id: str) -> DesiredState:
    """``state`` as if ``instance_id`` were the active instance (and the only serving one)."""
    targets = tuple(
        dataclasses.replace(t, serving=t.instance_id == instance_id) for t in state.targets
    )
    return dataclasses.replace(state, active_instance_id=instance_id, targets=targets)


def _njs_blocks(upstream: str, state: DesiredState) -> list[tuple[str, str]]:
    """(name, text) of every block of one proxy in njs mode."""
    if not NJS_UPSTREAM_NAME.match(upstream):
        raise ValueError(f"invalid upstream name for njs mode {upstream!r}")
    if state.load_balanced:
        blocks = [(f"{upstream}.lb", state)]
    else:
        blocks = [
            (njs_block(upstream, t.instance_id), _as_active(state, t.instance_id))
            for t in state.targets
            if t.address is not None
        ]
    none = f"{upstream}.none"
    texts = [(name, render_upstream(name, as_state)) for name, as_state in blocks]
    return [
        *texts,
        (none, f"upstream {none} {{\n    server {PLACEHOLDER};  # no live server\n}}\n"),
    ]


def render_njs_upstreams(blocks: Sequence[tuple[str, DesiredState]]) -> str:
    """The whole file of njs mode: every proxy's blocks, then the ``js_var`` naming them all."""
    rendered = [block for name, state in blocks for block in _njs_blocks(name, state)]
    known = " ".join(name for name, _ in rendered)
    return (
        HEADER
        + "".join(text for _, text in rendered)
        + f'js_var ${NJS_KNOWN_VARIABLE} "{known}";\n'
    )


def njs_choice(upstream: str, state: DesiredState) -> list[str]:
    """The blocks ``upstream`` should use, best first: the active instance's, then (for a worker
    still running a configuration without it, during a reload) the eligible others' in
    preference order. Empty without an active instance (njs then picks ``UP.none``)."""
    if state.load_balanced:
        return [f"{upstream}.lb"]
    active = state.target(state.active_instance_id)
    if active is None or active.address is None:
        return []
    others = [t for t in state.targets if t.eligible and t is not active and t.address is not None]
    return [njs_block(upstream, t.instance_id) for t in (active, *others)]


def render_njs_state(blocks: Sequence[tuple[str, DesiredState]]) -> str:
    """The state file: ``{"UPSTREAM": [block, ...], ...}`` (JSON, one line)."""
    choices = {name: njs_choice(name, state) for name, state in blocks}
    return json.dumps(choices, separators=(",", ":")) + "\n"


NJS_MODULE = """\
// Written by proxy-failover agent nginx --mode njs: do not edit, every change is overwritten.
// js_set $pfo_UPSTREAM pfo.UPSTREAM; then proxy_pass http://$pfo_UPSTREAM; (stream: $pfo_UPSTREAM)
import fs from 'fs';

var STATE = {state};

// The first block of the state file's list that this worker's configuration defines (the
// js_var in the rendered upstreams file), else UPSTREAM.none. No cache: njs 0.7 keeps no value
// between requests, and the file is small.
function pick(upstream, variables) {{
    var known = ' ' + variables.{known} + ' ';
    var names;
    try {{
        names = JSON.parse(fs.readFileSync(STATE, 'utf8'))[upstream] || [];
    }} catch (e) {{
        // Unreadable (nginx's worker user must be able to read it) or not written yet.
        ngx.log(ngx.WARN, 'proxy-failover: ' + STATE + ': ' + e);
        names = [];
    }}
    for (var i = 0; i < names.length; i++) {{
        if (known.indexOf(' ' + names[i] + ' ') >= 0) {{
            return names[i];
        }}
    }}
    return upstream + '.none';
}}

export default {{
{functions}}};
"""


def render_njs_module(upstreams: Sequence[str], state_path: str) -> str:
    """The njs module: one function per upstream (``pfo.UPSTREAM`` for ``js_set``), reading the
    state file at ``state_path`` (absolute: nginx resolves nothing relative for njs)."""
    for upstream in upstreams:
        if not NJS_UPSTREAM_NAME.match(upstream):
            raise ValueError(f"invalid upstream name for njs mode {upstream!r}")
    functions = "".join(
        f"    {name}: function (r) {{ return pick({json.dumps(name)}, r.variables); }},\n"
        for name in upstreams
    )
    return NJS_MODULE.format(
        state=json.dumps(state_path), known=NJS_KNOWN_VARIABLE, functions=functions
    )

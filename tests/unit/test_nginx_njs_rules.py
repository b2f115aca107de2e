"""core.nginx's njs mode: one block per instance, the state file that picks among them, the njs
module; what changes the blocks (a reload) and what changes the state alone (a switch)."""

from __future__ import annotations

import json

import pytest

from proxy_failover.core.dataplane import desired_state, moved_by_event
from proxy_failover.core.model import AdminState, HealthStatus
from proxy_failover.core.nginx import (
    HEADER,
    njs_block,
    njs_choice,
    render_njs_module,
    render_njs_state,
    render_njs_upstreams,
)
from tests.helpers.factories import PROXY, inst

A, B, C = (
    inst("a", priority=1, endpoint="10.0.0.1:1935"),
    inst("b", priority=2, endpoint="10.0.0.2:1935"),
    inst("c", priority=3, endpoint="10.0.0.3:1935"),
)


def test_one_block_per_instance_as_if_it_were_active_then_none_then_the_known_list() -> None:
    nowhere = inst("x", priority=4)  # no address: no block
    state = desired_state(PROXY, [A, B, C, nowhere], "a", 3, load_balanced=False)
    assert render_njs_upstreams([("relays", state)]) == (
        HEADER + f"# proxy {PROXY}\nupstream relays.a {{\n"
        "    server 10.0.0.1:1935;  # a (active)\n"
        "    server 10.0.0.2:1935 backup;  # b (standby)\n"
        "    server 10.0.0.3:1935 backup;  # c (standby)\n"
        "}\n"
        f"# proxy {PROXY}\nupstream relays.b {{\n"
        "    server 10.0.0.2:1935;  # b (active)\n"
        "    server 10.0.0.1:1935 backup;  # a (standby)\n"
        "    server 10.0.0.3:1935 backup;  # c (standby)\n"
        "}\n"
        f"# proxy {PROXY}\nupstream relays.c {{\n"
        "    server 10.0.0.3:1935;  # c (active)\n"
        "    server 10.0.0.1:1935 backup;  # a (standby)\n"
        "    server 10.0.0.2:1935 backup;  # b (standby)\n"
        "}\n"
        "upstream relays.none {\n    server 127.0.0.1:1 down;  # no live server\n}\n"
        'js_var $pfo_upstreams "relays.a relays.b relays.c relays.none";\n'
    )
    assert njs_block("relays", "b") == "relays.b"


def test_a_switch_changes_the_state_file_and_not_the_blocks() -> None:
    before = desired_state(PROXY, [A, B, C], "a", 3, load_balanced=False)
    after = moved_by_event(before, "b", 4)
    assert after is not None
    blocks = render_njs_upstreams([("relays", before)])
    assert render_njs_upstreams([("relays", after)]) == blocks  # no reload
    assert render_njs_state([("relays", before)]) == (
        '{"relays":["relays.a","relays.b","relays.c"]}\n'
    )
    assert json.loads(render_njs_state([("relays", after)])) == {
        "relays": ["relays.b", "relays.a", "relays.c"]
    }


def test_an_ineligible_instance_is_down_in_the_others_blocks_and_no_fallback() -> None:
    sick = inst("c", priority=3, endpoint="10.0.0.3:1935", health=HealthStatus.UNHEALTHY)
    away = inst("b", priority=2, endpoint="10.0.0.2:1935", admin=AdminState.MAINTENANCE)
    state = desired_state(PROXY, [A, away, sick], "a", 3, load_balanced=False)
    text = render_njs_upstreams([("relays", state)])
    block_a = text[text.index("upstream relays.a") : text.index("upstream relays.b")]
    assert "10.0.0.2:1935 down;  # b (not eligible)" in block_a
    assert "10.0.0.3:1935 down;  # c (not eligible)" in block_a
    # Its own block keeps it primary whatever its health: picking it is the state file's call.
    assert "upstream relays.c {\n    server 10.0.0.3:1935;  # c (active)\n" in text
    assert njs_choice("relays", state) == ["relays.a"]


def test_no_active_instance_or_one_without_an_address_chooses_nothing() -> None:
    assert njs_choice("relays", desired_state(PROXY, [A, B], None, 1, load_balanced=False)) == []
    nowhere = inst("x", priority=0)
    state = desired_state(PROXY, [nowhere, A], "x", 1, load_balanced=False)
    assert njs_choice("relays", state) == []


def test_load_balancing_renders_one_weighted_block() -> None:
    state = desired_state(PROXY, [A, B], "a", 1, load_balanced=True)
    text = render_njs_upstreams([("lb", state)])
    assert "upstream lb.lb {\n    server 10.0.0.1:1935 weight=100;" in text
    assert "upstream lb.a " not in text
    assert text.endswith('js_var $pfo_upstreams "lb.lb lb.none";\n')
    assert njs_choice("lb", state) == ["lb.lb"]


def test_the_module_exports_one_function_per_upstream_reading_the_state_file() -> None:
    module = render_njs_module(["relays", "up_2"], "/etc/nginx/pfo.state.json")
    assert 'var STATE = "/etc/nginx/pfo.state.json";' in module
    assert '    relays: function (r) { return pick("relays", r.variables); },\n' in module
    assert '    up_2: function (r) { return pick("up_2", r.variables); },\n' in module
    assert "variables.pfo_upstreams" in module


@pytest.mark.parametrize("name", ["re.lays", "1relays", "re-lays", ""])
def test_njs_mode_takes_upstream_names_a_function_can_carry(name: str) -> None:
    state = desired_state(PROXY, [A], "a", 1, load_balanced=False)
    with pytest.raises(ValueError, match="invalid upstream name for njs mode"):
        render_njs_upstreams([(name, state)])
    with pytest.raises(ValueError, match="invalid upstream name for njs mode"):
        render_njs_module([name], "/state.json")

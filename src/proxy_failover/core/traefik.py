"""Traefik's dynamic configuration for proxies (``GET /providers/traefik``, SPEC §9).

Traefik's HTTP provider polls one URL and takes its answer as a whole dynamic configuration. Each
proxy becomes one service named ``pfo-<proxyId>``, declared twice with the same servers: under
``http.services`` (``loadBalancer.servers[].url``) for HTTP routers and under ``tcp.services``
(``loadBalancer.servers[].address``) for TCP routers. The user's own routers (in another provider)
point at ``pfo-<proxyId>@http``.

- Without load balancing the service has one server: the active instance (none while there is no
  active instance: Traefik answers 503, and a TCP router refuses the connection).
- **Local standby (HTTP only)**: with ``standby`` (the default), the HTTP service of a proxy with
  an active instance and other eligible instances is a ``failover`` chain instead: the active
  instance's one-server service, falling back on a 502 or 504 answer (Traefik's own answer when
  it cannot reach the server) to the next eligible instance in preference order, and so on
  (``pfo-<proxyId>-<instanceId>`` for each, ``pfo-<proxyId>-standby-<n>`` for the inner links).
  Traefik then retries a request the dead active instance refused on a standby at once, before
  the control plane has decided, as nginx's ``backup`` servers and Envoy's priority 1 do. Every
  request still goes to the active instance first, so a planned move sends every new request to
  the new active one. Traefik 3.7's TCP services have no such thing (no ``failover`` service, and
  a weight-0 member is never used), so the TCP service keeps the active instance alone.
- With load balancing it is a ``weighted`` service over one single-server service per serving
  instance (``pfo-<proxyId>-<instanceId>``) at the instance's weight: Traefik's weighted round
  robin, which the HTTP and the TCP side both have (tested with Traefik 3.7); with no serving
  instance, an empty load balancer again.

The answer is a pure function of the states and is serialised with sorted keys, so an unchanged
state gives the same bytes: Traefik hashes each answer and does nothing when the hash repeats.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from proxy_failover.core.dataplane import DesiredState, TrafficTarget, format_address
from proxy_failover.core.model import ServerScheme

#: Prefix of every service this provider declares (Traefik reserves ``@`` for the provider).
SERVICE_PREFIX = "pfo-"


def service_name(proxy_id: str, instance_id: str | None = None) -> str:
    """``pfo-<proxyId>``, or ``pfo-<proxyId>-<instanceId>`` for one load-balanced instance."""
    name = f"{SERVICE_PREFIX}{proxy_id}"
    return name if instance_id is None else f"{name}-{instance_id}"


def _http_server(target: TrafficTarget, scheme: ServerScheme) -> dict[str, Any]:
    return {"url": f"{scheme.value}://{format_address(target.address)}"}


def _tcp_server(target: TrafficTarget) -> dict[str, Any]:
    return {"address": format_address(target.address)}


_Server = Callable[[TrafficTarget], dict[str, Any]]

#: The answers on which a ``failover`` link sends the request to its fallback: Traefik's own
#: 502 (connection refused or reset) and 504 (timeout) when the server cannot be reached.
FAILOVER_STATUS = ["502", "504"]


def standbys(state: DesiredState) -> list[TrafficTarget]:
    """The eligible instances that take no traffic, with an address, in preference order."""
    return [t for t in state.targets if t.eligible and not t.serving and t.address is not None]


def _failover_chain(
    state: DesiredState,
    chain: list[TrafficTarget],
    server: _Server,
    services: dict[str, dict[str, Any]],
) -> None:
    """``pfo-<id>``: the first of ``chain``, falling back to the next one on a 502/504, and on."""
    members = [service_name(state.proxy_id, target.instance_id) for target in chain]
    for member, target in zip(members, chain, strict=True):
        services[member] = {"loadBalancer": {"servers": [server(target)]}}
    links = [service_name(state.proxy_id)]
    links += [_link_name(state.proxy_id, n) for n in range(1, len(chain) - 1)]
    for n, link in enumerate(links):
        fallback = links[n + 1] if n + 1 < len(links) else members[-1]
        services[link] = {
            "failover": {
                "service": members[n],
                "fallback": fallback,
                "errors": {"status": FAILOVER_STATUS},
            }
        }


def _link_name(proxy_id: str, n: int) -> str:
    return f"{service_name(proxy_id)}-standby-{n}"


def _services(
    state: DesiredState,
    server: _Server,
    services: dict[str, dict[str, Any]],
    standby: bool = False,
) -> None:
    """Add the proxy's services to ``services``: one load balancer, a failover chain of the active
    instance and its standbys (``standby``), or a weighted set."""
    serving = [t for t in state.serving if t.address is not None]
    name = service_name(state.proxy_id)
    if standby and not state.load_balanced and len(serving) == 1 and standbys(state):
        _failover_chain(state, [*serving, *standbys(state)], server, services)
        return
    if not state.load_balanced or not serving:
        services[name] = {"loadBalancer": {"servers": [server(t) for t in serving]}}
        return
    members = []
    for target in serving:
        member = service_name(state.proxy_id, target.instance_id)
        services[member] = {"loadBalancer": {"servers": [server(target)]}}
        members.append({"name": member, "weight": target.weight})
    services[name] = {"weighted": {"services": members}}


def traefik_configuration(
    states: Sequence[DesiredState],
    *,
    scheme: ServerScheme = ServerScheme.HTTP,
    standby: bool = True,
) -> dict[str, Any]:
    """The dynamic configuration declaring every state's services for HTTP and TCP routers.

    ``scheme`` is how Traefik speaks HTTP to the instances; ``standby`` makes each HTTP service a
    failover chain over the active instance and its standbys (Traefik then buffers request
    bodies, to replay them: off for routers that carry streamed uploads)."""
    http: dict[str, dict[str, Any]] = {}
    tcp: dict[str, dict[str, Any]] = {}
    for state in states:
        _services(state, lambda t: _http_server(t, scheme), http, standby)
        _services(state, _tcp_server, tcp)
    return {"http": {"services": http}, "tcp": {"services": tcp}}

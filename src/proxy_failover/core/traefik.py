"""Traefik's dynamic configuration for proxies (``GET /providers/traefik``, SPEC §9).

Traefik's HTTP provider polls one URL and takes its answer as a whole dynamic configuration. Each
proxy becomes one service named ``pfo-<proxyId>``, declared twice with the same servers: under
``http.services`` (``loadBalancer.servers[].url``) for HTTP routers and under ``tcp.services``
(``loadBalancer.servers[].address``) for TCP routers. The user's own routers (in another provider)
point at ``pfo-<proxyId>@http``.

- Without load balancing the service has one server: the active instance (none while there is no
  active instance: Traefik answers 503, and a TCP router refuses the connection).
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


def _services(state: DesiredState, server: _Server, services: dict[str, dict[str, Any]]) -> None:
    """Add the proxy's services to ``services``: one load balancer, or a weighted set."""
    serving = [t for t in state.serving if t.address is not None]
    name = service_name(state.proxy_id)
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
    states: Sequence[DesiredState], *, scheme: ServerScheme = ServerScheme.HTTP
) -> dict[str, Any]:
    """The dynamic configuration declaring every state's services for HTTP and TCP routers.

    ``scheme`` is how Traefik speaks HTTP to the instances."""
    http: dict[str, dict[str, Any]] = {}
    tcp: dict[str, dict[str, Any]] = {}
    for state in states:
        _services(state, lambda t: _http_server(t, scheme), http)
        _services(state, _tcp_server, tcp)
    return {"http": {"services": http}, "tcp": {"services": tcp}}

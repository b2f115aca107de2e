"""Which addresses proxy-failover may connect to on a user's behalf (webhooks, probes, recovery).

Every URL and endpoint a user registers makes this service open a connection from inside the
operator's network. Without a policy a non-admin could point a webhook at the cloud metadata
service, or register "instances" on internal ports and read their health as a port scan. The rule,
decided here once and applied at registration and again for the address actually connected to
(so a name that resolves elsewhere later, DNS rebinding, gains nothing):

1. ``deny`` rules (``PFO_OUTBOUND_DENY``) refuse for everyone;
2. ``allow`` rules (``PFO_OUTBOUND_ALLOW``) permit for everyone, defaults included;
3. link-local, metadata, unspecified, multicast and reserved addresses are refused for everyone;
4. loopback, private and other non-global addresses are refused unless the registrant is trusted
   (an admin, or the Python library, which runs with the operator's own authority);
5. everything else, the public internet, is allowed.

A rule is an IP address, a CIDR network or a host name; ``*.example.com`` matches its subdomains.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from proxy_failover.core.model import Instance

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Names of cloud metadata services: refused whatever they resolve to.
METADATA_HOSTS = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
#: Addresses of metadata services outside link-local (AWS's IPv6 one, Alibaba's).
_METADATA_NETWORKS = tuple(
    ipaddress.ip_network(n) for n in ("fd00:ec2::254/128", "100.100.100.200/32")
)


@dataclass(frozen=True, slots=True)
class Rules:
    """A parsed rule list: networks and host names (``*.suffix`` patterns included)."""

    networks: tuple[IpNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()

    def matches(self, host: str, addresses: Iterable[IpAddress]) -> bool:
        name = normalize_host(host)
        if name in self.hosts or any(name.endswith(suffix) for suffix in self.suffixes):
            return True
        return any(address in network for address in addresses for network in self.networks)


@dataclass(frozen=True, slots=True)
class OutboundPolicy:
    """The operator's ``allow`` and ``deny`` rules on top of the built-in defaults."""

    allow: Rules = Rules()
    deny: Rules = Rules()


def parse_rules(text: str | Sequence[str]) -> Rules:
    """``"10.0.0.0/8, ::1, relay.internal, *.corp"`` → ``Rules``; ValueError names a bad entry."""
    items = text.split(",") if isinstance(text, str) else list(text)
    networks: list[IpNetwork] = []
    hosts: set[str] = set()
    suffixes: list[str] = []
    for raw in items:
        item = raw.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
            continue
        except ValueError:
            pass
        name = normalize_host(item)
        label = name[2:] if name.startswith("*.") else name
        if not label or any(c in label for c in "/:*[] ") or label.startswith("."):
            raise ValueError(f"not an IP address, network or host name: {item!r}")
        if name.startswith("*."):
            suffixes.append(name[1:])
        else:
            hosts.add(name)
    return Rules(tuple(networks), frozenset(hosts), tuple(suffixes))


def normalize_host(host: str) -> str:
    """Lower case, without brackets or the root's trailing dot (``Metadata.`` is ``metadata``)."""
    return host.strip().strip("[]").rstrip(".").lower()


def literal_address(host: str) -> IpAddress | None:
    """The IP address a host names literally, if it does (IPv4-mapped IPv6 as IPv4)."""
    try:
        address = ipaddress.ip_address(normalize_host(host))
    except ValueError:
        return None
    return unmapped(address)


def unmapped(address: IpAddress) -> IpAddress:
    """``::ffff:169.254.169.254`` is 169.254.169.254 to the kernel, so it is to the policy."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _forbidden_for_everyone(address: IpAddress) -> str | None:
    if address.is_loopback:
        return None  # ::1 is inside IPv6's reserved ::/8; loopback is for admins to decide
    if address.is_link_local or any(address in n for n in _METADATA_NETWORKS):
        return "a link-local or metadata address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_reserved:
        return "a reserved address"
    return None


def _forbidden_unless_trusted(address: IpAddress) -> str | None:
    if address.is_loopback:
        return "a loopback address"
    if address.is_private or not address.is_global:
        return "a private or internal address"
    return None


def refusal(
    policy: OutboundPolicy, host: str, addresses: Sequence[IpAddress], *, trusted: bool
) -> str | None:
    """Why connecting to ``host`` (resolved to ``addresses``) is refused, or None when it is not.

    A host that resolves to several addresses is refused if any of them is: the connection could
    go to any one."""
    resolved = [unmapped(a) for a in addresses]
    name = normalize_host(host)
    if policy.deny.matches(name, resolved):
        return f"{name} is refused by PFO_OUTBOUND_DENY"
    if policy.allow.matches(name, resolved):
        return None
    if name in METADATA_HOSTS:
        return f"{name} is a cloud metadata service"
    for address in resolved:
        reason = _forbidden_for_everyone(address)
        if reason is None and not trusted:
            reason = _forbidden_unless_trusted(address)
        if reason is not None:
            shown = name if str(address) == name else f"{name} ({address})"
            return f"{shown} is {reason}"
    return None


def trusted_after_patch(before: Instance, after: Instance, *, by_trusted: bool) -> bool:
    """Whether an instance's endpoint and recovery URL stay trusted after a change by a caller
    who is (``by_trusted``) or is not an admin.

    A change that touches neither keeps the flag; a non-admin setting either clears it; an admin
    vouches for what they set, but not for an untrusted value they left in place."""
    pairs = ((before.endpoint, after.endpoint), (before.recovery_url, after.recovery_url))
    changed = [old != new for old, new in pairs]
    if not any(changed):
        return before.outbound_trusted
    if not by_trusted:
        return False
    kept = any(
        not moved and new is not None for moved, (_, new) in zip(changed, pairs, strict=True)
    )
    return before.outbound_trusted or not kept

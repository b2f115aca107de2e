"""``core.outbound``: which addresses webhooks, probes and recovery POSTs may reach, for whom."""

from __future__ import annotations

import ipaddress

import pytest

from proxy_failover.core.model import Instance
from proxy_failover.core.outbound import (
    OutboundPolicy,
    literal_address,
    parse_rules,
    refusal,
    trusted_after_patch,
)

DEFAULT = OutboundPolicy()


def _refusal(
    host: str, *addresses: str, trusted: bool, policy: OutboundPolicy = DEFAULT
) -> str | None:
    return refusal(policy, host, [ipaddress.ip_address(a) for a in addresses], trusted=trusted)


@pytest.mark.parametrize(
    ("host", "address", "why"),
    [
        ("169.254.169.254", "169.254.169.254", "link-local or metadata"),
        ("fe80::1", "fe80::1", "link-local or metadata"),
        ("::ffff:169.254.169.254", "::ffff:169.254.169.254", "link-local or metadata"),
        ("aws6", "fd00:ec2::254", "link-local or metadata"),
        ("0", "0.0.0.0", "unspecified"),
        ("::", "::", "unspecified"),
        ("mcast", "224.0.0.1", "multicast"),
        ("reserved", "240.0.0.1", "reserved"),
    ],
)
def test_link_local_metadata_and_unroutable_addresses_are_refused_to_everyone(
    host: str, address: str, why: str
) -> None:
    for trusted in (False, True):
        reason = _refusal(host, address, trusted=trusted)
        assert reason is not None
        assert why in reason


@pytest.mark.parametrize(
    "name", ["metadata.google.internal", "Metadata.Google.Internal.", "metadata"]
)
def test_metadata_names_are_refused_whatever_they_resolve_to(name: str) -> None:
    reason = _refusal(name, "8.8.8.8", trusted=True)
    assert reason is not None
    assert "metadata service" in reason


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd12::1", "private"),
        ("100.64.0.1", "private or internal"),  # carrier-grade NAT: not global, not "private"
    ],
)
def test_internal_addresses_are_refused_to_non_admins_only(address: str, why: str) -> None:
    reason = _refusal("relay.example", address, trusted=False)
    assert reason is not None
    assert why in reason
    assert "relay.example (" in reason  # the name and the address it resolved to
    assert _refusal("relay.example", address, trusted=True) is None


def test_public_addresses_are_allowed_to_everyone() -> None:
    assert _refusal("relay.example", "8.8.8.8", "2606:4700::1111", trusted=False) is None
    assert _refusal("1.1.1.1", "1.1.1.1", trusted=False) is None


def test_one_refused_address_among_several_refuses_the_name() -> None:
    reason = _refusal("mixed.example", "1.1.1.1", "10.0.0.1", trusted=False)
    assert reason == "mixed.example (10.0.0.1) is a private or internal address"
    assert (
        _refusal("10.0.0.1", "10.0.0.1", trusted=False)
        == "10.0.0.1 is a private or internal address"
    )


def test_deny_rules_refuse_admins_too_and_win_over_allow() -> None:
    policy = OutboundPolicy(
        allow=parse_rules("10.0.0.0/8, *.corp"), deny=parse_rules("10.9.0.0/16, db.corp")
    )
    assert _refusal("x", "10.1.0.1", trusted=False, policy=policy) is None  # allowed
    assert _refusal("a.corp", "192.168.0.1", trusted=False, policy=policy) is None  # by suffix
    denied = _refusal("x", "10.9.0.1", trusted=True, policy=policy)
    assert denied == "x is refused by PFO_OUTBOUND_DENY"
    assert _refusal("DB.corp.", "10.1.0.1", trusted=True, policy=policy) is not None


def test_allow_rules_open_even_the_default_refusals() -> None:
    policy = OutboundPolicy(allow=parse_rules(["169.254.0.0/16", "metadata"]))
    assert _refusal("169.254.169.254", "169.254.169.254", trusted=False, policy=policy) is None
    assert _refusal("metadata", "8.8.4.4", trusted=False, policy=policy) is None


def test_names_judged_without_addresses_are_refused_only_by_name() -> None:
    assert _refusal("unresolved.example", trusted=False) is None
    assert _refusal("metadata.google.internal", trusted=False) is not None


@pytest.mark.parametrize("bad", ["a/b", "*.", "host:80", "[::1", " .lead", "two words"])
def test_bad_rules_are_named(bad: str) -> None:
    with pytest.raises(ValueError, match="not an IP address, network or host name"):
        parse_rules(bad)


def test_rules_parse_networks_addresses_names_and_suffixes() -> None:
    rules = parse_rules(" 10.0.0.1 ,, fd00::/8, Relay.Internal, *.Corp ")
    assert [str(n) for n in rules.networks] == ["10.0.0.1/32", "fd00::/8"]
    assert rules.hosts == {"relay.internal"}
    assert rules.suffixes == (".corp",)
    assert parse_rules("") == parse_rules([])


def test_literal_addresses() -> None:
    assert literal_address("[::ffff:10.0.0.1]") == ipaddress.ip_address("10.0.0.1")
    assert literal_address("::1") == ipaddress.ip_address("::1")
    assert literal_address("relay.example") is None
    assert literal_address("2130706433") is None  # numeric forms are left to the resolver


def _instance(endpoint: str | None, recovery: str | None, trusted: bool) -> Instance:
    return Instance(
        "i", "p", "u", "n", endpoint=endpoint, recovery_url=recovery, outbound_trusted=trusted
    )


@pytest.mark.parametrize(
    ("before", "after", "by_admin", "expected"),
    [
        # neither destination changed: the flag stays, whoever patched
        (("e", None, True), ("e", None, True), False, True),
        (("e", None, False), ("e", None, False), True, False),
        # a non-admin setting either clears it
        (("e", "r", True), ("e2", "r", True), False, False),
        (("e", None, True), ("e", "r", True), False, False),
        # an admin vouches for what they set...
        (("e", None, False), ("e2", None, False), True, True),
        (("e", "r", False), ("e2", "r2", False), True, True),
        (("e", "r", False), ("e2", None, False), True, True),
        # ...but not for an untrusted value left in place
        (("e", "r", False), ("e2", "r", False), True, False),
        (("e", "r", True), ("e2", "r", True), True, True),
    ],
)
def test_trust_after_a_patch(
    before: tuple[str | None, str | None, bool],
    after: tuple[str | None, str | None, bool],
    by_admin: bool,
    expected: bool,
) -> None:
    assert (
        trusted_after_patch(_instance(*before), _instance(*after), by_trusted=by_admin) is expected
    )

"""The outbound policy tests run under: loopback and 10.0.0.0/8 allowed to everyone, as with
``PFO_OUTBOUND_ALLOW=127.0.0.0/8,::1,10.0.0.0/8`` (tests/conftest.py sets it for every service
the suite starts).

The suite's receivers, relays and recovery endpoints listen on loopback, and many tests register
10.x placeholder endpoints nothing connects to; the built-in policy refuses both to non-admins.
``tests/e2e/test_outbound_policy.py`` tests the policy itself without this allowance.
"""

from __future__ import annotations

from proxy_failover.adapters.outbound import OutboundGuard
from proxy_failover.core.outbound import OutboundPolicy, parse_rules

LOOPBACK = "127.0.0.0/8,::1,10.0.0.0/8"
LOOPBACK_ALLOWED = OutboundGuard(OutboundPolicy(allow=parse_rules(LOOPBACK)))

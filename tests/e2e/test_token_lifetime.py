"""A maximum token lifetime: a token minted to live for ever (``exp: 1e300``) is 401/015."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from proxy_failover.config import Settings
from proxy_failover.core.errors import Unauthenticated
from proxy_failover.entrypoints.api.auth import TokenVerifier
from tests.helpers.api import SECRET, Api


def _verifier(**settings: Any) -> TokenVerifier:
    return TokenVerifier.from_settings(
        Settings(database_url="sqlite:///unused.db", jwt_secret=SECRET, **settings)
    )


def _token(**claims: Any) -> str:
    return jwt.encode({"sub": "alice", **claims}, SECRET, algorithm="HS256")


@pytest.mark.parametrize(
    ("iat", "exp"),
    [
        (None, 1e300),
        (None, 86400 + 120),  # no iat: the lifetime counts from now
        (0, 86400 + 1),
        (-10 * 86400, 60),  # minted for ten days, ten days ago
    ],
)
async def test_tokens_living_longer_than_the_maximum_are_refused(
    iat: int | None, exp: float
) -> None:
    """``iat``/``exp`` are offsets from now (``exp`` ≥ 1e300 is absolute)."""
    now = int(time.time())
    claims: dict[str, Any] = {"exp": exp if exp >= 1e300 else now + exp}
    if iat is not None:
        claims["iat"] = now + iat
    with pytest.raises(Unauthenticated, match="PFO_JWT_MAX_TTL_SECONDS"):
        await _verifier().verify(_token(**claims))


async def test_tokens_within_the_maximum_are_accepted_and_the_maximum_is_configurable() -> None:
    now = int(time.time())
    day = _token(iat=now, exp=now + 86400)
    assert (await _verifier().verify(day)).user_id == "alice"
    assert (await _verifier().verify(_token(exp=now + 3600))).user_id == "alice"
    with pytest.raises(Unauthenticated):
        await _verifier(jwt_max_ttl_seconds=600).verify(_token(iat=now, exp=now + 3600))
    week = _token(iat=now, exp=now + 7 * 86400)
    assert (await _verifier(jwt_max_ttl_seconds=7 * 86400).verify(week)).user_id == "alice"


async def test_through_the_api_a_token_for_ever_is_401_015_and_writes_nothing(api: Api) -> None:
    """The whole app, on both databases: in the error envelope, and no audit row for it."""
    forever = _token(sub="root", role="admin", exp=1e300)
    body = {"proxyId": "edge"}
    assert await api.error("POST", "/proxy/failover/config", forever, json=body) == (
        401,
        "PROXY_FAILOVER_015",
    )
    assert await api.ok("GET", "/audit?limit=1000", api.tokens.admin) == []
    assert (await api.call("GET", "/proxy/edge/redundancy", api.tokens.admin)).status_code == 404

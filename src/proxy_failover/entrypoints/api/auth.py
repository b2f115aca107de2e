"""Bearer-token authentication: verify a JWT with one pinned algorithm, mint tokens for the CLI.

Why pinned: accepting whatever ``alg`` a token names is how ``alg: none`` and RS256→HS256 key
confusion attacks work, so the verifier is built with exactly one algorithm from configuration.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from proxy_failover.config import Settings
from proxy_failover.core.errors import Unauthenticated

#: Clock skew tolerated on ``exp``/``nbf``/``iat`` (SPEC §7).
LEEWAY_SECONDS = 30
#: Verified tokens are remembered (until they expire) so hot clients skip the signature check.
_CACHE_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: ``sub`` of the token and whether it carries the admin role."""

    user_id: str
    is_admin: bool


def is_admin_claims(claims: dict[str, Any]) -> bool:
    """Admin when ``role == "admin"`` or ``"admin" in roles`` (SPEC §7)."""
    if claims.get("role") == "admin":
        return True
    roles = claims.get("roles")
    return isinstance(roles, list | tuple) and "admin" in roles


class TokenVerifier:
    """Checks signature, pinned algorithm, ``exp`` (required), ``nbf``, ``iss``/``aud`` if set."""

    def __init__(
        self,
        *,
        algorithm: str,
        key: Any = None,
        jwks_client: jwt.PyJWKClient | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        max_ttl_seconds: float = 86400.0,
    ) -> None:
        if (key is None) == (jwks_client is None):
            raise ValueError("give exactly one of key or jwks_client")
        self.algorithm = algorithm
        self._key = key
        self._jwks = jwks_client
        self._issuer = issuer
        self._audience = audience
        self._max_ttl = max_ttl_seconds
        self._cache: dict[str, tuple[Caller, float]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVerifier:
        """The verifier the settings describe; raises ``ValueError`` when no key is configured."""
        common: dict[str, Any] = {
            "issuer": settings.jwt_issuer,
            "audience": settings.jwt_audience,
            "max_ttl_seconds": settings.jwt_max_ttl_seconds,
        }
        if settings.jwt_secret is not None:
            return cls(algorithm="HS256", key=settings.jwt_secret.get_secret_value(), **common)
        if settings.jwt_public_key is not None:
            key, derived = load_public_key(settings.jwt_public_key)
            algorithm = settings.jwt_algorithm or derived
            if algorithm != derived:
                raise ValueError(f"PFO_JWT_ALGORITHM {algorithm} does not fit a {derived} key")
            return cls(algorithm=algorithm, key=key, **common)
        if settings.jwt_jwks_url is not None:
            client = jwt.PyJWKClient(settings.jwt_jwks_url, cache_keys=True, lifespan=300)
            return cls(algorithm=settings.jwt_algorithm or "RS256", jwks_client=client, **common)
        raise ValueError(
            "no JWT key configured: set PFO_JWT_SECRET, PFO_JWT_PUBLIC_KEY or PFO_JWT_JWKS_URL"
        )

    async def verify(self, token: str) -> Caller:
        """The caller a valid token names; ``Unauthenticated`` (401/015) for anything else."""
        cached = self._cache.get(token)
        if cached is not None and time.time() < cached[1] + LEEWAY_SECONDS:
            return cached[0]
        if self._jwks is not None:
            claims = await asyncio.to_thread(self._decode, token)
        else:
            claims = self._decode(token)
        caller = Caller(user_id=claims["sub"], is_admin=is_admin_claims(claims))
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[token] = (caller, float(claims["exp"]))
        return caller

    def _decode(self, token: str) -> dict[str, Any]:
        try:
            key = self._key
            if self._jwks is not None:
                key = self._jwks.get_signing_key_from_jwt(token).key
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[self.algorithm],
                leeway=LEEWAY_SECONDS,
                issuer=self._issuer,
                audience=self._audience,
                options={
                    "require": ["exp", "sub"],
                    "verify_aud": self._audience is not None,
                    "verify_iss": self._issuer is not None,
                },
            )
        except jwt.ExpiredSignatureError as error:
            raise Unauthenticated("token expired") from error
        except jwt.ImmatureSignatureError as error:
            raise Unauthenticated("token not yet valid") from error
        except (jwt.PyJWTError, ValueError, TypeError) as error:
            raise Unauthenticated(f"invalid token: {error}") from error
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.strip() or len(sub) > 255:
            raise Unauthenticated("invalid token: sub must be a non-empty string")
        if not sub.isprintable():  # NUL was a 500 on PostgreSQL; control characters are no ids
            raise Unauthenticated("invalid token: sub must not contain control characters")
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise Unauthenticated("invalid token: exp must be a number")
        iat = claims.get("iat")
        born = iat if isinstance(iat, int | float) and not isinstance(iat, bool) else time.time()
        if exp - born > self._max_ttl:  # a stolen token must not stay valid for years
            raise Unauthenticated(
                f"token lives longer than the allowed {self._max_ttl:g} s (PFO_JWT_MAX_TTL_SECONDS)"
            )
        return claims


def load_public_key(path: Path) -> tuple[Any, str]:
    """A PEM public key and the algorithm its type implies (RSA → RS256, EC P-256 → ES256)."""
    key = load_pem_public_key(path.read_bytes())
    if isinstance(key, rsa.RSAPublicKey):
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key, "ES256"
    raise ValueError(f"{path}: only RSA and EC public keys are supported")


def mint_token(
    secret: str,
    sub: str,
    *,
    admin: bool = False,
    ttl_seconds: int = 3600,
    issuer: str | None = None,
    audience: str | None = None,
    now: float | None = None,
) -> str:
    """An HS256 token for ``sub`` (``role: admin`` when asked), valid ``ttl_seconds``."""
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {"sub": sub, "iat": issued, "exp": issued + ttl_seconds}
    if admin:
        claims["role"] = "admin"
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm="HS256")


def random_secret() -> str:
    """A development-mode secret (64 bytes of URL-safe text), new every run."""
    return secrets.token_urlsafe(48)

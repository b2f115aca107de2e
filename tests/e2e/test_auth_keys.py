"""Key sources and claims: RS256/ES256 public keys, a JWKS URL, algorithm confusion, iss/aud."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import ValidationError

from proxy_failover.config import Settings
from proxy_failover.entrypoints.api import create_app


@contextlib.asynccontextmanager
async def client_for(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        yield http


async def status_with(http: httpx.AsyncClient, token: str) -> int:
    response = await http.get("/proxies", headers={"Authorization": f"Bearer {token}"})
    return response.status_code


def _claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "alice", "exp": int(time.time()) + 300, **extra}


def _public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


async def test_rs256_public_key_and_algorithm_confusion(
    sqlite_url: str, tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    pem = tmp_path / "rsa.pem"
    pem.write_bytes(_public_pem(rsa_key))
    settings = Settings(database_url=sqlite_url, jwt_public_key=pem)
    async with client_for(settings) as http:
        assert await status_with(http, jwt.encode(_claims(), rsa_key, algorithm="RS256")) == 200
        # HS256 signed with the public key as the HMAC secret: the classic confusion attack.
        forged = _hs256_with_raw_key(_public_pem(rsa_key), _claims(role="admin"))
        assert await status_with(http, forged) == 401
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        assert await status_with(http, jwt.encode(_claims(), other, algorithm="RS256")) == 401


def _hs256_with_raw_key(key: bytes, claims: dict[str, Any]) -> str:
    """An HS256 token keyed with arbitrary bytes (PyJWT would refuse a PEM key)."""

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + b64(json.dumps(claims).encode())
    signature = hmac.new(key, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + b64(signature)).decode()


async def test_es256_public_key(sqlite_url: str, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "ec.pem"
    pem.write_bytes(_public_pem(key))
    async with client_for(Settings(database_url=sqlite_url, jwt_public_key=pem)) as http:
        assert await status_with(http, jwt.encode(_claims(), key, algorithm="ES256")) == 200
        assert await status_with(http, jwt.encode(_claims(), "s" * 40, algorithm="HS256")) == 401


@pytest.fixture
def jwks_url(rsa_key: rsa.RSAPrivateKey) -> Iterator[str]:
    """A real HTTP server publishing the RSA key as a JWKS document."""
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    document = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(document)))
            self.end_headers()
            self.wfile.write(document)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


async def test_jwks_url(sqlite_url: str, jwks_url: str, rsa_key: rsa.RSAPrivateKey) -> None:
    settings = Settings(database_url=sqlite_url, jwt_jwks_url=jwks_url)
    async with client_for(settings) as http:
        good = jwt.encode(_claims(), rsa_key, algorithm="RS256", headers={"kid": "k1"})
        assert await status_with(http, good) == 200
        unknown_kid = jwt.encode(_claims(), rsa_key, algorithm="RS256", headers={"kid": "k9"})
        assert await status_with(http, unknown_kid) == 401


async def test_issuer_and_audience_are_checked_when_configured(sqlite_url: str) -> None:
    secret = "s" * 40
    settings = Settings(
        database_url=sqlite_url, jwt_secret=secret, jwt_issuer="pfo", jwt_audience="api"
    )
    async with client_for(settings) as http:
        ok = jwt.encode(_claims(iss="pfo", aud="api"), secret, algorithm="HS256")
        assert await status_with(http, ok) == 200
        for claims in (_claims(iss="evil", aud="api"), _claims(iss="pfo", aud="web"), _claims()):
            assert await status_with(http, jwt.encode(claims, secret, algorithm="HS256")) == 401


def test_short_secret_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ValidationError, match="at least 32 are required"):
        Settings(jwt_secret="too-short")


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PFO_DATABASE_URL", "postgresql://u@db:5432/pfo")
    monkeypatch.setenv("PFO_PORT", "9090")
    monkeypatch.setenv("PFO_LOG_LEVEL", "DEBUG")
    settings = Settings()
    assert settings.database_url == "postgresql+asyncpg://u@db:5432/pfo"
    assert (settings.port, settings.log_level, settings.has_jwt_key) == (9090, "debug", False)
    monkeypatch.setenv("PFO_JWT_SECRET", "x" * 32)
    monkeypatch.setenv("PFO_JWT_JWKS_URL", "https://idp.example/jwks.json")
    with pytest.raises(ValidationError, match="only one of"):
        Settings()

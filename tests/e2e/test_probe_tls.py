"""``PFO_PROBE_TLS_VERIFY`` / ``PFO_PROBE_CA_FILE`` reach the probes of the engine ``build`` makes.

A real HTTPS instance with a self-signed certificate made in the test; the runtime is built from
``Settings`` exactly as ``serve`` builds it, and its engine probes the instance.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import ValidationError

from proxy_failover.bootstrap import running
from proxy_failover.config import Settings
from proxy_failover.core.model import HealthStatus, Instance
from tests.helpers.api import SECRET
from tests.helpers.processes import wait_for
from tests.helpers.tls_server import self_signed_certificate, tls_instance

pytestmark = pytest.mark.slow


async def probed_instance(settings: Settings, endpoint: str) -> Instance:
    """Register one https instance, run the runtime's engine until it was probed once."""
    async with running(settings) as runtime:
        service = runtime.service
        await service.create_failover_configuration(
            "tls",
            "owner",
            {
                "healthCheckIntervalSeconds": 1.0,
                "healthCheckTimeoutSeconds": 1.0,
                "unhealthyThreshold": 1,
                "healthyThreshold": 1,
                "healthCheck": {"type": "https"},
            },
        )
        registered = await service.register_proxy_instance(
            "tls", "owner", {"instanceName": "secure", "endpoint": endpoint}
        )
        task = asyncio.create_task(runtime.engine.run())
        try:

            async def checked() -> Instance | None:
                instance = await service.get_instance(registered.id)
                return instance if instance.health_status is not HealthStatus.UNKNOWN else None

            found = await wait_for(checked)
            assert found is not None
            return found
        finally:
            runtime.engine.stop()
            await task


async def test_https_probe_refuses_a_self_signed_certificate_by_default(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with tls_instance(tmp_path) as server:
        settings = Settings(database_url=sqlite_url, jwt_secret=SECRET)
        instance = await probed_instance(settings, server.endpoint)
    assert instance.health_status is HealthStatus.UNHEALTHY
    assert instance.last_error is not None
    assert "certificate" in instance.last_error.lower(), instance.last_error


async def test_https_probe_accepts_any_certificate_without_verification(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with tls_instance(tmp_path) as server:
        settings = Settings(database_url=sqlite_url, jwt_secret=SECRET, probe_tls_verify=False)
        instance = await probed_instance(settings, server.endpoint)
    assert instance.health_status is HealthStatus.HEALTHY
    assert server.requests >= 1


async def test_https_probe_trusts_the_configured_ca_file(sqlite_url: str, tmp_path: Path) -> None:
    async with tls_instance(tmp_path) as server:
        settings = Settings(
            database_url=sqlite_url, jwt_secret=SECRET, probe_ca_file=server.cert_path
        )
        instance = await probed_instance(settings, server.endpoint)
    assert instance.health_status is HealthStatus.HEALTHY
    assert instance.last_error is None


def test_ca_file_must_be_a_pem_certificate(tmp_path: Path) -> None:
    garbage = tmp_path / "not-a-cert.pem"
    garbage.write_text("hello")
    with pytest.raises(ValidationError, match="PFO_PROBE_CA_FILE"):
        Settings(jwt_secret=SECRET, probe_ca_file=garbage)
    with pytest.raises(ValidationError, match="not a readable file"):
        Settings(jwt_secret=SECRET, probe_ca_file=tmp_path / "missing.pem")


def test_ca_file_without_verification_is_refused(tmp_path: Path) -> None:
    cert_path, _ = self_signed_certificate(tmp_path)
    with pytest.raises(ValidationError, match="PFO_PROBE_TLS_VERIFY is false"):
        Settings(jwt_secret=SECRET, probe_ca_file=cert_path, probe_tls_verify=False)

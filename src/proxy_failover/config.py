"""Settings read from ``PFO_*`` environment variables (and an optional TOML file), validated once.

Only the composition root (``bootstrap``) and the entry points read this module; everything below
them receives plain values. Nothing is instantiated at import: call ``Settings()`` (or
``load_settings()``) where the process starts.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from proxy_failover.core.errors import FailoverError
from proxy_failover.core.outbound import OutboundPolicy, parse_rules
from proxy_failover.core.retention import DEFAULT_DELIVERY_RETENTION_DAYS, DEFAULT_RETENTION_DAYS
from proxy_failover.store.database import DEFAULT_DATABASE_URL, normalize_url

#: HS256 secrets shorter than this are refused: RFC 7518 §3.2 asks for a key as long as the hash.
MIN_SECRET_BYTES = 32

JwtAlgorithm = Literal["HS256", "RS256", "ES256"]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]


class Settings(BaseSettings):
    """Every knob of the service; SPEC §2 names, ``PFO_`` prefix, case-insensitive."""

    model_config = SettingsConfigDict(
        env_prefix="PFO_",
        case_sensitive=False,
        extra="ignore",
        validate_default=True,
        # A refused value is never repeated in the error (a database URL may hold a password).
        hide_input_in_errors=True,
    )

    database_url: str = DEFAULT_DATABASE_URL
    jwt_secret: SecretStr | None = None
    jwt_public_key: Path | None = Field(
        default=None, description="PEM file with the RS256/ES256 public key"
    )
    jwt_jwks_url: str | None = None
    jwt_algorithm: JwtAlgorithm | None = Field(
        default=None,
        description="Pinned algorithm; derived when unset (HS256 secret, key type, RS256 JWKS)",
    )
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_max_ttl_seconds: float = Field(
        default=86400.0,
        gt=0,
        description="Tokens that live longer (exp - iat, or exp - now without iat) are refused",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    log_level: LogLevel = "info"
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300, description="Timeout of one webhook POST"
    )
    webhook_time_scale: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Shrinks the webhook retry schedule (tests); 1 = the SPEC's 1 s ... 24 h",
    )
    engine_enabled: bool = Field(
        default=True,
        description="Run the health/failover engine in serve (false: an API-only replica)",
    )
    engine_lease_seconds: float = Field(
        default=10.0,
        ge=1.0,
        le=300.0,
        description="TTL of the engine leader lease: the longest a dead leader's work waits",
    )
    database_timeout_seconds: float = Field(
        default=1.5,
        ge=0.1,
        le=60,
        description="Deadline of every database wait (connect, lock, statement): past it 503/018",
    )
    http_max_head_bytes: int = Field(
        default=16 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="Largest request line + headers; a larger head is refused with 431",
    )
    http_head_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="A connection must send a whole request head within this (else 408/close)",
    )
    http_body_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="A request body must arrive whole within this after its head (else close)",
    )
    http_keep_alive_seconds: int = Field(
        default=5,
        gt=0,
        le=600,
        description="An idle kept-alive connection is closed after this",
    )
    # Per-caller limits (docs/security.md): the defaults let a busy agent, the dashboard and the
    # test suite through untouched and stop one caller from taking the whole API.
    rate_limit_per_second: float = Field(
        default=200.0, ge=0, description="Requests/s per caller; 0 = no rate limits at all"
    )
    rate_limit_burst: float = Field(
        default=400.0, ge=1, description="Requests a caller may make at once"
    )
    rate_limit_heavy_rows_per_second: float = Field(
        default=2000.0,
        ge=0,
        description="Rows/s of event, audit and delivery lists per caller (a list costs the "
        "rows it returns); 0 = off",
    )
    rate_limit_heavy_rows_burst: float = Field(
        default=2000.0,
        ge=1,
        description="Rows of those lists a caller may have in flight at once (a list is "
        "charged its limit when let in and refunded what it did not return)",
    )
    rate_limit_reports_per_second: float = Field(
        default=1000.0,
        ge=0,
        description="Health reports, checks and metric samples/s per caller (their own "
        "budget); 0 = off",
    )
    rate_limit_reports_burst: float = Field(
        default=2000.0, ge=1, description="Reports a caller may push at once"
    )
    rate_limit_admin_factor: float = Field(
        default=10.0, ge=1, description="Admins' rates and bursts are this many times larger"
    )
    stream_max_per_caller: int = Field(
        default=200,
        ge=0,
        description="Event streams one caller may hold open; beyond: 429/022; 0 = no cap",
    )
    stream_max_total: int = Field(
        default=2000, ge=0, description="Event streams open in all; beyond: 503/023; 0 = no cap"
    )
    retention_days: float = Field(
        default=DEFAULT_RETENTION_DAYS,
        gt=0,
        le=36500,
        description="Failover events, audit rows, metric samples and the event log are kept this "
        "long (open events whatever their age); the engine leader prunes older ones",
    )
    delivery_retention_days: float = Field(
        default=DEFAULT_DELIVERY_RETENTION_DAYS,
        gt=0,
        le=36500,
        description="Delivered, dead or cancelled webhook deliveries and their attempts are kept "
        "this long (pending ones whatever their age)",
    )
    outbound_allow: str = Field(
        default="",
        description="Comma-separated IPs, CIDR networks and host names (*.suffix too) that "
        "webhooks, probes and recovery POSTs may reach whoever registered them "
        "(docs/security.md)",
    )
    outbound_deny: str = Field(
        default="",
        description="Comma-separated IPs, CIDR networks and host names never connected to, "
        "for admins too; wins over PFO_OUTBOUND_ALLOW",
    )
    probe_tls_verify: bool = Field(
        default=True,
        description="HTTPS probes (and recovery POSTs) verify the instance's certificate",
    )
    probe_ca_file: Path | None = Field(
        default=None,
        description="PEM bundle of CAs trusted by HTTPS probes, besides the system's",
    )

    @field_validator("outbound_allow", "outbound_deny")
    @classmethod
    def _outbound_rules(cls, value: str) -> str:
        parse_rules(value)  # ValueError names the bad entry
        return value

    @property
    def outbound_policy(self) -> OutboundPolicy:
        """The policy of ``core.outbound`` these settings describe."""
        return OutboundPolicy(
            allow=parse_rules(self.outbound_allow), deny=parse_rules(self.outbound_deny)
        )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment first, then the TOML file named by ``PFO_CONFIG_FILE`` if any."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("PFO_CONFIG_FILE")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("PFO_DATABASE_URL must not be empty")
        try:
            url = normalize_url(value.strip())
        except FailoverError as error:
            if error.details.get("unparseable"):
                raise ValueError(error.message) from None  # the message does not echo the text
            # Unsupported backend: the store refuses it when opened, with the password hidden
            # (a settings error would echo the input, password included).
            return value.strip()
        return url.render_as_string(hide_password=False)

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("jwt_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        size = len(value.get_secret_value().encode())
        if size < MIN_SECRET_BYTES:
            raise ValueError(
                f"PFO_JWT_SECRET is {size} bytes; at least {MIN_SECRET_BYTES} are required. "
                "Generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))'"
            )
        return value

    @field_validator("jwt_jwks_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("PFO_JWT_JWKS_URL must be an http(s) URL")
        return value

    @field_validator("probe_ca_file")
    @classmethod
    def _loadable_ca_file(cls, value: Path | None) -> Path | None:
        """Refuse at start-up what would otherwise fail every HTTPS probe."""
        if value is None:
            return None
        if not value.is_file():
            raise ValueError(f"PFO_PROBE_CA_FILE {value} is not a readable file")
        try:
            ssl.create_default_context().load_verify_locations(cafile=str(value))
        except (ssl.SSLError, OSError) as error:
            raise ValueError(
                f"PFO_PROBE_CA_FILE {value} holds no usable PEM certificate: {error}"
            ) from error
        return value

    @model_validator(mode="after")
    def _ca_file_needs_verification(self) -> Settings:
        if self.probe_ca_file is not None and not self.probe_tls_verify:
            raise ValueError(
                "PFO_PROBE_CA_FILE is set but PFO_PROBE_TLS_VERIFY is false: "
                "a CA file only matters when certificates are verified"
            )
        return self

    @model_validator(mode="after")
    def _one_key_source(self) -> Settings:
        configured = [
            name
            for name, value in (
                ("PFO_JWT_SECRET", self.jwt_secret),
                ("PFO_JWT_PUBLIC_KEY", self.jwt_public_key),
                ("PFO_JWT_JWKS_URL", self.jwt_jwks_url),
            )
            if value is not None
        ]
        if len(configured) > 1:
            raise ValueError(f"configure only one of {', '.join(configured)}")
        if self.jwt_public_key is not None and not self.jwt_public_key.is_file():
            raise ValueError(f"PFO_JWT_PUBLIC_KEY {self.jwt_public_key} is not a readable file")
        if self.jwt_secret is not None and self.jwt_algorithm not in (None, "HS256"):
            raise ValueError("PFO_JWT_SECRET signs with HS256 only")
        if self.jwt_secret is None and self.jwt_algorithm == "HS256" and configured:
            raise ValueError("HS256 needs PFO_JWT_SECRET")
        return self

    @property
    def has_jwt_key(self) -> bool:
        """False means development mode: ``serve`` makes a random secret for the run."""
        return any(
            value is not None for value in (self.jwt_secret, self.jwt_public_key, self.jwt_jwks_url)
        )


def load_settings(**overrides: object) -> Settings:
    """Read the environment now (not at import) with explicit overrides winning."""
    return Settings(**overrides)  # type: ignore[arg-type]

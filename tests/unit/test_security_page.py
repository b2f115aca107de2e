"""docs/security.md lists every limit with its setting, and the README's configuration table
names every setting: a limit added to ``Settings`` without its line in the docs fails here."""

from __future__ import annotations

import re
from pathlib import Path

from proxy_failover.config import Settings

ROOT = Path(__file__).resolve().parents[2]
#: Settings that are limits an operator tunes for safety (the rest: where to listen, keys, logs).
LIMIT_PREFIXES = (
    "jwt_max_ttl",
    "http_",
    "rate_limit_",
    "stream_max_",
    "outbound_",
    "database_timeout",
    "retention_days",
    "delivery_retention_days",
    "webhook_timeout",
    "probe_tls_verify",
    "probe_ca_file",
)


def _variable(name: str) -> str:
    return f"PFO_{name.upper()}"


def _named(text: str) -> set[str]:
    return set(re.findall(r"PFO_[A-Z0-9_]+", text))


def test_the_security_page_names_every_limit_setting() -> None:
    page = _named((ROOT / "docs" / "security.md").read_text())
    limits = {_variable(n) for n in Settings.model_fields if n.startswith(LIMIT_PREFIXES)}
    assert len(limits) >= 15  # the prefixes still find the limits
    assert limits - page == set()


def test_the_readme_configuration_table_names_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme[
        readme.index("### Service settings") : readme.index("### Failover configuration")
    ]
    assert {_variable(n) for n in Settings.model_fields} - _named(table) == set()

"""proxy-failover: failover and redundancy control plane for streaming proxies.

Public names are loaded lazily so that importing ``proxy_failover.core`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["FailoverError", "ProxyFailoverService", "__version__", "open_service"]

if TYPE_CHECKING:
    from proxy_failover.bootstrap import open_service
    from proxy_failover.core.errors import FailoverError
    from proxy_failover.service import ProxyFailoverService


def __getattr__(name: str) -> Any:
    if name == "open_service":
        from proxy_failover.bootstrap import open_service

        return open_service
    if name == "ProxyFailoverService":
        from proxy_failover.service import ProxyFailoverService

        return ProxyFailoverService
    if name == "FailoverError":
        from proxy_failover.core.errors import FailoverError

        return FailoverError
    raise AttributeError(name)

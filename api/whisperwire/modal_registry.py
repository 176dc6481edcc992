"""The Modal endpoint registry's entry: what a serving container publishes, what clients read.

Each serving container exposes its gRPC port through a `modal.forward` tunnel, whose public
address is random and changes with every container start. So the container publishes that
address in a named `modal.Dict` (`<app>-endpoints`), refreshes a heartbeat in it while it
serves, and removes it when it drains. This module is the contract between the two sides:
the server's Modal serving body (whisperwire.server.deploy) writes entries, the client's
discovery (whisperwire.client.modal_discovery) reads them. Neither side imports the other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

REGISTRY_SUFFIX = "-endpoints"
HEARTBEAT_SECONDS = 15.0
"""How often a serving container refreshes its entry."""
STALE_AFTER_SECONDS = 4 * HEARTBEAT_SECONDS
"""An entry older than this is ignored: a few missed beats, plus some clock skew between the
container (which stamps it) and the client (which judges it)."""


def registry_name(app_name: str) -> str:
    """The name of the `modal.Dict` where the servers of `app_name` register."""
    return f"{app_name}{REGISTRY_SUFFIX}"


@dataclass(frozen=True)
class TunnelEndpoint:
    """One serving container as it registers itself: where, what, and when it last said so."""

    host: str
    port: int
    container: str
    """The registry key: Modal's task id of the container."""
    model: str
    engine: str
    started_at: float
    heartbeat_at: float
    """Seconds since the epoch, by the container's clock."""

    @property
    def target(self) -> str:
        """`host:port` for a plaintext gRPC channel (the tunnel is raw TCP)."""
        return f"{self.host}:{self.port}"

    def beat(self, now: float) -> TunnelEndpoint:
        return dataclasses.replace(self, heartbeat_at=now)

    def to_entry(self) -> dict[str, Any]:
        """The registry value: plain data, so any client version can read it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any]) -> TunnelEndpoint:
        """Parse a registry value; ValueError if it is not one this client understands."""
        try:
            return cls(
                host=_typed(entry["host"], str),
                port=_typed(entry["port"], int),
                container=_typed(entry["container"], str),
                model=_typed(entry["model"], str),
                engine=_typed(entry["engine"], str),
                started_at=float(_typed(entry["started_at"], (int, float))),
                heartbeat_at=float(_typed(entry["heartbeat_at"], (int, float))),
            )
        except (KeyError, TypeError) as error:
            raise ValueError(f"not a whisperwire endpoint entry: {entry!r} ({error})") from None


def _typed(value: Any, kind: type | tuple[type, ...]) -> Any:
    # bool is an int; a port of True is a corrupt entry, not port 1.
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{value!r} is not {kind}")
    return value

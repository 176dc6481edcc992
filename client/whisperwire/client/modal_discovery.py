"""Finding the servers of a Modal deployment (`whisperwire --modal-app NAME`).

Serving containers publish their tunnel addresses in a named `modal.Dict`, with a heartbeat
(the entry's format: whisperwire.modal_registry). Clients read the Dict, drop entries whose
heartbeat has gone stale (a container killed without its exit hook), and pick one of the rest.

    target = resolve_target("whisperwire")          # "r3.modal.host:23447"

`modal` is imported only when a registry is opened: the SDK does not depend on it otherwise
(`pip install 'whisperwire[modal]'`; it needs Modal credentials, as `modal token new` writes).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from typing import Any, Protocol

from whisperwire.client.errors import WhisperwireClientError
from whisperwire.modal_registry import STALE_AFTER_SECONDS, TunnelEndpoint, registry_name


class NoEndpointError(WhisperwireClientError):
    """No live server is registered for the app (or the registry cannot be read)."""


class EndpointRegistry(Protocol):
    """What clients need of a `modal.Dict`."""

    def items(self) -> Iterable[tuple[Any, Any]]: ...


def live_endpoints(
    registry: EndpointRegistry,
    *,
    model: str | None = None,
    now: float | None = None,
    stale_after: float = STALE_AFTER_SECONDS,
) -> list[TunnelEndpoint]:
    """Registered endpoints with a recent heartbeat (serving `model`, if given), freshest first.

    Entries this client cannot parse are skipped: a newer server may publish more fields.
    """
    now = time.time() if now is None else now
    endpoints = []
    for _key, value in registry.items():
        try:
            endpoint = TunnelEndpoint.from_entry(value)
        except ValueError:
            continue
        if now - endpoint.heartbeat_at > stale_after:
            continue
        if model is None or endpoint.model == model:
            endpoints.append(endpoint)
    return sorted(endpoints, key=lambda e: e.heartbeat_at, reverse=True)


def choose_endpoint(
    endpoints: list[TunnelEndpoint], *, rng: random.Random | None = None
) -> TunnelEndpoint:
    """One of the live endpoints, at random: clients spread over the replicas that way."""
    if not endpoints:
        raise NoEndpointError("no live whisperwire server is registered")
    return (rng or random.Random()).choice(endpoints)


def open_registry(name: str, *, environment: str | None = None) -> EndpointRegistry:
    """The named `modal.Dict` (not created if missing: only servers create it)."""
    try:
        import modal
    except ImportError as error:
        raise NoEndpointError(
            f"resolving a Modal app needs the modal package: pip install 'whisperwire[modal]' "
            f"({error})"
        ) from error
    registry: EndpointRegistry = modal.Dict.from_name(name, environment_name=environment)
    return registry


def resolve_endpoints(
    app_name: str,
    *,
    environment: str | None = None,
    model: str | None = None,
    registry: EndpointRegistry | None = None,
) -> list[TunnelEndpoint]:
    """The live endpoints of a deployed Modal app, freshest first (NoEndpointError if none)."""
    name = registry_name(app_name)
    try:
        endpoints = live_endpoints(
            registry or open_registry(name, environment=environment), model=model
        )
    except NoEndpointError:
        raise
    except Exception as error:  # modal's NotFoundError, AuthError, connection errors
        raise NoEndpointError(
            f"cannot read the server registry {name!r} from Modal: {type(error).__name__}: "
            f"{error} (is the app deployed, and are Modal credentials set up?)"
        ) from error
    if not endpoints:
        what = f" serving {model}" if model else ""
        raise NoEndpointError(
            f"no live server{what} in {name!r}: is `{app_name}` deployed and its server up? "
            f"(entries older than {STALE_AFTER_SECONDS:.0f} s are ignored)"
        )
    return endpoints


def resolve_target(
    app_name: str,
    *,
    environment: str | None = None,
    model: str | None = None,
    registry: EndpointRegistry | None = None,
    rng: random.Random | None = None,
) -> str:
    """`host:port` of one live server of `app_name`, for a plaintext channel with a token."""
    endpoints = resolve_endpoints(app_name, environment=environment, model=model, registry=registry)
    return choose_endpoint(endpoints, rng=rng).target

"""Client-side discovery of tunnel servers (`whisperwire --modal-app NAME`): which registry
entries count as live, how one is chosen, and what happens without Modal credentials."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.test_modal_standins import DictStandIn
from whisperwire.client.modal_discovery import (
    NoEndpointError,
    choose_endpoint,
    live_endpoints,
    resolve_endpoints,
    resolve_target,
)
from whisperwire.modal_registry import STALE_AFTER_SECONDS, TunnelEndpoint, registry_name

NOW = 1_800_000_000.0


def endpoint(
    container: str, *, age: float, model: str = "large-v3-turbo", now: float = NOW
) -> TunnelEndpoint:
    return TunnelEndpoint(
        host=f"{container}.r3.modal.host",
        port=20000 + len(container),
        container=container,
        model=model,
        engine="trtllm",
        started_at=now - 3600,
        heartbeat_at=now - age,
    )


@pytest.fixture
def registry(tmp_path: Path) -> DictStandIn:
    return DictStandIn(tmp_path / "registry.pickle")


def publish(registry: DictStandIn, *endpoints: TunnelEndpoint) -> None:
    for item in endpoints:
        registry.put(item.container, item.to_entry())


def test_the_registry_is_named_after_the_app() -> None:
    assert registry_name("whisperwire") == "whisperwire-endpoints"


def test_live_endpoints_are_the_recent_ones_freshest_first(registry: DictStandIn) -> None:
    publish(
        registry,
        endpoint("ta-old", age=20),
        endpoint("ta-new", age=1),
        endpoint("ta-gone", age=STALE_AFTER_SECONDS + 1),  # killed without its exit hook
    )
    live = live_endpoints(registry, now=NOW)
    assert [e.container for e in live] == ["ta-new", "ta-old"]


def test_entries_this_client_cannot_read_are_skipped(registry: DictStandIn) -> None:
    good = endpoint("ta-good", age=1)
    registry.put("ta-junk", {"host": "x"})
    registry.put("ta-bool-port", {**good.to_entry(), "container": "ta-bool-port", "port": True})
    registry.put("ta-not-a-dict", "r3.modal.host:1234")
    publish(registry, good)
    assert live_endpoints(registry, now=NOW) == [good]


def test_a_model_can_be_asked_for(registry: DictStandIn) -> None:
    publish(registry, endpoint("ta-turbo", age=1), endpoint("ta-tiny", age=2, model="tiny.en"))
    live = live_endpoints(registry, model="tiny.en", now=NOW)
    assert [e.container for e in live] == ["ta-tiny"]


def test_entries_round_trip() -> None:
    item = endpoint("ta-1", age=0)
    assert TunnelEndpoint.from_entry(item.to_entry()) == item
    assert item.target == f"ta-1.r3.modal.host:{item.port}"
    assert item.beat(NOW + 5).heartbeat_at == NOW + 5


def test_the_choice_spreads_over_live_replicas() -> None:
    replicas = [endpoint(f"ta-{i}", age=i) for i in range(3)]
    rng = random.Random(7)
    chosen = {choose_endpoint(replicas, rng=rng).container for _ in range(50)}
    assert chosen == {"ta-0", "ta-1", "ta-2"}


def test_resolve_target_picks_a_live_address(registry: DictStandIn) -> None:
    now = time.time()
    live = endpoint("ta-live", age=0, now=now)
    publish(registry, live, endpoint("ta-stale", age=STALE_AFTER_SECONDS + 60, now=now))
    assert resolve_target("whisperwire", registry=registry) == live.target


def test_no_live_server_is_a_clear_error(registry: DictStandIn) -> None:
    publish(registry, endpoint("ta-stale", age=STALE_AFTER_SECONDS + 60, now=time.time()))
    with pytest.raises(NoEndpointError, match="no live server in 'whisperwire-endpoints'"):
        resolve_endpoints("whisperwire", registry=registry)


class BrokenRegistry:
    def items(self) -> Any:
        raise ConnectionError("relay down")


def test_a_registry_that_cannot_be_read_is_a_clear_error() -> None:
    with pytest.raises(NoEndpointError, match=r"cannot read the server registry.*relay down"):
        resolve_endpoints("whisperwire", registry=BrokenRegistry())


def test_without_modal_credentials_the_real_dict_says_so(tmp_path: Path) -> None:
    code = (
        "from whisperwire.client.modal_discovery import resolve_target\n"
        "try:\n"
        "    resolve_target('whisperwire')\n"
        "except Exception as error:\n"
        "    print(type(error).__name__, error)\n"
    )
    bare = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}  # no MODAL_* and no ~/.modal.toml
    result = subprocess.run(
        [sys.executable, "-c", code], env=bare, capture_output=True, text=True, timeout=120
    )
    assert result.stdout.startswith("NoEndpointError cannot read the server registry")
    assert "AuthError" in result.stdout and "Modal credentials" in result.stdout

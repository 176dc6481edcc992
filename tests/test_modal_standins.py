"""Loopback stand-ins for Modal's servers, and the proof that they are as strict as Modal.

`LoopbackForward` replaces `modal.forward`: it validates its arguments as modal 1.6.4 does
(int port 1..65535, h2 only on encrypted tunnels, a port forwarded once: docs/modal.md), yields a
real `modal.Tunnel` whose `tcp_socket` exists only with `unencrypted=True`, and relays a fresh
loopback port to the container port over real TCP until the context exits.

`DictStandIn` replaces a named `modal.Dict`: values are serialized on `put` (a reader never
sees the writer's object), `pop` without a default raises KeyError, and the contents live in a file
so that a server in another process and the test see the same registry.
"""

from __future__ import annotations

import fcntl
import pickle
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import modal
import pytest
from modal.exception import InvalidError

_NO_DEFAULT = object()


class TcpRelay:
    """Accepts on 127.0.0.1:<random> and pipes each connection to `target`, both ways."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.accepted = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop accepting and cut every relayed connection (the port is no longer exposed)."""
        with self._lock:
            self._closed = True
            sockets, self._sockets = self._sockets, []
        _close(self._listener)  # shutdown wakes the blocked accept(); close alone does not
        for sock in sockets:
            _close(sock)
        self._thread.join()

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._closed:
                    _close(client)
                    _close(upstream)
                    return
                self.accepted += 1
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            _close(sock)


def _close(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@dataclass
class LoopbackForward:
    """`modal.forward(port, *, unencrypted=False, h2_enabled=False)` on loopback."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    relays: dict[int, TcpRelay] = field(default_factory=dict)
    """Open tunnels by forwarded container port."""

    @contextmanager
    def __call__(
        self, port: int, *, unencrypted: bool = False, h2_enabled: bool = False
    ) -> Iterator[modal.Tunnel]:
        self.calls.append({"port": port, "unencrypted": unencrypted, "h2_enabled": h2_enabled})
        if not isinstance(port, int) or isinstance(port, bool):
            raise InvalidError(f"The port argument should be an int, not {port!r}")
        if port < 1 or port > 65535:
            raise InvalidError(f"Invalid port number {port}")
        if h2_enabled and unencrypted:
            raise InvalidError("H2 can only be used with encrypted ports")
        if port in self.relays:
            raise InvalidError(f"Port {port} is already forwarded")
        relay = TcpRelay(("127.0.0.1", port))
        self.relays[port] = relay
        try:
            # No TLS endpoint here: its host is one that never resolves.
            yield modal.Tunnel(
                host="tls-endpoint.invalid",
                port=443,
                unencrypted_host="127.0.0.1" if unencrypted else "",
                unencrypted_port=relay.port if unencrypted else 0,
            )
        finally:
            del self.relays[port]
            relay.close()


class DictStandIn:
    """A named `modal.Dict` kept in a pickle file (shared across processes, under a lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def put(self, key: Any, value: Any, *, skip_if_exists: bool = False) -> bool:
        with self._contents() as contents:
            if skip_if_exists and key in contents:
                return False
            contents[key] = pickle.dumps(value)
            return True

    def get(self, key: Any, default: Any = None) -> Any:
        with self._contents() as contents:
            return pickle.loads(contents[key]) if key in contents else default

    def pop(self, key: Any, default: Any = _NO_DEFAULT) -> Any:
        with self._contents() as contents:
            if key in contents:
                return pickle.loads(contents.pop(key))
            if default is _NO_DEFAULT:
                raise KeyError(key)
            return default

    def items(self) -> Iterator[tuple[Any, Any]]:
        with self._contents() as contents:
            pairs = [(key, pickle.loads(value)) for key, value in contents.items()]
        yield from pairs

    def __len__(self) -> int:
        with self._contents() as contents:
            return len(contents)

    @contextmanager
    def _contents(self) -> Iterator[dict[Any, bytes]]:
        self.path.touch()
        with open(self.path, "r+b") as file:
            fcntl.flock(file, fcntl.LOCK_EX)
            raw = file.read()
            contents: dict[Any, bytes] = pickle.loads(raw) if raw else {}
            yield contents
            file.seek(0)
            file.truncate()
            file.write(pickle.dumps(contents))


# --- the stand-ins are strict -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("port", "options", "message"),
    [
        ("50051", {"unencrypted": True}, "should be an int"),
        (0, {"unencrypted": True}, "Invalid port number 0"),
        (65536, {}, "Invalid port number 65536"),
        (50051, {"unencrypted": True, "h2_enabled": True}, "H2 can only be used with encrypted"),
    ],
)
def test_forward_rejects_what_modal_rejects(
    port: Any, options: dict[str, bool], message: str
) -> None:
    forward = LoopbackForward()
    with pytest.raises(InvalidError, match=message), forward(port, **options):
        pass
    assert forward.relays == {}


def test_forward_refuses_a_port_twice_and_frees_it_on_exit() -> None:
    forward = LoopbackForward()
    with (
        forward(50051, unencrypted=True),
        pytest.raises(InvalidError, match="already forwarded"),
        forward(50051),
    ):
        pass
    with forward(50051, unencrypted=True) as tunnel:
        assert tunnel.tcp_socket[0] == "127.0.0.1"


def test_an_encrypted_only_tunnel_has_no_tcp_socket() -> None:
    with LoopbackForward()(50051) as tunnel, pytest.raises(InvalidError, match="unencrypted"):
        tunnel.tcp_socket  # noqa: B018 - the property raises


def test_the_tunnel_relays_bytes_until_it_closes() -> None:
    echo = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=_echo_once, args=(echo,), daemon=True).start()
    forward = LoopbackForward()
    with forward(echo.getsockname()[1], unencrypted=True) as tunnel:
        address = tunnel.tcp_socket
        assert address[1] != echo.getsockname()[1]
        with socket.create_connection(address) as conn:
            conn.sendall(b"ping")
            assert conn.recv(4) == b"ping"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address).close()
    echo.close()


def _echo_once(server: socket.socket) -> None:
    conn, _ = server.accept()
    with conn:
        conn.sendall(conn.recv(4))


def test_dict_standin_copies_values_and_raises_like_a_dict(tmp_path: Path) -> None:
    registry = DictStandIn(tmp_path / "registry.pickle")
    value = {"port": 1}
    assert registry.put("a", value)
    value["port"] = 2
    assert registry.get("a") == {"port": 1}
    assert not registry.put("a", {"port": 3}, skip_if_exists=True)
    assert list(registry.items()) == [("a", {"port": 1})]
    assert registry.pop("a") == {"port": 1}
    assert registry.pop("a", None) is None
    with pytest.raises(KeyError):
        registry.pop("a")
    assert len(registry) == 0

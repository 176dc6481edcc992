"""Channel setup shared by every client: target, TLS or plaintext, keepalive, token."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

DEFAULT_TARGET = "127.0.0.1:50051"

# Match the server (app.py): it permits pings every 10 s even without calls, so a
# push-to-talk stream that sends nothing for minutes stays up through NATs and proxies.
KEEPALIVE_OPTIONS: list[tuple[str, int]] = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
# The server enforces its own request limit (32 MiB by default, above gRPC's 4 MiB);
# let it be the one that decides.
SIZE_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


@dataclass(frozen=True)
class Connection:
    """Where and how to connect."""

    target: str = DEFAULT_TARGET
    token: str | None = None
    tls: bool = False
    root_certificates: bytes | None = None
    """PEM roots for TLS; None uses the system's."""

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def open_channel(self) -> grpc.aio.Channel:
        """An asyncio channel; call from inside the event loop that will use it."""
        options = KEEPALIVE_OPTIONS + SIZE_OPTIONS
        if not self.tls:
            return grpc.aio.insecure_channel(self.target, options=options)
        credentials = grpc.ssl_channel_credentials(root_certificates=self.root_certificates)
        return grpc.aio.secure_channel(self.target, credentials, options=options)

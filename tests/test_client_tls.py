"""The SDK over TLS: a real grpc.aio server with a self-signed certificate made by openssl.

The whisperwire server itself listens in plaintext (TLS is terminated in front of it), so
the TLS server here serves grpc.health.v1 only; that is enough to prove the channel."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from whisperwire.client import AsyncClient, ServerUnavailableError


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """(PEM key, PEM certificate) for localhost."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return Path(key).read_bytes(), Path(cert).read_bytes()


@pytest.fixture(scope="module")
async def tls_port(certificate: tuple[bytes, bytes]) -> AsyncIterator[int]:
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([certificate]))
    await server.start()
    yield port
    await server.stop(None)


async def test_health_over_tls_with_the_servers_certificate(
    tls_port: int, certificate: tuple[bytes, bytes]
) -> None:
    _, cert = certificate
    async with AsyncClient(f"localhost:{tls_port}", tls=True, root_certificates=cert) as client:
        assert await client.health() == "SERVING"


async def test_an_unknown_certificate_is_refused(tls_port: int) -> None:
    async with AsyncClient(f"localhost:{tls_port}", tls=True) as client:  # system roots
        with pytest.raises(ServerUnavailableError):
            await client.health()


async def test_plaintext_to_a_tls_port_fails_clearly(tls_port: int) -> None:
    async with AsyncClient(f"localhost:{tls_port}") as client:
        with pytest.raises(ServerUnavailableError):
            await client.health()

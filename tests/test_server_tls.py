"""The server's own TLS (--tls-cert/--tls-key) and mutual TLS (--tls-client-ca), for
deployments with no TLS proxy in front, on gRPC and the HTTP API alike: the real server, the
real SDK and an HTTP client, real certificates."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.speech import JFK, wer
from tests.tls_support import Certificate, make_certificate
from whisperwire.client import AsyncClient, RecognitionOptions, ServerUnavailableError
from whisperwire.server.app import check_exposure, start_server
from whisperwire.server.config import ServerSettings
from whisperwire.server.engines.ctranslate2 import CTranslate2Engine
from whisperwire.server.errors import ConfigurationError
from whisperwire.server.tokenizer import WhisperTokenizer

Engine = tuple[CTranslate2Engine, WhisperTokenizer]


def settings(**values: Any) -> ServerSettings:
    return ServerSettings(**{"port": 0, **values})


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Certificate]:
    folder = tmp_path_factory.mktemp("tls")
    return {name: make_certificate(folder, name) for name in ("server", "client", "stranger")}


async def test_a_tls_server_transcribes_for_a_tls_client(
    tiny_engine: Engine, certificates: dict[str, Certificate]
) -> None:
    server = certificates["server"]
    running = await start_server(
        settings(tls_cert=server.cert_path, tls_key=server.key_path), *tiny_engine
    )
    try:
        target = f"localhost:{running.port}"
        async with AsyncClient(target, tls=True, root_certificates=server.cert) as client:
            transcript = await client.transcribe(JFK.path, RecognitionOptions(language="en"))
        assert wer(JFK.reference, transcript.text) <= 0.1
        async with AsyncClient(target) as plaintext:
            with pytest.raises(ServerUnavailableError):
                await plaintext.health()
    finally:
        await running.drain_and_stop(grace=1.0)


async def test_the_http_api_serves_https_with_the_same_certificate(
    tiny_engine: Engine, certificates: dict[str, Certificate]
) -> None:
    server, client = certificates["server"], certificates["client"]
    running = await start_server(
        settings(
            http_port=0,
            tls_cert=server.cert_path,
            tls_key=server.key_path,
            tls_client_ca=client.cert_path,
        ),
        *tiny_engine,
    )
    try:
        https = f"https://localhost:{running.http_port}"
        trusted = ssl.create_default_context(cafile=server.cert_path)
        trusted.load_cert_chain(client.cert_path, client.key_path)
        async with httpx.AsyncClient(verify=trusted, timeout=120) as http:
            answer = await http.post(
                f"{https}/v1/audio/transcriptions",
                files={"file": ("jfk.flac", JFK.read())},
                data={"model": "whisper-1", "language": "en"},
            )
        assert answer.status_code == 200, answer.text
        assert wer(JFK.reference, answer.json()["text"]) <= 0.1
        # Plain HTTP gets no answer, nor does a client without a certificate from the CA.
        without_certificate = ssl.create_default_context(cafile=server.cert_path)
        for client_options in ({}, {"verify": without_certificate}):
            url = https.replace("https", "http") if not client_options else https
            async with httpx.AsyncClient(**client_options) as http:
                with pytest.raises(httpx.TransportError):
                    await http.get(f"{url}/healthz")
    finally:
        await running.drain_and_stop(grace=1.0)


def _health(port: int, root: bytes, client: Certificate | None) -> int:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=root,
        private_key=client.key if client else None,
        certificate_chain=client.cert if client else None,
    )
    with grpc.secure_channel(f"localhost:{port}", credentials) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
    return int(answer.status)


async def test_mutual_tls_admits_only_clients_signed_by_the_client_ca(
    tiny_engine: Engine, certificates: dict[str, Certificate]
) -> None:
    import asyncio

    server, client = certificates["server"], certificates["client"]
    running = await start_server(
        settings(
            tls_cert=server.cert_path, tls_key=server.key_path, tls_client_ca=client.cert_path
        ),
        *tiny_engine,
    )
    try:
        status = await asyncio.to_thread(_health, running.port, server.cert, client)
        assert status == health_pb2.HealthCheckResponse.SERVING
        for stranger in (None, certificates["stranger"]):
            with pytest.raises(grpc.RpcError):
                await asyncio.to_thread(_health, running.port, server.cert, stranger)
    finally:
        await running.drain_and_stop(grace=1.0)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"tls_cert": "cert.pem"}, "both --tls-cert and --tls-key"),
        ({"tls_client_ca": "ca.pem"}, "--tls-client-ca needs --tls-cert"),
        ({"tls_cert": "missing.pem", "tls_key": "missing.pem"}, "cannot read --tls-"),
    ],
)
async def test_incomplete_tls_settings_are_startup_errors(
    tiny_engine: Engine, tmp_path: Path, values: dict[str, str], message: str
) -> None:
    paths = {name: tmp_path / value for name, value in values.items()}
    with pytest.raises(ConfigurationError, match=message):
        await start_server(settings(**paths), *tiny_engine, warm_up=False)


def test_tls_does_not_replace_the_token_off_loopback(certificates: dict[str, Certificate]) -> None:
    server = certificates["server"]
    exposed = settings(host="0.0.0.0", tls_cert=server.cert_path, tls_key=server.key_path)
    with pytest.raises(ConfigurationError, match="needs --token"):
        check_exposure(exposed)

"""Test certificates made by the openssl command line (self-signed, valid one day)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Certificate:
    key_path: Path
    cert_path: Path

    @property
    def key(self) -> bytes:
        return self.key_path.read_bytes()

    @property
    def cert(self) -> bytes:
        return self.cert_path.read_bytes()


def make_certificate(folder: Path, name: str, *, san: str = "DNS:localhost") -> Certificate:
    """A self-signed certificate for `san` (also its own CA) under `folder`."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make a test certificate")
    key, cert = folder / f"{name}-key.pem", folder / f"{name}-cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", f"/CN={name}", "-addext", f"subjectAltName={san}",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return Certificate(key, cert)

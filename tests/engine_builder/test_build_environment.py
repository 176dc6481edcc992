"""Which TensorRT-LLM version and GPU an engine is built for."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from engine_builder.environment import (
    DEFAULT_TRTLLM_VERSION,
    choose_gpu_name,
    choose_trtllm_version,
    detect_gpu_name,
    gpu_slug,
)
from engine_builder.errors import GpuNotFoundError, VersionMismatchError

# A stand-in for nvidia-smi (no GPU here) that only answers the exact query the builder makes.
FAKE_NVIDIA_SMI = """
import sys
if sys.argv[1:] != ["--query-gpu=name", "--format=csv,noheader"]:
    print("unexpected arguments", sys.argv[1:], file=sys.stderr)
    sys.exit(2)
print("NVIDIA H100 80GB HBM3")
print("NVIDIA H100 80GB HBM3")
"""


def _put_on_path(monkeypatch: pytest.MonkeyPatch, bin_dir: Path, name: str, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / name
    tool.write_text(f"#!{sys.executable}\n{body}")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_installed_version_is_what_builds() -> None:
    assert choose_trtllm_version(None, "1.2.0") == "1.2.0"
    assert choose_trtllm_version("1.2.0", "1.2.0") == "1.2.0"


def test_without_tensorrt_llm_the_explicit_version_or_the_pin_is_used() -> None:
    assert choose_trtllm_version("1.1.0", None) == "1.1.0"
    assert choose_trtllm_version(None, None) == DEFAULT_TRTLLM_VERSION == "1.2.1"


def test_explicit_version_contradicting_the_installed_one_is_an_error() -> None:
    with pytest.raises(VersionMismatchError, match=r"1\.1\.0 but 1\.2\.1 is installed"):
        choose_trtllm_version("1.1.0", "1.2.1")


def test_detected_gpu_wins_over_the_argument() -> None:
    assert choose_gpu_name(None, "NVIDIA L4") == "NVIDIA L4"
    assert choose_gpu_name("A10G", "NVIDIA L4") == "NVIDIA L4"
    assert choose_gpu_name("A10G", None) == "A10G"


def test_no_gpu_at_all_is_an_error() -> None:
    with pytest.raises(GpuNotFoundError, match="--gpu"):
        choose_gpu_name(None, None)


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("NVIDIA A100-SXM4-80GB", "a100-sxm4-80gb"),
        ("NVIDIA H100 80GB HBM3", "h100-80gb-hbm3"),
        ("A10G", "a10g"),
        ("Tesla T4", "tesla-t4"),
        ("../../etc", "..-..-etc"),
    ],
)
def test_gpu_slug_is_path_safe(name: str, slug: str) -> None:
    assert gpu_slug(name) == slug
    assert "/" not in gpu_slug(name)


def test_gpu_name_from_nvidia_smi(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _put_on_path(monkeypatch, tmp_path / "bin", "nvidia-smi", FAKE_NVIDIA_SMI)
    assert detect_gpu_name() == "NVIDIA H100 80GB HBM3"


def test_no_nvidia_smi_means_no_detected_gpu(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert detect_gpu_name() is None


def test_failing_nvidia_smi_means_no_detected_gpu(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    body = "import sys\nprint('NVIDIA-SMI has failed', file=sys.stderr)\nsys.exit(9)\n"
    _put_on_path(monkeypatch, tmp_path / "bin", "nvidia-smi", body)
    assert detect_gpu_name() is None

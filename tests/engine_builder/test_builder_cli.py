"""`python -m engine_builder`: convert, check, and how errors surface."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from engine_builder.__main__ import main
from engine_builder.manifest import Manifest

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_convert_writes_a_trtllm_checkpoint(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "ckpt"
    exit_code = main(["convert", "--checkpoint", str(tiny_checkpoint), "--out", str(out),
                      "--precision", "float16"])  # fmt: skip
    assert exit_code == 0
    config = json.loads((out / "decoder" / "config.json").read_text())
    assert config["dtype"] == "float16"
    assert load_file(str(out / "decoder" / "rank0.safetensors"))["lm_head.weight"].shape == (
        51865,
        384,
    )


def test_build_without_trtllm_build_exits_1_with_the_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    exit_code = main(["build", "--model", "tiny", "--out-root", str(tmp_path / "engines"),
                      "--gpu", "L4"])  # fmt: skip
    assert exit_code == 1
    assert (
        "pip install tensorrt-llm==1.2.1 --extra-index-url https://pypi.nvidia.com" in caplog.text
    )


def test_unknown_model_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["build", "--model", "huge", "--out-root", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "invalid choice: 'huge'" in capsys.readouterr().err


def _engine_dir(tmp_path: Path) -> Path:
    manifest = Manifest.model_validate_json(
        json.dumps({
            "key": "tiny-float16-trtllm1.2.1-l4-00000000", "model": "tiny",
            "precision": "float16", "dtype": "float16", "quant_algo": None,
            "tensorrt_llm_version": "1.2.1", "gpu_name": "NVIDIA L4", "builder_version": "0.1.0",
            "build_time": "2026-01-01T00:00:00Z", "build_seconds": 1.0, "dims": {},
            "tokenizer": "multilingual.tiktoken", "inputs": [], "options": {}, "trtllm_build": {},
        })
    )  # fmt: skip
    directory = tmp_path / manifest.key
    for name in ["encoder/config.json", "encoder/rank0.engine", "decoder/config.json",
                 "decoder/rank0.engine", "assets/mel_filters.npz",
                 "assets/multilingual.tiktoken"]:  # fmt: skip
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(b"x")
    (directory / "manifest.json").write_text(manifest.to_json())
    return directory


def _run_module(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "engine_builder", *args],
        capture_output=True, text=True, env=env, check=False, timeout=120,
    )  # fmt: skip


def test_check_as_a_module_prints_the_manifest(tmp_path: Path) -> None:
    engine_dir = _engine_dir(tmp_path)
    completed = _run_module("check", str(engine_dir), "--gpu", "L4", "--trtllm-version", "1.2.1")
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["gpu_name"] == "NVIDIA L4"


def test_check_as_a_module_fails_on_another_gpu(tmp_path: Path) -> None:
    engine_dir = _engine_dir(tmp_path)
    completed = _run_module("check", str(engine_dir), "--gpu", "A10G", "--trtllm-version", "1.2.1")
    assert completed.returncode == 1
    assert "built on 'NVIDIA L4' but this is 'A10G'" in completed.stderr
    assert completed.stdout == ""

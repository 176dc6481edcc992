"""build_engines end to end: real downloads (local server), real conversion, fake trtllm-build."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
from builder_support import FakeTrtllmBuild, FileServer
from openai_layout import TINY_DIMS

from engine_builder.build import build_engines
from engine_builder.catalog import WhisperModel
from engine_builder.errors import (
    TRTLLM_INSTALL_HINT,
    EngineDirError,
    QuantizationUnavailableError,
    TrtllmBuildError,
    TrtllmNotFoundError,
)
from engine_builder.manifest import check_engine_dir, load_manifest

GPU = "NVIDIA A10G"
ENGINE_FILES = [
    "assets/mel_filters.npz",
    "assets/multilingual.tiktoken",
    "decoder/config.json",
    "decoder/rank0.engine",
    "encoder/config.json",
    "encoder/rank0.engine",
    "manifest.json",
]


def _build(
    out_root: Path,
    source: WhisperModel,
    *,
    force: bool = False,
    max_batch_size: int = 8,
    max_beam_width: int = 4,
) -> Path:
    return build_engines(
        "tiny",
        "float16",
        out_root,
        gpu=GPU,
        source=source,
        force=force,
        max_batch_size=max_batch_size,
        max_beam_width=max_beam_width,
    )


def _files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def _entries(out_root: Path) -> list[str]:
    """What is in out_root, hidden staging directories included."""
    return sorted(p.name for p in out_root.iterdir())


@pytest.fixture
def out_root(tmp_path: Path) -> Path:
    return tmp_path / "engines"


def test_build_writes_engines_assets_and_manifest(
    out_root: Path, tiny_source: WhisperModel, fake_trtllm_build: FakeTrtllmBuild
) -> None:
    engine_dir = _build(out_root, tiny_source)

    assert engine_dir.parent == out_root
    assert re.fullmatch(r"tiny-float16-trtllm1\.2\.1-a10g-[0-9a-f]{8}", engine_dir.name)
    assert _files(engine_dir) == ENGINE_FILES
    assert _entries(out_root) == ["downloads", engine_dir.name]
    assert (engine_dir / "assets/multilingual.tiktoken").read_bytes() == b"fake vocabulary"

    manifest = load_manifest(engine_dir)
    calls = fake_trtllm_build.calls()
    assert [call["argv"] for call in calls] == [
        manifest.trtllm_build["encoder"][1:],
        manifest.trtllm_build["decoder"][1:],
    ]
    # It ran inside the staging directory that was then renamed into place.
    staging = Path(str(calls[0]["cwd"]))
    assert staging.parent == out_root and staging.name.startswith(f".{engine_dir.name}.")
    assert not staging.exists()
    encoder_engine = json.loads((engine_dir / "encoder/config.json").read_text())
    assert encoder_engine["pretrained_config"]["architecture"] == "WhisperEncoder"
    decoder_engine = json.loads((engine_dir / "decoder/config.json").read_text())
    assert decoder_engine["pretrained_config"]["architecture"] == "DecoderModel"
    assert decoder_engine["build_config"]["max_seq_len"] == 448


def test_manifest_records_inputs_versions_and_options(
    out_root: Path, tiny_source: WhisperModel, fake_trtllm_build: FakeTrtllmBuild
) -> None:
    manifest = load_manifest(_build(out_root, tiny_source, max_batch_size=4))
    assert (manifest.model, manifest.precision, manifest.dtype) == ("tiny", "float16", "float16")
    assert manifest.quant_algo is None
    assert (manifest.tensorrt_llm_version, manifest.gpu_name) == ("1.2.1", GPU)
    assert manifest.dims == TINY_DIMS
    assert manifest.tokenizer == "multilingual.tiktoken"
    assert {(f.name, f.sha256) for f in manifest.inputs} == {
        (f.name, f.sha256) for f in tiny_source.files
    }
    assert manifest.options == {
        "max_batch_size": 4,
        "max_beam_width": 4,
        "max_seq_len": 448,
        "max_input_len": 228,
    }
    assert manifest.trtllm_build["decoder"][:5] == [
        "trtllm-build",
        "--checkpoint_dir",
        "checkpoint/decoder",
        "--output_dir",
        "decoder",
    ]
    assert manifest.build_time.tzinfo is not None
    assert manifest.builder_version


def test_second_run_does_nothing(
    out_root: Path,
    tiny_source: WhisperModel,
    fake_trtllm_build: FakeTrtllmBuild,
    file_server: FileServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = _build(out_root, tiny_source)
    manifest = load_manifest(first)
    requests = len(file_server.requests)
    with caplog.at_level(logging.INFO, logger="engine_builder"):
        second = _build(out_root, tiny_source)
    assert second == first
    assert load_manifest(second) == manifest
    assert len(fake_trtllm_build.calls()) == 2
    assert len(file_server.requests) == requests
    assert "already built" in caplog.text


def test_force_rebuilds_in_place(
    out_root: Path, tiny_source: WhisperModel, fake_trtllm_build: FakeTrtllmBuild
) -> None:
    first = _build(out_root, tiny_source)
    before = load_manifest(first)
    again = _build(out_root, tiny_source, force=True)
    assert again == first
    assert len(fake_trtllm_build.calls()) == 4
    assert load_manifest(again).build_time > before.build_time
    assert _entries(out_root) == ["downloads", first.name]


def test_failed_build_leaves_no_final_and_no_staging_dir(
    out_root: Path,
    tiny_source: WhisperModel,
    fake_trtllm_build: FakeTrtllmBuild,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_TRTLLM_BUILD_FAIL", "DecoderModel")
    with pytest.raises(TrtllmBuildError, match="simulated build failure"):
        _build(out_root, tiny_source)
    assert len(fake_trtllm_build.calls()) == 2
    assert _entries(out_root) == ["downloads"]


def test_failed_forced_rebuild_keeps_the_previous_build(
    out_root: Path,
    tiny_source: WhisperModel,
    fake_trtllm_build: FakeTrtllmBuild,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built = _build(out_root, tiny_source)
    manifest = load_manifest(built)
    monkeypatch.setenv("FAKE_TRTLLM_BUILD_FAIL", "WhisperEncoder")
    with pytest.raises(TrtllmBuildError):
        _build(out_root, tiny_source, force=True)
    assert load_manifest(built) == manifest
    assert _files(built) == ENGINE_FILES
    assert _entries(out_root) == ["downloads", built.name]


def test_other_options_get_their_own_directory_and_reuse_downloads(
    out_root: Path,
    tiny_source: WhisperModel,
    fake_trtllm_build: FakeTrtllmBuild,
    file_server: FileServer,
) -> None:
    default = _build(out_root, tiny_source)
    requests = len(file_server.requests)
    wide = _build(out_root, tiny_source, max_beam_width=1, max_batch_size=32)
    assert wide != default
    assert wide.name.rsplit("-", 1)[0] == default.name.rsplit("-", 1)[0]
    assert len(file_server.requests) == requests
    argv = fake_trtllm_build.calls()[-1]["argv"]
    assert isinstance(argv, list)
    assert argv[argv.index("--max_batch_size") + 1] == "32"


def test_missing_trtllm_build_fails_before_downloading(
    out_root: Path,
    tiny_source: WhisperModel,
    file_server: FileServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(TrtllmNotFoundError, match=re.escape(TRTLLM_INSTALL_HINT)):
        _build(out_root, tiny_source)
    assert file_server.requests == []
    assert not out_root.exists()


@pytest.mark.usefixtures("no_tensorrt_llm")
def test_weight_only_without_tensorrt_llm_fails_before_downloading(
    out_root: Path,
    tiny_source: WhisperModel,
    fake_trtllm_build: FakeTrtllmBuild,
    file_server: FileServer,
) -> None:
    with pytest.raises(QuantizationUnavailableError, match="W8A16"):
        build_engines("tiny", "int8", out_root, gpu=GPU, source=tiny_source)
    assert file_server.requests == []


def test_foreign_directory_under_the_key_is_not_taken_for_a_build(
    out_root: Path, tiny_source: WhisperModel, fake_trtllm_build: FakeTrtllmBuild
) -> None:
    engine_dir = _build(out_root, tiny_source)
    (engine_dir / "manifest.json").unlink()
    with pytest.raises(EngineDirError, match=r"no manifest\.json"):
        _build(out_root, tiny_source)
    rebuilt = _build(out_root, tiny_source, force=True)
    assert check_engine_dir(rebuilt, trtllm_version="1.2.1", gpu="A10G").model == "tiny"

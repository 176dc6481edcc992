"""The Modal app file (whisperwire_modal.py), offline: no account, no GPU, no TensorRT-LLM.

- It imports in a bare environment, without pulling torch or TensorRT-LLM.
- What its decorators and image are given is recorded by wrapping modal's own decorators
  (which still validate everything, as they do before a deploy).
- The build function's body runs with `.local()`: real downloads from a local server, real
  checkpoint conversion, the strict fake trtllm-build (tests/engine_builder), a temporary
  directory as the Volume.
- The tunnel server class runs with `.local()` (its enter hook and method) on the TensorRT-LLM
  contract double, with `modal.forward` and `modal.Dict` replaced by the loopback stand-ins;
  the smoke test and benchmark code then run against it through the tunnel.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

import modal
import pytest
import tomllib
import torch

import engine_builder.build
import whisperwire_modal as app
from engine_builder import volume as engine_volume
from engine_builder.catalog import WhisperModel
from engine_builder.errors import EngineDirError
from tests.engine_builder.builder_support import (
    FakeTrtllmBuild,
    FileServer,
    install_fake_trtllm_build,
    serve_files,
)
from tests.engine_builder.openai_layout import TINY_DIMS, random_state
from tests.speech import HESTER, JFK, NIGHTFALL, wer
from tests.test_modal_standins import DictStandIn, LoopbackForward
from tests.trtllm_double.support import TINY_EN, double_importable, write_engine_dir
from whisperwire.client.modal_discovery import resolve_target
from whisperwire.modal_registry import TunnelEndpoint

REPO = Path(__file__).resolve().parents[1]
APP_FILE = REPO / "whisperwire_modal.py"
TOKEN = "modal-app-test-token"
# `.local()` warns that the Volume is not mounted: here a temporary directory stands in for it.
pytestmark = pytest.mark.filterwarnings("ignore:.*executing locally.*:UserWarning")

# --- importing -------------------------------------------------------------------------------


def test_the_app_file_imports_without_gpu_trtllm_or_credentials(tmp_path: Path) -> None:
    probe = (
        "import sys, whisperwire_modal; "
        "print(sorted(m for m in ('torch', 'tensorrt_llm', 'ctranslate2') if m in sys.modules))"
    )
    bare = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}  # no MODAL_* and no ~/.modal.toml
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, env=bare, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# --- decorations and image, as recorded from modal's own decorators ----------------------------


@dataclass
class Recorded:
    module: ModuleType
    decorations: dict[str, tuple[str, dict[str, Any]]]
    """Decorated name -> (App method, keyword arguments)."""
    image_steps: list[tuple[str, tuple[Any, ...], dict[str, Any]]]


def import_recorded(monkeypatch: pytest.MonkeyPatch, **environ: str) -> Recorded:
    """A fresh import of the app file with App decorators and Image steps recorded."""
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    recorded = Recorded(ModuleType("unused"), {}, [])
    for method in ("function", "cls", "server"):
        monkeypatch.setattr(modal.App, method, _recording_decorator(method, recorded))
    for step in ("apt_install", "env", "pip_install", "add_local_dir", "run_commands"):
        monkeypatch.setattr(modal.Image, step, _recording_step(step, recorded))
    original_from_registry = modal.Image.from_registry

    def from_registry(*args: Any, **kwargs: Any) -> Any:
        recorded.image_steps.append(("from_registry", args, kwargs))
        return original_from_registry(*args, **kwargs)

    monkeypatch.setattr(modal.Image, "from_registry", from_registry)
    spec = importlib.util.spec_from_file_location("whisperwire_modal_recorded", APP_FILE)
    assert spec is not None and spec.loader is not None
    recorded.module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up while the file executes
    monkeypatch.setitem(sys.modules, spec.name, recorded.module)
    spec.loader.exec_module(recorded.module)
    return recorded


def _recording_decorator(method: str, recorded: Recorded) -> Callable[..., Any]:
    original = getattr(modal.App, method)

    def decorator_factory(self: modal.App, **kwargs: Any) -> Callable[[Any], Any]:
        decorate = original(self, **kwargs)

        def decorate_and_record(target: Any) -> Any:
            recorded.decorations[target.__name__] = (method, kwargs)
            return decorate(target)  # modal validates the settings here

        return decorate_and_record

    return decorator_factory


def _recording_step(step: str, recorded: Recorded) -> Callable[..., Any]:
    original = getattr(modal.Image, step)

    def record(self: modal.Image, *args: Any, **kwargs: Any) -> Any:
        recorded.image_steps.append((step, args, kwargs))
        return original(self, *args, **kwargs)

    return record


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Recorded:
    for name in ("GPU", "MODEL", "PRECISION", "REPLICAS", "REGISTRY"):
        monkeypatch.delenv(f"WHISPERWIRE_MODAL_{name}", raising=False)
    return import_recorded(monkeypatch)


def _volumes(settings: dict[str, Any]) -> dict[str, str | None]:
    return {str(path): volume.name for path, volume in settings["volumes"].items()}


def _secret_names(settings: dict[str, Any]) -> list[str | None]:
    return [secret.name for secret in settings.get("secrets", [])]


def test_the_build_function_runs_on_the_serving_gpu_with_the_volume(recorded: Recorded) -> None:
    method, settings = recorded.decorations["build_engines"]
    _, serving = recorded.decorations["TunnelServer"]
    assert method == "function"
    assert settings["gpu"] == serving["gpu"] == "L40S"
    assert _volumes(settings) == {"/whisperwire": "whisperwire"}
    assert settings["timeout"] == 2 * 3600


def test_the_tunnel_server_stays_up_with_the_token_secret(recorded: Recorded) -> None:
    method, settings = recorded.decorations["TunnelServer"]
    assert method == "cls"
    assert settings["gpu"] == "L40S"
    assert _volumes(settings) == {"/whisperwire": "whisperwire"}
    assert _secret_names(settings) == ["whisperwire-token"]
    assert settings["min_containers"] == settings["max_containers"] == 1
    assert settings["startup_timeout"] == 20 * 60  # engine load and warm-up
    assert settings["timeout"] == 5 * 60
    assert settings["env"]["WHISPERWIRE_MODAL_MODEL"] == "large-v3-turbo"
    assert settings["env"]["WHISPERWIRE_MODAL_REGISTRY"] == "whisperwire-endpoints"


def test_the_scale_out_variant_is_an_h2_server_on_the_grpc_port(recorded: Recorded) -> None:
    method, settings = recorded.decorations["GrpcServer"]
    assert method == "server"
    assert (settings["port"], settings["h2_enabled"]) == (50051, True)
    assert settings["gpu"] == "L40S"
    assert _volumes(settings) == {"/whisperwire": "whisperwire"}
    assert _secret_names(settings) == ["whisperwire-token"]
    # Modal's proxy auth is off; the server's own bearer token is not (see deploy.require_token).
    assert settings["unauthenticated"] is True
    assert settings["startup_timeout"] == 20 * 60
    assert settings["exit_grace_period"] > recorded.module.DRAIN_SECONDS


def test_deploy_time_overrides_reach_the_decorators_and_the_containers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorded = import_recorded(
        monkeypatch,
        WHISPERWIRE_MODAL_GPU="H100",
        WHISPERWIRE_MODAL_MODEL="large-v3",
        WHISPERWIRE_MODAL_REPLICAS="3",
    )
    _, settings = recorded.decorations["TunnelServer"]
    assert settings["gpu"] == recorded.decorations["build_engines"][1]["gpu"] == "H100"
    assert settings["min_containers"] == 3
    # The containers import the file too: the values travel in their environment.
    assert settings["env"]["WHISPERWIRE_MODAL_GPU"] == "H100"
    assert settings["env"]["WHISPERWIRE_MODAL_MODEL"] == "large-v3"


def test_the_image_pins_the_cuda13_tensorrt_llm_stack_and_installs_the_project(
    recorded: Recorded,
) -> None:
    steps = [(step, args, kwargs) for step, args, kwargs in recorded.image_steps]
    names = [step for step, _, _ in steps]
    assert names == [
        "from_registry",
        "apt_install",
        "env",
        "pip_install",
        "pip_install",
        "add_local_dir",
        "run_commands",
    ]
    _, (base,), base_options = steps[0]
    assert re.fullmatch(r"nvidia/cuda:13\.\d+\.\d+-devel-ubuntu24\.04", base)
    assert base_options == {"add_python": "3.12"}
    assert {"openmpi-bin", "libopenmpi-dev"} <= set(steps[1][1])
    assert steps[2][1][0] == {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    assert steps[3][1:] == (
        ("torch==2.9.1",),
        {"index_url": "https://download.pytorch.org/whl/cu130"},
    )
    assert steps[4][1:] == (
        ("tensorrt-llm==1.2.1",),
        {"extra_index_url": "https://pypi.nvidia.com"},
    )
    assert steps[5][2]["copy"] is True  # build steps follow it
    assert "[server,builder]" in steps[6][1][0]


def test_the_image_pin_matches_the_trtllm_extra() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    extra = project["project"]["optional-dependencies"]["trtllm"]
    assert extra == [f"tensorrt-llm=={app.TENSORRT_LLM_VERSION}"]


# --- the build function's body ------------------------------------------------------------------


@dataclass
class VolumeStandIn:
    commits: int = 0

    def commit(self) -> None:
        self.commits += 1


@pytest.fixture
def fake_trtllm_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeTrtllmBuild:
    return install_fake_trtllm_build(tmp_path, monkeypatch)


@pytest.fixture
def tiny_checkpoint_server(tmp_path: Path) -> Iterator[WhisperModel]:
    """tiny's catalog entry, its files served by a local HTTP server."""
    path = tmp_path / "tiny.pt"
    torch.save({"dims": dict(TINY_DIMS), "model_state_dict": random_state(TINY_DIMS)}, path)
    checkpoint = path.read_bytes()
    server: FileServer
    with serve_files() as server:
        yield WhisperModel(
            name="tiny",
            checkpoint=server.publish(
                f"/models/{hashlib.sha256(checkpoint).hexdigest()}/tiny.pt", checkpoint
            ),
            mel_filters=server.publish("/assets/mel_filters.npz", b"mel filters"),
            tokenizer=server.publish("/assets/multilingual.tiktoken", b"vocabulary"),
        )


def test_build_engines_builds_into_the_volume_once_and_commits(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_trtllm_build: FakeTrtllmBuild,
    tiny_checkpoint_server: WhisperModel,
) -> None:
    volume_root, volume = tmp_path / "volume", VolumeStandIn()
    monkeypatch.setattr(app, "VOLUME_PATH", PurePosixPath(volume_root))
    monkeypatch.setattr(app, "volume", volume)
    monkeypatch.setattr(engine_builder.build, "resolve_model", lambda name: tiny_checkpoint_server)

    first = app.build_engines.local("tiny", "float16", "L40S")

    engine_dir = Path(first["engine_dir"])
    assert first["built"] is True and volume.commits == 1
    assert engine_dir.parent == volume_root / "engines"
    assert re.fullmatch(r"tiny-float16-trtllm1\.2\.1-l40s-[0-9a-f]{8}", engine_dir.name)
    assert (volume_root / "checkpoints" / "tiny.pt").is_file()
    argv = [call["argv"] for call in fake_trtllm_build.calls()]
    assert [a[a.index("--output_dir") + 1] for a in argv] == ["encoder", "decoder"]
    assert json.loads((engine_dir / "manifest.json").read_text())["gpu_name"] == "L40S"

    again = app.build_engines.local("tiny", "float16", "L40S")

    assert again == {"engine_dir": str(engine_dir), "built": False}
    assert volume.commits == 1
    assert len(fake_trtllm_build.calls()) == 2


def test_the_server_finds_the_build_for_its_gpu_or_says_how_to_make_one(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_trtllm_build: FakeTrtllmBuild,
    tiny_checkpoint_server: WhisperModel,
) -> None:
    monkeypatch.setattr(engine_builder.build, "resolve_model", lambda name: tiny_checkpoint_server)
    build = engine_volume.build_into_volume(
        tmp_path, "tiny", "float16", gpu="L40S", commit=lambda: None
    )
    engines = tmp_path / engine_volume.ENGINES_DIR

    found = engine_volume.find_engine_dir(
        engines, "tiny", "float16", trtllm_version="1.2.1", gpu_name="NVIDIA L40S"
    )
    assert found == build.engine_dir
    with pytest.raises(EngineDirError, match=r"build_engines --model tiny --precision float16"):
        engine_volume.find_engine_dir(
            engines, "tiny", "float16", trtllm_version="1.2.1", gpu_name="NVIDIA H100 80GB HBM3"
        )
    with pytest.raises(EngineDirError, match="no tiny bfloat16 engines"):
        engine_volume.find_engine_dir(
            engines, "tiny", "bfloat16", trtllm_version="1.2.1", gpu_name=None
        )


# --- the tunnel server class, and the smoke test and benchmark against it ----------------------


@dataclass
class LocalContainer:
    endpoint: dict[str, Any]
    forward: LoopbackForward
    registry: DictStandIn
    opened_registries: list[tuple[str, bool]]

    @property
    def target(self) -> str:
        return resolve_target("whisperwire", registry=self.registry)


@pytest.fixture(scope="module")
def local_container(
    tmp_path_factory: pytest.TempPathFactory, tiny_en_dir: Path, whisper_assets_dir: Path
) -> Iterator[LocalContainer]:
    """TunnelServer's enter hook and method, run here (`.local()`), on the TensorRT-LLM double."""
    volume_root = tmp_path_factory.mktemp("volume")
    write_engine_dir(
        volume_root / "engines", TINY_EN, ct2_model_dir=tiny_en_dir, assets_dir=whisper_assets_dir
    )
    forward = LoopbackForward()
    registry = DictStandIn(volume_root / "registry.pickle")
    opened: list[tuple[str, bool]] = []

    def dict_from_name(name: str, *, create_if_missing: bool = False) -> DictStandIn:
        opened.append((name, create_if_missing))
        return registry

    sigterm = signal.getsignal(signal.SIGTERM)
    with pytest.MonkeyPatch.context() as patch, double_importable():
        patch.setattr(app, "VOLUME_PATH", PurePosixPath(volume_root))
        patch.setattr(app, "MODEL", "tiny.en")
        patch.setattr(app, "GRPC_PORT", 0)  # a free port, not 50051, on a shared machine
        patch.setenv("WHISPERWIRE_TOKEN", TOKEN)
        patch.setenv("MODAL_TASK_ID", "ta-01LOCAL")
        patch.setattr(modal, "forward", forward)
        patch.setattr(modal.Dict, "from_name", dict_from_name)
        container = app.TunnelServer()
        try:
            endpoint = container.endpoint.local()
            yield LocalContainer(endpoint, forward, registry, opened)
        finally:
            # What the exit hook does (`.local()` never runs exit hooks).
            container._cached_user_cls_instance().service.stop()
            signal.signal(signal.SIGTERM, sigterm)


def test_the_container_serves_the_volume_engine_through_a_registered_tunnel(
    local_container: LocalContainer,
) -> None:
    endpoint = TunnelEndpoint.from_entry(local_container.endpoint)
    assert (endpoint.model, endpoint.engine) == ("tiny.en", "trtllm")
    assert endpoint.container == "ta-01LOCAL"
    assert local_container.opened_registries == [("whisperwire-endpoints", True)]
    assert local_container.registry.get("ta-01LOCAL") == local_container.endpoint
    (call,) = local_container.forward.calls
    assert call["unencrypted"] is True
    assert local_container.target == endpoint.target


async def test_the_smoke_check_transcribes_jfk_through_the_tunnel(
    local_container: LocalContainer,
) -> None:
    report = await app.transcribe_once(local_container.target, TOKEN, JFK.path)

    assert wer(JFK.reference, report.text) <= 0.1
    assert report.model == "tiny.en"
    assert 10.5 < report.audio_seconds < 11.5
    assert set(report.server_timings) == {"decode", "features", "queue", "inference", "total"}
    assert report.text in report.describe()


async def test_the_benchmark_fills_a_row_per_concurrency(local_container: LocalContainer) -> None:
    clips = app.load_clips([HESTER.path, NIGHTFALL.path])
    assert [round(clip.seconds, 1) for clip in clips] == [4.8, 6.6]

    # The shorter clip only: two levels, one round, as fast as the server answers.
    rows = await app.run_benchmark(local_container.target, TOKEN, clips[:1], [1, 2], 1, pace=0)

    assert [(r.concurrency, r.requests, r.streams) for r in rows] == [(1, 1, 1), (2, 2, 2)]
    for row in rows:
        assert row.rtfx > 0
        assert 0 < row.unary_p50 <= row.unary_p95
        assert 0 < row.ptt_p50 <= row.ptt_p95
    table = app.format_table(rows).splitlines()
    assert table[0].split()[:3] == ["concurrency", "calls", "RTFx"]
    assert [line.split()[0] for line in table[1:]] == ["1", "2"]

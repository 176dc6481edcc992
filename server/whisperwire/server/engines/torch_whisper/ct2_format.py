"""Read the tensors of a CTranslate2 `model.bin` (the format its `specs/model_spec.py` writes).

Layout, little-endian: u32 binary version, string spec name, u32 spec revision, u32 variable
count, then per variable: string name, u8 rank, u32 dims[rank], u8 dtype id, u32 byte count,
raw bytes; then u32 alias count and (alias, target) string pairs. A string is a u16 length
(terminating NUL included) followed by its UTF-8 bytes and the NUL.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO, Final

import numpy as np
import numpy.typing as npt

from whisperwire.server.errors import ModelNotFoundError

# dtype ids in the order CTranslate2 numbers them; bfloat16 is read as raw 16-bit words.
_DTYPES: Final = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
_NUMPY_DTYPES: Final = {
    "float32": np.float32,
    "int8": np.int8,
    "int16": np.int16,
    "int32": np.int32,
    "float16": np.float16,
    "bfloat16": np.uint16,
}
_SUPPORTED_VERSIONS: Final = range(5, 7)


class Ct2Tensor:
    """One variable: its numpy array and CTranslate2's dtype name ("bfloat16" is raw bits)."""

    def __init__(self, array: npt.NDArray[np.generic], dtype: str) -> None:
        self.array = array
        self.dtype = dtype


def read_model_bin(path: Path) -> tuple[str, dict[str, Ct2Tensor]]:
    """The spec name and every variable (aliases resolved) of a CTranslate2 model.bin."""
    try:
        with path.open("rb") as stream:
            return _read(stream)
    except (OSError, struct.error, ValueError, UnicodeDecodeError) as error:
        raise ModelNotFoundError(
            f"{path} is not a readable CTranslate2 model.bin: {error}"
        ) from error


def _read(stream: BinaryIO) -> tuple[str, dict[str, Ct2Tensor]]:
    version = _u32(stream)
    if version not in _SUPPORTED_VERSIONS:
        raise ValueError(f"binary version {version} (this reader knows 5 and 6)")
    spec = _string(stream)
    _u32(stream)  # spec revision
    variables = {}
    for _ in range(_u32(stream)):
        name = _string(stream)
        rank = _unpack(stream, "<B")
        shape = tuple(_u32(stream) for _ in range(rank))
        dtype = _DTYPES[_unpack(stream, "<B")]
        size = _u32(stream)
        data = stream.read(size)
        if len(data) != size:
            raise ValueError(f"{name}: truncated ({len(data)} of {size} bytes)")
        array = np.frombuffer(data, dtype=_NUMPY_DTYPES[dtype]).reshape(shape)
        variables[name] = Ct2Tensor(array, dtype)
    for _ in range(_u32(stream)):
        alias, target = _string(stream), _string(stream)
        variables[alias] = variables[target]
    return spec, variables


def _u32(stream: BinaryIO) -> int:
    return _unpack(stream, "<I")


def _unpack(stream: BinaryIO, fmt: str) -> int:
    size = struct.calcsize(fmt)
    data = stream.read(size)
    if len(data) != size:
        raise ValueError("unexpected end of file")
    value: int = struct.unpack(fmt, data)[0]
    return value


def _string(stream: BinaryIO) -> str:
    length = _unpack(stream, "<H")
    return stream.read(length).rstrip(b"\0").decode("utf-8")

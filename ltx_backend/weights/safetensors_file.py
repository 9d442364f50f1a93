"""Validated, lazy access to one `.safetensors` file.

The header is parsed and checked here (so a truncated or corrupt file gives a clear error instead of
a crash deep inside MLX); tensor data is read lazily through `mx.load`, which memory-maps the file:
asking for one component of a 40 GB checkpoint reads only that component's bytes.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx

from ltx_backend.errors import ErrorCode, LtxError

# Bytes per element of every dtype the safetensors format defines.
DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
MAX_HEADER_BYTES = 100 * 1024 * 1024
_CORRUPT_HINT = "The file is damaged or was not fully downloaded: delete it and download the model again."


def _corrupt_hint(path: Path) -> str:
    from ltx_backend.tiny import repair_hint  # the tiny models cannot be downloaded: they are rewritten

    return repair_hint(path) or _CORRUPT_HINT


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives and what it is, known from the header alone."""

    file: Path
    name: str
    shape: tuple[int, ...]
    dtype: str  # safetensors spelling: "BF16", "F32", "U32", ...
    offset: int = -1  # where its bytes start in the file (-1: not a real file); they run for `nbytes`

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPE_SIZES[self.dtype]


class SafetensorsFile:
    """One safetensors file: validated header up front, lazily loaded tensors on demand."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.metadata, self.tensors = _read_header(self.path)
        self._loads: list[tuple[mx.Stream | None, dict[str, mx.array]]] = []  # one `mx.load` per stream (None: default)

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def keys(self) -> list[str]:
        return list(self.tensors)

    def array(self, name: str, stream: mx.Stream | None = None) -> mx.array:
        """The tensor as a lazy MLX array (no bytes are read until it is evaluated), read on `stream` when given
        (a parallel load's lane: `weights/parallel_load.py`), else on the default stream."""
        if name not in self.tensors:
            raise KeyError(name)
        arrays = next((loaded for on, loaded in self._loads if _same(on, stream)), None)
        if arrays is None:
            try:
                arrays = mx.load(str(self.path)) if stream is None else mx.load(str(self.path), stream=stream)
            except Exception as exc:  # MLX raises RuntimeError/ValueError for unreadable files
                message = f"Cannot read {self.path}: {exc}"
                hint = _corrupt_hint(self.path)
                raise LtxError(ErrorCode.CHECKPOINT_CORRUPT, message, hint, file=str(self.path)) from exc
            self._loads.append((stream, arrays))
        return arrays[name]

    def release(self) -> None:
        """Forget the arrays handed out: once a module holds them, only the module keeps their bytes alive (this
        file's dicts would otherwise hold every tensor ever evaluated until the checkpoint itself is dropped)."""
        self._loads = []


def _same(one: mx.Stream | None, other: mx.Stream | None) -> bool:
    return one is other or (one is not None and other is not None and one == other)


def _corrupt(path: Path, what: str) -> LtxError:
    return LtxError(ErrorCode.CHECKPOINT_CORRUPT, f"{path}: {what}", _corrupt_hint(path), file=str(path))


def _read_header(path: Path) -> tuple[dict[str, str], dict[str, TensorInfo]]:
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise _corrupt(path, f"file is {size} bytes, too short for a safetensors header")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > MAX_HEADER_BYTES or header_len > size - 8:
                raise _corrupt(path, f"header length {header_len} does not fit in a {size}-byte file")
            raw = handle.read(header_len)
    except OSError as exc:
        raise LtxError(
            ErrorCode.MODEL_NOT_FOUND, f"Cannot open {path}: {exc.strerror}", "Check the model path.", file=str(path)
        ) from exc
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _corrupt(path, f"header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise _corrupt(path, "header is not a JSON object")

    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise _corrupt(path, "__metadata__ is not a JSON object")
    data_size = size - 8 - header_len
    tensors: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        tensors[name] = _check_entry(path, name, entry, data_size, 8 + header_len)
    return metadata, tensors


def _check_entry(path: Path, name: str, entry: object, data_size: int, data_start: int) -> TensorInfo:
    try:
        dtype = entry["dtype"]  # type: ignore[index]
        shape = tuple(int(d) for d in entry["shape"])  # type: ignore[index]
        begin, end = (int(o) for o in entry["data_offsets"])  # type: ignore[index]
    except (TypeError, KeyError, ValueError) as exc:
        raise _corrupt(path, f"tensor {name!r} has a malformed header entry") from exc
    if dtype not in DTYPE_SIZES:
        raise _corrupt(path, f"tensor {name!r} has unknown dtype {dtype!r}")
    expected = math.prod(shape) * DTYPE_SIZES[dtype]
    if end - begin != expected or begin < 0 or min(shape, default=0) < 0:
        raise _corrupt(path, f"tensor {name!r} {dtype}{list(shape)} claims {end - begin} bytes, needs {expected}")
    if end > data_size:
        raise _corrupt(
            path, f"truncated: tensor {name!r} ends at byte {end} of the data section, which has only {data_size}"
        )
    return TensorInfo(file=path, name=name, shape=shape, dtype=dtype, offset=data_start + begin)

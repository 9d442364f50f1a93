"""Reading tensors' stored bytes with ``pread``s straight into numpy buffers, for the streamed transformer
(``streaming.py``: a block at a time, on every forward, ``READ_THREADS`` reads in flight).

A whole load stays with MLX's lazy ``mx.load``, evaluated on several threads (``weights/parallel_load.py``). Reading
a load's tensors ahead of the loader with these threads was tried and measured on the H100 machine (2026-12-05,
``benchmarks/load_speed.py``, 10 GB from a cold page cache): 1.12 GB/s against ``mx.load``'s 1.10, and slower warm.
On CUDA an MLX array made from host data lives in managed memory, slow to fill and moved to the device page by page
at first use, so what the threads save on reading is spent there.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.weights.safetensors_file import TensorInfo

READ_THREADS = 4  # reads in flight: an SSD (or a network disk) serves several requests faster than one
# The numpy dtype whose bytes a stored dtype is read as (bf16 has none: read as uint16 and viewed in MLX).
NUMPY_STORAGE = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "U32": np.uint32, "I32": np.int32,
                 "U8": np.uint8, "I8": np.int8}  # fmt: skip


def pread_into(descriptor: int, target: memoryview, info: TensorInfo) -> None:
    """Fill `target` with `info`'s bytes (as many ``pread``s as the OS needs)."""
    done = 0
    while done < len(target):
        count = os.preadv(descriptor, [target[done:]], info.offset + done)
        if count <= 0:
            raise unreadable(info, "ends past the end of the file")
        done += count


def unreadable(info: TensorInfo, what: str) -> LtxError:
    """`checkpoint_corrupt` for a tensor that could not be read while the model was in use (`what` went wrong)."""
    return LtxError(
        ErrorCode.CHECKPOINT_CORRUPT,
        f"{info.file}: tensor {info.name!r} {what} (truncated while in use?)",
        "The file is damaged or was replaced; download the model again.",
        file=str(info.file),
        key=info.name,
    )


def read_stored(files: Descriptors, parts: Sequence[TensorInfo], shape: tuple[int, ...]) -> np.ndarray:
    """The bytes of `parts`, one after another, in one numpy buffer of their storage dtype shaped `shape` (a tensor
    alone, or projections stacked along their rows)."""
    buffer = np.empty(sum(info.nbytes for info in parts), dtype=np.uint8)
    at = 0
    for info in parts:
        pread_into(files.get(info.file), memoryview(buffer)[at : at + info.nbytes], info)
        at += info.nbytes
    return buffer.view(NUMPY_STORAGE[parts[0].dtype]).reshape(shape)


class Descriptors:
    """Open file descriptors by path, opened once; closed by `close`."""

    def __init__(self, purpose: str) -> None:
        self.purpose = purpose  # for the error message: "stream the transformer", "load the model"
        self._files: dict[Path, int] = {}
        self._lock = threading.Lock()

    def get(self, path: Path) -> int:
        with self._lock:
            if path not in self._files:
                try:
                    self._files[path] = os.open(path, os.O_RDONLY)
                except OSError as exc:
                    raise LtxError(
                        ErrorCode.MODEL_NOT_FOUND,
                        f"Cannot open {path} to {self.purpose}: {exc.strerror}",
                        "The checkpoint was moved or deleted while in use; load the model again.",
                        file=str(path),
                    ) from exc
            return self._files[path]

    def close(self) -> None:
        with self._lock:
            for descriptor in self._files.values():
                os.close(descriptor)
            self._files.clear()

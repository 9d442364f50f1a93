"""Reading tensors' stored bytes with ``pread``s, several in flight, straight into numpy buffers made MLX arrays.

Used by the streamed transformer (``streaming.py``: a block at a time, on every forward) and by a whole load
(``ReadAhead``: the tensors a loader asks for, in the order it asks, ``READ_THREADS`` reads ahead of it).

Why not ``mx.load`` for a whole load: on CUDA its ``Load`` reads a tensor, then copies it to the device, then
reads the next, all on the evaluating thread. On the H100 machine a cold first load of 48.7 GB ran at 1.0 GB/s,
the disk's sequential rate (1.5-1.8 GB/s) and the warm copy rate (2.3 GB/s) in series, while the streamed
transformer's threaded ``pread``s read the same disk at 1.98 GB/s. Here the reads run on threads ahead of the
loader, so the disk streams while the loader builds arrays.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import mlx.core as mx
import numpy as np

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.weights.safetensors_file import TensorInfo

READ_THREADS = 4  # reads in flight: an SSD (or a network disk) serves several requests faster than one
# The numpy dtype whose bytes a stored dtype is read as (bf16 has none: read as uint16 and viewed in MLX).
NUMPY_STORAGE = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "U32": np.uint32, "I32": np.int32,
                 "U8": np.uint8, "I8": np.int8}  # fmt: skip


def readable(info: TensorInfo) -> bool:
    """Whether `info` can be read this way: a real file offset and a dtype numpy can hold the bits of."""
    return info.offset >= 0 and info.dtype in NUMPY_STORAGE


def pread_into(descriptor: int, target: memoryview, info: TensorInfo) -> None:
    """Fill `target` with `info`'s bytes (as many ``pread``s as the OS needs)."""
    done = 0
    while done < len(target):
        count = os.preadv(descriptor, [target[done:]], info.offset + done)
        if count <= 0:
            raise LtxError(
                ErrorCode.CHECKPOINT_CORRUPT,
                f"{info.file}: tensor {info.name!r} ends past the end of the file (truncated while in use?)",
                "The file is damaged or was replaced; download the model again.",
                file=str(info.file),
                key=info.name,
            )
        done += count


def read_stored(files: Descriptors, parts: Sequence[TensorInfo], shape: tuple[int, ...]) -> np.ndarray:
    """The bytes of `parts`, one after another, in one numpy buffer of their storage dtype shaped `shape` (a tensor
    alone, or projections stacked along their rows)."""
    buffer = np.empty(sum(info.nbytes for info in parts), dtype=np.uint8)
    at = 0
    for info in parts:
        pread_into(files.get(info.file), memoryview(buffer)[at : at + info.nbytes], info)
        at += info.nbytes
    return buffer.view(NUMPY_STORAGE[parts[0].dtype]).reshape(shape)


def as_mlx(buffer: np.ndarray, dtype: str) -> mx.array:
    """An MLX array of the stored bits in `buffer` (a copy into MLX memory), bf16 viewed as such: on the thread
    that uses it (the view is an op, and MLX streams belong to threads)."""
    array = mx.array(buffer)
    return array.view(mx.bfloat16) if dtype == "BF16" else array


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


class ReadAhead:
    """Reads `tensors`, in that order, ``READ_THREADS`` ahead of the caller, which takes them in the same order
    with `take`. Use as a context manager: leaving it stops the reads not yet taken and closes the files."""

    def __init__(self, tensors: Sequence[TensorInfo], threads: int = READ_THREADS) -> None:
        self._tensors = list(tensors)
        self._threads = threads
        self._next = 0
        self._pending: dict[int, Future] = {}
        self._files = Descriptors("load the model")
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ltx-read-ahead")
        self.bytes = 0

    def __enter__(self) -> ReadAhead:
        for index in range(min(self._threads, len(self._tensors))):
            self._submit(index)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._files.close()

    def take(self, info: TensorInfo) -> mx.array:
        """The next tensor (it must be `info`: the loader asks in the order given) as an MLX array."""
        index = self._next
        if index >= len(self._tensors) or self._tensors[index] != info:
            raise ValueError(f"read ahead out of order: asked for {info.name!r}")
        self._next += 1
        if index + self._threads < len(self._tensors):
            self._submit(index + self._threads)
        buffer = self._pending.pop(index).result()
        self.bytes += info.nbytes
        return as_mlx(buffer, info.dtype)

    def _submit(self, index: int) -> None:
        self._pending[index] = self._pool.submit(self._read, self._tensors[index])

    def _read(self, info: TensorInfo) -> np.ndarray:
        return read_stored(self._files, [info], info.shape)

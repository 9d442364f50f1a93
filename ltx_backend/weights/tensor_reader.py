"""Reading tensors' stored bytes with ``pread``s, several in flight, straight into numpy buffers made MLX arrays.

Used by the streamed transformer (``streaming.py``: a block at a time, on every forward) and by a whole load
(``ReadAhead``: the tensors a loader asks for, in the order it asks, ``READ_THREADS`` reads ahead of it).

Why not ``mx.load`` for a whole load: on CUDA its ``Load`` reads a tensor, then copies it to the device, then
reads the next, all on the evaluating thread. On the H100 machine a cold first load of 48.7 GB ran at 1.0 GB/s,
the disk's sequential rate (1.5-1.8 GB/s) and the warm copy rate (2.3 GB/s) in series, while the streamed
transformer's threaded ``pread``s read the same disk at 1.98 GB/s. Here the reads, and the copies into MLX memory,
run on threads ahead of the loader, and the move to the device runs on the GPU's stream: the three overlap.
``benchmarks/load_speed.py`` measures each way against a plain sequential read.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import mlx.core as mx
import numpy as np

from ltx_backend.device import cuda_gpu
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
    with `take`. Use as a context manager: leaving it stops the reads not yet taken and closes the files.

    `to_device` (default: on a CUDA GPU) copies each tensor into device memory as it is taken, asynchronously. An
    MLX array made from host data lives in CUDA managed memory, which a kernel's first touch migrates page by
    page: left there, the model's first forward would pay for the whole move (0.8 s per 10 GB on an H100), after
    the load instead of overlapped with its reads. On Metal and CPUs memory is one: nothing to move."""

    def __init__(
        self, tensors: Sequence[TensorInfo], threads: int = READ_THREADS, to_device: bool | None = None
    ) -> None:
        self._tensors = list(tensors)
        self._to_device = cuda_gpu() if to_device is None else to_device
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
        stored = self._pending.pop(index).result()
        self.bytes += info.nbytes
        if self._to_device:
            stored = stored * 1  # a copy: integers (bf16's bits) exactly, floats times one (a -0.0 stays -0.0)
            mx.async_eval(stored)
        return stored.view(mx.bfloat16) if info.dtype == "BF16" else stored

    def _submit(self, index: int) -> None:
        self._pending[index] = self._pool.submit(self._read, self._tensors[index])

    def _read(self, info: TensorInfo) -> mx.array:
        """The tensor's stored bits in MLX memory: read and copied on a reader thread, so several copies run at
        once and none on the loader's."""
        return mx.array(read_stored(self._files, [info], info.shape))

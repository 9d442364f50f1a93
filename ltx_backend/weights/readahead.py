"""Read-ahead for a load: the bytes of every tensor a loader asks a `SafetensorsFile` for are read into the OS page
cache by a few threads, lowest file offset first, while MLX evaluates the lazy arrays in its own order.

Why: MLX reads a component's tensors in the order of the module's parameters, which is not the order they lie in
the file, so on a cold page cache the disk sees scattered reads. Measured on the GPU machine (50 GB checkpoint):
the first load ran at 1.04 GB/s against 1.78 GB/s for a plain sequential read of the same files. Reading ahead
in file order keeps the disk streaming; MLX then copies from the page cache (2.3-2.8 GB/s warm on that machine).

A hint only: nothing is kept (each thread reads into one reused buffer), a failed read is left to the loader to
report, and leaving the ``with`` block drops what was not read yet (by then MLX has read it).
"""

from __future__ import annotations

import heapq
import os
import threading
from pathlib import Path

from ltx_backend.weights import safetensors_file
from ltx_backend.weights.safetensors_file import TensorInfo

READ_THREADS = 4  # reads in flight: a queue deep enough for NVMe and network disks alike
CHUNK = 16 * 1024 * 1024  # bytes per read


class ReadAhead:
    """``with ReadAhead(): load()``: the tensors the loaders ask for inside the block are read ahead."""

    def __init__(self, threads: int = READ_THREADS, chunk: int = CHUNK) -> None:
        self.threads, self.chunk = threads, chunk
        self.bytes_read = 0
        self._pending: list[tuple[str, int, int]] = []  # (file, offset, length), a heap: lowest offset first
        self._condition = threading.Condition()
        self._closed = False
        self._workers: list[threading.Thread] = []
        self._descriptors: dict[str, int] = {}

    def __enter__(self) -> ReadAhead:
        safetensors_file.handed_out.append(self.add)
        return self

    def __exit__(self, *_exc: object) -> None:
        safetensors_file.handed_out.remove(self.add)
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        for worker in self._workers:
            worker.join()
        for descriptor in self._descriptors.values():
            if descriptor >= 0:
                os.close(descriptor)
        self._descriptors.clear()

    def add(self, info: TensorInfo) -> None:
        """Queue one tensor's bytes (a loader asked for it; MLX will read it when the module is evaluated)."""
        if info.offset < 0 or info.nbytes == 0:
            return
        end = info.offset + info.nbytes
        with self._condition:
            for start in range(info.offset, end, self.chunk):
                heapq.heappush(self._pending, (str(info.file), start, min(self.chunk, end - start)))
            self._condition.notify_all()
            if not self._workers:  # started on the first tensor: a block that loads nothing costs nothing
                self._workers = [threading.Thread(target=self._work, daemon=True, name=f"ltx-readahead-{i}")
                                 for i in range(self.threads)]  # fmt: skip
                for worker in self._workers:
                    worker.start()

    def _work(self) -> None:
        buffer = bytearray(self.chunk)
        while True:
            with self._condition:
                while not self._pending and not self._closed:
                    self._condition.wait()
                if self._closed:
                    return
                path, offset, length = heapq.heappop(self._pending)
                descriptor = self._descriptor(path)
            if descriptor is None:
                continue
            try:
                count = os.preadv(descriptor, [memoryview(buffer)[:length]], offset)
            except OSError:  # the loader reads the same bytes and reports what is wrong
                continue
            with self._condition:
                self.bytes_read += count

    def _descriptor(self, path: str) -> int | None:
        """An open descriptor for `path` (under the condition's lock), None when it cannot be opened."""
        if path not in self._descriptors:
            try:
                self._descriptors[path] = os.open(Path(path), os.O_RDONLY)
            except OSError:
                self._descriptors[path] = -1
        descriptor = self._descriptors[path]
        return descriptor if descriptor >= 0 else None

"""Where a cold first load loses time: ways of reading one safetensors file onto the device, from a cold page cache.

    python benchmarks/load_speed.py --dir /tmp/load-speed            # ~10 GB of transformer-shaped bf16 tensors
    python benchmarks/load_speed.py --dir /tmp/ls --gb 0.3           # a CPU smoke run

The file is written once under ``--dir`` (random bf16, 4096x4096 and 4096x16384 tensors in blocks, as a DiT's, in
``mx.save_safetensors``'s key order) and reused. Each way below runs after ``posix_fadvise(DONTNEED)`` has evicted
the file from the page cache, then once more warm, and reports GB/s of the file, plus the seconds of a first use
on the device afterwards (one reduction per tensor: where a way leaves its arrays in memory the device has not
touched yet, that first use pays for it):

* ``sequential``: a plain read of the file in 64 MB chunks (``cat file > /dev/null``): the disk's rate.
* ``mlx_load``: ``mx.load`` and one ``mx.eval`` of every array in the module's order (block by block, each block's
  tensors in attribute order): how the engine loads. On CUDA each tensor is read into a host buffer and then
  copied to the device on the evaluating thread, one after the other (``mlx/backend/cuda/load.cpp``).
* ``mlx_load_file_order``: the same, evaluated in the file's order.
* ``mlx_load_threads``: ``mx.load`` on 4 threads, each with its own stream and every 4th tensor: 4 of MLX's
  read-then-copy loops in flight at once (``mlx_load_8_threads``: 8). On the H100 machine (2026-12-05, night):
  1.79 GB/s cold against 1.80 for ``cat`` (99%) and 1.07 for ``mx.load`` on one thread; warm 3.58 (8 threads:
  4.59) against 1.92.
* ``engine_lanes``: the engine's way since then (``ltx_backend/weights/parallel_load.py``): the arrays made on this
  thread on the process's 4 lanes (streams from ``mx.new_thread_unsafe_stream``, made once), balanced by bytes,
  each lane's share evaluated on its own thread.

Tried and dropped (H100 machine, 2026-12-05, 10 GB; sequential cold 2.13 and 1.66 GB/s in two runs):

* 4 ``pread`` threads ahead of the loader into numpy, each buffer made an MLX array on the loader's thread: 1.34
  GB/s cold against ``mx.load``'s 1.13, but on CUDA such arrays live in managed memory and their first use on the
  device took 0.80 s more (0.03 after ``mx.load``): 8.3 s in all against 8.9; warm 5.18 s against 5.10.
* The same with the arrays made on the reader threads and copied to device memory as the loader takes them: 1.12
  GB/s cold (``mx.load`` 1.10 in that run), first use 0.02 s; warm 1.72 GB/s against 1.84.

Prints one JSON document. The question it answers: which way reaches the sequential rate on this machine's disk
(issue 15's first-load target is 80% of it; ``mlx_load`` ran at 53-67% on the H100 machines), and what the
arrays' first use on the device costs after each.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from functools import partial
from pathlib import Path

import mlx.core as mx
from serve_session import evict, sequential_read  # run from benchmarks/ (gpu_suite.sh does)

from ltx_backend.weights.parallel_load import ParallelLoad
from ltx_backend.weights.safetensors_file import SafetensorsFile

# One block's tensors (rows, cols) in attribute order, ~384 MB in bf16: attention q, k, v, out and a feed-forward.
BLOCK = {"attn.to_q": (4096, 4096), "attn.to_k": (4096, 4096), "attn.to_v": (4096, 4096),
         "attn.to_out": (4096, 4096), "ff.proj_in": (16384, 4096), "ff.proj_out": (4096, 16384)}  # fmt: skip


def write_file(path: Path, gigabytes: float) -> list[str]:
    """The test file (reused when present) and its tensor names in the module's order."""
    scale = 1 if gigabytes >= 1 else 4  # a smoke run: blocks of 1/16 the size
    block_bytes = sum(rows * cols * 2 for rows, cols in BLOCK.values()) // scale**2
    blocks = max(1, round(gigabytes * 1e9 / block_bytes))
    shapes = {f"blocks.{b}.{name}": (rows // scale, cols // scale) for b in range(blocks) for name, (rows, cols)
              in BLOCK.items()}  # fmt: skip
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = mx.random.key(0)
        arrays = {}
        for name, shape in shapes.items():  # written in one call: keep the whole file in memory at most once
            key, sub = mx.random.split(key)
            arrays[name] = mx.random.normal(shape, key=sub).astype(mx.bfloat16)
        mx.save_safetensors(str(path), arrays)
        del arrays
    return list(shapes)


def sequential(path: Path, _order: list[str]) -> list[mx.array]:
    sequential_read([path])
    return []


def mlx_load(path: Path, order: list[str]) -> list[mx.array]:
    arrays = mx.load(str(path))
    chosen = [arrays[name] for name in order]
    mx.eval(chosen)
    return chosen


def mlx_load_file_order(path: Path, order: list[str]) -> list[mx.array]:
    tensors = SafetensorsFile(path).tensors
    return mlx_load(path, sorted(order, key=lambda name: tensors[name].offset))


def mlx_load_threads(path: Path, order: list[str], threads: int = 4) -> list[mx.array]:
    """``mx.load`` on `threads` Python threads, each with a stream of its own, each evaluating every `threads`-th
    tensor in the module's order: MLX's `Load` reads and copies on the evaluating thread, so this keeps `threads`
    reads (and copies) in flight. The engine's loads do this (``ltx_backend/weights/parallel_load.py``)."""
    shares: list[list[mx.array]] = [[] for _ in range(threads)]

    def load(index: int) -> None:
        stream = mx.new_stream(mx.default_device())
        arrays = mx.load(str(path), stream=stream)
        shares[index] = [arrays[name] for name in order[index::threads]]
        mx.eval(shares[index])

    workers = [threading.Thread(target=load, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return [array for share in shares for array in share]


def engine_lanes(path: Path, order: list[str], threads: int = 4) -> list[mx.array]:
    """How `ResidentSet.borrow` reads a component: each tensor on the lane with the fewest bytes so far, every
    lane's share evaluated on that lane's thread (``ltx_backend/weights/parallel_load.py``)."""
    loads, file, arrays = ParallelLoad(threads), SafetensorsFile(path), []
    for name in order:
        stream = loads.stream_for(file.tensors[name].nbytes)
        arrays.append(file.array(name, stream))
        loads.record(arrays[-1], stream)
    loads.start(arrays).wait()
    return arrays


WAYS = {"sequential": sequential, "mlx_load": mlx_load, "mlx_load_file_order": mlx_load_file_order,
        "mlx_load_threads": mlx_load_threads, "mlx_load_8_threads": partial(mlx_load_threads, threads=8),
        "engine_lanes": engine_lanes}  # fmt: skip


def first_use(arrays: list[mx.array]) -> float:
    """Seconds of one reduction per array on the device (0 when the way returned none)."""
    if not arrays:
        return 0.0
    start = time.perf_counter()
    mx.eval([mx.sum(array.astype(mx.float32)) for array in arrays])
    return round(time.perf_counter() - start, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/load-speed"))
    parser.add_argument("--gb", type=float, default=10.0, help="size of the test file")
    parser.add_argument("--ways", default=",".join(WAYS))
    args = parser.parse_args()
    path = args.dir / f"weights-{args.gb:g}gb.safetensors"
    start = time.perf_counter()
    order = write_file(path, args.gb)
    size = path.stat().st_size
    report = {"device": str(mx.default_device()), "mlx": mx.__version__, "file_gb": round(size / 1e9, 3),
              "tensors": len(order), "write_s": round(time.perf_counter() - start, 1), "ways": {}}  # fmt: skip
    for name in args.ways.split(","):
        way = WAYS[name]
        row = {}
        for state in ("cold", "warm"):
            cold = evict([path]) if state == "cold" else None
            mx.clear_cache()
            start = time.perf_counter()
            arrays = way(path, order)
            seconds = time.perf_counter() - start
            row[state] = {"s": round(seconds, 3), "gb_per_s": round(size / 1e9 / seconds, 3),
                          "first_use_s": first_use(arrays)}  # fmt: skip
            if cold is False:
                row[state]["evicted"] = False
            del arrays
        report["ways"][name] = row
        print(json.dumps({name: row}), file=sys.stderr, flush=True)
    rate = report["ways"].get("sequential", {}).get("cold", {}).get("gb_per_s")
    if rate:
        report["share_of_sequential_cold"] = {name: round(row["cold"]["gb_per_s"] / rate, 3)
                                              for name, row in report["ways"].items()}  # fmt: skip
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

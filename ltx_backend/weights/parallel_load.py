"""Read a component's tensors on several threads, one MLX stream each (and, with `LaneReader`, the streamed
transformer's blocks on CUDA).

MLX's `Load` reads a tensor into a host buffer and (on CUDA) copies it to the device, one tensor at a time on the
thread that evaluates it. Measured on an H100 (MLX 0.32.4 CUDA, ``benchmarks/load_speed.py``, 10 GB of bf16 tensors,
cold page cache): a sequential read 1.80 GB/s, plain ``mx.load`` + one ``mx.eval`` 1.07 GB/s, ``mx.load`` on 4 Python
threads with a stream each, every thread evaluating its share: 1.79 GB/s cold (99% of sequential), 3.58 GB/s warm.

How: while a component is built (`collect`), `LoadPlan.materialize` gives each tensor a lane (the one with the fewest
bytes so far), reads it with that lane's ``mx.load(path, stream=...)`` and builds its whole chain (transpose, reshape,
cast) under ``mx.stream(lane)``, then `record`\\ s the final array with its lane: each recorded array's graph lies on
one stream, known without looking into MLX's graph. `ParallelLoad.start` then evaluates each lane's share on that
lane's thread. Whatever the module's loader derived from the recorded arrays afterwards (fused projections,
quantization at load time, LoRA fusing, a rank's shard) is not recorded: it is evaluated on the calling thread once
the lanes are done (`PendingLoad.wait`), so no array is held beyond what today's single evaluation holds.

The lanes live as long as the process: one thread and one stream each, made once (a stream per load would leak
MLX streams). Their streams are ``mx.new_thread_unsafe_stream``: MLX >= 0.31.2 ties an ``mx.new_stream`` to the thread
that made it, and the arrays are built on the calling thread and a derived array may need a lane's nodes evaluated
on it. MLX does not lock such a stream, so every evaluation on a lane's stream holds that lane's lock: a lane's
thread for its share, the calling thread (holding every lane's) for what was derived.

``LTX_BACKEND_LOAD_THREADS`` sets the number of lanes; 1 is the single-threaded load: no lane, the arrays on the
default stream, one ``mx.eval`` (or ``mx.async_eval``). The default is `CUDA_LOAD_THREADS` on an NVIDIA GPU, where
it was measured, and 1 elsewhere: on Metal (unified memory, ``mx.load`` reads straight into the array) neither the
gain nor MLX's thread safety for this use has been measured, so a Mac keeps the plain path unless asked.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx

from ltx_backend.device import cuda_gpu
from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.weights.safetensors_file import TensorInfo
from ltx_backend.weights.tensor_reader import unreadable

CUDA_LOAD_THREADS = 4
ENV_THREADS = "LTX_BACKEND_LOAD_THREADS"
MAX_THREADS = 64


def load_threads() -> int:
    """How many threads read a component: ``LTX_BACKEND_LOAD_THREADS``, else `CUDA_LOAD_THREADS` on an NVIDIA GPU
    and 1 elsewhere."""
    raw = os.environ.get(ENV_THREADS, "").strip()
    if not raw:
        return CUDA_LOAD_THREADS if cuda_gpu() else 1
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_THREADS:
        raise LtxError(
            ErrorCode.INVALID_PARAMS,
            f"{ENV_THREADS}={raw!r} is not a whole number of threads from 1 to {MAX_THREADS}",
            f"Set {ENV_THREADS} to the number of threads that read the weights, e.g. 4 (1: one thread), or unset it.",
        )
    return value


@dataclass
class Lane:
    """One reading thread and the stream its share lives on; `lock` is held by whatever evaluates on the stream."""

    stream: mx.Stream
    worker: ThreadPoolExecutor  # one thread: a lane's shares are read in the order they were started
    lock: threading.Lock = field(default_factory=threading.Lock)


_lanes: dict[str, list[Lane]] = {}  # per device, made once, grown when more are asked for
_lanes_lock = threading.Lock()


def lanes(count: int, device: mx.Device | None = None) -> list[Lane]:
    """The process's first `count` lanes on `device` (the default device), made on first use."""
    device = device or mx.default_device()
    with _lanes_lock:
        made = _lanes.setdefault(str(device), [])
        while len(made) < count:
            name = f"ltx-load-{len(made)}"
            made.append(Lane(mx.new_thread_unsafe_stream(device), ThreadPoolExecutor(1, thread_name_prefix=name)))
        return made[:count]


def _read_share(lane: Lane, share: list[mx.array]) -> None:
    with lane.lock:
        mx.eval(share)


@contextmanager
def _holding(used: Sequence[Lane]) -> Iterator[None]:
    with ExitStack() as stack:
        for lane in used:  # always in lane order: no two holders wait on each other
            stack.enter_context(lane.lock)
        yield


class PendingLoad:
    """The reads `ParallelLoad.start` began: each lane's share on its thread, the derived rest still to evaluate."""

    def __init__(self, used: list[Lane], futures: list[Future], rest: list[mx.array]) -> None:
        self._used, self._futures, self._rest = used, futures, rest

    @property
    def done(self) -> bool:
        return not self._futures and not self._rest

    def wait(self) -> None:
        """Join the lanes (re-raising the first error of any, as it was raised), then evaluate the derived rest
        on this thread with every lane held. After it returns every array of the component is evaluated."""
        futures, self._futures = self._futures, []
        errors = [error for error in (future.exception() for future in futures) if error is not None]
        if errors:
            self._rest = []
            raise errors[0]
        rest, self._rest = self._rest, []
        if rest:
            with _holding(self._used):
                mx.eval(rest)

    def abandon(self) -> None:
        """The component is dropped: cancel the shares not begun, wait for the others (never raises)."""
        futures, self._futures, self._rest = self._futures, [], []
        for future in futures:
            if not future.cancel():
                future.exception()


class ParallelLoad:
    """The arrays one component load made on the lanes, each with its lane (filled by `LoadPlan.materialize`)."""

    def __init__(self, threads: int) -> None:
        self.lanes = lanes(threads)
        self._bytes = [0] * len(self.lanes)
        self._recorded: dict[int, tuple[mx.array, int]] = {}  # id(array) -> (array, lane index)
        self._groups: dict[str, int] = {}  # tensor group (a layer's parent module) -> its lane index

    def stream_for(self, nbytes: int, group: str = "") -> mx.Stream:
        """The stream for a tensor of `nbytes`: its `group`'s lane, else the lane with the fewest bytes so far (the
        first such lane). Tensors of one group share a lane so that what the loader derives from several of them
        (q/k/v stacked into one product, see `stack`) is built and read on that lane too."""
        index = self._groups.get(group) if group else None
        if index is None:
            index = min(range(len(self.lanes)), key=self._bytes.__getitem__)
            if group:
                self._groups[group] = index
        self._bytes[index] += nbytes
        return self.lanes[index].stream

    def stack(self, parts: Sequence[mx.array]) -> mx.array:
        """``mx.concatenate(parts)``, made on the parts' lane and recorded there when they all were recorded on one
        lane (then the stacked weight is read on that lane's thread like the rest); else on the default stream,
        evaluated after the lanes."""
        found = [self._recorded.get(id(part)) for part in parts]
        lanes = {
            entry[1] if entry is not None and entry[0] is part else -1 for entry, part in zip(found, parts, strict=True)
        }
        if len(lanes) != 1 or -1 in lanes:  # a part not read on a lane, or parts on several lanes
            return mx.concatenate(list(parts))
        stream = self.lanes[lanes.pop()].stream
        with mx.stream(stream):
            stacked = mx.concatenate(list(parts))
        self.record(stacked, stream)
        return stacked

    def record(self, array: mx.array, stream: mx.Stream) -> None:
        """`array`'s whole graph was built on `stream` (one `stream_for` gave)."""
        index = next(i for i, lane in enumerate(self.lanes) if lane.stream == stream)
        self._recorded[id(array)] = (array, index)

    def shares(self, final: Sequence[mx.array]) -> tuple[list[list[mx.array]], list[mx.array]]:
        """`final` (a component's arrays) split into each lane's share (the recorded ones) and the rest (derived)."""
        shares: list[list[mx.array]] = [[] for _ in self.lanes]
        rest = []
        for array in final:
            found = self._recorded.get(id(array))
            if found is not None and found[0] is array:
                shares[found[1]].append(array)
            else:
                rest.append(array)
        return shares, rest

    def start(self, final: Sequence[mx.array]) -> PendingLoad:
        """Begin reading `final`: each lane's share on its thread; returns at once. Forgets what was recorded
        (an array the loader replaced afterwards is then held only by what was derived from it)."""
        shares, rest = self.shares(final)
        self._recorded.clear()
        futures = [
            lane.worker.submit(_read_share, lane, share)
            for lane, share in zip(self.lanes, shares, strict=True)
            if share
        ]
        return PendingLoad(self.lanes, futures, rest)


_collecting: ContextVar[ParallelLoad | None] = ContextVar("ltx_parallel_load", default=None)


def stack(parts: Sequence[mx.array]) -> mx.array:
    """Stack weights along their first axis (`Attention.fuse_projections`): on the parts' lane while a load is
    collected (`ParallelLoad.stack`), else a plain ``mx.concatenate``."""
    load = _collecting.get()
    return mx.concatenate(list(parts)) if load is None else load.stack(parts)


def collecting() -> ParallelLoad | None:
    """The load being collected on this thread (`collect`), or None: then arrays are made on the default stream."""
    return _collecting.get()


@contextmanager
def collect(threads: int) -> Iterator[ParallelLoad]:
    """Within it, `LoadPlan.materialize` spreads the tensors it reads over `threads` lanes and records them."""
    load = ParallelLoad(threads)
    token = _collecting.set(load)
    try:
        yield load
    finally:
        _collecting.reset(token)


class LaneReader:
    """Tensors read by MLX's own ``Load`` on the lanes, one at a time per lane, each evaluated as it is read: the
    streamed transformer's reads on CUDA (``weights/streaming.py``), where an array made from host data (numpy)
    lives in managed memory, slow to fill and moved page by page at its first use (its streamed blocks read at
    1.9 GB/s from the page cache on the H100 machine, where ``mx.load`` on 4 lanes read 3.3-4.6 GB/s).

    Each lane keeps one lazy ``mx.load`` of each file and pops a tensor from it as it reads it, so an evaluated
    tensor is held only by whoever uses it; a load that handed a tensor out already (the next step asks again) is
    made anew: one header parse per lane, file and step."""

    def __init__(self, threads: int) -> None:
        self.lanes = lanes(threads)
        self._loads: list[dict[Path, dict[str, mx.array]]] = [{} for _ in self.lanes]
        self._bytes = [0] * len(self.lanes)

    def submit(self, parts: Sequence[TensorInfo], shape: tuple[int, ...]) -> Future:
        """Read `parts` (one tensor, or projections to stack along their rows) as one array of `shape` on the lane
        with the fewest bytes so far; the future gives the evaluated array."""
        index = min(range(len(self.lanes)), key=self._bytes.__getitem__)
        self._bytes[index] += sum(info.nbytes for info in parts)
        return self.lanes[index].worker.submit(self._read, index, list(parts), shape)

    def _read(self, index: int, parts: list[TensorInfo], shape: tuple[int, ...]) -> mx.array:
        lane, loads = self.lanes[index], self._loads[index]
        with lane.lock:
            try:
                arrays = []
                for info in parts:
                    loaded = loads.get(info.file)
                    if loaded is None or info.name not in loaded:
                        loaded = loads[info.file] = mx.load(str(info.file), stream=lane.stream)
                    arrays.append(loaded.pop(info.name))
                with mx.stream(lane.stream):
                    array = (arrays[0] if len(arrays) == 1 else mx.concatenate(arrays)).reshape(shape)
                mx.eval(array)
            except Exception as exc:  # MLX's header check or read error: the file changed under us
                loads.pop(parts[0].file, None)
                raise unreadable(parts[0], f"could not be read ({exc})") from exc
        return array

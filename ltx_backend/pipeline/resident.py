"""The session's resident set: loaded model components kept between jobs, keyed on what changes their weights.

A job borrows each component for its phase (`borrow`) and hands it back (`give_back`). Whether a handed-back
component stays loaded is the residency decision the planner (`memory.plan_residency`) made for this job,
overridden by the session's policy: ``all`` keeps everything, ``none`` frees each component after its phase
(the one-job-per-process behaviour), ``auto`` keeps what fits in memory beside the job's largest phase.

A component is reused only while its key (checkpoint, text encoder, dtype, quantization, later LoRAs) is the
same; a different key loads it again and drops the old one first, so only what differs is reloaded.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import mlx.core as mx
from mlx.utils import tree_flatten

from ltx_backend.weights import parallel_load

T = TypeVar("T")
POLICIES = ("auto", "all", "none")

# The components a job can borrow, in the order the engine uses them.
TEXT_ENCODER, TEXT_PROCESSOR, VIDEO_ENCODER = "text_encoder", "text_processor", "video_encoder"
TRANSFORMER, UPSAMPLER, AUDIO_DECODER, VOCODER, VIDEO_DECODER = (
    "transformer",
    "upsampler",
    "audio_decoder",
    "vocoder",
    "video_decoder",
)
AUDIO_ENCODER = "audio_encoder"  # a2v's soundtrack, retake / extend's source sound
VIDEO_DECODE_USES = (VIDEO_DECODER, AUDIO_DECODER, VOCODER)  # the decode phases (audio follows the video)
COMPONENTS = (
    TEXT_ENCODER, TEXT_PROCESSOR, VIDEO_ENCODER, AUDIO_ENCODER, TRANSFORMER, UPSAMPLER, AUDIO_DECODER, VOCODER,
    VIDEO_DECODER,
)  # fmt: skip


def arrays(thing: Any) -> list[mx.array]:
    """The MLX arrays a module (or a TextEncoder, through its model) holds."""
    model = thing if hasattr(thing, "parameters") else getattr(thing, "model", None)
    if model is None or not hasattr(model, "parameters"):
        return []
    return [value for _, value in tree_flatten(model.parameters()) if isinstance(value, mx.array)]


def array_bytes(thing: Any) -> int:
    return sum(array.nbytes for array in arrays(thing))


@dataclass
class Resident:
    name: str
    key: tuple
    value: Any
    nbytes: int = 0
    pending: parallel_load.PendingLoad | None = None  # reads `borrow(wait=False)` began; joined before any use


@dataclass(frozen=True)
class ResidentInfo:
    """What `loaded`/`status` report about one resident component."""

    name: str
    bytes: int


class ResidentSet:
    """Loaded components of one session. Thread-safe for reporting (`status` runs on the reader thread)."""

    def __init__(self, policy: str = "auto") -> None:
        self.policy = check_policy(policy)
        self._held: dict[str, Resident] = {}
        self._keep: set[str] = set(COMPONENTS)  # this job's residency decision (see `plan`)
        self._lock = threading.Lock()
        self.loads: dict[str, int] = {}  # how often each component was read from disk (tests, benchmarks)

    # --- a job's view -------------------------------------------------------------------------------------

    def plan(self, keep: Iterable[str]) -> None:
        """This job's decision: which components stay loaded after their phase. Frees the others now."""
        keep = set(keep)
        if self.policy == "all":
            keep = set(COMPONENTS)
        elif self.policy == "none":
            keep = set()
        self._keep = keep
        for name in [name for name in self.names() if name not in keep]:
            self.drop(name)

    def borrow(self, name: str, key: tuple, load: Callable[[], T], wait: bool = True) -> T:
        """The component `name` for `key`: the resident one, or freshly loaded (replacing one of another key).

        A fresh component's tensors are read now, all at once, on `parallel_load.load_threads()` threads. `wait=False`
        starts the reads and returns, so the caller can build the next component meanwhile: the value must not be
        used before it is borrowed again (which waits for those reads, raising their error if one failed)."""
        with self._lock:
            held = self._held.get(name)
        if held is not None and held.key == key:
            self._finish(held)
            return held.value
        if held is not None:
            self.drop(name)
        threads = parallel_load.load_threads()
        pending = None
        if threads == 1:
            value = load()
            (mx.eval if wait else mx.async_eval)(arrays(value))
        else:
            with parallel_load.collect(threads) as loads:
                value = load()
            pending = loads.start(arrays(value))
            if wait:
                pending.wait()  # every lane is joined before an error is raised: no read is left running
                pending = None
        self.loads[name] = self.loads.get(name, 0) + 1
        with self._lock:
            self._held[name] = Resident(name, key, value, array_bytes(value), pending)
        return value

    def _finish(self, held: Resident) -> None:
        """Wait for the reads a `borrow(wait=False)` began; if one failed, the component is dropped and its error
        raised."""
        pending, held.pending = held.pending, None
        if pending is None:
            return
        try:
            pending.wait()
        except BaseException:
            self.drop(held.name)
            raise

    def give_back(self, name: str) -> bool:
        """The phase is done with `name`: keep it if this job's plan says so (True), else free it."""
        with self._lock:
            held = self._held.get(name)
        if held is None:
            return False
        if name in self._keep:
            return True
        self.drop(name)
        return False

    @property
    def keep(self) -> set[str]:
        return set(self._keep)

    def settle(self) -> None:
        """After a job (finished, failed or cancelled): free whatever the plan does not keep."""
        for name in [name for name in self.names() if name not in self._keep]:
            self.drop(name)

    # --- the session's view -------------------------------------------------------------------------------

    def drop(self, name: str) -> None:
        """Free one component: dropping the last reference frees its arrays (no reference cycle holds model
        weights, which tests/test_generate.py checks, so no garbage collection is needed), then the cache."""
        with self._lock:
            held = self._held.pop(name, None)
        if held is not None and held.pending is not None:  # reads still running are waited for (errors ignored)
            held.pending.abandon()
        release = getattr(held.value, "release", None) if held is not None else None
        if release is not None:
            release()
        del held
        mx.clear_cache()

    def clear(self) -> None:
        """Free every component (unload, another model)."""
        for name in self.names():
            self.drop(name)

    def names(self) -> list[str]:
        with self._lock:
            return list(self._held)

    def report(self) -> list[ResidentInfo]:
        with self._lock:
            return [ResidentInfo(r.name, r.nbytes) for r in self._held.values()]

    @property
    def nbytes(self) -> int:
        return sum(info.bytes for info in self.report())


def check_policy(policy: str) -> str:
    from ltx_backend.errors import ErrorCode, LtxError

    if policy not in POLICIES:
        raise LtxError(
            ErrorCode.INVALID_PARAMS,
            f"residency must be one of {', '.join(POLICIES)}, not {policy!r}",
            "auto keeps what fits in memory, all keeps every model loaded, none frees each after its phase.",
            field="residency",
        )
    return policy

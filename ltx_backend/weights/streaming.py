"""Transformer block streaming: the blocks' weights stay on disk and are read block by block for every forward.

The non-block weights (patchify, AdaLN, output projections: ~1% of the model) are loaded as usual. Each block is
read from its safetensors file(s) when the forward reaches it, while the device still computes the block before
(a reader thread reads block i + 1 as soon as block i is handed over), so the transformer holds about three
blocks of weights at a time (the one in flight, the one being built, the one being read) instead of all 48.
A denoising step's passes (the guider's conditional, unconditional, perturbed and isolated forwards) run through
the blocks together (``LTXModel.forward_passes``), so every block is read once per step, however many passes.
Where memory is left beside that, the planner has some blocks held once read (``kept_blocks``, evenly spread:
``pipeline/memory.py`` chooses how many): each one held is one block fewer read per step.

How the bytes are read: every tensor's byte range is known from the header (``TensorInfo.offset``), so a block is
a list of ``pread``s (``READ_THREADS`` at a time) straight into one numpy buffer per parameter, then one copy into
an MLX array, both on reader threads. Attention projections that the model stacks (``to_qkv`` / ``to_kv``, see
``Attention.fuse_projections``) are read into the stacked buffer directly: stacking is along the output rows, so
the parts' bytes simply follow each other. That is the way on Metal and CPUs. On CUDA an MLX array made from host
data lives in managed memory, slow to fill and moved to the device page by page at its first use (the streamed
Q4 job read 1.9 GB/s from the page cache on the H100 machine), so there each tensor is read by MLX's own ``Load``
on the parallel-load lanes (``parallel_load.LaneReader``; ``mx.load`` on 4 lanes read 3.3-4.6 GB/s warm there).
``mx.load`` is lazy (checked on MLX 0.32.4: it allocates nothing until a tensor is evaluated, then only that
tensor) but parses the whole header on every call and an evaluated array keeps its bytes for as long as it is
referenced, so each lane pops the tensors it reads from its load and makes the load anew once per step.

Works for bf16/f16/f32 weights (cast to the compute dtype on the way in, as the resident loader does), uniform
and mixed-precision quantized layers (``mixed_quant.py``: each block gets a shell module of its own layer bits),
both stages and every guidance pass. LoRA: ``block_transform`` receives each block's weights unstacked, keyed as
the block's parameters (``attn1.to_q.weight``, ...), and returns the weights to use, e.g. with LoRA deltas fused
in (hook for weights/lora.py); the projections are stacked after it.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from ltx_backend.device import cuda_gpu
from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.models.transformer import LTXModel, TransformerConfig, block_structure, sanitize_transformer_key
from ltx_backend.weights.checkpoint import Checkpoint
from ltx_backend.weights.load import build_from_config, plan_module
from ltx_backend.weights.lora import LoraSpec, streamed_loras
from ltx_backend.weights.mixed_quant import quantize_by_shapes
from ltx_backend.weights.parallel_load import LaneReader
from ltx_backend.weights.plan import LoadPlan, PlannedTensor
from ltx_backend.weights.safetensors_file import TensorInfo
from ltx_backend.weights.tensor_reader import READ_THREADS, Descriptors, read_stored

BLOCK_PREFIX = "transformer_blocks."
_STACKED = {".to_qkv.": (".to_q.", ".to_k.", ".to_v."), ".to_kv.": (".to_k.", ".to_v.")}

# (block index, {parameter key: array}) -> the weights to use: where LoRA deltas are fused in on the way.
BlockTransform = Callable[[int, dict[str, mx.array]], dict[str, mx.array]]


@dataclass(frozen=True)
class _Param:
    """One parameter of a block: the stored tensors whose bytes, one after another, make it."""

    key: str  # as the block shell names it (stacked projections included)
    parts: tuple[tuple[str, TensorInfo], ...]  # (unstacked parameter key, stored tensor)
    shape: tuple[int, ...]
    dtype: mx.Dtype | None  # cast to this floating dtype after reading; None: keep

    @property
    def nbytes(self) -> int:
        return sum(info.nbytes for _, info in self.parts)


@dataclass
class StreamStats:
    """What streaming read: per block, how many times; in all, how many bytes and seconds of reading."""

    reads: Counter = field(default_factory=Counter)
    bytes: int = 0
    seconds: float = 0.0  # spent reading, on the reader thread
    waited: float = 0.0  # spent by the forward waiting for a read to finish (what overlapping did not hide)

    @property
    def bytes_per_second(self) -> float:
        return self.bytes / self.seconds if self.seconds else 0.0


def kept_indices(blocks: int, kept: int) -> frozenset[int]:
    """`kept` of `blocks` block indices, evenly spread: each streamed block's read then overlaps the compute of
    the kept blocks before it, rather than all reads coming back to back."""
    kept = max(0, min(kept, blocks))
    return frozenset(index * blocks // kept for index in range(kept)) if kept else frozenset()


class BlockStream:
    """Reads one block's weights at a time, the next one on a reader thread (``LTXModel``'s ``BlockSource``).

    The blocks in `keep` are read once, at their first use, and held from then on (the planner keeps as many as
    the memory allows: each one kept is one block fewer read per step)."""

    def __init__(
        self,
        blocks: list[list[_Param]],
        transform: BlockTransform | None = None,
        keep: frozenset[int] = frozenset(),
        lane_reads: bool | None = None,
    ) -> None:
        self._blocks = blocks
        self.transform = transform
        self.keep = keep
        # CUDA reads through MLX's `Load` on the parallel-load lanes (`LaneReader` says why); elsewhere `pread`s
        self._lanes = LaneReader(READ_THREADS) if (cuda_gpu() if lane_reads is None else lane_reads) else None
        self._held: dict[int, dict] = {}  # the kept blocks read so far: their weights as `weights` returns them
        self.stats = StreamStats()
        self._pending: dict[int, Future] = {}
        self._files = Descriptors("stream the transformer")
        self._lock = threading.Lock()
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ltx-block-reader")
        self._io = ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="ltx-block-io")
        weakref.finalize(self, _close, self._reader, self._io, self._files)

    def __len__(self) -> int:
        return len(self._blocks)

    @property
    def block_bytes(self) -> list[int]:
        return [sum(param.nbytes for param in block) for block in self._blocks]

    def begin(self) -> None:
        self._prefetch_after(-1)

    def weights(self, index: int) -> dict:
        """Block `index`'s weights as the block shell's nested parameter dict; starts reading the next block that
        is not held."""
        held = self._held.get(index)
        if held is not None:
            self._prefetch_after(index)
            return held
        self._prefetch(index)
        start = time.perf_counter()
        raw = self._pending.pop(index).result()
        self.stats.waited += time.perf_counter() - start
        self._prefetch_after(index)
        arrays = {}
        for param, stored in zip(self._blocks[index], raw, strict=True):
            arrays.update(self._arrays(param, stored))
        if self.transform is not None:
            arrays = self.transform(index, arrays)
        weights = tree_unflatten(list(_stack(arrays, self._blocks[index]).items()))
        if index in self.keep:
            self._held[index] = weights
        return weights

    def _prefetch_after(self, index: int) -> None:
        """Start reading the first block after `index` that is not held (none past the last block)."""
        following = (later for later in range(index + 1, len(self._blocks)) if later not in self._held)
        later = next(following, None)
        if later is not None:
            self._prefetch(later)

    def _prefetch(self, index: int) -> None:
        if index not in self._pending:
            self._pending[index] = self._reader.submit(self._read, index)

    def _arrays(self, param: _Param, array: mx.array) -> dict[str, mx.array]:
        """The parameter's arrays: stacked as read, or split into its parts when a transform wants them apart."""
        if array.dtype == mx.uint16 and param.parts[0][1].dtype == "BF16":  # read as bits: view here, not on the
            array = array.view(mx.bfloat16)  # reader thread (an op needs this thread's stream)
        if param.dtype is not None and array.dtype != param.dtype:
            array = array.astype(param.dtype)
        if self.transform is None or len(param.parts) == 1:
            return {param.key if self.transform is None else param.parts[0][0]: array}
        rows = np.cumsum([info.shape[0] for _, info in param.parts])[:-1].tolist()
        return {key: part for (key, _), part in zip(param.parts, mx.split(array, rows), strict=True)}

    def _read(self, index: int) -> list[mx.array]:
        """Block `index`'s parameters as MLX arrays of their stored bits (runs on the reader thread): the tensors
        are read and copied into MLX memory by ``READ_THREADS`` threads at once (an SSD serves several requests
        faster than one; so does memory), off the thread that builds the forward."""
        start = time.perf_counter()
        params = self._blocks[index]
        if self._lanes is not None:
            futures = [self._lanes.submit([info for _, info in param.parts], param.shape) for param in params]
        else:
            futures = [self._io.submit(self._read_param, param) for param in params]
        arrays = [future.result() for future in futures]
        with self._lock:
            self.stats.reads[index] += 1
            self.stats.bytes += sum(param.nbytes for param in params)
            self.stats.seconds += time.perf_counter() - start
        return arrays

    def _read_param(self, param: _Param) -> mx.array:
        return mx.array(read_stored(self._files, [info for _, info in param.parts], param.shape))


def _close(reader: ThreadPoolExecutor, io: ThreadPoolExecutor, files: Descriptors) -> None:
    reader.shutdown(wait=True, cancel_futures=True)
    io.shutdown(wait=True, cancel_futures=True)
    files.close()


def _stack(arrays: dict[str, mx.array], params: list[_Param]) -> dict[str, mx.array]:
    """Arrays keyed as the shell wants them: parts a transform returned apart are stacked again (lazily)."""
    stacked = {}
    for param in params:
        if param.key in arrays:
            stacked[param.key] = arrays[param.key]
        else:
            stacked[param.key] = mx.concatenate([arrays[key] for key, _ in param.parts])
    return stacked


def _block_params(shell_keys: list[str], entries: dict[str, PlannedTensor], dtype: mx.Dtype | None) -> list[_Param]:
    """Read lists for one block: each shell parameter from its stored tensor(s), in the shell's layout."""
    params = []
    for key in shell_keys:
        sources = [key]
        for stacked, names in _STACKED.items():
            if stacked in key:
                sources = [key.replace(stacked, name) for name in names]
        parts = []
        for source in sources:
            entry = entries[source]
            if entry.permutation is not None:  # the block layers are linears: nothing to rearrange
                raise LtxError(
                    ErrorCode.LAYOUT_UNKNOWN,
                    f"transformer: {entry.source.name!r} needs its axes rearranged; it cannot be streamed",
                    "Load the model resident (without --low-ram).",
                )
            parts.append((source, entry.source))
        if len({info.dtype for _, info in parts}) != 1:
            raise LtxError(
                ErrorCode.WEIGHTS_DTYPE_UNSUPPORTED,
                f"transformer: the projections stacked into {key!r} are stored in different dtypes",
                "Load the model resident (without --low-ram).",
            )
        shape = (sum(entries[s].param.shape[0] for s in sources), *entries[sources[0]].param.shape[1:])
        floating = parts[0][1].dtype in ("F32", "F16", "BF16")
        params.append(_Param(key, tuple(parts), shape, dtype if floating else None))
    return params


def load_streamed_transformer(
    ckpt: Checkpoint,
    dtype: mx.Dtype | None = None,
    block_transform: BlockTransform | None = None,
    loras: Sequence[LoraSpec] = (),
    kept_blocks: int = 0,
) -> LTXModel:
    """The denoiser with its non-block weights loaded and its blocks streamed from disk on every forward, but for
    `kept_blocks` of them (evenly spread), read once and held.

    Checked as exactly as ``load_transformer`` (every key, shape and dtype planned before anything is read).
    `loras` are fused as ``load_transformer`` fuses them: the non-block layers now, each block as it is read
    (``lora.streamed_loras``; not together with a `block_transform` of the caller's)."""
    from ltx_backend.weights.transformer import transformer_section

    if loras and block_transform is not None:
        raise ValueError("pass either loras or a block_transform")

    section = transformer_section(ckpt)
    model = build_from_config(ckpt, "transformer", lambda: LTXModel(TransformerConfig.from_section(section)))
    component = ckpt.component("transformer")
    quantize_by_shapes(model, component, sanitize_transformer_key)
    plan = plan_module(model, component, sanitize_transformer_key)
    resident = LoadPlan(plan.component, [e for e in plan.entries if not e.param.key.startswith(BLOCK_PREFIX)])
    model.load_weights(resident.materialize(component.read, dtype), strict=False)

    by_block: dict[int, dict[str, PlannedTensor]] = {}
    for entry in plan.entries:
        if entry.param.key.startswith(BLOCK_PREFIX):
            index, _, key = entry.param.key[len(BLOCK_PREFIX) :].partition(".")
            by_block.setdefault(int(index), {})[key] = entry
    # One shell module per distinct block structure (a mixed-precision pack may have several); its own arrays are
    # never evaluated, the streamed ones replace them before each use.
    shells: dict[tuple, object] = {}
    blocks, reads = [], []
    for index, block in enumerate(model.transformer_blocks):
        structure = block_structure(block)
        if structure not in shells:
            for _, module in block.named_modules():
                if hasattr(module, "fuse_projections"):
                    module.fuse_projections()
            shells[structure] = block
        shell = shells[structure]
        blocks.append(shell)
        keys = [key for key, _ in tree_flatten(shell.parameters())]
        reads.append(_block_params(keys, by_block[index], dtype))
    model.transformer_blocks = blocks
    model.block_stream = BlockStream(reads, block_transform, kept_indices(len(reads), kept_blocks))
    if loras:
        model.block_stream.transform = streamed_loras(model, ckpt, loras)
    return model

"""Exact mapping of checkpoint tensors onto the parameters of an MLX module.

Our modules know the shape of every parameter from their config, so the stored layout of a tensor is
decided by matching shapes, never by guessing: a Conv1d weight stored as PyTorch `(O,I,K)` or as MLX
`(O,K,I)` is told apart by comparing both candidate shapes with the expected one. When both match
(a square kernel, e.g. `K == I`), the tensors of the same kind in the same file decide: a file holds one
layout per kind of layer. Only when nothing in the file tells does the source's own convention apply.

A tensor that matches neither layout, a parameter with no tensor, and a tensor that no parameter
takes are errors with stable codes that name the file, the key and the shapes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Literal

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.weights.parallel_load import collecting
from ltx_backend.weights.safetensors_file import TensorInfo

Convention = Literal["mlx", "torch"]

# PyTorch layout -> MLX layout, as a permutation of the stored axes.
TORCH_TO_MLX: dict[str, tuple[int, ...]] = {
    "conv1d": (0, 2, 1),  # (O,I,K) -> (O,K,I)
    "conv_transpose1d": (1, 2, 0),  # (I,O,K) -> (O,K,I)
    "conv2d": (0, 2, 3, 1),  # (O,I,H,W) -> (O,H,W,I)
    "conv3d": (0, 2, 3, 4, 1),  # (O,I,D,H,W) -> (O,D,H,W,I)
    "conv_transpose2d": (1, 2, 3, 0),  # (I,O,H,W) -> (O,H,W,I)
    "conv_transpose3d": (1, 2, 3, 4, 0),  # (I,O,D,H,W) -> (O,D,H,W,I)
}
_MODULE_KINDS: tuple[tuple[type[nn.Module], str], ...] = (
    (nn.ConvTranspose1d, "conv_transpose1d"),
    (nn.ConvTranspose2d, "conv_transpose2d"),
    (nn.ConvTranspose3d, "conv_transpose3d"),
    (nn.Conv1d, "conv1d"),
    (nn.Conv2d, "conv2d"),
    (nn.Conv3d, "conv3d"),
)
SHOW_AT_MOST = 12  # keys listed in an error message; the full list is in the error details
# Stored dtypes a parameter can be loaded from: floats from any 16/32-bit float, packed quantized weights from U32.
FLOAT_STORAGE = {"F32", "F16", "BF16"}
INTEGER_STORAGE = {mx.uint32: "U32", mx.int32: "I32", mx.uint8: "U8", mx.int8: "I8"}


@dataclass(frozen=True)
class ParamSpec:
    """One parameter a module expects: its key, shape and the layer kind that decides its layouts."""

    key: str
    shape: tuple[int, ...]
    kind: str  # a key of TORCH_TO_MLX, or "plain" (stored as is, up to singleton axes)
    dtype: mx.Dtype = mx.float32


@dataclass(frozen=True)
class PlannedTensor:
    param: ParamSpec
    source: TensorInfo
    permutation: tuple[int, ...] | None  # None: the stored axes are already in MLX order


@dataclass
class LoadPlan:
    """Which stored tensor feeds which parameter, and how its axes are rearranged."""

    component: str
    entries: list[PlannedTensor]
    foreign_keys: list[str] = field(default_factory=list)  # stored keys that belong to a sibling module

    @property
    def consumed(self) -> set[str]:
        return {entry.source.name for entry in self.entries}

    def materialize(
        self, read: Callable[[TensorInfo, mx.Stream | None], mx.array], dtype: mx.Dtype | None = None
    ) -> list:
        """(key, array) pairs ready for `module.load_weights`; arrays stay lazy until evaluated.

        While a parallel load is collected (`parallel_load.collect`), each tensor is read and rearranged on the
        stream of one of its lanes and recorded there; else everything is made on the default stream."""
        loads = collecting()
        pairs = []
        for entry in self.entries:
            stream = None if loads is None else loads.stream_for(entry.source.nbytes, _lane_group(entry.param.key))
            with nullcontext() if stream is None else mx.stream(stream):
                array = read(entry.source, stream)
                if entry.permutation is not None:
                    array = array.transpose(entry.permutation)
                if array.shape != entry.param.shape:  # only singleton axes differ (checked when planning)
                    array = array.reshape(entry.param.shape)
                if dtype is not None and mx.issubdtype(array.dtype, mx.floating):
                    array = array.astype(dtype)
            if stream is not None:
                loads.record(array, stream)
            pairs.append((entry.param.key, array))
        return pairs


def _lane_group(key: str) -> str:
    """The tensors that a parallel load reads on one lane: a layer's parent module (an attention's q/k/v together,
    since the loader stacks them), or the layer itself where it is an item of a list."""
    layer = key.rpartition(".")[0]
    parent, _, name = layer.rpartition(".")
    return layer if not parent or name.isdigit() else parent


def layer_kind(module: nn.Module) -> str:
    """The layout kind of a module's `weight` (custom modules may declare `weight_kind`)."""
    declared = getattr(module, "weight_kind", None)
    if declared is not None:
        return declared
    for cls, kind in _MODULE_KINDS:
        if isinstance(module, cls):
            return kind
    return "plain"


def expected_params(module: nn.Module) -> list[ParamSpec]:
    """Every parameter of `module` with its shape and layout kind (nothing is evaluated)."""
    kinds = {path: layer_kind(sub) for path, sub in module.named_modules()}
    specs = []
    for key, value in tree_flatten(module.parameters()):
        owner, _, leaf = key.rpartition(".")
        kind = kinds.get(owner, "plain") if leaf == "weight" else "plain"
        specs.append(ParamSpec(key=key, shape=tuple(value.shape), kind=kind, dtype=value.dtype))
    return specs


def _squeezed(shape: Iterable[int]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def _candidates(spec: ParamSpec, stored: tuple[int, ...]) -> dict[Convention, tuple[int, ...] | None]:
    """The conventions under which a stored shape fits the parameter, with the permutation each needs."""
    found: dict[Convention, tuple[int, ...] | None] = {}
    if stored == spec.shape or (spec.kind == "plain" and _squeezed(stored) == _squeezed(spec.shape)):
        found["mlx"] = None
    permutation = TORCH_TO_MLX.get(spec.kind)
    if (
        permutation is not None
        and len(stored) == len(permutation)
        and tuple(stored[axis] for axis in permutation) == spec.shape
    ):
        found["torch"] = permutation
    return found


def plan_load(
    component: str,
    params: list[ParamSpec],
    tensors: dict[str, TensorInfo],
    sanitize: Callable[[str], str | None],
    default_convention: Convention,
) -> LoadPlan:
    """Match stored tensors (keyed as in the component) to `params`, or raise a precise `LtxError`.

    `sanitize` maps a stored key to the module's key, or to None for a key that belongs to a sibling
    module stored in the same component (the audio encoder beside the decoder, say).
    """
    by_key = {spec.key: spec for spec in params}
    matched: dict[str, tuple[ParamSpec, TensorInfo, dict[Convention, tuple[int, ...] | None]]] = {}
    foreign, unexpected, mismatched = [], [], []
    for stored_key, info in tensors.items():
        key = sanitize(stored_key)
        if key is None:
            foreign.append(stored_key)
            continue
        spec = by_key.get(key)
        if spec is None:
            unexpected.append(stored_key)
            continue
        if key in matched:
            names = [matched[key][1].name, info.name]
            raise LtxError(
                ErrorCode.WEIGHTS_UNEXPECTED_KEY,
                f"{component}: {names[0]!r} and {names[1]!r} in {info.file} both hold {key!r}",
                "The checkpoint stores one parameter twice; re-export or re-download it.",
                file=str(info.file),
                keys=names,
            )
        _check_dtype(component, spec, info)
        fits = _candidates(spec, info.shape)
        if not fits:
            mismatched.append((spec, info))
            continue
        matched[key] = (spec, info, fits)

    if mismatched:
        spec, info = mismatched[0]
        torch_shape = _torch_shape(spec)
        also = f" (or PyTorch layout {list(torch_shape)})" if torch_shape else ""
        raise LtxError(
            ErrorCode.WEIGHTS_SHAPE_MISMATCH,
            f"{component}: tensor {info.name!r} in {info.file} has shape {list(info.shape)}, "
            f"expected {list(spec.shape)}{also} for {spec.key!r}"
            + (f" ({len(mismatched) - 1} more mismatches)" if len(mismatched) > 1 else ""),
            "The checkpoint does not match its config: check that config.json/embedded_config.json belong "
            "to these weights, or re-download the model.",
            file=str(info.file),
            key=info.name,
            expected=list(spec.shape),
            found=list(info.shape),
        )
    if unexpected:
        raise LtxError(
            ErrorCode.WEIGHTS_UNEXPECTED_KEY,
            f"{component}: {len(unexpected)} stored tensor(s) match no parameter of the model: "
            + ", ".join(unexpected[:SHOW_AT_MOST]),
            "The weights belong to a different model version or config than the one built; check the "
            "checkpoint's config files.",
            keys=unexpected,
            file=str(tensors[unexpected[0]].file),
        )
    missing = [spec.key for spec in params if spec.key not in matched]
    if missing:
        files = sorted({str(info.file) for info in tensors.values()})
        raise LtxError(
            ErrorCode.WEIGHTS_MISSING_KEY,
            f"{component}: {len(missing)} parameter(s) have no tensor in {', '.join(files) or 'the checkpoint'}: "
            + ", ".join(missing[:SHOW_AT_MOST]),
            "The checkpoint is incomplete or was converted for another configuration; re-download it.",
            keys=missing,
            files=files,
        )

    conventions = _decide_conventions(component, matched.values(), default_convention)
    entries = []
    for spec, info, fits in matched.values():
        convention = next(iter(fits)) if len(fits) == 1 else conventions[(info.file, spec.kind)]
        entries.append(PlannedTensor(param=spec, source=info, permutation=fits[convention]))
    return LoadPlan(component=component, entries=entries, foreign_keys=foreign)


def _check_dtype(component: str, spec: ParamSpec, info: TensorInfo) -> None:
    floating = mx.issubdtype(spec.dtype, mx.floating)
    if (info.dtype in FLOAT_STORAGE) if floating else (INTEGER_STORAGE.get(spec.dtype) == info.dtype):
        return
    raise LtxError(
        ErrorCode.WEIGHTS_DTYPE_UNSUPPORTED,
        f"{component}: tensor {info.name!r} in {info.file} is stored as {info.dtype}, which cannot be loaded into "
        f"the {spec.dtype} parameter {spec.key!r}",
        "FP8/FP4 and float64 checkpoints are not supported: use the bf16 model or an MLX 4/8-bit conversion.",
        file=str(info.file),
        key=info.name,
        dtype=info.dtype,
    )


def _torch_shape(spec: ParamSpec) -> tuple[int, ...] | None:
    permutation = TORCH_TO_MLX.get(spec.kind)
    if permutation is None:
        return None
    shape = [0] * len(permutation)
    for mlx_axis, stored_axis in enumerate(permutation):
        shape[stored_axis] = spec.shape[mlx_axis]
    return tuple(shape)


def _decide_conventions(component: str, matched: Iterable, default: Convention) -> dict:
    """One layout per (file, layer kind), from the tensors whose shape alone decides it."""
    evidence: dict[tuple, dict[Convention, str]] = {}
    for spec, info, fits in matched:
        group = evidence.setdefault((info.file, spec.kind), {})
        if len(fits) == 1:
            group.setdefault(next(iter(fits)), info.name)
    decided = {}
    for (file, kind), seen in evidence.items():
        if len(seen) > 1:
            raise LtxError(
                ErrorCode.WEIGHTS_LAYOUT_CONFLICT,
                f"{component}: {file} stores {kind} weights in both MLX layout ({seen['mlx']!r}) and PyTorch "
                f"layout ({seen['torch']!r})",
                "The file was written by a broken converter; convert the model again from the original.",
                file=str(file),
            )
        decided[(file, kind)] = next(iter(seen), default)
    return decided

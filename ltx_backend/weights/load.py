"""Load one component of a checkpoint into an MLX module, exactly (see `plan.py`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import mlx.core as mx
import mlx.nn as nn

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.weights.checkpoint import Checkpoint, Component
from ltx_backend.weights.plan import LoadPlan, expected_params, plan_load
from ltx_backend.weights.safetensors_file import TensorInfo
from ltx_backend.weights.tensor_reader import ReadAhead, readable

T = TypeVar("T")
# What building a module from a config that parses but makes no sense raises (a list index out of range,
# a string where a number belongs, MLX refusing a shape, ...).
CONFIG_FAULTS = (ValueError, TypeError, KeyError, IndexError, AttributeError, RuntimeError, StopIteration)


def build_from_config(ckpt: Checkpoint, section: str, build: Callable[[], T]) -> T:
    """Run `build` (config parsing and module construction), turning any config fault into CONFIG_INVALID."""
    try:
        return build()
    except CONFIG_FAULTS as exc:
        raise LtxError(
            ErrorCode.CONFIG_INVALID,
            f"{ckpt.root}: the {section} config is not usable: {exc}",
            "The checkpoint's config (embedded_config.json or the safetensors metadata) is damaged or from an "
            "unsupported model; re-download it.",
            section=section,
        ) from exc


def plan_module(module: nn.Module, component: Component, sanitize: Callable[[str], str | None]) -> LoadPlan:
    """Decide, without reading any tensor data, which stored tensor feeds each parameter of `module`."""
    return plan_load(component.name, expected_params(module), component.tensors, sanitize, component.convention)


def quantize_like(
    module: nn.Module, component: Component, sanitize: Callable[[str], str | None], bits: int, group_size: int
) -> None:
    """Swap the Linear layers that the checkpoint stores quantized for quantized ones, before loading."""
    paths = {sanitize(path + ".weight") for path in component.quantized_paths}
    paths = {path.removesuffix(".weight") for path in paths if path}
    if paths:
        nn.quantize(module, group_size, bits, class_predicate=lambda path, layer: path in paths)


def load_module(
    module: nn.Module,
    component: Component,
    sanitize: Callable[[str], str | None] = lambda key: key,
    dtype: mx.Dtype | None = None,
    read_ahead: bool = True,
) -> LoadPlan:
    """Plan, then load every parameter of `module` from `component`.

    `dtype` casts floating-point tensors (None keeps the checkpoint's dtype). With `read_ahead`, the tensors used
    as stored (no cast) are read now, by threads ahead of the loader (``tensor_reader.ReadAhead``: the disk streams
    while the arrays are built); the others stay lazy (evaluate to read them), so a cast holds one tensor's source
    at a time. A caller that transforms the loaded module as a whole (quantizes it) passes ``read_ahead=False``:
    all lazy, its peak stays one tensor's source above the result.
    """
    plan = plan_module(module, component, sanitize)
    ahead = [entry.source for entry in plan.entries if read_ahead and _used_as_stored(entry.source, dtype)]
    chosen = set(ahead)
    with ReadAhead(ahead) as reader:
        read = lambda info: reader.take(info) if info in chosen else component.read(info)  # noqa: E731
        module.load_weights(plan.materialize(read, dtype), strict=True)
    for file in component.files.values():
        file.release()
    return plan


_FLOATING = {"F32": mx.float32, "F16": mx.float16, "BF16": mx.bfloat16}


def _used_as_stored(info: TensorInfo, dtype: mx.Dtype | None) -> bool:
    """Read ahead: a tensor `materialize` does not cast, in a dtype numpy can hold."""
    stored = _FLOATING.get(info.dtype)
    return readable(info) and (dtype is None or stored is None or stored == dtype)

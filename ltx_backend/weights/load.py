"""Load one component of a checkpoint into an MLX module, exactly (see `plan.py`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import mlx.core as mx
import mlx.nn as nn

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.weights.checkpoint import Checkpoint, Component
from ltx_backend.weights.plan import LoadPlan, expected_params, plan_load

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
) -> LoadPlan:
    """Plan, then load every parameter of `module` from `component` (lazily; evaluate to read the bytes).

    `dtype` casts floating-point tensors (None keeps the checkpoint's dtype). MLX's `Load` reads each tensor
    when it is evaluated; inside `parallel_load.collect` (how `ResidentSet.borrow` loads) the tensors are spread
    over its lanes, so that several threads read them (`weights/parallel_load.py` says why).
    """
    plan = plan_module(module, component, sanitize)
    module.load_weights(plan.materialize(component.read, dtype), strict=True)
    for file in component.files.values():
        file.release()
    return plan

"""Load one component of a checkpoint into an MLX module, exactly (see `plan.py`)."""

from __future__ import annotations

from collections.abc import Callable

import mlx.core as mx
import mlx.nn as nn

from ltx_backend.weights.checkpoint import Component
from ltx_backend.weights.plan import LoadPlan, expected_params, plan_load


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

    `dtype` casts floating-point tensors (None keeps the checkpoint's dtype).
    """
    plan = plan_module(module, component, sanitize)
    module.load_weights(plan.materialize(component.read, dtype), strict=True)
    return plan

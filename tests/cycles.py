"""Finds model memory that only a garbage collection would free: what reference cycles hold after an action."""

from __future__ import annotations

import gc
from collections.abc import Callable

import mlx.core as mx
import mlx.nn as nn


def holds_arrays(thing: object) -> bool:
    if isinstance(thing, nn.Module):
        return True
    if isinstance(thing, dict):
        values = thing.values()
    elif isinstance(thing, list | tuple):
        values = thing
    else:  # an object's own attributes
        values = getattr(thing, "__dict__", {}).values()
    return any(isinstance(value, mx.array | nn.Module) for value in values)


def cyclic_garbage_after(action: Callable[[], object]) -> list[str]:
    """Run `action` with the collector off; describe every unreachable object that holds MLX arrays."""
    gc.collect()
    gc.disable()
    try:
        action()
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        return [type(thing).__name__ for thing in gc.garbage if holds_arrays(thing)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()

"""Primitives in a lazily built MLX graph: about one kernel launch each (a compiled one, one fused kernel)."""

from __future__ import annotations

import io
import re
from collections import defaultdict
from collections.abc import Callable

import mlx.core as mx

# Primitives that make no kernel: views and shape changes.
VIEWS = {"Slice", "Reshape", "Broadcast", "Squeeze", "ExpandDims", "Transpose", "AsStrided", "Flatten", "Unflatten"}


def graph_primitives(build: Callable[[], mx.array]) -> dict:
    """The primitives of the graph `build()` returns, views left out, by kind. ``mx.async_eval`` is disabled while it
    builds, so a computation submitted in stages is counted as one graph; nothing is evaluated."""
    async_eval = mx.async_eval
    mx.async_eval = lambda *_: None
    try:
        dot = io.StringIO()
        mx.export_to_dot(dot, build())
    finally:
        mx.async_eval = async_eval
    names = ["Compiled" if n.startswith("Compiled") else n for n in re.findall(r'label ="([A-Za-z]+)', dot.getvalue())]
    counts: dict[str, int] = defaultdict(int)
    for name in names:
        if name not in VIEWS:
            counts[name] += 1
    return {"total": sum(counts.values()), "by_kind": dict(sorted(counts.items(), key=lambda item: -item[1]))}

"""Batches: several videos from one request, one per seed, with numbered outputs (the CLI and the server)."""

from __future__ import annotations

import random
from pathlib import Path

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.pipeline.request import SEED_LIMIT

MAX_BATCH = 256


def numbered(path: str | None, index: int) -> str | None:
    """``out.mp4`` -> ``out_1.mp4`` for the batch's first video (index 0)."""
    if not path:
        return path
    target = Path(path)
    return str(target.with_name(f"{target.stem}_{index + 1}{target.suffix}"))


def batch_seeds(seed: int | None, count: int, seeds: list[int] | None = None) -> list[int | None]:
    """The seed of each video: `seeds`, or `count` consecutive seeds from `seed` (a random base when None)."""
    if seeds is not None:
        if not seeds or len(seeds) > MAX_BATCH:
            raise LtxError(ErrorCode.INVALID_PARAMS, f"seeds must list 1 to {MAX_BATCH} seeds",
                           "Give one seed per video, e.g. [1, 2, 3].", field="seeds")  # fmt: skip
        if count not in (1, len(seeds)):
            raise LtxError(ErrorCode.INVALID_PARAMS, f"count is {count} but seeds lists {len(seeds)} seeds",
                           "Give either count or seeds (or a count equal to the number of seeds).",
                           field="count")  # fmt: skip
        return list(seeds)
    if not 1 <= count <= MAX_BATCH:
        raise LtxError(ErrorCode.INVALID_PARAMS, f"count must be 1 to {MAX_BATCH}, not {count}",
                       "Give the number of videos to generate.", field="count")  # fmt: skip
    if count == 1:
        return [seed]
    base = seed if seed is not None else random.randrange(SEED_LIMIT - MAX_BATCH)
    return [(base + i) % SEED_LIMIT for i in range(count)]

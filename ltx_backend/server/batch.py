"""A `generate` with `count` or `seeds` becomes one job per video: each has its own job id, result and cancel;
they share the session's resident models and, having one prompt, its cached text encoding."""

from __future__ import annotations

import random
from pathlib import Path

import msgspec

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.pipeline.preview import PreviewOptions
from ltx_backend.pipeline.request import SEED_LIMIT
from ltx_backend.server import messages as m

MAX_BATCH = 256


def numbered(path: str | None, index: int) -> str | None:
    """``out.mp4`` -> ``out_1.mp4`` for the batch's first video (index 0)."""
    if not path:
        return path
    target = Path(path)
    return str(target.with_name(f"{target.stem}_{index + 1}{target.suffix}"))


def batch_seeds(request: m.Generate) -> list[int | None]:
    """The seed of each video: `seeds`, or `count` consecutive seeds from `seed` (random when absent)."""
    if request.seeds is not None:
        if not request.seeds or len(request.seeds) > MAX_BATCH:
            raise LtxError(ErrorCode.INVALID_PARAMS, f"seeds must list 1 to {MAX_BATCH} seeds",
                           "Give one seed per video, e.g. [1, 2, 3].", field="seeds")  # fmt: skip
        if request.count not in (1, len(request.seeds)):
            raise LtxError(ErrorCode.INVALID_PARAMS,
                           f"count is {request.count} but seeds lists {len(request.seeds)} seeds",
                           "Give either count or seeds (or a count equal to the number of seeds).",
                           field="count")  # fmt: skip
        return list(request.seeds)
    if not 1 <= request.count <= MAX_BATCH:
        raise LtxError(ErrorCode.INVALID_PARAMS, f"count must be 1 to {MAX_BATCH}, not {request.count}",
                       "Give the number of videos to generate.", field="count")  # fmt: skip
    if request.count == 1:
        return [request.seed]
    base = request.seed if request.seed is not None else random.randrange(SEED_LIMIT - MAX_BATCH)
    return [(base + i) % SEED_LIMIT for i in range(request.count)]


def expand(request: m.Generate) -> list[m.Generate]:
    """One `generate` per video of the batch (the request itself when it is a single video)."""
    seeds = batch_seeds(request)
    if len(seeds) == 1 and request.seeds is None:
        return [request]
    return [
        msgspec.structs.replace(
            request,
            seed=seed,
            count=1,
            seeds=None,
            output_path=numbered(request.output_path, index),
            audio_output_path=numbered(request.audio_output_path, index),
        )
        for index, seed in enumerate(seeds)
    ]


def preview_options(request: m.Generate) -> PreviewOptions | None:
    """The job's previews, in a folder beside its output unless the host names one."""
    spec = request.preview
    if spec is None:
        return None
    folder = spec.folder or str(Path(request.output_path).with_suffix(".previews"))
    return PreviewOptions(folder, spec.every, spec.max_side).validate()

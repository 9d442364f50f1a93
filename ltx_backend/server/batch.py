"""A `generate` with `count` or `seeds` becomes one job per video: each has its own job id, result and cancel;
they share the session's resident models and, having one prompt, its cached text encoding."""

from __future__ import annotations

from pathlib import Path

import msgspec

from ltx_backend.pipeline.batch import batch_seeds, numbered
from ltx_backend.pipeline.preview import PreviewOptions
from ltx_backend.server import messages as m


def expand(request: m.Generate) -> list[m.Generate]:
    """One `generate` per video of the batch (the request itself when it is a single video)."""
    seeds = batch_seeds(request.seed, request.count, request.seeds)
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

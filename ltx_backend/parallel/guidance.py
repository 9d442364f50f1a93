"""Guidance parallelism: the conditional, unconditional, STG-perturbed and modality-isolated forwards of one
denoising step on different ranks, each rank holding the whole model.

``sampler.guided_denoiser`` hands its passes (up to four) and the function that runs a list of them to a pass
runner; the default runs them all together. ``split_passes(group)`` runs pass i on rank ``i % ranks`` and shares
the results with one ``all_sum`` over all of them, every rank contributing zeros for the passes it did not run.
``x + 0`` is exact, so every rank ends with bit-identical results, equal to running the passes on one process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import mlx.core as mx

from ltx_backend.pipeline.sampler import PassResult, PassRunner


def split_passes(group: mx.distributed.Group) -> PassRunner:
    rank, ranks = group.rank(), group.size()

    def run(passes: Sequence, forward: Callable[[list], list[PassResult]]) -> list[PassResult]:
        if ranks == 1:
            return forward(list(passes))
        mine = [i for i in range(len(passes)) if i % ranks == rank]
        if mine:
            own = dict(zip(mine, forward([passes[i] for i in mine]), strict=True))
            template = next(iter(own.values()))
        else:  # more ranks than passes: this rank only helps share (its zeros need the shapes)
            template, own = forward([passes[rank % len(passes)]])[0], {}
        parts = []
        for i in range(len(passes)):
            result = own.get(i)
            for slot, like in enumerate(template):
                if like is not None:
                    value = result[slot] if result is not None else mx.zeros(like.shape, like.dtype)
                    parts.append(value.reshape(-1))
        shared = mx.distributed.all_sum(mx.concatenate(parts), group=group)
        results, offset = [], 0
        for _ in passes:
            values = []
            for like in template:
                if like is None:
                    values.append(None)
                    continue
                values.append(shared[offset : offset + like.size].reshape(like.shape))
                offset += like.size
            results.append(tuple(values))
        return results

    return run

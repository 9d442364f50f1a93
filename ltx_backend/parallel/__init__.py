"""Generation over several ranks (GPUs, or processes on one CPU host) with MLX's own ``mx.distributed``.

- ``tensor``: tensor parallelism, a transform of a loaded ``LTXModel`` (heads and hidden units split over ranks).
- ``guidance``: guidance parallelism, a guided step's passes on different ranks.
- ``launch``: the ranks on one host (ring backend over localhost, or NCCL), started by rank 0.
- ``run``: the engine's hooks (shard, run passes, agree on cancel, rank 0 alone writes) and the front ends' entry
  points (``DistributedEngine`` for ``generate``/``serve --distributed``; ``follower``: ranks 1..N-1).
"""

"""Warm start: pay MLX's kernel compilation once, not in a user's first job.

On CUDA, MLX compiles its kernels with NVRTC the first time each variant runs (about 40 s over a first
768x512x121 job on an H100) and caches the output in ``$MLX_PTX_CACHE_DIR``, read once when the first kernel is
compiled; unset, it is ``<temp>/mlx/<version>/ptx`` (mlx/backend/cuda/jit_module.cpp, ``ptx_cache_dir``), which a
fresh machine or container loses. `use_persistent_kernel_cache` points it at our cache home, one folder per MLX
version and GPU (a cache shared between GPU architectures can hold kernels the other GPU cannot run), before
MLX compiles anything. `warmup` then runs a whole job on tiny shapes so that the kernels every phase needs
exist before the first real job (kernels whose variant depends on the shape still compile on first use).
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

PTX_CACHE_ENV = "MLX_PTX_CACHE_DIR"
WARMUP_SIZE = {"width": 128, "height": 128, "num_frames": 9}  # stage 1 at 64x64, 2 latent frames
# The text encoder runs on a prompt's real tokens only, so a two-word prompt would leave the kernel variants that a
# prompt of typical length selects (matrix products of more than a few rows) to compile in the first real job.
WARMUP_PROMPT = (
    "A slow aerial shot over a rocky coastline at golden hour: waves break against dark cliffs, gulls circle "
    "overhead, and a narrow path winds past a white lighthouse. The camera drifts forward as mist rises from the "
    "water; the sound of surf, wind and distant birds."
)


def cache_home() -> Path:
    """``$LTX_BACKEND_HOME`` (default ``$XDG_CACHE_HOME/ltx-backend``, ``~/.cache/ltx-backend``)."""
    home = os.environ.get("LTX_BACKEND_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", "~/.cache"), "ltx-backend"
    )
    return Path(home).expanduser()


def use_persistent_kernel_cache() -> Path | None:
    """Set ``MLX_PTX_CACHE_DIR`` to a folder under our cache home unless the user set it; the folder (or None
    when this is not a CUDA build, or the folder cannot be made). Call before MLX compiles its first kernel."""
    import mlx.core as mx

    cuda = getattr(mx, "cuda", None)
    if cuda is None or not cuda.is_available():
        return None
    if os.environ.get(PTX_CACHE_ENV):
        return Path(os.environ[PTX_CACHE_ENV])
    from ltx_backend.pipeline.memory import _device_info

    info = _device_info()  # {} on an MLX without the query: one folder per MLX version still
    device = str(info.get("device_name") or info.get("architecture") or "gpu")
    folder = cache_home() / "mlx-kernels" / mx.__version__ / re.sub(r"[^A-Za-z0-9._-]+", "-", device)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    os.environ[PTX_CACHE_ENV] = str(folder)
    return folder


def warmup(engine) -> float:
    """Run one tiny job through every phase (text, both stages, upsample, audio and video decode); seconds taken.

    Its output goes to a temporary folder that is removed; its prompt stays out of the prompt cache."""
    from ltx_backend.pipeline.request import GenerationRequest

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ltx-warmup-") as folder:
        request = GenerationRequest(prompt=WARMUP_PROMPT, output_path=str(Path(folder) / "warmup.mp4"), seed=0,
                                    **WARMUP_SIZE)  # fmt: skip
        engine.generate(request)
        engine.prompts.forget(engine.prompt_key(request))
    return time.perf_counter() - start

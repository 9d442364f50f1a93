"""The res_2s sampler of the HQ pipeline (ltx-pipelines ``res2s_audio_video_denoising_loop``, ``Res2sDiffusionStep``).

A second-order exponential Runge-Kutta step with SDE noise, used by ``TI2VidTwoStagesHQPipeline`` in both stages
instead of Euler (it is a different integrator, not a variant of `sampler.euler_loop`; the states, denoisers and
post-processing are the sampler's). Per step from sigma to sigma_next, ``h = -log(sigma_next / sigma)``:

1. ``d1 = denoise(x, sigma)`` (post-processed: mask-0 tokens pulled back to the clean latent);
2. midpoint ``x_mid = x + h a21 (d1 - x)`` at ``sub = sqrt(sigma sigma_next)``, then SDE-noised (below);
3. where ``h < 0.5 and sigma > 0.03`` the anchor is refined ("bong iteration", 100 fixed-point iterations of
   ``x = x_mid - h a21 (d1 - x)``; written here as its limit ``(x_mid - c d1) / (1 - c)``, c = h a21 <= 0.25, which
   100 iterations reach to c^100);
4. ``d2 = denoise(x_mid, sub)``; ``x_next = x + h (b1 (d1 - x) + b2 (d2 - x))``, SDE-noised to sigma_next.

SDE noise (``Res2sDiffusionStep.step`` with ``sigma_up = sigma_next / 2``): ``eps = (x - y) / (s - s')``,
``alpha = (1 - s') + sqrt(s'^2 - sigma_up^2)``, ``sigma_down = sqrt(s'^2 - sigma_up^2) / alpha``,
``y' = alpha (x - s eps + sigma_down eps) + sigma_up n``, then post-processed (legacy mode). ``n`` is standard
normal noise normalised to zero mean / unit std over each latent (twice, as ``_get_new_noise``), drawn per step in
the order substep video, substep audio, step video, step audio. A schedule ending in 0 ends ``[..., 0.0011, 0]``
instead: the full steps run to 0.0011 and one last denoise at 0.0011 gives the output.

The reference computes in float64 and stores the latents in ``model_dtype`` (bfloat16 by default); MLX devices have
no float64, so this runs in float32 (measured against a float64 reference: see tests/test_modes_parity.py).
The reference seeds its two SDE generators with -1 and 9999 whatever the job's seed (so its SDE noise does not
change with --seed); `Res2sNoise` seeds them from the job's seed instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import mlx.core as mx
import numpy as np

from ltx_backend.pipeline.sampler import DenoiseFn, LatentState

C2 = 0.5  # the midpoint
FINAL_SIGMA = 0.0011  # replaces a final 0 (no division by zero in the SDE step)
BONG_MAX_H, BONG_MIN_SIGMA = 0.5, 0.03

# (generator: "substep" | "step", stream: "video" | "audio", shape) -> normalised noise
NoiseFn = Callable[[str, str, tuple[int, ...]], mx.array]


def phi(j: int, neg_h: float) -> float:
    """phi_j(z) = (e^z - sum_{k<j} z^k / k!) / z^j (1 / j! at z = 0)."""
    if abs(neg_h) < 1e-10:
        return 1.0 / math.factorial(j)
    remainder = sum(neg_h**k / math.factorial(k) for k in range(j))
    return (math.exp(neg_h) - remainder) / neg_h**j


def coefficients(h: float) -> tuple[float, float, float]:
    """res_2s Butcher coefficients (a21, b1, b2) for a log-space step h."""
    a21 = C2 * phi(1, -h * C2)
    b2 = phi(2, -h) / C2
    return a21, phi(1, -h) - b2, b2


def normalised_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> mx.array:
    """Standard normal noise, then zero mean / unit (unbiased) std over the latent, twice (``_get_new_noise``)."""
    noise = rng.standard_normal(shape)
    for _ in range(2):
        noise = (noise - noise.mean()) / noise.std(ddof=1)
    return mx.array(noise.astype(np.float32))


class Res2sNoise:
    """Two seeded generators (step, substep), as the reference's (seeded from the job's seed here)."""

    def __init__(self, seed: int) -> None:
        self.rngs = {"step": np.random.default_rng(seed), "substep": np.random.default_rng(seed + 10000)}

    def __call__(self, generator: str, stream: str, shape: tuple[int, ...]) -> mx.array:
        return normalised_noise(self.rngs[generator], shape)


def _post_process(state: LatentState, x: mx.array) -> mx.array:
    """Mask-0 tokens back to the clean latent (``post_process_latent``), float32."""
    mask = state.denoise_mask[..., None].astype(mx.float32)
    return x.astype(mx.float32) * mask + state.clean.astype(mx.float32) * (1 - mask)


def _sde_step(state: LatentState, x: mx.array, y: mx.array, sigma: float, sigma_next: float, noise: mx.array):
    """``Res2sDiffusionStep.step`` (sigma_up = sigma_next / 2) then post-processing (legacy mode)."""
    sigma_up = min(sigma_next * 0.5, sigma_next * 0.9999)
    if sigma_up == 0 or sigma_next == 0:
        return _post_process(state, y)
    residual = math.sqrt(max(sigma_next**2 - sigma_up**2, 0.0))
    alpha = (1.0 - sigma_next) + residual
    sigma_down = residual / alpha
    eps = (x - y) / (sigma - sigma_next)
    return _post_process(state, alpha * (x - sigma * eps + sigma_down * eps) + sigma_up * noise)


def res2s_loop(
    sigmas: tuple[float, ...] | np.ndarray,
    video: LatentState,
    audio: LatentState | None,
    denoise: DenoiseFn,
    noise: NoiseFn,
    on_step: Callable[[int, int], None] = lambda step, total: None,
) -> tuple[LatentState, LatentState | None]:
    """ltx-pipelines ``res2s_audio_video_denoising_loop`` (bong iteration on, legacy mode) on our states."""
    values = [float(v) for v in np.asarray(sigmas, dtype=np.float32)]
    total = len(values) - 1
    if values[-1] == 0:
        values = [*values[:-1], float(np.float32(FINAL_SIGMA)), 0.0]
    streams = {"video": video} if audio is None else {"video": video, "audio": audio}

    def denoised(states: dict[str, LatentState], sigma: float) -> dict[str, mx.array]:
        out = denoise(states["video"], states.get("audio"), sigma)
        return {name: _post_process(states[name], d) for name, d in zip(("video", "audio"), out, strict=False)
                if name in states}  # fmt: skip

    for step in range(total):
        sigma, sigma_next = values[step], values[step + 1]
        h = -math.log(sigma_next / sigma)
        a21, b1, b2 = coefficients(h)
        sub = math.sqrt(sigma * sigma_next)
        anchor = {name: state.latent.astype(mx.float32) for name, state in streams.items()}
        d1 = denoised(streams, sigma)
        mid = {}
        for name, state in streams.items():
            x_mid = anchor[name] + h * a21 * (d1[name] - anchor[name])
            shape = tuple(state.latent.shape)
            mid[name] = _sde_step(state, anchor[name], x_mid, sigma, sub, noise("substep", name, shape))
            if h < BONG_MAX_H and sigma > BONG_MIN_SIGMA:
                c = h * a21
                anchor[name] = (mid[name] - c * d1[name]) / (1 - c)
        mid_states = {name: replace(s, latent=mid[name].astype(s.latent.dtype)) for name, s in streams.items()}
        d2 = denoised(mid_states, sub)
        for name, state in streams.items():
            x, shape = anchor[name], tuple(state.latent.shape)
            x_next = x + h * (b1 * (d1[name] - x) + b2 * (d2[name] - x))
            x_next = _sde_step(state, x, x_next, sigma, sigma_next, noise("step", name, shape))
            streams[name] = replace(state, latent=x_next.astype(state.latent.dtype))
        mx.eval(*(s.latent for s in streams.values()))
        on_step(step + 1, total)
    if values[-1] == 0:
        final = denoised(streams, values[total])
        streams = {name: replace(s, latent=final[name].astype(s.latent.dtype)) for name, s in streams.items()}
    return streams["video"], streams.get("audio")

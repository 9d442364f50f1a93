"""Euler-ancestral denoising (LTX-2.5 distilled stage 1), as ltx-core 1.2.0's ``EulerAncestralDiffusionStep`` and
ltx-pipelines' ``euler_ancestral_denoising_loop`` run it.

Each step moves to ``sigma_down`` (below the next sigma) deterministically, then rescales for the rectified-flow
mixing and adds fresh noise back up to ``sigma_next``. The noise has its own seeded stream (seed + 10000), drawn per
step for video first, then audio, for every token; the conditioning blend then restores the conditioned tokens. The
terminal step returns the denoised latent. The loop takes the same denoise function as ``euler_loop``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import mlx.core as mx
import numpy as np

from ltx_backend.pipeline.sampler import DenoiseFn, LatentState

ANCESTRAL_NOISE_SEED_OFFSET = 10000  # ltx-pipelines: the ancestral noise generator is seeded with seed + 10000

# (shape, dtype) -> standard normal noise; called per step for video, then audio
NoiseFn = Callable[[tuple[int, ...], mx.Dtype], mx.array]


@dataclass(frozen=True)
class StepCoefficients:
    sigma_down: float
    keep: float  # sigma_down / sigma: the weight of the current latent in the deterministic move
    rescale: float  # (1 - sigma_next) / (1 - sigma_down)
    renoise: float  # the noise's standard deviation


@dataclass(frozen=True)
class EulerAncestralStep:
    """ltx-core ``EulerAncestralDiffusionStep`` (eta 1 is the LTX-2.5 distilled stage 1; eta 0 is plain Euler)."""

    eta: float = 1.0
    s_noise: float = 1.0

    def coefficients(self, sigma: float, sigma_next: float) -> StepCoefficients:
        """The step's scalars, computed in float32 as ltx-core computes them from float32 sigmas."""
        f = np.float32
        s, n, eta = f(sigma), f(sigma_next), f(self.eta)
        down = n * (f(1) + (n / s - f(1)) * eta)
        rescale = (f(1) - n) / (f(1) - down)
        variance = n * n - down * down * rescale * rescale
        return StepCoefficients(float(down), float(down / s), float(rescale), float(np.sqrt(max(f(0), variance))))

    def __call__(self, sample: mx.array, denoised: mx.array, noise: mx.array | None, sigma: float, sigma_next: float):
        """One step in float32; `noise` is needed when eta > 0 and sigma_next > 0."""
        if sigma_next == 0:
            return denoised.astype(mx.float32)
        c = self.coefficients(sigma, sigma_next)
        x = sample.astype(mx.float32) * c.keep + denoised.astype(mx.float32) * (1 - c.keep)
        if self.eta > 0:
            if noise is None:
                raise ValueError("an ancestral step with eta > 0 needs noise")
            x = x * c.rescale + noise.astype(mx.float32) * (self.s_noise * c.renoise)
        return x

    def draws_noise(self, sigma_next: float) -> bool:
        return self.eta > 0 and sigma_next != 0


class SeededNoise:
    """The ancestral noise stream of one generation: MLX's generator seeded with seed + 10000, one draw per call.

    (torch's stream cannot be reproduced in MLX; the seeding rule and the draw order are ltx-pipelines'.)"""

    def __init__(self, seed: int) -> None:
        self.key = mx.random.key(seed + ANCESTRAL_NOISE_SEED_OFFSET)

    def __call__(self, shape: tuple[int, ...], dtype: mx.Dtype) -> mx.array:
        self.key, draw = mx.random.split(self.key)
        return mx.random.normal(shape, dtype=dtype, key=draw)


def _blend(x: mx.array, state: LatentState) -> mx.array:
    """ltx-core ``post_process_latent`` in float32: conditioned tokens (mask 0) pulled back to their clean values."""
    mask = state.denoise_mask[..., None].astype(mx.float32)
    return x.astype(mx.float32) * mask + state.clean.astype(mx.float32) * (1 - mask)


def euler_ancestral_loop(
    sigmas: tuple[float, ...] | np.ndarray,
    video: LatentState,
    audio: LatentState | None,
    denoise: DenoiseFn,
    noise: NoiseFn,
    step: EulerAncestralStep = EulerAncestralStep(),
    on_step: Callable[[int, int], None] = lambda step, total: None,
) -> tuple[LatentState, LatentState | None]:
    """ltx-pipelines ``euler_ancestral_denoising_loop``: denoise, blend, ancestral step (noise drawn video first, in
    the latent's dtype), blend again, back to the latent's dtype."""
    sigmas = [float(s) for s in np.asarray(sigmas, dtype=np.float32)]
    total = len(sigmas) - 1
    for index in range(total):
        sigma, sigma_next = sigmas[index], sigmas[index + 1]
        denoised = denoise(video, audio, sigma)
        states = [video] + ([audio] if audio is not None else [])
        updated = []
        for state, x0 in zip(states, denoised, strict=False):
            draw = noise(tuple(state.latent.shape), state.latent.dtype) if step.draws_noise(sigma_next) else None
            x = step(state.latent, _blend(x0, state), draw, sigma, sigma_next)
            updated.append(replace(state, latent=_blend(x, state).astype(state.latent.dtype)))
        video, audio = updated[0], (updated[1] if audio is not None else None)
        mx.eval(*(state.latent for state in updated))
        on_step(index + 1, total)
    return video, audio

"""IC-LoRA reference-video conditioning (ltx-core ``VideoConditionByReferenceLatent``) and its attention mask.

An IC-LoRA is trained on the control video's tokens concatenated after the target's; at inference the encoded
control video is appended the same way: its tokens after the state's, with positions of its own latent grid whose
spatial axes are multiplied by the LoRA's ``reference_downscale_factor`` (a reference at half the output resolution
covers the same pixel coordinates as the output), denoise mask ``1 - strength`` (1.0 keeps it clean).

Optionally the reference tokens' attention to and from the generated tokens is weakened
(``ConditioningItemAttentionStrengthWrapper``; ICLoraPipeline's ``conditioning_attention_strength`` / mask): a
(B, T, T) self-attention mask in [0, 1] (``StreamInput.self_attention_mask``, which the transformer turns into a
log-space additive bias). Without it (the pipelines' default, strength 1.0) no mask exists and every token attends
to every other.
"""

from __future__ import annotations

from dataclasses import replace

import mlx.core as mx
import numpy as np

from ltx_backend.models.rope import video_positions
from ltx_backend.pipeline.sampler import LatentState, extend_keyframes_mask, video_to_tokens


def reference_positions(frames: int, height: int, width: int, fps: float, downscale_factor: int = 1) -> np.ndarray:
    """(1, 3, F*H*W, 2) positions of a reference latent grid, its y/x scaled into the output's pixel coordinates."""
    positions = video_positions(frames, height, width, fps)
    if downscale_factor != 1:
        positions[:, 1:] *= np.float32(downscale_factor)
    return positions


def condition_by_reference(
    state: LatentState, latent: mx.array, fps: float, downscale_factor: int = 1, strength: float = 1.0
) -> LatentState:
    """Append an encoded reference video (1, C, F, H, W) as tokens (ltx-core ``VideoConditionByReferenceLatent``).

    As every conditioning item of ltx-core 1.2.0, the content goes into the clean latent only (the noised tokens
    start at zero); the noiser then pulls conditioned tokens to it, so the noised state equals 1.0.0's for masks
    of 0 or 1."""
    if downscale_factor < 1:
        raise ValueError(f"reference_downscale_factor must be >= 1, not {downscale_factor}")
    tokens = video_to_tokens(latent.astype(state.latent.dtype))
    _, _, f, h, w = latent.shape
    mask = mx.full((1, tokens.shape[1]), 1.0 - strength)
    return replace(
        state,
        latent=mx.concatenate([state.latent, mx.zeros_like(tokens)], axis=1),
        clean=mx.concatenate([state.clean, tokens], axis=1),
        denoise_mask=mx.concatenate([state.denoise_mask, mask], axis=1),
        positions=np.concatenate([state.positions, reference_positions(f, h, w, fps, downscale_factor)], axis=2),
        unconditioned=False,
        keyframes_mask=extend_keyframes_mask(state, tokens.shape[1]),  # reference tokens are unmarked
    )


def cross_mask(attention: float | mx.array, new_tokens: int, batch: int = 1) -> mx.array:
    """(B, M) per-token weights of the new tokens' attention to/from the generated ones (ltx-core
    ``resolve_cross_mask``): a scalar for all, or one value per token ((M,) or (B or 1, M))."""
    if isinstance(attention, (int, float)) or (isinstance(attention, mx.array) and attention.ndim == 0):
        return mx.full((batch, new_tokens), float(attention))
    if attention.ndim == 1:
        attention = attention[None]
    if attention.ndim != 2 or attention.shape[1] != new_tokens or attention.shape[0] not in (1, batch):
        raise ValueError(f"attention mask of shape {tuple(attention.shape)} does not fit {new_tokens} new tokens")
    return mx.broadcast_to(attention.astype(mx.float32), (batch, new_tokens))


def extend_attention_mask(
    existing: mx.array | None, generated_tokens: int, existing_tokens: int, cross: mx.array
) -> mx.array:
    """The (B, N+M, N+M) mask after appending M tokens (ltx-core ``build_attention_mask``).

    The existing block is kept (all ones without one); the new tokens attend fully among themselves, to and from the
    generated tokens with `cross`, and not at all to or from earlier appended tokens.
    """
    batch, new = cross.shape
    total = existing_tokens + new
    top = mx.ones((batch, existing_tokens, existing_tokens)) if existing is None else existing.astype(mx.float32)
    not_generated = existing_tokens - generated_tokens
    to_new = mx.concatenate(
        [mx.broadcast_to(cross[:, None], (batch, generated_tokens, new)), mx.zeros((batch, not_generated, new))],
        axis=1,
    )
    from_new = mx.concatenate(
        [mx.broadcast_to(cross[:, :, None], (batch, new, generated_tokens)), mx.zeros((batch, new, not_generated))],
        axis=2,
    )
    bottom = mx.concatenate([from_new, mx.ones((batch, new, new))], axis=2)
    return mx.concatenate([mx.concatenate([top, to_new], axis=2), bottom], axis=1).reshape(batch, total, total)


def condition_by_reference_with_attention(
    state: LatentState,
    attention_mask: mx.array | None,
    latent: mx.array,
    fps: float,
    downscale_factor: int = 1,
    strength: float = 1.0,
    attention: float | mx.array | None = None,
) -> tuple[LatentState, mx.array | None]:
    """``condition_by_reference`` plus the self-attention mask ltx-core keeps beside the state: weakened by
    `attention` (``ConditioningItemAttentionStrengthWrapper``); None keeps the mask as it is (padded with ones when one
    exists: ltx-core ``update_attention_mask``)."""
    conditioned = condition_by_reference(state, latent, fps, downscale_factor, strength)
    new = conditioned.latent.shape[1] - state.latent.shape[1]
    if attention is None and attention_mask is None:
        return conditioned, None
    cross = mx.ones((1, new)) if attention is None else cross_mask(attention, new)
    mask = extend_attention_mask(attention_mask, state.generated_tokens, state.latent.shape[1], cross)
    return conditioned, mask


def downsample_mask_to_latent(mask: np.ndarray, frames: int, height: int, width: int) -> np.ndarray:
    """A pixel-space mask (B, 1, F, H, W) in [0, 1] -> (B, frames*height*width) per reference token
    (ICLoraPipeline ``_downsample_mask_to_latent``): area-averaged per frame, then the first frame alone (the causal
    VAE encodes it alone) and the rest averaged in groups of ``(F - 1) / (frames - 1)`` frames."""
    b, _, f, _, _ = mask.shape
    spatial = _area_resize(mask[:, 0].astype(np.float32), height, width)  # (B, F, h, w)
    if f > 1 and frames > 1:
        if (f - 1) % (frames - 1):
            raise ValueError(
                f"a {f}-frame mask does not fit {frames} latent frames: (F - 1) must divide by {frames - 1}"
            )
        step = (f - 1) // (frames - 1)
        rest = spatial[:, 1:].reshape(b, frames - 1, step, height, width).mean(axis=2)
        latent = np.concatenate([spatial[:, :1], rest], axis=1)
    else:
        latent = spatial[:, :1]
    return latent.reshape(b, -1)


def _area_resize(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """torch ``interpolate(mode="area")`` (adaptive average pooling) over the last two axes."""

    def pool(array: np.ndarray, size: int, axis: int) -> np.ndarray:
        n = array.shape[axis]
        starts = [(i * n) // size for i in range(size)]
        stops = [-(-((i + 1) * n) // size) for i in range(size)]
        parts = [
            np.take(array, range(a, z), axis=axis).mean(axis=axis, keepdims=True)
            for a, z in zip(starts, stops, strict=True)
        ]
        return np.concatenate(parts, axis=axis)

    return pool(pool(x, height, x.ndim - 2), width, x.ndim - 1)

"""LTX-2.5 DurationHead: the natural length of a prompt's shot, predicted from the text connector outputs, and the
frame count it gives (ltx-core ``duration_head`` and ltx-pipelines ``seconds_to_clamped_num_frames``).

Both connector outputs (or either one) are projected to a shared width and tagged with a learned modality vector,
concatenated (video first); learned queries cross-attend over them (``nn.MultiheadAttention`` layout: fused
``in_proj``, no mask, the connectors fill every position), and a small tanh-GELU MLP gives log-seconds.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

log = logging.getLogger(__name__)
FRAME_GRID = 8  # the video VAE's temporal compression: valid frame counts are 8k + 1
MIN_SECONDS, MAX_SECONDS = 1.0, 20.0


@dataclass(frozen=True)
class DurationHeadConfig:
    video_dim: int = 4096  # the transformer's cross_attention_dim
    audio_dim: int = 2048  # audio_cross_attention_dim
    pooler_hidden_dim: int = 256
    num_queries: int = 1
    num_pooler_heads: int = 4
    mlp_hidden: int = 256

    @classmethod
    def from_config(cls, config: dict) -> DurationHeadConfig:
        """From a checkpoint's ``config`` metadata: dims from ``transformer``, the rest from ``duration_head``
        (the real file's section is empty, so ltx-core's defaults apply)."""
        transformer = config.get("transformer") or {}
        head = config.get("duration_head") or {}
        return cls(
            video_dim=int(transformer.get("cross_attention_dim", 4096)),
            audio_dim=int(transformer.get("audio_cross_attention_dim", 2048)),
            pooler_hidden_dim=int(head.get("pooler_hidden_dim", 256)),
            num_queries=int(head.get("num_queries", 1)),
            num_pooler_heads=int(head.get("num_pooler_heads", 4)),
            mlp_hidden=int(head.get("mlp_hidden", 256)),
        )


class MultiheadAttention(nn.Module):
    """``torch.nn.MultiheadAttention`` (batch first, no mask, no dropout) with its parameter names."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"pooler width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.in_proj_weight = mx.zeros((3 * dim, dim))
        self.in_proj_bias = mx.zeros((3 * dim,))
        self.out_proj = nn.Linear(dim, dim)

    def __call__(self, query: mx.array, tokens: mx.array) -> mx.array:
        dim = query.shape[-1]
        w, b = self.in_proj_weight, self.in_proj_bias
        q = query @ w[:dim].T + b[:dim]
        k = tokens @ w[dim : 2 * dim].T + b[dim : 2 * dim]
        v = tokens @ w[2 * dim :].T + b[2 * dim :]

        def heads(x: mx.array) -> mx.array:
            return x.reshape(x.shape[0], x.shape[1], self.heads, -1).transpose(0, 2, 1, 3)

        head_dim = dim // self.heads
        out = mx.fast.scaled_dot_product_attention(heads(q), heads(k), heads(v), scale=1 / math.sqrt(head_dim))
        return self.out_proj(out.transpose(0, 2, 1, 3).reshape(query.shape[0], query.shape[1], dim))


class AttentionPooler(nn.Module):
    def __init__(self, config: DurationHeadConfig) -> None:
        super().__init__()
        self.query_tokens = mx.zeros((config.num_queries, config.pooler_hidden_dim))
        self.cross_attn = MultiheadAttention(config.pooler_hidden_dim, config.num_pooler_heads)

    def __call__(self, tokens: mx.array) -> mx.array:
        queries = mx.broadcast_to(self.query_tokens[None], (tokens.shape[0], *self.query_tokens.shape))
        return self.cross_attn(queries.astype(tokens.dtype), tokens)


class DurationHead(nn.Module):
    def __init__(self, config: DurationHeadConfig) -> None:
        super().__init__()
        self.config = config
        width = config.pooler_hidden_dim
        self.video_input_proj = nn.Linear(config.video_dim, width)
        self.video_modality_emb = mx.zeros((width,))
        self.audio_input_proj = nn.Linear(config.audio_dim, width)
        self.audio_modality_emb = mx.zeros((width,))
        self.attention_pooler = AttentionPooler(config)
        self.mlp_hidden = nn.Linear(width * config.num_queries, config.mlp_hidden)
        self.mlp_out = nn.Linear(config.mlp_hidden, 1)

    def __call__(self, video: mx.array | None = None, audio: mx.array | None = None) -> mx.array:
        """Connector outputs (B, T, video_dim) and/or (B, T, audio_dim) -> predicted seconds (B,)."""
        groups = []
        if video is not None:
            groups.append(self.video_input_proj(video) + self.video_modality_emb)
        if audio is not None:
            groups.append(self.audio_input_proj(audio) + self.audio_modality_emb)
        if not groups:
            raise ValueError("the duration head needs the video or the audio connector output")
        pooled = self.attention_pooler(mx.concatenate(groups, axis=1))
        hidden = nn.gelu_approx(self.mlp_hidden(pooled.reshape(pooled.shape[0], -1)))
        return mx.exp(self.mlp_out(hidden)[:, 0])


@dataclass(frozen=True)
class DurationChoice:
    """What the head chose: the frame count, the raw prediction and whether the bounds changed it."""

    num_frames: int
    predicted_seconds: float
    clamped: bool


def frame_bounds(fps: float, min_seconds: float = MIN_SECONDS, max_seconds: float = MAX_SECONDS) -> tuple[int, int]:
    """The bounds in frames, checked to hold a valid frame count (call it when validating a request).

    Raises ValueError when no 8k + 1 count lies in them (e.g. [1.0, 1.02] s at 24 fps is [24, 24] frames)."""
    if not (0 < min_seconds <= max_seconds) or fps <= 0:
        raise ValueError(f"duration bounds must satisfy 0 < min <= max and fps > 0, got [{min_seconds}, {max_seconds}]")
    low, high = max(1, round(min_seconds * fps)), round(max_seconds * fps)
    first = (low - 1 + FRAME_GRID - 1) // FRAME_GRID * FRAME_GRID + 1  # the smallest 8k + 1 >= low
    if first > high:
        raise ValueError(
            f"no frame count of the form 8k+1 lies in [{min_seconds}, {max_seconds}] s at {fps} fps "
            f"([{low}, {high}] frames); widen the bounds"
        )
    return low, high


def seconds_to_num_frames(
    seconds: float, fps: float, min_seconds: float = MIN_SECONDS, max_seconds: float = MAX_SECONDS
) -> DurationChoice:
    """ltx-pipelines ``seconds_to_clamped_num_frames``: round to frames, clamp to the bounds, snap down to 8k + 1;
    if that undershoots the minimum, snap up instead (unless that passes the maximum)."""
    low, high = frame_bounds(fps, min_seconds, max_seconds)
    raw = max(low, min(round(seconds * fps), high))
    frames = (raw - 1) // FRAME_GRID * FRAME_GRID + 1
    if frames < low:  # frame_bounds guarantees the next grid point is within the maximum
        frames += FRAME_GRID
    clamped = not (min_seconds <= seconds <= max_seconds)
    if clamped:
        log.warning(
            "predicted duration %.2f s is outside [%.2f, %.2f] s; using %d frames", seconds, min_seconds, max_seconds,
            frames,
        )  # fmt: skip
    return DurationChoice(frames, float(seconds), clamped)


def predict_num_frames(
    head: DurationHead,
    video: mx.array | None,
    audio: mx.array | None,
    fps: float,
    min_seconds: float = MIN_SECONDS,
    max_seconds: float = MAX_SECONDS,
) -> DurationChoice:
    """ltx-pipelines ``DurationPredictor``: one prompt's connector outputs -> the frame count to generate."""
    seconds = head(video, audio)
    if seconds.size != 1:
        raise ValueError("the duration is predicted for one prompt at a time (batch 1)")
    return seconds_to_num_frames(float(seconds.astype(mx.float32).item()), fps, min_seconds, max_seconds)

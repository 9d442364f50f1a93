"""Gemma hidden states -> transformer context: feature extractor and embedding connectors (ltx-core
``EmbeddingsProcessor``).

LTX-2.0 (V1): every Gemma layer normalised over its valid tokens (``8 (x - mean) / range``), all layers
concatenated and projected once (``aggregate_embed``, no bias); the same features feed both connectors.
LTX-2.3 (V2): per-token RMS norm of every layer, rescaled, separate video and audio projections with bias.
Each connector is a small 1-D transformer whose padded positions are replaced by learnable registers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ltx_backend.models.rope import rotary_tables
from ltx_backend.models.transformer import Attention, FeedForward, rms_norm

REGISTERS = 128  # ltx-core's connector builders always use 128 learnable registers
CONNECTOR_EPS = 1e-6
# The V2 (LTX-2.3) config keys and the only values ltx-core accepts for them.
V2_KEYS = {
    "caption_proj_before_connector": True,
    "caption_projection_first_linear": False,
    "caption_proj_input_norm": False,
    "caption_projection_second_linear": False,
}
GEMMA_12B_HIDDEN, GEMMA_12B_LAYERS = 3840, 49  # hidden size; 48 layers + the embedding output


@dataclass(frozen=True)
class ConnectorConfig:
    heads: int
    head_dim: int
    layers: int
    max_pos: tuple[int, ...]
    gated: bool

    @property
    def dim(self) -> int:
        return self.heads * self.head_dim


@dataclass(frozen=True)
class TextProcessorConfig:
    video: ConnectorConfig
    audio: ConnectorConfig
    v2: bool  # LTX-2.3 feature extractor
    gemma_hidden: int
    gemma_layers: int
    video_dim: int  # V2 projection widths (the transformer's stream widths)
    audio_dim: int
    rope_split: bool
    double_precision_rope: bool
    theta: float

    @classmethod
    def from_section(
        cls, cfg: dict, gemma_hidden: int = GEMMA_12B_HIDDEN, gemma_layers: int = GEMMA_12B_LAYERS
    ) -> TextProcessorConfig:
        present = cfg.keys() & V2_KEYS.keys()
        if present and (present != V2_KEYS.keys() or any(cfg[k] != V2_KEYS[k] for k in present)):
            raise ValueError(f"unsupported text-projection config: { ({k: cfg[k] for k in present}) }")
        max_pos = tuple(cfg.get("connector_positional_embedding_max_pos", (1,)))
        gated = cfg.get("connector_apply_gated_attention", False)
        heads, head_dim = cfg.get("connector_num_attention_heads", 30), cfg.get("connector_attention_head_dim", 128)
        layers = cfg.get("connector_num_layers", 2)
        return cls(
            video=ConnectorConfig(heads, head_dim, layers, max_pos, gated),
            audio=ConnectorConfig(
                cfg.get("audio_connector_num_attention_heads", heads),
                cfg.get("audio_connector_attention_head_dim", head_dim),
                cfg.get("audio_connector_num_layers", layers),
                max_pos,
                gated,
            ),
            v2=bool(present),
            gemma_hidden=gemma_hidden,
            gemma_layers=gemma_layers,
            video_dim=cfg.get("num_attention_heads", 32) * cfg.get("attention_head_dim", 128),
            audio_dim=cfg.get("audio_num_attention_heads", 32) * cfg.get("audio_attention_head_dim", 64),
            rope_split=cfg.get("rope_type", "interleaved") == "split",
            double_precision_rope=cfg.get("frequencies_precision", False) == "float64",
            theta=cfg.get("positional_embedding_theta", 10000.0),
        )


class ConnectorBlock(nn.Module):
    def __init__(self, config: ConnectorConfig) -> None:
        super().__init__()
        self.attn1 = Attention(config.dim, None, config.heads, config.head_dim, CONNECTOR_EPS, config.gated)
        self.ff = FeedForward(config.dim)

    def __call__(self, x: mx.array, pe) -> mx.array:
        x = x + self.attn1(rms_norm(x, CONNECTOR_EPS), pe=pe)
        return x + self.ff(rms_norm(x, CONNECTOR_EPS))


class Connector(nn.Module):
    """ltx-core ``Embeddings1DConnector`` (registers always on, so every output token is attended to)."""

    def __init__(self, config: ConnectorConfig, processor: TextProcessorConfig) -> None:
        super().__init__()
        self.config = config
        self.processor = processor
        self.transformer_1d_blocks = [ConnectorBlock(config) for _ in range(config.layers)]
        self.learnable_registers = mx.zeros((REGISTERS, config.dim))

    def __call__(self, features: mx.array, mask: mx.array) -> mx.array:
        """features (1, L, dim), mask (1, L) with 1 for real tokens -> (1, L, dim)."""
        if features.shape[0] != 1:
            raise ValueError("the text connectors take one prompt at a time (register replacement is per prompt)")
        length = features.shape[1]
        if length % REGISTERS:
            raise ValueError(f"the padded prompt length ({length}) must be a multiple of {REGISTERS}")
        valid = np.asarray(mask[0]).astype(bool)
        count = int(valid.sum())
        # Real tokens move to the front in order; the remaining positions take the registers at their index.
        packed = features[:, mx.array(np.flatnonzero(valid))] if count else features[:, :0]
        registers = mx.tile(self.learnable_registers, (length // REGISTERS, 1))[count:]
        x = mx.concatenate([packed, registers[None].astype(features.dtype)], axis=1)
        p = self.processor
        positions = np.arange(length, dtype=np.float32)[None, None]
        pe = rotary_tables(
            positions, self.config.dim, self.config.heads, p.theta, list(self.config.max_pos), False,
            p.rope_split, p.double_precision_rope, features.dtype,
        )  # fmt: skip
        for block in self.transformer_1d_blocks:
            x = block(x, pe)
        return rms_norm(x, CONNECTOR_EPS)


class FeatureExtractor(nn.Module):
    def __init__(self, config: TextProcessorConfig) -> None:
        super().__init__()
        self.config = config
        flat = config.gemma_hidden * config.gemma_layers
        if config.v2:
            self.video_aggregate_embed = nn.Linear(flat, config.video_dim)
            self.audio_aggregate_embed = nn.Linear(flat, config.audio_dim)
        else:
            self.aggregate_embed = nn.Linear(flat, config.gemma_hidden, bias=False)

    def __call__(self, hidden: mx.array, mask: mx.array) -> tuple[mx.array, mx.array]:
        """hidden (B, L, D, layers) stacked Gemma hidden states, mask (B, L) -> (video features, audio features)."""
        b, t, d, layers = hidden.shape
        valid = mask.astype(mx.bool_)[:, :, None, None]
        if self.config.v2:
            normed = hidden * mx.rsqrt(mx.mean(hidden * hidden, axis=2, keepdims=True) + 1e-6)
            normed = mx.where(valid, normed, 0).reshape(b, t, d * layers).astype(hidden.dtype)
            video = self.video_aggregate_embed(normed * math.sqrt(self.config.video_dim / d))
            audio = self.audio_aggregate_embed(normed * math.sqrt(self.config.audio_dim / d))
            return video, audio
        lengths = mask.astype(mx.float32).sum(axis=-1).reshape(b, 1, 1, 1)
        mean = mx.where(valid, hidden, 0).sum(axis=(1, 2), keepdims=True) / (lengths * d + 1e-6)
        low = mx.where(valid, hidden, mx.inf).min(axis=(1, 2), keepdims=True)
        high = mx.where(valid, hidden, -mx.inf).max(axis=(1, 2), keepdims=True)
        normed = 8 * (hidden - mean) / (high - low + 1e-6)
        normed = mx.where(valid, normed, 0).reshape(b, t, d * layers).astype(hidden.dtype)
        features = self.aggregate_embed(normed)
        return features, features


class TextEmbeddingsProcessor(nn.Module):
    """Gemma hidden states -> (video context, audio context, context mask) for the transformer."""

    def __init__(self, config: TextProcessorConfig) -> None:
        super().__init__()
        self.config = config
        self.feature_extractor = FeatureExtractor(config)
        self.video_connector = Connector(config.video, config)
        self.audio_connector = Connector(config.audio, config)

    def __call__(self, hidden: mx.array, mask: mx.array) -> tuple[mx.array, mx.array, mx.array]:
        video, audio = self.feature_extractor(hidden, mask)
        video, audio = self.video_connector(video, mask), self.audio_connector(audio, mask)
        return video, audio, mx.ones(video.shape[:2], dtype=mx.int32)  # registers fill every padded slot


def sanitize_processor_key(key: str) -> str | None:
    """Merged connector/projection key -> processor parameter key; None for anything else (transformer weights)."""
    for stored, ours in (
        ("text_embedding_projection.", "feature_extractor."),
        ("video_embeddings_connector.", "video_connector."),
        ("audio_embeddings_connector.", "audio_connector."),
    ):
        if key.startswith(stored):
            key = ours + key[len(stored) :]
            key = key.replace(".to_out.0.", ".to_out.").replace(".net.0.proj.", ".proj_in.")
            return key.replace(".net.2.", ".proj_out.")
    return None

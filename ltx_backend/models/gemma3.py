"""Gemma 3 text decoder (the LTX-2 text encoder and prompt enhancer), as Hugging Face transformers computes it.

Interleaved sliding-window (local RoPE base) and global (long RoPE base with linear scaling) attention layers,
grouped-query attention with q/k RMS norms, query scaling by ``query_pre_attn_scalar``, RMS norms with the
``1 + weight`` offset, tanh-GELU gated MLP, and embeddings scaled by sqrt(hidden) in the weights' dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn


@dataclass(frozen=True)
class Gemma3Config:
    vocab_size: int = 262208
    hidden_size: int = 3840
    intermediate_size: int = 15360
    num_hidden_layers: int = 48
    num_attention_heads: int = 16
    num_key_value_heads: int = 8
    head_dim: int = 256
    query_pre_attn_scalar: float = 256
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    rope_local_base_freq: float = 10_000.0
    rope_scaling_factor: float = 8.0  # linear scaling of the global layers' positions
    sliding_window: int = 1024
    sliding_window_pattern: int = 6
    layer_types: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, config: dict) -> Gemma3Config:
        """From a repo's config.json: the ``text_config`` of a multimodal Gemma 3, or a flat text config.

        Missing keys take transformers' ``Gemma3TextConfig`` defaults (repos leave some out); RoPE settings are
        read in both spellings: ``rope_theta``/``rope_local_base_freq``/``rope_scaling`` (transformers 4) and
        ``rope_parameters`` per layer type (transformers 5).
        """
        text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
        model_type = text.get("model_type", config.get("model_type"))
        if model_type not in ("gemma3", "gemma3_text"):
            raise ValueError(f"model_type is {model_type!r}, not a Gemma 3 text model (gemma3 / gemma3_text)")
        params = text.get("rope_parameters") or {}
        full, local = params.get("full_attention", params), params.get("sliding_attention", {})
        scaling = text.get("rope_scaling") or (full if full.get("rope_type", "default") != "default" else {})
        if scaling and scaling.get("rope_type", scaling.get("type")) not in ("linear", "default"):
            raise ValueError(f"unsupported Gemma 3 rope scaling {scaling}")
        layers = text.get("num_hidden_layers", 26)
        pattern = text.get("sliding_window_pattern", 6)
        types = text.get("layer_types") or [
            "full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(layers)
        ]
        for key in ("attn_logit_softcapping", "final_logit_softcapping"):
            if text.get(key) is not None:
                raise ValueError(f"{key} is set; Gemma 3 checkpoints do not use it")
        return cls(
            vocab_size=text.get("vocab_size", 262208),
            hidden_size=text.get("hidden_size", 2304),
            intermediate_size=text.get("intermediate_size", 9216),
            num_hidden_layers=layers,
            num_attention_heads=text.get("num_attention_heads", 8),
            num_key_value_heads=text.get("num_key_value_heads", 4),
            head_dim=text.get("head_dim", 256),
            query_pre_attn_scalar=text.get("query_pre_attn_scalar", 256),
            rms_norm_eps=text.get("rms_norm_eps", 1e-6),
            rope_theta=text.get("rope_theta", full.get("rope_theta", 1_000_000.0)),
            rope_local_base_freq=text.get("rope_local_base_freq", local.get("rope_theta", 10_000.0)),
            rope_scaling_factor=float(scaling.get("factor", 1.0)) if scaling else 1.0,
            sliding_window=text.get("sliding_window", 4096),
            sliding_window_pattern=pattern,
            layer_types=tuple(types),
        )


class RMSNorm(nn.Module):
    """Gemma's RMS norm: the learned scale is stored as an offset from one."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = mx.zeros((dim,))
        self.eps = eps

    def __call__(self, x: mx.array) -> mx.array:
        return mx.fast.rms_norm(x, 1.0 + self.weight, self.eps)


def causal_masks(attention_mask: mx.array, sliding_window: int, dtype: mx.Dtype) -> tuple[mx.array, mx.array]:
    """Additive (B, 1, T, T) masks, full and sliding-window (key j visible to query i iff 0 <= i - j < window):
    causal, padded keys masked (as HF's eager path: a finite minimum, so a padded query that sees no key
    averages all of them instead of producing NaN)."""
    t = attention_mask.shape[-1]
    query, key = mx.arange(t)[:, None], mx.arange(t)[None, :]
    allowed = (key <= query)[None, None] & (attention_mask[:, None, None, :] > 0)
    sliding = allowed & ((query - key) < sliding_window)[None, None]
    low = mx.array(mx.finfo(dtype).min, dtype=dtype)
    zero = mx.array(0, dtype=dtype)
    return mx.where(allowed, zero, low), mx.where(sliding, zero, low)


class KVCache:
    """Keys and values of the tokens seen so far (prompt enhancement decodes one token at a time)."""

    def __init__(self) -> None:
        self.keys: mx.array | None = None
        self.values: mx.array | None = None

    @property
    def offset(self) -> int:
        return 0 if self.keys is None else self.keys.shape[2]

    def update(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        if self.keys is not None:
            keys = mx.concatenate([self.keys, keys], axis=2)
            values = mx.concatenate([self.values, values], axis=2)
        self.keys, self.values = keys, values
        return keys, values


class Attention(nn.Module):
    def __init__(self, config: Gemma3Config, sliding: bool) -> None:
        super().__init__()
        c = config
        self.heads, self.kv_heads, self.head_dim = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        self.scale = c.query_pre_attn_scalar**-0.5
        self.q_proj = nn.Linear(c.hidden_size, c.num_attention_heads * c.head_dim, bias=False)
        self.k_proj = nn.Linear(c.hidden_size, c.num_key_value_heads * c.head_dim, bias=False)
        self.v_proj = nn.Linear(c.hidden_size, c.num_key_value_heads * c.head_dim, bias=False)
        self.o_proj = nn.Linear(c.num_attention_heads * c.head_dim, c.hidden_size, bias=False)
        self.q_norm = RMSNorm(c.head_dim, c.rms_norm_eps)
        self.k_norm = RMSNorm(c.head_dim, c.rms_norm_eps)
        self.rope_base = c.rope_local_base_freq if sliding else c.rope_theta
        self.rope_scale = 1.0 if sliding else 1.0 / c.rope_scaling_factor

    def __call__(self, x: mx.array, mask: mx.array | None, cache: KVCache | None = None, offset: int = 0) -> mx.array:
        b, t, _ = x.shape
        q = self.q_norm(self.q_proj(x).reshape(b, t, self.heads, self.head_dim)).transpose(0, 2, 1, 3)
        k = self.k_norm(self.k_proj(x).reshape(b, t, self.kv_heads, self.head_dim)).transpose(0, 2, 1, 3)
        v = self.v_proj(x).reshape(b, t, self.kv_heads, self.head_dim).transpose(0, 2, 1, 3)
        offset = cache.offset if cache is not None else offset
        rope = {"traditional": False, "base": self.rope_base, "scale": self.rope_scale, "offset": offset}
        q = mx.fast.rope(q, self.head_dim, **rope)
        k = mx.fast.rope(k, self.head_dim, **rope)
        if cache is not None:
            k, v = cache.update(k, v)
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale, mask=mask)
        return self.o_proj(out.transpose(0, 2, 1, 3).reshape(b, t, -1))


class MLP(nn.Module):
    def __init__(self, config: Gemma3Config) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def __call__(self, x: mx.array) -> mx.array:
        return self.down_proj(nn.gelu_approx(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, config: Gemma3Config, sliding: bool) -> None:
        super().__init__()
        eps = config.rms_norm_eps
        self.sliding = sliding
        self.self_attn = Attention(config, sliding)
        self.mlp = MLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps)
        self.pre_feedforward_layernorm = RMSNorm(config.hidden_size, eps)
        self.post_feedforward_layernorm = RMSNorm(config.hidden_size, eps)

    def __call__(self, x: mx.array, mask: mx.array | None, cache: KVCache | None = None, offset: int = 0) -> mx.array:
        x = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), mask, cache, offset))
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))


class Gemma3TextModel(nn.Module):
    """The language model of Gemma 3 (parameter names as in the checkpoints, under ``language_model.model.``)."""

    def __init__(self, config: Gemma3Config) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = [DecoderLayer(config, kind == "sliding_attention") for kind in config.layer_types]
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def embed(self, input_ids: mx.array) -> mx.array:
        h = self.embed_tokens(input_ids)
        return h * mx.array(math.sqrt(self.config.hidden_size), dtype=h.dtype)  # the scale is rounded to the dtype

    def masks(self, attention_mask: mx.array, dtype: mx.Dtype) -> tuple[mx.array, mx.array]:
        return causal_masks(attention_mask, self.config.sliding_window, dtype)

    def hidden_states(
        self,
        input_ids: mx.array,
        attention_mask: mx.array,
        eval_each_layer: bool = True,
        after_layer: Callable[[], None] | None = None,
        offset: int = 0,
    ) -> list:
        """Every hidden state HF's ``output_hidden_states`` returns: the scaled embeddings, the output of each layer
        but the last, and the final-normed output of the last layer (``num_hidden_layers + 1`` arrays).

        `after_layer` runs after each evaluated layer (a cancel check: it may raise to stop the encoding). `offset` is
        the position of the first token (RoPE), for a sequence cut from a longer one."""
        h = self.embed(input_ids)
        full, sliding = self.masks(attention_mask, h.dtype)
        states = [h]
        for index, layer in enumerate(self.layers):
            h = layer(h, sliding if layer.sliding else full, offset=offset)
            if eval_each_layer:
                mx.eval(h)  # bounds the graph (and a GPU command buffer) to one layer
                if after_layer is not None:
                    after_layer()
            states.append(self.norm(h) if index == len(self.layers) - 1 else h)
        return states

    def logits(self, input_ids: mx.array, caches: list[KVCache]) -> mx.array:
        """Next-token logits with KV caches (prompt enhancement). No padding: the prompt is one sequence."""
        h = self.embed(input_ids)
        t, offset = h.shape[1], caches[0].offset
        query = mx.arange(offset, offset + t)[:, None]
        key = mx.arange(offset + t)[None, :]
        low = mx.array(mx.finfo(h.dtype).min, dtype=h.dtype)
        zero = mx.array(0, dtype=h.dtype)
        full = mx.where(key <= query, zero, low)
        sliding = mx.where((key <= query) & ((query - key) < self.config.sliding_window), zero, low)
        for layer, cache in zip(self.layers, caches, strict=True):
            h = layer(h, sliding if layer.sliding else full, cache)
        return self.embed_tokens.as_linear(self.norm(h[:, -1:]))[:, 0]


def sanitize_gemma_key(key: str) -> str | None:
    """Checkpoint key -> language-model parameter key; None for the vision tower, projector and tied lm_head."""
    for prefix in ("language_model.model.", "model.language_model.", "language_model.", "model."):
        if key.startswith(prefix):
            key = key[len(prefix) :]
            break
    else:
        return None
    if key.startswith(("vision_tower.", "multi_modal_projector.", "lm_head.")):
        return None
    return key

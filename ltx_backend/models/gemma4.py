"""Gemma 4 "unified" text decoder (the LTX-2.5 text encoder), as Hugging Face transformers' ``gemma4_unified``
computes it for text.

Differences from Gemma 3 (models/gemma3.py), all from transformers' ``modeling_gemma4_unified``:
- RMS norms multiply by the raw weight (not ``1 + weight``); values get a weightless per-head RMS norm.
- Attention scores are not scaled (scale 1.0); q/k norms carry that job.
- Full-attention layers are 512-wide multi-query layers whose values are the key projection itself
  (``attention_k_eq_v``): V = v_norm(k_proj(x)), K = rope(k_norm(k_proj(x))).
- RoPE per layer type: sliding layers rotate every rotate-half pair with base 1e4; full layers use the
  "proportional" table, the first ``partial_rotary_factor * head_dim / 2`` frequencies of base 1e6 over the full
  head dim followed by zeros, so only the pairs (i, i + head_dim/2) with i < that count rotate.
- Every layer ends by multiplying its output by a stored scalar (``layer_scalar``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from ltx_backend.models.gemma3 import MLP, causal_masks

SLIDING, FULL = "sliding_attention", "full_attention"


@dataclass(frozen=True)
class RopeParams:
    theta: float
    kind: str = "default"  # "default" or "proportional"
    partial_rotary_factor: float = 1.0
    factor: float = 1.0

    @classmethod
    def from_dict(cls, params: dict) -> RopeParams:
        kind = params.get("rope_type", params.get("type", "default"))
        if kind not in ("default", "proportional"):
            raise ValueError(f"unsupported Gemma 4 rope_type {kind!r}")
        return cls(
            theta=float(params["rope_theta"]),
            kind=kind,
            partial_rotary_factor=float(params.get("partial_rotary_factor", 1.0)),
            factor=float(params.get("factor", 1.0)),
        )

    def inv_freq(self, head_dim: int) -> mx.array:
        """transformers' default / proportional tables: head_dim/2 inverse frequencies (zeros do not rotate)."""
        rotated = head_dim // 2 if self.kind == "default" else int(self.partial_rotary_factor * head_dim // 2)
        exponents = mx.arange(0, 2 * rotated, 2).astype(mx.float32) / head_dim
        inv = 1.0 / (mx.array(self.theta, dtype=mx.float32) ** exponents)
        inv = mx.concatenate([inv, mx.zeros((head_dim // 2 - rotated,), dtype=mx.float32)])
        return inv / self.factor


@dataclass(frozen=True)
class Gemma4Config:
    vocab_size: int = 262144
    hidden_size: int = 3840
    intermediate_size: int = 15360
    num_hidden_layers: int = 48
    num_attention_heads: int = 16
    num_key_value_heads: int = 8
    head_dim: int = 256
    global_head_dim: int = 512
    num_global_key_value_heads: int = 1
    attention_k_eq_v: bool = True
    rms_norm_eps: float = 1e-6
    sliding_window: int = 1024
    layer_types: tuple[str, ...] = tuple(([SLIDING] * 5 + [FULL]) * 8)
    sliding_rope: RopeParams = RopeParams(10_000.0)
    full_rope: RopeParams = RopeParams(1_000_000.0, "proportional", 0.25)
    bos_token_id: int = 2
    pad_token_id: int = 0

    @classmethod
    def from_dict(cls, config: dict) -> Gemma4Config:
        """From the ``gemma_config`` metadata / config.json of a Gemma 4 unified checkpoint (its ``text_config``)
        or a flat text config. Missing keys take transformers' ``Gemma4UnifiedTextConfig`` defaults."""
        text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
        model_type = text.get("model_type", config.get("model_type"))
        if model_type not in ("gemma4_unified", "gemma4_unified_text", "gemma4", "gemma4_text"):
            raise ValueError(f"model_type is {model_type!r}, not a Gemma 4 text model (gemma4_unified)")
        if text.get("num_kv_shared_layers", 0):
            raise ValueError("num_kv_shared_layers > 0 (KV-shared layers) is not used by the LTX-2.5 text encoder")
        if text.get("attention_bias", False):
            raise ValueError("attention_bias is set; the Gemma 4 text encoder has no attention biases")
        activation = text.get("hidden_activation", "gelu_pytorch_tanh")
        if activation != "gelu_pytorch_tanh":
            raise ValueError(f"hidden_activation {activation!r} is not supported (gelu_pytorch_tanh)")
        if text.get("use_bidirectional_attention") == "all":
            raise ValueError("use_bidirectional_attention 'all' is not supported (text is causal)")
        layers = text.get("num_hidden_layers", 30)
        types = list(text.get("layer_types") or [FULL if (i + 1) % 6 == 0 else SLIDING for i in range(layers)])
        if types:
            types[-1] = FULL  # transformers forces the last layer to full attention
        types = tuple(types)
        if len(types) != layers or set(types) - {SLIDING, FULL}:
            raise ValueError(f"layer_types {list(types)} do not describe {layers} sliding/full layers")
        rope = text.get("rope_parameters") or {}
        k_eq_v = bool(text.get("attention_k_eq_v", False))
        kv_heads = text.get("num_key_value_heads", 4)
        global_dim, global_kv = text.get("global_head_dim", 512), text.get("num_global_key_value_heads")
        if text.get("per_layer_config"):  # how transformers saves global_head_dim / num_global_key_value_heads
            global_dim, global_kv = _full_layer_overrides(text["per_layer_config"], types, global_dim, global_kv)
        return cls(
            vocab_size=text.get("vocab_size", 262144),
            hidden_size=text.get("hidden_size", 2304),
            intermediate_size=text.get("intermediate_size", 9216),
            num_hidden_layers=layers,
            num_attention_heads=text.get("num_attention_heads", 8),
            num_key_value_heads=kv_heads,
            head_dim=text.get("head_dim", 256),
            global_head_dim=global_dim,
            # transformers overrides the full layers' KV heads only with attention_k_eq_v and a value given
            num_global_key_value_heads=global_kv if (k_eq_v and global_kv is not None) else kv_heads,
            attention_k_eq_v=k_eq_v,
            rms_norm_eps=text.get("rms_norm_eps", 1e-6),
            sliding_window=text.get("sliding_window", 1024),
            layer_types=types,
            sliding_rope=RopeParams.from_dict(rope.get(SLIDING, {"rope_theta": 10_000.0})),
            full_rope=RopeParams.from_dict(
                rope.get(FULL, {"rope_type": "proportional", "rope_theta": 1_000_000.0, "partial_rotary_factor": 0.25})
            ),
            bos_token_id=text.get("bos_token_id", 2),
            pad_token_id=text.get("pad_token_id", 0),
        )


def _full_layer_overrides(
    per_layer: dict, types: tuple[str, ...], head_dim: int, kv_heads: int | None
) -> tuple[int, int | None]:
    """The (head_dim, KV heads) of the full layers from transformers' ``per_layer_config``; only the full layers
    may differ from the shared values, all in the same way."""
    found = set()
    for index, kind in enumerate(types):
        override = per_layer.get(str(index), per_layer.get(index))
        if kind == SLIDING and override:
            raise ValueError(f"per_layer_config overrides sliding layer {index}; only full layers may differ")
        if kind == FULL:
            override = override or {}
            found.add((override.get("head_dim", head_dim), override.get("num_key_value_heads", kv_heads)))
    if len(found) > 1:
        raise ValueError(f"the full layers differ in per_layer_config: {sorted(found, key=str)}")
    return next(iter(found), (head_dim, kv_heads))


def rms_norm(x: mx.array, weight: mx.array | None, eps: float) -> mx.array:
    """``x * (mean(x^2) + eps)^-0.5 * weight`` in float32, back in x's dtype (Gemma 4: the raw weight)."""
    normed = mx.fast.rms_norm(x.astype(mx.float32), None, eps)
    if weight is not None:
        normed = normed * weight.astype(mx.float32)
    return normed.astype(x.dtype)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = mx.ones((dim,))
        self.eps = eps

    def __call__(self, x: mx.array) -> mx.array:
        return rms_norm(x, self.weight, self.eps)


def rotate_half(x: mx.array, cos: mx.array, sin: mx.array) -> mx.array:
    """transformers' ``apply_rotary_pos_emb``: pairs (i, i + D/2); cos/sin are (T, D) in x's dtype."""
    half = x.shape[-1] // 2
    rotated = mx.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def rope_tables(inv_freq: mx.array, length: int, dtype: mx.Dtype) -> tuple[mx.array, mx.array]:
    """cos/sin of ``positions x inv_freq`` over the full head dim (the table repeated), float32 then cast."""
    angles = mx.arange(length, dtype=mx.float32)[:, None] * inv_freq[None, :]
    angles = mx.concatenate([angles, angles], axis=-1)
    return mx.cos(angles).astype(dtype), mx.sin(angles).astype(dtype)


class Attention(nn.Module):
    def __init__(self, config: Gemma4Config, sliding: bool) -> None:
        super().__init__()
        c = config
        self.sliding = sliding
        self.values_from_keys = c.attention_k_eq_v and not sliding
        self.heads = c.num_attention_heads
        self.head_dim = c.head_dim if sliding else c.global_head_dim
        self.kv_heads = c.num_key_value_heads if sliding else c.num_global_key_value_heads
        self.eps = c.rms_norm_eps
        self.q_proj = nn.Linear(c.hidden_size, self.heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(c.hidden_size, self.kv_heads * self.head_dim, bias=False)
        if not self.values_from_keys:
            self.v_proj = nn.Linear(c.hidden_size, self.kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.heads * self.head_dim, c.hidden_size, bias=False)
        self.q_norm = RMSNorm(self.head_dim, c.rms_norm_eps)
        self.k_norm = RMSNorm(self.head_dim, c.rms_norm_eps)

    def __call__(self, x: mx.array, mask: mx.array | None, rope: tuple[mx.array, mx.array]) -> mx.array:
        b, t, _ = x.shape
        cos, sin = rope[0][:, None], rope[1][:, None]  # (T, 1, D): broadcast over the heads
        q = rotate_half(self.q_norm(self.q_proj(x).reshape(b, t, self.heads, self.head_dim)), cos, sin)
        keys = self.k_proj(x).reshape(b, t, self.kv_heads, self.head_dim)
        values = keys if self.values_from_keys else self.v_proj(x).reshape(b, t, self.kv_heads, self.head_dim)
        k = rotate_half(self.k_norm(keys), cos, sin)
        v = rms_norm(values, None, self.eps)
        q, k, v = (a.transpose(0, 2, 1, 3) for a in (q, k, v))
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=1.0, mask=mask)
        return self.o_proj(out.transpose(0, 2, 1, 3).reshape(b, t, -1))


class DecoderLayer(nn.Module):
    def __init__(self, config: Gemma4Config, sliding: bool) -> None:
        super().__init__()
        eps = config.rms_norm_eps
        self.sliding = sliding
        self.self_attn = Attention(config, sliding)
        self.mlp = MLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps)
        self.pre_feedforward_layernorm = RMSNorm(config.hidden_size, eps)
        self.post_feedforward_layernorm = RMSNorm(config.hidden_size, eps)
        self.layer_scalar = mx.ones((1,))

    def __call__(self, x: mx.array, mask: mx.array | None, rope: tuple[mx.array, mx.array]) -> mx.array:
        x = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), mask, rope))
        x = x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))
        return x * self.layer_scalar.astype(x.dtype)


class Gemma4TextModel(nn.Module):
    """The language model of Gemma 4 unified (parameter names as transformers' ``language_model`` has them)."""

    def __init__(self, config: Gemma4Config) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = [DecoderLayer(config, kind == SLIDING) for kind in config.layer_types]
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def embed(self, input_ids: mx.array) -> mx.array:
        h = self.embed_tokens(input_ids)
        return h * mx.array(math.sqrt(self.config.hidden_size), dtype=h.dtype)  # the scale is rounded to the dtype

    def rope(self, length: int, dtype: mx.Dtype) -> dict[bool, tuple[mx.array, mx.array]]:
        """cos/sin tables keyed by ``sliding``; positions are arange(length), not shifted for left padding."""
        c = self.config
        return {
            True: rope_tables(c.sliding_rope.inv_freq(c.head_dim), length, dtype),
            False: rope_tables(c.full_rope.inv_freq(c.global_head_dim), length, dtype),
        }

    def hidden_states(
        self,
        input_ids: mx.array,
        attention_mask: mx.array,
        eval_each_layer: bool = True,
        after_layer: Callable[[], None] | None = None,
    ) -> list:
        """What transformers' ``output_hidden_states`` returns: the scaled embeddings, the output of each layer but
        the last, and the final-normed output of the last layer (``num_hidden_layers + 1`` arrays). `after_layer`
        runs after each evaluated layer (a cancel check)."""
        h = self.embed(input_ids)
        full, sliding = causal_masks(attention_mask, self.config.sliding_window, h.dtype)
        rope = self.rope(h.shape[1], h.dtype)
        states = [h]
        for index, layer in enumerate(self.layers):
            h = layer(h, sliding if layer.sliding else full, rope[layer.sliding])
            if eval_each_layer:
                mx.eval(h)  # bounds the graph (and a GPU command buffer) to one layer
                if after_layer is not None:
                    after_layer()
            states.append(self.norm(h) if index == len(self.layers) - 1 else h)
        return states


# Checkpoint prefixes of the language model: Comfy-flat (the official LTX-2.5 file), transformers' module names,
# mlx-vlm conversions. Everything else in such files (vision/audio embedders, projectors, the LTX text projection,
# tokenizer blobs, lm_head) is not part of the language model.
LM_PREFIXES = ("model.language_model.", "language_model.model.", "language_model.", "model.")
NOT_LM = (
    "vision_", "embed_vision.", "embed_audio.", "audio_", "multi_modal_projector.", "lm_head.",
)  # fmt: skip


def sanitize_gemma4_key(key: str) -> str | None:
    """Checkpoint key -> language-model parameter key; None for anything that is not the language model."""
    for prefix in LM_PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix) :]
            break
    else:
        return None
    if key.startswith(NOT_LM):
        return None
    return key

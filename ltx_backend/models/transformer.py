"""The LTX-2 / LTX-2.3 audio-video diffusion transformer, as ltx-core's ``LTXModel``.

Two streams (video and audio) share a stack of blocks. Per block and stream: AdaLN-modulated self-attention
with RoPE, text cross-attention (LTX-2.3: AdaLN-modulated on both the query and the prompt side), audio<->video
cross-attention on temporal positions, and an AdaLN-modulated feed-forward. LTX-2.3 adds per-head gates on
every attention. LTX-2.5 drops the video feed-forward biases and adds a learned embedding on the tokens of the first
latent frame (the keyframe marker). The variant is chosen by the checkpoint's config, never by its name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ltx_backend.models.rope import RotaryTables, apply_rotary, rotary_tables
from ltx_backend.models.timestep import TimestepEmbedder

Stack = Callable[[list[mx.array]], mx.array]  # arrays joined along their first axis

BASE_ADALN_PARAMS = 6  # shift/scale/gate for self-attention and feed-forward
CROSS_ADALN_PARAMS = 3  # shift/scale/gate of the text cross-attention query (LTX-2.3)
AV_SCALE_SHIFT_PARAMS = 4  # scale/shift for audio->video and video->audio cross-attention


@dataclass(frozen=True)
class TransformerConfig:
    """The ``transformer`` config section (ltx-core ``LTXModelConfigurator``), with its defaults."""

    num_attention_heads: int = 32
    attention_head_dim: int = 128
    in_channels: int = 128
    out_channels: int = 128
    num_layers: int = 48
    cross_attention_dim: int = 4096
    norm_eps: float = 1e-6
    positional_embedding_theta: float = 10000.0
    positional_embedding_max_pos: tuple[int, ...] = (20, 2048, 2048)
    timestep_scale_multiplier: float = 1000.0
    use_middle_indices_grid: bool = True
    audio_num_attention_heads: int = 32
    audio_attention_head_dim: int = 64
    audio_in_channels: int = 128
    audio_out_channels: int = 128
    audio_cross_attention_dim: int = 2048
    audio_positional_embedding_max_pos: tuple[int, ...] = (20,)
    av_ca_timestep_scale_multiplier: float = 1.0
    rope_split: bool = False
    double_precision_rope: bool = False
    apply_gated_attention: bool = False
    cross_attention_adaln: bool = False
    caption_channels: int | None = 3840  # None: the text projection happens before the connectors (LTX-2.3)
    ff_bias: bool = True  # LTX-2.5: false, the video feed-forward has no biases
    audio_ff_bias: bool = True
    use_keyframes_abs_pos_embedding: bool = False  # LTX-2.5: the learned first-frame / keyframe-slot marker
    use_prompt_adaln_single: bool = True  # false: the text K/V modulation is the static prompt table alone
    extra: dict = field(default_factory=dict, compare=False)

    @classmethod
    def from_section(cls, cfg: dict) -> TransformerConfig:
        rope = cfg.get("rope_type", "interleaved")
        if rope not in ("interleaved", "split"):
            raise ValueError(f"unknown rope_type {rope!r}")
        caption_in_transformer = not cfg.get("caption_proj_before_connector", False)
        return cls(
            num_attention_heads=cfg.get("num_attention_heads", 32),
            attention_head_dim=cfg.get("attention_head_dim", 128),
            in_channels=cfg.get("in_channels", 128),
            out_channels=cfg.get("out_channels", 128),
            num_layers=cfg.get("num_layers", 48),
            cross_attention_dim=cfg.get("cross_attention_dim", 4096),
            norm_eps=cfg.get("norm_eps", 1e-6),
            positional_embedding_theta=cfg.get("positional_embedding_theta", 10000.0),
            positional_embedding_max_pos=tuple(cfg.get("positional_embedding_max_pos", (20, 2048, 2048))),
            timestep_scale_multiplier=cfg.get("timestep_scale_multiplier", 1000),
            use_middle_indices_grid=cfg.get("use_middle_indices_grid", True),
            audio_num_attention_heads=cfg.get("audio_num_attention_heads", 32),
            audio_attention_head_dim=cfg.get("audio_attention_head_dim", 64),
            audio_in_channels=cfg.get("audio_in_channels", 128),
            audio_out_channels=cfg.get("audio_out_channels", 128),
            audio_cross_attention_dim=cfg.get("audio_cross_attention_dim", 2048),
            audio_positional_embedding_max_pos=tuple(cfg.get("audio_positional_embedding_max_pos", (20,))),
            av_ca_timestep_scale_multiplier=cfg.get("av_ca_timestep_scale_multiplier", 1),
            rope_split=rope == "split",
            double_precision_rope=cfg.get("frequencies_precision", False) == "float64",
            apply_gated_attention=cfg.get("apply_gated_attention", False),
            cross_attention_adaln=cfg.get("cross_attention_adaln", False),
            caption_channels=cfg.get("caption_channels", 3840) if caption_in_transformer else None,
            ff_bias=cfg.get("ff_bias", True),
            audio_ff_bias=cfg.get("audio_ff_bias", True),
            use_keyframes_abs_pos_embedding=cfg.get("use_keyframes_abs_pos_embedding", False),
            use_prompt_adaln_single=cfg.get("use_prompt_adaln_single", True),
        )

    @property
    def video_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def audio_dim(self) -> int:
        return self.audio_num_attention_heads * self.audio_attention_head_dim

    @property
    def adaln_params(self) -> int:
        return BASE_ADALN_PARAMS + (CROSS_ADALN_PARAMS if self.cross_attention_adaln else 0)


def rms_norm(x: mx.array, eps: float) -> mx.array:
    return mx.fast.rms_norm(x, None, eps)


def gelu_tanh(x: mx.array) -> mx.array:
    """tanh-approximated GELU computed in float32 and rounded once, as PyTorch computes it for bf16 inputs.

    Compiled, it is also faster than ``nn.gelu_approx`` in bf16 (H200, 6144 x 16384: 0.23 ms against 0.55 ms).
    """
    f = x.astype(mx.float32)
    return (0.5 * f * (1.0 + mx.tanh(0.7978845608028654 * (f + 0.044715 * f * f * f)))).astype(x.dtype)


class Attention(nn.Module):
    """Multi-head attention with q/k RMS norm, optional RoPE and optional per-head gates (2 * sigmoid)."""

    def __init__(
        self, query_dim: int, context_dim: int | None, heads: int, dim_head: int, eps: float, gated: bool
    ) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dim_head = heads, dim_head
        self.self_attention = context_dim is None
        self.q_norm = nn.RMSNorm(inner, eps=eps)
        self.k_norm = nn.RMSNorm(inner, eps=eps)
        self.to_q = nn.Linear(query_dim, inner)
        self.to_k = nn.Linear(context_dim or query_dim, inner)
        self.to_v = nn.Linear(context_dim or query_dim, inner)
        if gated:
            self.to_gate_logits = nn.Linear(query_dim, heads)
        self.to_out = nn.Linear(inner, query_dim)

    def fuse_projections(self, stack: Stack = mx.concatenate) -> None:
        """One matrix product for k and v, and for q too in self-attention: the same outputs from fewer, larger
        products (H100, 6144 tokens: three 4096->4096 products 1.40 ms, one 4096->12288 product 1.01 ms).
        `stack` joins the weights along their first axis (the loader passes one that stacks where it reads)."""
        if "to_qkv" in self or "to_kv" in self:
            return
        names = ("to_q", "to_k", "to_v") if self.self_attention else ("to_k", "to_v")
        if not _same_kind(*(self[name] for name in names)):  # mixed precision: q may differ from k/v
            names = ("to_k", "to_v")
            if not _same_kind(self.to_k, self.to_v):
                return
        fused_name = "to_qkv" if len(names) == 3 else "to_kv"
        layers = [self.pop(name) for name in names]
        fused = layers[0]  # a Linear or QuantizedLinear: every array of either is stacked along the output axis
        # Lazy: each block's stacking runs with its first forward pass, and the separate weights are freed then.
        fused.update({key: stack([layer[key] for layer in layers]) for key in fused if key in layers[1]})
        setattr(self, fused_name, fused)

    def _project(self, x: mx.array, context: mx.array | None) -> tuple[mx.array, mx.array, mx.array]:
        if "to_qkv" in self:
            return tuple(mx.split(self.to_qkv(x), 3, axis=-1))
        context = x if context is None else context
        if "to_kv" in self:
            return (self.to_q(x), *mx.split(self.to_kv(context), 2, axis=-1))
        return self.to_q(x), self.to_k(context), self.to_v(context)

    def __call__(
        self,
        x: mx.array,
        context: mx.array | None = None,
        mask: mx.array | None = None,
        pe: RotaryTables | None = None,
        k_pe: RotaryTables | None = None,
        values_only: bool = False,
    ) -> mx.array:
        """`values_only`: skip the attention and pass the value projection through (STG's perturbation)."""
        q, k, v = self._project(x, context)
        b, t = x.shape[:2]
        if values_only:
            out = v.reshape(b, t, self.heads, self.dim_head)
        else:
            q, k = self.q_norm(q), self.k_norm(k)
            if pe is not None:
                q, k = apply_rotary(q, pe), apply_rotary(k, pe if k_pe is None else k_pe)
            q, k, v = (a.reshape(b, -1, self.heads, self.dim_head).transpose(0, 2, 1, 3) for a in (q, k, v))
            out = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.dim_head**-0.5, mask=mask)
            out = out.transpose(0, 2, 1, 3)  # (B, T, H, D)
        if "to_gate_logits" in self:
            # The head axis is added before the sigmoid, so the gate compiles into the multiply (a view between
            # them would leave the gate a kernel of its own).
            out = out * (2.0 * mx.sigmoid(self.to_gate_logits(x)[..., None]))
        return self.to_out(out.reshape(b, t, -1))


def _same_kind(*layers: nn.Module) -> bool:
    """Layers whose arrays can be stacked into one product: the same class, bits and group size."""
    kinds = {(type(layer), getattr(layer, "bits", None), getattr(layer, "group_size", None)) for layer in layers}
    return len(kinds) == 1


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4, bias: bool = True) -> None:
        super().__init__()
        self.proj_in = nn.Linear(dim, dim * mult, bias=bias)
        self.proj_out = nn.Linear(dim * mult, dim, bias=bias)

    def __call__(self, x: mx.array) -> mx.array:
        return self.proj_out(gelu_tanh(self.proj_in(x)))


class AdaLayerNormSingle(nn.Module):
    """Timestep -> (coefficient * dim modulation values, the embedded timestep)."""

    def __init__(self, dim: int, coefficient: int) -> None:
        super().__init__()
        self.emb = TimestepEmbedder(dim)
        self.linear = nn.Linear(dim, coefficient * dim)

    def __call__(self, timestep: mx.array, dtype: mx.Dtype) -> tuple[mx.array, mx.array]:
        embedded = self.emb(timestep.reshape(-1), dtype)
        return self.linear(nn.silu(embedded)), embedded


class CaptionProjection(nn.Module):
    """LTX-2.0's projection of the connector output to the stream width: linear, tanh-GELU, linear."""

    def __init__(self, in_features: int, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_features, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def __call__(self, x: mx.array) -> mx.array:
        return self.linear_2(gelu_tanh(self.linear_1(x)))


@dataclass(frozen=True)
class Perturbations:
    """Guidance perturbations (ltx-core ``PerturbationType``) of one forward pass."""

    skip_video_self_attention: frozenset[int] = frozenset()  # STG: these blocks pass values through
    skip_audio_self_attention: frozenset[int] = frozenset()
    skip_cross_modal: bool = False  # modality guidance: no audio<->video attention at all


NO_PERTURBATION = Perturbations()


def _ada(table: mx.array, values: mx.array, rows: slice) -> list[mx.array]:
    """table[rows] + the per-token modulation values for those rows: one (B, T, dim) array per row.

    Row by row, so each sum is an elementwise op on slices and compiles into the kernel that uses it (a sum over
    the picked rows, sliced afterwards, would be a kernel of its own: full-size with per-token timesteps)."""
    b, t, _ = values.shape
    count, dim = table.shape
    per_row = values.reshape(b, t, count, dim)
    return [table[i : i + 1] + per_row[:, :, i] for i in range(count)[rows]]


@dataclass
class StreamState:
    """One stream's tensors for a forward pass (ltx-core ``TransformerArgs``)."""

    x: mx.array
    context: mx.array
    context_mask: mx.array | None  # boolean (B, 1, 1, L), True = attend
    timesteps: mx.array  # (B, T or 1, coefficient * dim) modulation values
    embedded_timestep: mx.array
    pe: RotaryTables
    cross_pe: RotaryTables | None
    cross_scale_shift: mx.array | None
    cross_gate: mx.array | None
    prompt_timestep: mx.array | None  # None without prompt AdaLN: the K/V modulation is the static table
    self_mask: mx.array | None = None  # additive (B, 1, T, T) self-attention bias (IC-LoRA attention strength)


class AVTransformerBlock(nn.Module):
    def __init__(self, config: TransformerConfig, video: bool = True, audio: bool = True) -> None:
        super().__init__()
        c, eps, gated = config, config.norm_eps, config.apply_gated_attention
        self.eps = eps
        self.cross_attention_adaln = c.cross_attention_adaln
        vd, ad = c.video_dim, c.audio_dim
        if video:
            self.attn1 = Attention(vd, None, c.num_attention_heads, c.attention_head_dim, eps, gated)
            self.attn2 = Attention(vd, c.cross_attention_dim, c.num_attention_heads, c.attention_head_dim, eps, gated)
            self.ff = FeedForward(vd, bias=c.ff_bias)
            self.scale_shift_table = mx.zeros((c.adaln_params, vd))
        if audio:
            heads, head_dim = c.audio_num_attention_heads, c.audio_attention_head_dim
            self.audio_attn1 = Attention(ad, None, heads, head_dim, eps, gated)
            self.audio_attn2 = Attention(ad, c.audio_cross_attention_dim, heads, head_dim, eps, gated)
            self.audio_ff = FeedForward(ad, bias=c.audio_ff_bias)
            self.audio_scale_shift_table = mx.zeros((c.adaln_params, ad))
        if video and audio:
            heads, head_dim = c.audio_num_attention_heads, c.audio_attention_head_dim
            self.audio_to_video_attn = Attention(vd, ad, heads, head_dim, eps, gated)  # Q video, K/V audio
            self.video_to_audio_attn = Attention(ad, vd, heads, head_dim, eps, gated)  # Q audio, K/V video
            self.scale_shift_table_a2v_ca_audio = mx.zeros((AV_SCALE_SHIFT_PARAMS + 1, ad))
            self.scale_shift_table_a2v_ca_video = mx.zeros((AV_SCALE_SHIFT_PARAMS + 1, vd))
        if c.cross_attention_adaln and video:
            self.prompt_scale_shift_table = mx.zeros((2, vd))
        if c.cross_attention_adaln and audio:
            self.audio_prompt_scale_shift_table = mx.zeros((2, ad))

    def _self_and_text(self, s: StreamState, prefix: str, skip_self_attention: bool) -> mx.array:
        table = self[prefix + "scale_shift_table"]
        attn1, attn2 = self[prefix + "attn1"], self[prefix + "attn2"]
        x = s.x
        shift, scale, gate = _ada(table, s.timesteps, slice(0, 3))
        normed = rms_norm(x, self.eps) * (1 + scale) + shift
        x = x + attn1(normed, mask=s.self_mask, pe=s.pe, values_only=skip_self_attention) * gate
        if self.cross_attention_adaln:
            shift_q, scale_q, gate_q = _ada(table, s.timesteps, slice(6, 9))
            prompt_table = self[prefix + "prompt_scale_shift_table"]
            if s.prompt_timestep is None:
                shift_kv, scale_kv = prompt_table[0], prompt_table[1]
            else:
                shift_kv, scale_kv = _ada(prompt_table, s.prompt_timestep, slice(0, 2))
            query = rms_norm(x, self.eps) * (1 + scale_q) + shift_q
            context = s.context * (1 + scale_kv) + shift_kv
            return x + attn2(query, context=context, mask=s.context_mask) * gate_q
        return x + attn2(rms_norm(x, self.eps), context=s.context, mask=s.context_mask)

    def _feed_forward(self, s: StreamState, x: mx.array, prefix: str) -> mx.array:
        shift, scale, gate = _ada(self[prefix + "scale_shift_table"], s.timesteps, slice(3, 6))
        return x + self[prefix + "ff"](rms_norm(x, self.eps) * (1 + scale) + shift) * gate

    @staticmethod
    def _av_values(table: mx.array, s: StreamState, rows: slice) -> tuple[mx.array, mx.array, mx.array]:
        scale, shift = _ada(table[:AV_SCALE_SHIFT_PARAMS], s.cross_scale_shift, rows)
        (gate,) = _ada(table[AV_SCALE_SHIFT_PARAMS:], s.cross_gate, slice(None))
        return scale, shift, gate

    def __call__(self, video: StreamState | None, audio: StreamState | None, *skips: bool) -> tuple[mx.array, mx.array]:
        """The whole block: `attend` (`skips` are its perturbation flags), then `feed_forward`."""
        return self.feed_forward(video, audio, *self.attend(video, audio, *skips))

    def attend(
        self,
        video: StreamState | None,
        audio: StreamState | None,
        skip_video_self_attention: bool = False,
        skip_audio_self_attention: bool = False,
        skip_cross_modal: bool = False,
    ) -> tuple[mx.array, mx.array]:
        """The block's attentions: self, text, then audio<->video; the streams' x after them."""
        vx = self._self_and_text(video, "", skip_video_self_attention) if video is not None else None
        ax = self._self_and_text(audio, "audio_", skip_audio_self_attention) if audio is not None else None

        if video is not None and audio is not None and not skip_cross_modal:
            v_norm, a_norm = rms_norm(vx, self.eps), rms_norm(ax, self.eps)
            v_table, a_table = self.scale_shift_table_a2v_ca_video, self.scale_shift_table_a2v_ca_audio
            scale_v, shift_v, gate_a2v = self._av_values(v_table, video, slice(0, 2))
            scale_a, shift_a, _ = self._av_values(a_table, audio, slice(0, 2))
            a2v = self.audio_to_video_attn(
                v_norm * (1 + scale_v) + shift_v,
                context=a_norm * (1 + scale_a) + shift_a,
                pe=video.cross_pe,
                k_pe=audio.cross_pe,
            )
            scale_a, shift_a, gate_v2a = self._av_values(a_table, audio, slice(2, 4))
            scale_v, shift_v, _ = self._av_values(v_table, video, slice(2, 4))
            v2a = self.video_to_audio_attn(
                a_norm * (1 + scale_a) + shift_a,
                context=v_norm * (1 + scale_v) + shift_v,
                pe=audio.cross_pe,
                k_pe=video.cross_pe,
            )
            vx, ax = vx + a2v * gate_a2v, ax + v2a * gate_v2a
        return vx, ax

    def feed_forward(
        self, video: StreamState | None, audio: StreamState | None, vx: mx.array | None, ax: mx.array | None
    ) -> tuple[mx.array, mx.array]:
        """The block's feed-forwards on the streams' x after `attend`."""
        vx = self._feed_forward(video, vx, "") if video is not None else None
        ax = self._feed_forward(audio, ax, "audio_") if audio is not None else None
        return vx, ax


# The StreamState arrays a block reads (the embedded timestep is only used after the last block).
_BLOCK_INPUTS = (
    "x", "context", "context_mask", "timesteps", "cross_scale_shift", "cross_gate", "prompt_timestep", "self_mask",
)  # fmt: skip


def _block_inputs(s: StreamState | None) -> dict | None:
    if s is None:
        return None
    arrays = {name: getattr(s, name) for name in _BLOCK_INPUTS if getattr(s, name) is not None}
    arrays["pe"] = (s.pe.cos, s.pe.sin)
    if s.cross_pe is not None:
        arrays["cross_pe"] = (s.cross_pe.cos, s.cross_pe.sin)
    return arrays


def _block_state(arrays: dict | None, split: bool) -> StreamState | None:
    if arrays is None:
        return None
    cross_pe = arrays.get("cross_pe")
    return StreamState(
        **{name: arrays.get(name) for name in _BLOCK_INPUTS},
        embedded_timestep=None,
        pe=RotaryTables(*arrays["pe"], split),
        cross_pe=None if cross_pe is None else RotaryTables(*cross_pe, split),
    )


def _block_function(shell: AVTransformerBlock, traces: list[int], part: str | None) -> Callable:
    """A block (or one `part` of it: ``attend`` or ``feed_forward``) as a function of its weights: traced with each
    block's weights swapped into `shell`, then restored.

    A closure rather than a method, so the compiled function holds no reference back to its ``CompiledBlocks``:
    without a reference cycle, dropping the stage frees the weights it snapshotted without a garbage collection.
    """

    def forward(weights: dict, video: dict | None, audio: dict | None, split: bool, flags: tuple) -> list:
        traces[0] += 1
        own = shell.parameters()
        shell.update(weights)
        try:
            v, a = _block_state(video, split), _block_state(audio, split)
            if part == "attend":
                vx, ax = shell.attend(v, a, *flags)
            elif part == "feed_forward":
                vx, ax = shell.feed_forward(v, a, v and v.x, a and a.x)
            else:
                vx, ax = shell(v, a, *flags)
        finally:
            shell.update(own)
        return [vx, ax]

    return forward


def block_structure(block: nn.Module) -> tuple:
    """What a block's compiled trace depends on besides its arrays: each layer's class, bits and group size."""
    return tuple(
        (path, type(module).__name__, getattr(module, "bits", None), getattr(module, "group_size", None))
        for path, module in block.named_modules()
    )


BLOCK_PARTS = ("attend", "feed_forward")  # a block's two halves, each its own trace when blocks are split


class CompiledBlocks:
    """Runs every block through one ``mx.compile`` trace, with the block's weights as inputs, not constants.

    All blocks of one structure share a trace per (shapes, perturbation flags) (a mixed-precision checkpoint has
    one structure per distinct set of layer bit widths): tracing costs about one block's worth of Python instead
    of 48 (whole-forward compilation took ~0.6 s per stage on an H100), and the fused norms, modulations and
    activations pay from the first forward pass. The weights are snapshotted: make a new instance after loading
    other weights. Streamed blocks pass their weights with each call instead.

    `split`: each block runs as two traces (its attentions, then its feed-forward), so a caller can submit half a
    block at a time: a device holds a submission's temporaries until it completes, so with one submission in flight
    the peak holds about one block's temporaries instead of two (1.3 GB each at 6144 video tokens, H100).
    """

    def __init__(self, blocks: list[AVTransformerBlock], split: bool = False) -> None:
        self.weights = [block.parameters() for block in blocks]
        self.parts: tuple[str | None, ...] = BLOCK_PARTS if split else (None,)
        self._traces = [0]  # Python runs of a block: one per new (structure, part, shapes, flags) signature
        forwards: dict[tuple, Callable] = {}
        self._forward_of: list[dict[str | None, Callable]] = []
        for block in blocks:
            structure = block_structure(block)
            for part in self.parts:
                if (structure, part) not in forwards:
                    forwards[structure, part] = mx.compile(_block_function(block, self._traces, part))
            self._forward_of.append({part: forwards[structure, part] for part in self.parts})

    @property
    def traces(self) -> int:
        return self._traces[0]

    def __call__(
        self,
        index: int,
        video: StreamState | None,
        audio: StreamState | None,
        flags: tuple[bool, bool, bool],
        weights: dict | None = None,
        part: str | None = None,
    ) -> tuple[mx.array | None, mx.array | None]:
        """Block `index` (or its `part`, one of ``parts``) on the streams' states."""
        split = (video or audio).pe.split
        weights = self.weights[index] if weights is None else weights
        forward = self._forward_of[index][part]
        vx, ax = forward(weights, _block_inputs(video), _block_inputs(audio), split, flags)
        return vx, ax


class BlockSource(Protocol):
    """Where streamed block weights come from (``weights/streaming.py``): ``begin`` starts reading block 0 ahead
    of a forward pass, ``weights(i)`` returns block i's weights (a nested dict) and starts reading block i + 1."""

    def begin(self) -> None: ...

    def weights(self, index: int) -> dict: ...


@dataclass(frozen=True)
class ForwardPass:
    """One of the forwards a denoising step runs (the guider's conditional, unconditional, perturbed, ...)."""

    video: StreamInput | None
    audio: StreamInput | None
    perturbations: Perturbations = NO_PERTURBATION


@dataclass
class StreamInput:
    """What the denoiser is given for one stream (ltx-core ``Modality``), with its RoPE tables prebuilt."""

    latent: mx.array  # (B, T, in_channels) patchified tokens
    timesteps: mx.array  # (B, T): sigma times the per-token denoise mask, or (B, 1) when it is the same for all
    sigma: mx.array  # (B,)
    context: mx.array  # (B, L, context width)
    context_mask: mx.array | None  # (B, L), 1 = real token
    rope: StreamRope
    self_attention_mask: mx.array | None = None  # (B, T, T) in [0, 1]: how much token i attends to token j
    keyframes_mask: mx.array | None = None  # (B, T), video: > 0 marks the first latent frame and keyframe slots


def self_attention_bias(mask: mx.array, dtype: mx.Dtype) -> mx.array:
    """(B, 1, T, T) additive bias for a [0, 1] self-attention mask: log(mask), and the dtype's lowest value where the
    mask is 0 (ltx-core ``_prepare_self_attention_mask``)."""
    info = mx.finfo(dtype)
    logs = mx.log(mx.maximum(mask.astype(mx.float32), info.smallest_normal))
    return mx.where(mask > 0, logs, info.min).astype(dtype)[:, None]


@dataclass(frozen=True)
class StreamRope:
    self_attention: RotaryTables
    cross_attention: RotaryTables | None


class LTXModel(nn.Module):
    """Velocity prediction for video and audio tokens. ``__call__`` returns (video, audio) outputs."""

    def __init__(self, config: TransformerConfig, video: bool = True, audio: bool = True) -> None:
        super().__init__()
        self.config = config
        c = config
        vd, ad = c.video_dim, c.audio_dim
        if video:
            self.patchify_proj = nn.Linear(c.in_channels, vd)
            self.adaln_single = AdaLayerNormSingle(vd, c.adaln_params)
            if c.caption_channels is not None:
                self.caption_projection = CaptionProjection(c.caption_channels, vd)
            if c.cross_attention_adaln and c.use_prompt_adaln_single:
                self.prompt_adaln_single = AdaLayerNormSingle(vd, 2)
            if c.use_keyframes_abs_pos_embedding:
                self.keyframes_abs_pos_embedding = mx.zeros((1, vd))
            self.scale_shift_table = mx.zeros((2, vd))
            self.proj_out = nn.Linear(vd, c.out_channels)
        if audio:
            self.audio_patchify_proj = nn.Linear(c.audio_in_channels, ad)
            self.audio_adaln_single = AdaLayerNormSingle(ad, c.adaln_params)
            if c.caption_channels is not None:
                self.audio_caption_projection = CaptionProjection(c.caption_channels, ad)
            if c.cross_attention_adaln and c.use_prompt_adaln_single:
                self.audio_prompt_adaln_single = AdaLayerNormSingle(ad, 2)
            self.audio_scale_shift_table = mx.zeros((2, ad))
            self.audio_proj_out = nn.Linear(ad, c.audio_out_channels)
        if video and audio:
            self.av_ca_video_scale_shift_adaln_single = AdaLayerNormSingle(vd, AV_SCALE_SHIFT_PARAMS)
            self.av_ca_audio_scale_shift_adaln_single = AdaLayerNormSingle(ad, AV_SCALE_SHIFT_PARAMS)
            self.av_ca_a2v_gate_adaln_single = AdaLayerNormSingle(vd, 1)
            self.av_ca_v2a_gate_adaln_single = AdaLayerNormSingle(ad, 1)
        self.transformer_blocks = [AVTransformerBlock(c, video, audio) for _ in range(c.num_layers)]
        self._has = (video, audio)
        # Set by weights/streaming.py: the blocks are then shells whose weights are read per forward pass.
        self.block_stream: BlockSource | None = None

    # --- positions -> RoPE tables, once per request --------------------------------------------------------

    def rope(self, positions: np.ndarray, stream: str, dtype: mx.Dtype = mx.float32) -> StreamRope:
        """Self- and cross-attention RoPE tables for ``"video"`` or ``"audio"`` positions (B, n_axes, T, 2)."""
        c = self.config
        video = stream == "video"
        dim, heads = (c.video_dim, c.num_attention_heads) if video else (c.audio_dim, c.audio_num_attention_heads)
        max_pos = list(c.positional_embedding_max_pos if video else c.audio_positional_embedding_max_pos)
        common = {"theta": c.positional_embedding_theta, "split": c.rope_split, "dtype": dtype}
        common["double_precision"] = c.double_precision_rope
        self_tables = rotary_tables(
            positions, dim, heads, max_pos=max_pos, use_middle=c.use_middle_indices_grid, **common
        )
        cross = None
        if all(self._has):
            # Audio<->video attention rotates by time only, at the audio cross-attention width.
            cross_max = max(c.positional_embedding_max_pos[0], c.audio_positional_embedding_max_pos[0])
            cross = rotary_tables(
                positions[:, :1], c.audio_cross_attention_dim, heads, max_pos=[cross_max], use_middle=True, **common
            )
        return StreamRope(self_tables, cross)

    def fuse_projections(self, stack: Stack = mx.concatenate) -> None:
        """Stack every attention's k/v (and self-attention's q/k/v) weights into one product; see Attention."""
        for block in self.transformer_blocks:
            for _, module in block.named_modules():
                if isinstance(module, Attention):
                    module.fuse_projections(stack)

    def compiled_blocks(self, split: bool = False) -> CompiledBlocks:
        return CompiledBlocks(self.transformer_blocks, split)

    # --- forward --------------------------------------------------------------------------------------------

    def _prepare(self, s: StreamInput, other: StreamInput | None, prefix: str) -> StreamState:
        c = self.config
        dtype = s.latent.dtype
        x = self[prefix + "patchify_proj"](s.latent)
        if s.keyframes_mask is not None and "keyframes_abs_pos_embedding" in self and prefix == "":
            # ltx-core apply_keyframes_absolute_embedding: the marker goes on right after the patch projection.
            marked = (s.keyframes_mask > 0)[..., None].astype(x.dtype)
            x = x + marked * self.keyframes_abs_pos_embedding.astype(x.dtype)
        b = x.shape[0]
        timesteps, embedded = self[prefix + "adaln_single"](s.timesteps * c.timestep_scale_multiplier, dtype)
        prompt_timestep = None
        if c.cross_attention_adaln and c.use_prompt_adaln_single:
            prompt, _ = self[prefix + "prompt_adaln_single"](s.sigma * c.timestep_scale_multiplier, dtype)
            prompt_timestep = prompt.reshape(b, -1, prompt.shape[-1])
        context = s.context
        if c.caption_channels is not None:
            context = self[prefix + "caption_projection"](context)
        mask = None if s.context_mask is None else (s.context_mask > 0).reshape(b, 1, 1, -1)
        cross_scale_shift = cross_gate = None
        if other is not None:
            # ltx-core >= 1.1.4 (1.2.0): the A<->V scale/shift follows this stream's own per-token timesteps, the
            # output gate the other stream's sigma (1.0.0 fed both from the other sigma; they differ wherever a
            # token's timestep is not the other stream's sigma: conditioned tokens, sigma_v != sigma_a).
            name = "video" if prefix == "" else "audio"
            other_t = other.sigma.reshape(b, 1) * c.timestep_scale_multiplier
            factor = c.av_ca_timestep_scale_multiplier / c.timestep_scale_multiplier
            own_t = s.timesteps * c.timestep_scale_multiplier
            cross_scale_shift, _ = self[f"av_ca_{name}_scale_shift_adaln_single"](own_t, dtype)
            gate_name = "a2v" if name == "video" else "v2a"
            cross_gate, _ = self[f"av_ca_{gate_name}_gate_adaln_single"](other_t * factor, dtype)
            cross_scale_shift = cross_scale_shift.reshape(b, -1, cross_scale_shift.shape[-1])
            cross_gate = cross_gate.reshape(b, -1, cross_gate.shape[-1])
        return StreamState(
            x=x,
            context=context,
            context_mask=mask,
            timesteps=timesteps.reshape(b, -1, timesteps.shape[-1]),
            embedded_timestep=embedded.reshape(b, -1, embedded.shape[-1]),
            pe=s.rope.self_attention,
            cross_pe=s.rope.cross_attention if other is not None else None,
            cross_scale_shift=cross_scale_shift,
            cross_gate=cross_gate,
            prompt_timestep=prompt_timestep,
            self_mask=None if s.self_attention_mask is None else self_attention_bias(s.self_attention_mask, dtype),
        )

    def _output(self, x: mx.array, s: StreamState, prefix: str) -> mx.array:
        table = self[prefix + "scale_shift_table"]
        values = table[None, None] + s.embedded_timestep[:, :, None]
        shift, scale = values[:, :, 0], values[:, :, 1]
        x = mx.fast.layer_norm(x, None, None, self.config.norm_eps) * (1 + scale) + shift
        return self[prefix + "proj_out"](x)

    def __call__(
        self,
        video: StreamInput | None,
        audio: StreamInput | None,
        eval_every: int = 0,
        perturbations: Perturbations = NO_PERTURBATION,
        compiled: CompiledBlocks | None = None,
        in_flight: int = 0,
    ) -> tuple[mx.array | None, mx.array | None]:
        """Velocities for the video and audio tokens: one forward pass (see ``forward_passes``)."""
        return self.forward_passes([ForwardPass(video, audio, perturbations)], eval_every, compiled, in_flight)[0]

    def forward_passes(
        self,
        passes: list[ForwardPass],
        eval_every: int = 0,
        compiled: CompiledBlocks | None = None,
        in_flight: int = 0,
    ) -> list[tuple[mx.array | None, mx.array | None]]:
        """Velocities of several forward passes, run block by block: each block's weights serve every pass before
        the next block's are needed, so streamed weights are read once per denoising step, not once per pass.
        (`compiled`: run the blocks through ``compiled_blocks()``.)

        `eval_every` > 0 submits the work after every that many (block, pass) units (half-blocks of split compiled
        blocks), so no single GPU command buffer runs for the whole network (macOS's watchdog kills long ones:
        "Impacting Interactivity"), and the device works while Python builds the next blocks. A device keeps a
        submission's temporaries until it completes (about 1.3 GB per block at 6144 video tokens), so `in_flight` > 0
        bounds the memory: before submitting more, wait until at most that many earlier submissions are unfinished.
        """
        stream = self.block_stream
        if stream is not None:
            stream.begin()  # block 0 is read while the inputs are prepared
        # Passes given the same inputs (the guider's conditional, perturbed and isolated passes) share one prepared
        # state (AdaLN values, projected context: per token when the denoise mask varies); each gets its own x.
        prepared: dict[tuple[int, int], tuple[StreamState | None, StreamState | None]] = {}
        states = []
        for run in passes:
            key = (id(run.video), id(run.audio))
            if key not in prepared:
                prepared[key] = (
                    self._prepare(run.video, run.audio, "") if run.video is not None else None,
                    self._prepare(run.audio, run.video, "audio_") if run.audio is not None else None,
                )
            v, a = (None if state is None else replace(state) for state in prepared[key])
            states.append((v, a, run.perturbations))
        submitted: list[list[mx.array]] = []
        units = 0
        parts = (None,) if compiled is None else compiled.parts  # whole blocks, or each block's halves in turn
        for index, block in enumerate(self.transformer_blocks):
            weights = None if stream is None else stream.weights(index)
            if weights is not None and compiled is None:
                block.update(weights)
            for part in parts:
                for v, a, p in states:
                    skips = (index in p.skip_video_self_attention, index in p.skip_audio_self_attention)
                    flags = (*skips, p.skip_cross_modal)
                    vx, ax = block(v, a, *flags) if compiled is None else compiled(index, v, a, flags, weights, part)
                    if v is not None:
                        v.x = vx
                    if a is not None:
                        a.x = ax
                    units += 1
                    if eval_every and units % eval_every == 0:  # queued, not waited for: Python runs ahead
                        submitted.append([s.x for s in (v, a) if s is not None])
                        mx.async_eval(submitted[-1])
                        if in_flight and len(submitted) > in_flight:
                            mx.eval(submitted.pop(0))
        return [
            (
                self._output(v.x, v, "") if v is not None else None,
                self._output(a.x, a, "audio_") if a is not None else None,
            )
            for v, a, _ in states
        ]


def sanitize_transformer_key(key: str) -> str | None:
    """Transformer component key (official or MLX conversion) -> our parameter key; None for connector copies."""
    if key.startswith(("video_embeddings_connector.", "audio_embeddings_connector.")):
        return None  # the text connectors, stored beside the transformer
    key = key.replace(".to_out.0.", ".to_out.").replace(".net.0.proj.", ".proj_in.").replace(".net.2.", ".proj_out.")
    return key.replace(".linear1.", ".linear_1.").replace(".linear2.", ".linear_2.")

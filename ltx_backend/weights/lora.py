"""LoRA files: read them, map their keys onto the transformer's layers, fuse them into the weights.

ltx-core (``ltx_core.loader.fuse_loras.apply_loras``) fuses every LoRA into the weights it was trained for:
``W + sum_i strength_i * (B_i @ A_i)``, summed over the LoRAs that touch the layer. We do the same, reading the
key spellings people have:

* ltx-core / LTX-2 trainer / ComfyUI: ``diffusion_model.<ltx-core layer>.lora_A.weight`` / ``.lora_B.weight``
* ComfyUI / kohya: ``<prefix><layer>.lora_down.weight`` / ``.lora_up.weight`` (+ ``.alpha``), dotted names or kohya's
  ``lora_unet_transformer_blocks_0_attn1_to_q`` underscore names
* diffusers / PEFT: ``transformer.<diffusers layer>.lora_A.weight``; diffusers renames a few top-level layers
  (``proj_in`` = ltx-core ``patchify_proj``, ``time_embed`` = ``adaln_single``, ...; see ``DIFFUSERS_NAMES``).

A file's ``.alpha`` (kohya / ComfyUI) scales its pair by ``alpha / rank`` as ComfyUI applies it; ltx-core ignores
alpha keys, and LTX LoRAs in ltx-core's spelling carry none. A LoRA none of whose layers exist in the model, or whose
shapes do not fit (a LoRA for another model or other widths; an LTX-2.0 LoRA touching layers LTX-2.3 lacks, such as
the caption projection), is a ``lora_mismatch`` error raised from the headers alone, before any tensor is read or any
weight changed. LTX-2.0 and LTX-2.3 blocks have the same widths, so a 2.0 LoRA of block layers only fits 2.3 by shape.

Quantized layers (4/8-bit affine) are dequantized, fused and requantized with the same bits and group size: the
model keeps one copy of each weight and the forward costs what it cost without a LoRA (a low-rank side path would
add two small products per layer and every step). Only the touched rows are requantized. The fused weight carries
the error of quantizing it afresh (up to one quantization step per element with MLX's affine scheme) plus the stored
weight's own error.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.models.transformer import LTXModel, TransformerConfig, sanitize_transformer_key
from ltx_backend.weights.checkpoint import Checkpoint
from ltx_backend.weights.safetensors_file import SafetensorsFile

# Prefixes that say which model a key belongs to; stripped repeatedly, longest first.
PREFIXES = ("model.diffusion_model.", "diffusion_model.", "base_model.model.", "transformer.", "model.")
KOHYA_PREFIXES = ("lora_unet_", "lora_transformer_")
# suffix -> (role, spelling): the low-rank pair and its optional alpha.
SUFFIXES = {
    ".lora_A.weight": ("down", "peft"),
    ".lora_B.weight": ("up", "peft"),
    ".lora_down.weight": ("down", "kohya"),
    ".lora_up.weight": ("up", "kohya"),
    ".lora.down.weight": ("down", "kohya"),
    ".lora.up.weight": ("up", "kohya"),
    ".alpha": ("alpha", None),
}
# diffusers' LTX-2 transformer names (diffusers scripts/convert_ltx2_to_diffusers.py) -> ltx-core's, for the layers
# outside the blocks; the blocks' linear layers are named alike in both.
DIFFUSERS_NAMES = {
    "proj_in": "patchify_proj",
    "audio_proj_in": "audio_patchify_proj",
    "time_embed": "adaln_single",
    "audio_time_embed": "audio_adaln_single",
    "prompt_adaln": "prompt_adaln_single",
    "audio_prompt_adaln": "audio_prompt_adaln_single",
    "av_cross_attn_video_scale_shift": "av_ca_video_scale_shift_adaln_single",
    "av_cross_attn_audio_scale_shift": "av_ca_audio_scale_shift_adaln_single",
    "av_cross_attn_video_a2v_gate": "av_ca_a2v_gate_adaln_single",
    "av_cross_attn_audio_v2a_gate": "av_ca_v2a_gate_adaln_single",
}
# The q/k/v projections our attention stacks into one product after loading (Attention.fuse_projections).
STACKED = {"to_qkv": ("to_q", "to_k", "to_v"), "to_kv": ("to_k", "to_v")}
_MISMATCH_HINT = (
    "The LoRA was made for another model or another version of LTX-2 (an LTX-2.0 LoRA does not fit LTX-2.3); use "
    "a LoRA trained for this checkpoint."
)


@dataclass(frozen=True)
class LoraSpec:
    """A LoRA file and the strength it is applied with (negative strengths subtract it)."""

    path: Path
    strength: float = 1.0


def split_strength(text: str, default: float = 1.0) -> tuple[str, float]:
    """``PATH[:STRENGTH]`` (the CLI's ``--lora``, ``--control-video``): a trailing ``:number`` is the strength."""
    path, sep, strength = text.rpartition(":")
    if sep:
        try:
            return path, float(strength)
        except ValueError:
            pass  # a colon inside the path
    return text, default


def parse_lora_arg(text: str) -> LoraSpec:
    """``PATH[:STRENGTH]`` (the CLI's ``--lora``), strength 1.0 by default."""
    path, strength = split_strength(text)
    return LoraSpec(Path(path).expanduser(), strength)


def resident_key(loras: Sequence[LoraSpec]) -> tuple:
    """What a resident transformer's weights depend on: each LoRA's file (resolved path, size, mtime) and strength,
    in order (the fused sum does not depend on the order, but a changed list should be visible as one)."""
    key = []
    for spec in loras:
        path = Path(spec.path).expanduser().resolve()
        try:
            stat = path.stat()
        except OSError as exc:
            raise LtxError(
                ErrorCode.MODEL_NOT_FOUND, f"LoRA file not found: {path}", "Check the LoRA path.", file=str(path)
            ) from exc
        key.append((str(path), stat.st_size, stat.st_mtime_ns, float(spec.strength)))
    return tuple(key)


@dataclass(frozen=True)
class LoraPair:
    """One layer's low-rank pair as the file stores it (tensor names; shapes from the header)."""

    layer: str  # the file's layer name, prefixes stripped
    down: str | None  # A: (rank, in)
    up: str | None  # B: (out, rank)
    alpha: str | None
    down_shape: tuple[int, ...] = ()
    up_shape: tuple[int, ...] = ()

    @property
    def rank(self) -> int:
        return self.down_shape[0] if self.down_shape else 0


@dataclass(frozen=True)
class LoraFile:
    """A LoRA's header: its spelling, its layers and the file's metadata (no tensor data is read)."""

    path: Path
    spelling: str  # "ltx-core", "comfyui", "kohya", "diffusers"
    pairs: tuple[LoraPair, ...]
    metadata: dict[str, str]
    file: SafetensorsFile

    @property
    def reference_downscale_factor(self) -> int:
        """IC-LoRAs trained on downscaled reference videos say so (ltx-pipelines ``ICLoraPipeline``); 1 otherwise."""
        try:
            return int(self.metadata.get("reference_downscale_factor", 1))
        except ValueError as exc:
            raise _mismatch(self.path, "its reference_downscale_factor metadata is not an integer") from exc


@dataclass(frozen=True)
class Target:
    """Where a pair goes: one of our linear layers (by path), and the rows of it when q/k/v are stacked."""

    module: str
    rows: slice  # slice(None) for an unstacked layer
    shape: tuple[int, int]  # (out, in) of those rows


def _mismatch(path: Path, what: str, **details: object) -> LtxError:
    return LtxError(ErrorCode.LORA_MISMATCH, f"LoRA {path}: {what}", _MISMATCH_HINT, file=str(path), **details)


def read_lora(path: str | Path) -> LoraFile:
    """Parse a LoRA file's header into its layers' pairs; a file with no LoRA tensors is ``lora_mismatch``."""
    path = Path(path)
    if not path.is_file():
        raise LtxError(
            ErrorCode.MODEL_NOT_FOUND, f"LoRA file not found: {path}", "Check the --lora path.", file=str(path)
        )
    st = SafetensorsFile(path)
    groups: dict[str, dict[str, str]] = {}
    spellings: set[str] = set()
    prefixes: set[str] = set()
    for name in st.tensors:
        suffix = next((s for s in SUFFIXES if name.endswith(s)), None)
        if suffix is None:
            raise _mismatch(path, f"tensor {name!r} is not a LoRA tensor (no lora_A/lora_B/lora_down/lora_up)")
        role, spelling = SUFFIXES[suffix]
        layer, prefix = _strip_prefixes(name[: -len(suffix)])
        if spelling:
            spellings.add(spelling)
        prefixes.add(prefix)
        groups.setdefault(layer, {})[role] = name
    if not groups:
        raise _mismatch(path, "it holds no tensors")
    pairs = tuple(
        LoraPair(
            layer,
            g.get("down"),
            g.get("up"),
            g.get("alpha"),
            st.tensors[g["down"]].shape if "down" in g else (),
            st.tensors[g["up"]].shape if "up" in g else (),
        )
        for layer, g in groups.items()
    )
    return LoraFile(path, _spelling(spellings, prefixes, pairs), pairs, dict(st.metadata), st)


def is_lora_file(path: str | Path) -> bool:
    """A safetensors file whose tensors are all LoRA pairs (and alphas): a LoRA, not a checkpoint (header only)."""
    path = Path(path)
    if not path.is_file() or path.suffix != ".safetensors":
        return False
    names = SafetensorsFile(path).tensors
    return bool(names) and all(name.endswith(tuple(SUFFIXES)) for name in names)


def _strip_prefixes(name: str) -> tuple[str, str]:
    stripped = ""
    while True:
        prefix = next((p for p in PREFIXES if name.startswith(p)), None)
        if prefix is None:
            return name, stripped
        stripped += prefix
        name = name[len(prefix) :]


def _spelling(spellings: set[str], prefixes: set[str], pairs: Sequence[LoraPair]) -> str:
    if any(pair.layer.startswith(KOHYA_PREFIXES) for pair in pairs):
        return "kohya"
    if "kohya" in spellings:
        return "comfyui"
    if any(p.startswith("transformer.") for p in prefixes) or any(
        pair.layer.split(".")[0] in DIFFUSERS_NAMES for pair in pairs
    ):
        return "diffusers"
    return "ltx-core"


def ltx_core_layer(layer: str) -> str:
    """A dotted layer name in ltx-core's spelling (diffusers' top-level renames undone)."""
    head, _, rest = layer.partition(".")
    return f"{DIFFUSERS_NAMES.get(head, head)}.{rest}" if rest else DIFFUSERS_NAMES.get(head, head)


def our_layer(layer: str) -> str | None:
    """Our module path for a file's layer name (ltx-core or diffusers spelling, dotted); None for connector layers."""
    key = sanitize_transformer_key(ltx_core_layer(layer) + ".weight")
    return None if key is None else key.removesuffix(".weight")


def _linear_shape(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.QuantizedLinear):
        return module.weight.shape[0], module.scales.shape[1] * module.group_size
    return tuple(module.weight.shape)


def model_targets(model: nn.Module) -> dict[str, Target]:
    """Every linear layer of `model` a LoRA may touch, by its unstacked path (q/k/v resolved into stacked rows)."""
    targets: dict[str, Target] = {}
    for path, module in model.named_modules():
        if not isinstance(module, (nn.Linear, nn.QuantizedLinear)):
            continue
        out, inp = _linear_shape(module)
        parent, _, name = path.rpartition(".")
        if name in STACKED:
            parts = STACKED[name]
            size = out // len(parts)
            for i, part in enumerate(parts):
                targets[f"{parent}.{part}"] = Target(path, slice(i * size, (i + 1) * size), (size, inp))
        else:
            targets[path] = Target(path, slice(None), (out, inp))
    return targets


def _kohya_table(targets: dict[str, Target]) -> dict[str, str]:
    """kohya's underscore names (of the ltx-core spelling and of ours) -> our paths."""
    table = {}
    for ours in targets:
        ltx = ours.replace(".to_out", ".to_out.0").replace("ff.proj_in", "ff.net.0.proj")
        ltx = ltx.replace("ff.proj_out", "ff.net.2")
        table[ltx.replace(".", "_")] = ours
        table[ours.replace(".", "_")] = ours
    return table


@dataclass(frozen=True)
class MatchedPair:
    pair: LoraPair
    target: Target


def match_lora(lora: LoraFile, targets: dict[str, Target]) -> list[MatchedPair]:
    """Every pair of `lora` placed on a layer of the model, with its shapes checked: all or ``lora_mismatch``."""
    kohya = _kohya_table(targets) if lora.spelling == "kohya" else {}
    matched, unmatched = [], []
    for pair in lora.pairs:
        if pair.down is None or pair.up is None:
            raise _mismatch(lora.path, f"layer {pair.layer!r} has only one of its two LoRA matrices")
        if pair.layer.startswith(KOHYA_PREFIXES):
            name = pair.layer.split("_", 2)[2]
            ours = kohya.get(name)
        else:
            ours = our_layer(pair.layer)
        target = targets.get(ours) if ours else None
        if target is None:
            unmatched.append(pair.layer)
            continue
        out, inp = target.shape
        r = pair.rank
        if len(pair.down_shape) != 2 or pair.down_shape != (r, inp) or pair.up_shape != (out, r):
            raise _mismatch(
                lora.path,
                f"layer {pair.layer!r} has A {list(pair.down_shape)} / B {list(pair.up_shape)}, but the model's "
                f"{ours} is {out} x {inp} (needs A [rank, {inp}], B [{out}, rank])",
                key=pair.layer,
            )
        matched.append(MatchedPair(pair, target))
    if unmatched:
        raise _mismatch(
            lora.path,
            f"{len(unmatched)} of its {len(lora.pairs)} layers are not in the model, the first {unmatched[0]!r}",
            key=unmatched[0],
            unmatched=len(unmatched),
        )
    return matched


def check_loras(model: nn.Module, loras: Sequence[LoraSpec]) -> list[tuple[LoraFile, list[MatchedPair]]]:
    """Read and match every LoRA against `model` from the headers alone (the validate-before-compute step)."""
    targets = model_targets(model)
    checked = []
    for spec in loras:
        lora = read_lora(spec.path)
        checked.append((lora, match_lora(lora, targets)))
    return checked


def check_loras_for_checkpoint(ckpt: Checkpoint, loras: Sequence[LoraSpec]) -> list[tuple[LoraFile, list[MatchedPair]]]:
    """``check_loras`` against the transformer `ckpt` describes, before it is loaded: the model is built from the
    config only (its arrays are lazy and never evaluated), so a request can be refused before any compute."""
    from ltx_backend.weights.transformer import transformer_section  # that module fuses LoRAs: imports this one

    return check_loras(LTXModel(TransformerConfig.from_section(transformer_section(ckpt))), loras)


def _scale(lora: LoraFile, pair: LoraPair) -> float:
    if pair.alpha is None:
        return 1.0
    return float(lora.file.array(pair.alpha).astype(mx.float32).item()) / pair.rank


@dataclass(frozen=True)
class _Term:
    """One LoRA's pair on one layer: ``scale * B @ A`` is its weight change."""

    target: Target
    down: mx.array  # A, float32 (lazy until evaluated)
    up: mx.array  # B, float32
    scale: float  # strength x alpha / rank


def _terms(loras: Sequence[LoraSpec], checked: list[tuple[LoraFile, list[MatchedPair]]]) -> list[_Term]:
    terms = []
    for spec, (lora, matched) in zip(loras, checked, strict=True):
        for m in matched:
            down = lora.file.array(m.pair.down).astype(mx.float32)
            up = lora.file.array(m.pair.up).astype(mx.float32)
            terms.append(_Term(m.target, down, up, spec.strength * _scale(lora, m.pair)))
    return terms


def _summed(terms: Sequence[_Term]) -> dict[str, list[tuple[slice, mx.array]]]:  # module -> [(rows, delta)]
    """The float32 weight change of every touched layer: ``sum_i scale_i * B_i @ A_i`` (lazy), in the LoRAs' order."""
    summed: dict[tuple[str, int | None, int | None], tuple[Target, mx.array]] = {}
    for term in terms:
        delta = (term.up * term.scale) @ term.down
        key = (term.target.module, term.target.rows.start, term.target.rows.stop)
        if key in summed:
            delta = summed[key][1] + delta
        summed[key] = (term.target, delta)
    by_module: dict[str, list[tuple[slice, mx.array]]] = {}
    for target, delta in summed.values():
        by_module.setdefault(target.module, []).append((target.rows, delta))
    return by_module


def lora_deltas(model: nn.Module, loras: Sequence[LoraSpec]) -> dict[str, list[tuple[slice, mx.array]]]:
    """The float32 weight change of every touched layer of `model`: ``sum_i strength_i * scale_i * B_i @ A_i``."""
    return _summed(_terms(loras, check_loras(model, loras)))


# (group size, bits, mode) of a quantized layer; None for a floating-point one.
Quantization = tuple[int, int, str] | None


def _layer_quantization(module: nn.Module) -> Quantization:
    return (module.group_size, module.bits, module.mode) if isinstance(module, nn.QuantizedLinear) else None


def _fuse(params: dict[str, mx.array], delta: mx.array, quantization: Quantization) -> dict[str, mx.array]:
    """A layer's arrays (``weight`` [, ``scales``, ``biases``]) with `delta` added, requantized with the layer's own
    bits and groups when it is quantized; each array keeps its dtype."""
    if quantization is not None:
        group_size, bits, mode = quantization
        weight = mx.dequantize(params["weight"], params["scales"], params.get("biases"), group_size, bits,
                               mode=mode, dtype=mx.float32)  # fmt: skip
        packed = mx.quantize(weight + delta, group_size, bits, mode=mode)
        names = ("weight", "scales", "biases")
        return {name: array.astype(params[name].dtype) for name, array in zip(names, packed, strict=False)}
    weight = params["weight"]
    return {"weight": (weight.astype(mx.float32) + delta).astype(weight.dtype)}


def _fused_rows(module: nn.Module, rows: slice, delta: mx.array) -> dict[str, mx.array]:
    """The layer's arrays for `rows` with `delta` added (requantized with the layer's own bits and groups)."""
    names = ("weight", "scales", "biases") if isinstance(module, nn.QuantizedLinear) else ("weight",)
    params = {name: module[name][rows] for name in names if module.get(name) is not None}
    return _fuse(params, delta, _layer_quantization(module))


def _fuse_into(model: nn.Module, deltas: dict[str, list[tuple[slice, mx.array]]]) -> int:
    """Add `deltas` to `model`'s layers, one layer evaluated at a time (the peak above the model is one layer's
    float32 weight and delta); returns how many layers changed."""
    modules = dict(model.named_modules())
    count = len(deltas)
    while deltas:
        # Popped, not iterated: a delta still referenced after the evaluation keeps its float32 buffer, and over
        # every layer those add up to twice a bf16 model (an out-of-memory on an 80 GB GPU).
        path, changes = deltas.popitem()
        module = modules[path]
        arrays = {}
        for rows, delta in changes:
            fused = _fused_rows(module, rows, delta)
            if rows == slice(None):
                arrays.update(fused)
                continue
            for name, value in fused.items():
                current = arrays.get(name, module[name])
                arrays[name] = mx.concatenate([current[: rows.start], value, current[rows.stop :]])
        mx.eval(arrays)
        module.update(arrays)
        del changes, arrays
    return count


def _no_effect(loras: Sequence[LoraSpec]) -> bool:
    return not loras or all(spec.strength == 0 for spec in loras)  # as ltx-core: all-zero strengths load no LoRA


def apply_loras(model: nn.Module, loras: Sequence[LoraSpec]) -> int:
    """Fuse `loras` into `model`'s weights (ltx-core ``apply_loras``); returns how many layers changed.

    All LoRAs are checked against the model before any weight changes. Layers are evaluated one at a time, so the
    peak memory above the model is one layer's float32 weight and delta.
    """
    if _no_effect(loras):
        check_loras(model, loras)
        return 0
    return _fuse_into(model, lora_deltas(model, loras))


BLOCK = re.compile(r"transformer_blocks\.(\d+)\.(.+)")
BlockWeights = dict[str, mx.array]


def streamed_loras(model: LTXModel, ckpt: Checkpoint, loras: Sequence[LoraSpec]):
    """Fuse `loras` into a block-streamed transformer (weights/streaming.py): the resident non-block layers now,
    and each block's layers as the block is read, through the stream's ``block_transform``, which this returns
    (None when there is nothing to fuse).

    The arithmetic is ``apply_loras``'s on the unstacked layers (the same products, sums and roundings in the same
    order), so a streamed model computes the same bytes as a resident one with the same LoRAs. The LoRAs' own small
    matrices stay in memory; each block's ``B @ A`` products are recomputed per read (rank / tokens of the block's
    own matrix products: ~1% for a rank-64 LoRA on 6144 tokens)."""
    checked = check_loras_for_checkpoint(ckpt, loras)  # the unstacked model of the config: every key checked
    if _no_effect(loras):
        return None
    per_block: dict[int, list[_Term]] = {}
    resident: list[_Term] = []
    for term in _terms(loras, checked):
        match = BLOCK.fullmatch(term.target.module)
        if match is None:
            resident.append(term)
        else:
            local = Target(match[2], term.target.rows, term.target.shape)
            per_block.setdefault(int(match[1]), []).append(_Term(local, term.down, term.up, term.scale))
    _fuse_into(model, _summed(resident))
    mx.eval([array for terms in per_block.values() for term in terms for array in (term.down, term.up)])
    shells = model.transformer_blocks

    def transform(index: int, weights: BlockWeights) -> BlockWeights:
        deltas = _summed(per_block.get(index, ()))
        if not deltas:
            return weights
        modules = dict(shells[index].named_modules())
        fused = dict(weights)
        for path, changes in deltas.items():
            ((_, delta),) = changes  # unstacked layers: one change of all rows
            params = {name: weights[f"{path}.{name}"] for name in ("weight", "scales", "biases")
                      if f"{path}.{name}" in weights}  # fmt: skip
            quantization = _layer_quantization(_shell_layer(modules, path)) if "scales" in params else None
            fused.update({f"{path}.{name}": array for name, array in _fuse(params, delta, quantization).items()})
        return fused

    return transform


def _shell_layer(modules: dict[str, nn.Module], path: str) -> nn.Module:
    """The shell's module holding `path` (an unstacked projection lives in its attention's to_qkv / to_kv)."""
    if path in modules:
        return modules[path]
    parent, _, name = path.rpartition(".")
    for stacked, parts in STACKED.items():
        if name in parts and f"{parent}.{stacked}" in modules:
            return modules[f"{parent}.{stacked}"]
    raise KeyError(path)


def reference_downscale_factor(loras: Sequence[LoraSpec]) -> int:
    """The reference-video downscale factor the IC-LoRAs among `loras` declare (1 if none does); LoRAs declaring
    different factors cannot be combined (ltx-pipelines ``ICLoraPipeline``)."""
    factor = 1
    for spec in loras:
        declared = read_lora(spec.path).reference_downscale_factor
        if declared != 1 and factor not in (1, declared):
            raise LtxError(
                ErrorCode.INVALID_PARAMS,
                f"LoRA {spec.path} declares reference_downscale_factor {declared}, another LoRA {factor}",
                "Use IC-LoRAs trained at the same reference scale together.",
                field="loras",
            )
        factor = declared if declared != 1 else factor
    return factor


def _stream(layer: str) -> str:
    if "audio_to_video" in layer or "video_to_audio" in layer:
        return "audio-video"
    return "audio" if "audio" in layer else "video"


def _target(lora: LoraFile, layers: list[str | None]) -> str:
    """The model the LoRA was made for, as far as its layers tell: the LTX version where only one has such layers,
    and the stream widths of its self-attention projections."""
    names = " ".join(layer or "" for layer in layers)
    version = "LTX-2.3" if ("to_gate_logits" in names or "prompt_adaln" in names) else "LTX-2"
    version = "LTX-2.0" if "caption_projection" in names else version
    widths = {}
    for pair, layer in zip(lora.pairs, layers, strict=True):
        flat = (layer or "").replace(".", "_")  # kohya names are underscored
        stream = (
            "audio_attn1" if flat.endswith("_audio_attn1_to_q") else "attn1" if flat.endswith("_attn1_to_q") else ""
        )
        if stream:
            widths.setdefault(stream, pair.down_shape[1])
    parts = [f"video width {widths['attn1']}"] if "attn1" in widths else []
    parts += [f"audio width {widths['audio_attn1']}"] if "audio_attn1" in widths else []
    return f"{version} transformer" + (f" ({', '.join(parts)})" if parts else "")


def lora_info(path: str | Path) -> dict[str, object]:
    """What ``inspect LORA`` shows: spelling, target, rank(s), layer count, alpha, metadata (header only)."""
    lora = read_lora(path)
    ranks = sorted({pair.rank for pair in lora.pairs})
    layers = [our_layer(p.layer) if not p.layer.startswith(KOHYA_PREFIXES) else p.layer for p in lora.pairs]
    blocks = {int(m.group(1)) for layer in layers if layer and (m := re.search(r"transformer_blocks[._](\d+)", layer))}
    streams = sorted({_stream(layer or "") for layer in layers})
    return {
        "path": str(lora.path),
        "format": lora.spelling,
        "target": _target(lora, layers),
        "streams": streams,
        "rank": ranks[0] if len(ranks) == 1 else ranks,
        "layers": len(lora.pairs),
        "blocks": len(blocks),
        "has_alpha": any(p.alpha is not None for p in lora.pairs),
        "reference_downscale_factor": lora.reference_downscale_factor,
        "metadata": lora.metadata,
    }

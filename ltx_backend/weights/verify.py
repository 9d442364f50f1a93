"""Check that a checkpoint would load, without loading it: the loader's own steps minus reading tensor data.

For every module a job loads, the module is built from the checkpoint's config exactly as the loader builds it
(`prepare_*` in transformer.py, video.py, audio.py, gemma.py: MLX arrays stay lazy, so nothing is allocated),
then `plan_module` matches every parameter to a stored tensor by key, shape and dtype, as `load_module` does before
it reads a byte. A folder that passes here loads; one that fails gets the same error code the load would give.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.weights.checkpoint import Checkpoint, Component, open_checkpoint
from ltx_backend.weights.load import plan_module
from ltx_backend.weights.safetensors_file import DTYPE_SIZES


@dataclass
class ComponentReport:
    name: str
    tensors: int = 0
    bytes: int = 0
    dtypes: dict[str, int] = field(default_factory=dict)
    quantization: dict | None = None
    ok: bool = False
    error: dict | None = None


@dataclass
class InspectReport:
    model: str
    path: str
    layout: str | None = None
    model_version: str | None = None
    variant: str | None = None
    quantization: dict | None = None
    config_sections: list[str] = field(default_factory=list)
    components: list[ComponentReport] = field(default_factory=list)
    text_encoder: str | None = None
    transformer_bits: dict[str, int] | None = None  # quantized transformers: layers per "<bits>-bit g<group>"
    problems: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def _problem(error: LtxError) -> dict:
    return {"code": error.code.value, "message": error.message, "hint": error.hint}


Prepared = tuple[object, Component, Callable[[str], str | None]]


def _ltx_checks(ckpt: Checkpoint, gemma_shape: tuple[int, int] | None) -> dict[str, Callable[[], Prepared]]:
    """Each module a job loads -> how the loader builds it (module, its tensors, the key sanitizer)."""
    from ltx_backend.models.audio_vae import sanitize_decoder_key as audio_key
    from ltx_backend.models.text_connector import GEMMA_12B_HIDDEN, GEMMA_12B_LAYERS, sanitize_processor_key
    from ltx_backend.models.transformer import sanitize_transformer_key
    from ltx_backend.models.video_vae import sanitize_decoder_key, sanitize_encoder_key
    from ltx_backend.weights import audio, transformer, video

    hidden, states = gemma_shape or (GEMMA_12B_HIDDEN, GEMMA_12B_LAYERS)

    def vocoder() -> Prepared:
        module = audio.build_vocoder(ckpt)
        return module, ckpt.component("vocoder"), audio.vocoder_sanitizer(module)

    def keep(key: str) -> str:
        return key

    return {
        "transformer": lambda: (*transformer.prepare_transformer(ckpt), sanitize_transformer_key),
        "connector": lambda: (*transformer.prepare_text_processor(ckpt, hidden, states), sanitize_processor_key),
        "vae_decoder": lambda: (*video.prepare_video_decoder(ckpt), sanitize_decoder_key),
        "vae_encoder": lambda: (*video.prepare_video_encoder(ckpt), sanitize_encoder_key),
        "spatial_upscaler_x2": lambda: (*video.prepare_upsampler(ckpt, "spatial_x2"), keep),
        "audio_vae": lambda: (*audio.prepare_audio_decoder(ckpt), audio_key),
        "vocoder": vocoder,
    }


def _check(name: str, prepare: Callable[[], Prepared], declared: dict | None = None) -> ComponentReport:
    """Build and plan one module; `declared` is the quantization the loader assumes for stored-quantized layers."""
    from ltx_backend.weights.transformer import GROUP_SIZE

    report = ComponentReport(name)
    try:
        module, component, sanitize = prepare()
        report.tensors = len(component.tensors)
        report.bytes = sum(
            math.prod(info.shape) * DTYPE_SIZES.get(info.dtype, 0) for info in component.tensors.values()
        )
        report.dtypes = dict(Counter(info.dtype for info in component.tensors.values()))
        if component.quantized_paths:
            quantization = declared or {"bits": 4, "group_size": GROUP_SIZE}
            report.quantization = {**quantization, "layers": len(component.quantized_paths)}
        plan_module(module, component, sanitize)  # type: ignore[arg-type]
        report.ok = True
    except LtxError as error:
        report.error = _problem(error)
    return report


def inspect_model(model: str, text_encoder: str | None = None) -> InspectReport:
    """What `model` holds and whether a job could load every part of it (and of its text encoder)."""
    from ltx_backend.pipeline.engine import checkpoint_variant, model_version
    from ltx_backend.weights.gemma import read_gemma_config, tokenizer_dir
    from ltx_backend.weights.resolve import resolve_model

    root = resolve_model(model)  # model_not_found: nothing to inspect
    report = InspectReport(model, str(root))
    try:
        ckpt = open_checkpoint(root)
    except LtxError as error:
        report.problems.append(_problem(error))
        return report
    report.layout = ckpt.layout.value
    report.model_version = model_version(ckpt)
    report.variant = checkpoint_variant(ckpt)
    report.quantization = ckpt.quantization
    report.config_sections = sorted(ckpt.config)
    if ckpt.has("transformer") and ckpt.component("transformer").quantized_paths:
        from ltx_backend.weights.mixed_quant import bit_histogram
        from ltx_backend.weights.transformer import transformer_quantization

        try:
            report.transformer_bits = bit_histogram(transformer_quantization(ckpt))
        except LtxError as error:
            report.problems.append(_problem(error))

    encoder_root: Path | None = None
    if text_encoder is not None:
        encoder_root = resolve_model(text_encoder)
    elif (ckpt.root / "text_encoder").is_dir():
        encoder_root = ckpt.root / "text_encoder"
    gemma_shape = None
    if encoder_root is not None:
        report.text_encoder = str(encoder_root)
        try:
            raw, config = read_gemma_config(encoder_root)
            tokenizer_dir(encoder_root)
            gemma_shape = (config.hidden_size, config.num_hidden_layers + 1)
            declared = raw.get("quantization") or raw.get("quantization_config")
            declared = (
                {"bits": int(declared.get("bits", 4)), "group_size": int(declared.get("group_size", 64))}
                if isinstance(declared, dict)
                else None
            )
            report.components.append(_check("text_encoder", lambda: _prepare_gemma(encoder_root), declared))
        except LtxError as error:
            report.components.append(ComponentReport("text_encoder", error=_problem(error)))

    for name, prepare in _ltx_checks(ckpt, gemma_shape).items():
        report.components.append(_check(name, prepare, ckpt.quantization))
    for component in report.components:
        if component.error is not None:
            report.problems.append({**component.error, "message": f"{component.name}: {component.error['message']}"})
    return report


def _prepare_gemma(root: Path) -> Prepared:
    from ltx_backend.models.gemma3 import sanitize_gemma_key
    from ltx_backend.weights.gemma import prepare_gemma

    return (*prepare_gemma(root), sanitize_gemma_key)


def ensure_loadable(report: InspectReport) -> None:
    """Raise the first problem as the `LtxError` loading would have raised."""
    if report.problems:
        first = report.problems[0]
        raise LtxError(ErrorCode(first["code"]), first["message"], first["hint"])

"""Generate LoRA and IC-LoRA reference fixtures from ltx-core / ltx-pipelines 1.0.0 (PyTorch).

On the tiny LTX-2.0 (``t20``) and LTX-2.3 (``t23``) transformers of ``make_transformer_refs.py`` (their official
single-file checkpoints in ``tests/fixtures/transformer/``), writes into ``tests/fixtures/lora/``:

* ``<version>_lora{1,2}_<spelling>.safetensors``: two seeded random LoRAs per version, each in four key spellings:
  ``ltx`` (ltx-core / LTX-2 trainer: ``diffusion_model.<layer>.lora_A/B.weight``), ``comfyui``
  (``diffusion_model.<layer>.lora_down/up.weight`` + ``.alpha`` = 2 x rank, with ``lora_up`` halved so that
  ComfyUI's ``alpha / rank`` scaling gives the same product), ``kohya`` (``lora_unet_<layer with _>`` names, alpha =
  rank) and ``diffusers`` (``transformer.<diffusers layer>.lora_A/B.weight``, diffusers' LTX-2 names). LoRA 1 (rank 4)
  covers every attention projection and feed-forward of both blocks; LoRA 2 (rank 2) the video attentions, the
  audio-to-video attention and a top-level layer (``patchify_proj``; LTX-2.0 also ``caption_projection.linear_1``,
  which LTX-2.3 does not have; LTX-2.3 also the attention gates). LoRA 1 of ``t23`` carries the IC-LoRA metadata
  ``reference_downscale_factor = 2``.
* ``<version>_fused.safetensors``: the bf16 weights ``SingleGPUModelBuilder(..., loras=[(lora1, 0.7), (lora2,
  -0.3)]).build(dtype=bfloat16)`` produces (``apply_loras``) for every layer a LoRA touches, keyed by ltx-core layer.
* ``refs.npz``: ``<version>.out.{video,audio}``: that fused model's float32 forward on the transformer fixtures'
  inputs; ``ic.*``: ``VideoConditionByReferenceLatent`` (downscale 2, strength 0.8) applied after a first-frame
  image conditioning, bare and wrapped in ``ConditioningItemAttentionStrengthWrapper`` (scalar 0.5 and a per-token
  mask), the resulting tokens, positions, denoise mask, clean latent and attention mask; ``ic.pixel_mask`` and
  ``ic.latent_mask``: ``ICLoraPipeline._downsample_mask_to_latent``; ``<version>.iclora_s1.*``: one stage-1 denoise
  loop of ``ICLoraPipeline`` (distilled sigmas, first-frame image + reference video conditioning, both LoRAs fused as
  above) with its recorded noise (via ``make_sampler_refs``' recording loop).

``--rule 1.2`` runs the loop under ltx-core 1.2.0's A<->V cross-attention timestep rule (``ltx_core_1_2_rule.py`` in
this folder); the default ``1.0`` is plain ltx-core 1.0.0. The rule only changes the loop fixtures. Run from the
repository root with the reference venv:

    /tmp/ltx-ref-venv/bin/python tests/reference/make_lora_refs.py [--rule 1.2]
"""

from __future__ import annotations

import argparse
import importlib
import sys
import types
from pathlib import Path

import fixture_io
import make_sampler_refs as msr  # imports make_transformer_refs and the pipeline utilities
import make_transformer_refs as mtr
import numpy as np
import torch
from ltx_core.conditioning import ConditioningItemAttentionStrengthWrapper, VideoConditionByReferenceLatent
from ltx_core.conditioning.types.latent_cond import VideoConditionByLatentIndex
from ltx_core.loader import LTXV_LORA_COMFY_RENAMING_MAP, LoraPathStrengthAndSDOps
from ltx_core.loader.single_gpu_model_builder import SingleGPUModelBuilder
from ltx_core.model.transformer.modality import Modality
from ltx_core.model.transformer.model import X0Model
from ltx_core.model.transformer.model_configurator import LTXV_MODEL_COMFY_RENAMING_MAP, LTXModelConfigurator
from ltx_core.tools import VideoLatentTools
from ltx_core.types import VideoLatentShape
from safetensors.torch import save_file

OUT_DIR = mtr.REPO / "tests" / "fixtures" / "lora"
STRENGTHS = (0.7, -0.3)
SEED = 16
SPELLINGS = ("ltx", "comfyui", "kohya", "diffusers")
ATTENTIONS = ("attn1", "attn2", "audio_attn1", "audio_attn2", "audio_to_video_attn", "video_to_audio_attn")
PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")
# diffusers scripts/convert_ltx2_to_diffusers.py (ltx-core -> diffusers) for the top-level layers; blocks alike.
DIFFUSERS_RENAMES = {
    "patchify_proj": "proj_in",
    "audio_patchify_proj": "audio_proj_in",
    "adaln_single": "time_embed",
    "audio_adaln_single": "audio_time_embed",
    "prompt_adaln_single": "prompt_adaln",
    "audio_prompt_adaln_single": "audio_prompt_adaln",
}
IC_TARGET = VideoLatentShape(batch=1, channels=mtr.VIDEO_CHANNELS, frames=3, height=4, width=6)
IC_REFERENCE = VideoLatentShape(batch=1, channels=mtr.VIDEO_CHANNELS, frames=3, height=2, width=3)
IC_DOWNSCALE, IC_STRENGTH, IC_ATTENTION = 2, 0.8, 0.5
IC_FPS = 24.0
PIXEL_MASK_SHAPE = (1, 1, 5, 8, 12)  # (B, 1, F, H, W): any size whose (F - 1) divides by the latent frames - 1


def lora_layers(version: str, which: int) -> list[str]:
    """ltx-core layer names (no ``.weight``) that LoRA `which` touches."""
    layers = []
    for block in range(2):
        prefix = f"transformer_blocks.{block}"
        if which == 1:
            layers += [f"{prefix}.{a}.{p}" for a in ATTENTIONS for p in PROJECTIONS]
            layers += [f"{prefix}.{ff}.{p}" for ff in ("ff", "audio_ff") for p in ("net.0.proj", "net.2")]
        else:
            layers += [f"{prefix}.{a}.{p}" for a in ("attn1", "attn2", "audio_to_video_attn") for p in PROJECTIONS]
            if version == "t23":
                layers += [f"{prefix}.attn1.to_gate_logits"]
    if which == 2:
        layers.append("patchify_proj")
        if version == "t20":
            layers.append("caption_projection.linear_1")
    return layers


def diffusers_name(layer: str) -> str:
    head, _, rest = layer.partition(".")
    return f"{DIFFUSERS_RENAMES.get(head, head)}.{rest}" if rest else DIFFUSERS_RENAMES.get(head, head)


def check_diffusers_names(layers: list[str], version: str) -> None:
    """Every diffusers-spelled layer is a Linear of diffusers' own LTX-2 transformer (when diffusers is installed)."""
    try:
        from diffusers import LTX2VideoTransformer3DModel
    except ImportError:
        print("  (diffusers not installed: diffusers layer names not cross-checked)")
        return
    v23 = version == "t23"
    model = LTX2VideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
        audio_in_channels=4, audio_out_channels=4, audio_num_attention_heads=2, audio_attention_head_dim=4,
        audio_cross_attention_dim=8, num_layers=2, caption_channels=16, gated_attn=v23, audio_gated_attn=v23,
        cross_attn_mod=v23, audio_cross_attn_mod=v23, use_prompt_adaln_single=v23,
    )  # fmt: skip
    linears = {name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    missing = [diffusers_name(layer) for layer in layers if diffusers_name(layer) not in linears]
    assert not missing, f"not diffusers LTX-2 layers: {missing}"
    print(f"  diffusers {version}: all {len(layers)} layer names are diffusers LTX2VideoTransformer3DModel Linears")


def make_pair(shape: tuple[int, int], rank: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    out, inp = shape
    down = (torch.randn(rank, inp, generator=gen) * 0.3).to(torch.bfloat16)
    up = (torch.randn(out, rank, generator=gen) * 0.3).to(torch.bfloat16)
    return down, up


def spelled(pairs: dict[str, tuple[torch.Tensor, torch.Tensor]], spelling: str) -> dict[str, torch.Tensor]:
    out = {}
    for layer, (down, up) in pairs.items():
        rank = down.shape[0]
        if spelling == "ltx":
            out[f"diffusion_model.{layer}.lora_A.weight"] = down
            out[f"diffusion_model.{layer}.lora_B.weight"] = up
        elif spelling == "comfyui":  # alpha / rank = 2, the up matrix halved (exact in bf16)
            out[f"diffusion_model.{layer}.lora_down.weight"] = down
            out[f"diffusion_model.{layer}.lora_up.weight"] = up / 2
            out[f"diffusion_model.{layer}.alpha"] = torch.tensor(2.0 * rank)
        elif spelling == "kohya":
            name = "lora_unet_" + layer.replace(".", "_")
            out[f"{name}.lora_down.weight"] = down
            out[f"{name}.lora_up.weight"] = up
            out[f"{name}.alpha"] = torch.tensor(float(rank))
        else:
            out[f"transformer.{diffusers_name(layer)}.lora_A.weight"] = down
            out[f"transformer.{diffusers_name(layer)}.lora_B.weight"] = up
    return out


def write_loras(version: str, model_sd: dict[str, torch.Tensor]) -> list[Path]:
    gen = torch.Generator().manual_seed(SEED + mtr.WEIGHT_SEEDS[version])
    paths = []
    for which, rank in ((1, 4), (2, 2)):
        layers = lora_layers(version, which)
        check_diffusers_names(layers, version)
        pairs = {layer: make_pair(tuple(model_sd[f"{layer}.weight"].shape), rank, gen) for layer in layers}
        metadata = {"reference_downscale_factor": str(IC_DOWNSCALE)} if (version, which) == ("t23", 1) else None
        for spelling in SPELLINGS:
            path = OUT_DIR / f"{version}_lora{which}_{spelling}.safetensors"
            save_file({k: v.contiguous() for k, v in spelled(pairs, spelling).items()}, str(path), metadata=metadata)
            if spelling == "ltx":
                paths.append(path)
        print(f"  {version} LoRA {which}: rank {rank}, {len(layers)} layers x {len(SPELLINGS)} spellings")
    return paths


def build(version: str, loras: list[tuple[Path, float]]) -> torch.nn.Module:
    specs = tuple(LoraPathStrengthAndSDOps(str(p), s, LTXV_LORA_COMFY_RENAMING_MAP) for p, s in loras)
    builder = SingleGPUModelBuilder(
        LTXModelConfigurator, str(mtr.official_path(version)), LTXV_MODEL_COMFY_RENAMING_MAP, loras=specs
    )
    return builder.build(device=torch.device("cpu"), dtype=torch.bfloat16).eval()


def forward_inputs(version: str, refs: dict) -> tuple[Modality, Modality]:
    def stream(kind: str) -> Modality:
        return Modality(
            latent=torch.from_numpy(refs[f"inputs.{kind}_latent"].copy()),
            sigma=torch.from_numpy(refs["inputs.sigma"].copy()),
            timesteps=torch.from_numpy(refs[f"inputs.{kind}_timesteps"].copy()),
            positions=torch.from_numpy(refs[f"inputs.{kind}_positions"].copy()),
            context=torch.from_numpy(refs[f"{version}.text.{kind}_context"].copy()),
        )

    return stream("video"), stream("audio")


@torch.no_grad()
def fusion_references(version: str) -> tuple[dict[str, torch.Tensor], list[Path]]:
    plain = build(version, [])
    paths = write_loras(version, plain.state_dict())
    fused = build(version, list(zip(paths, STRENGTHS, strict=True)))
    touched = set(lora_layers(version, 1)) | set(lora_layers(version, 2))
    sd = fused.state_dict()
    fused_sd = {layer: sd[f"{layer}.weight"] for layer in sorted(touched)}
    fixture_io.save_safetensors(fused_sd, OUT_DIR / f"{version}_fused.safetensors", dtype=torch.bfloat16, root=OUT_DIR)
    refs = {}
    for layer in touched:  # the LoRA changed every layer it touches
        assert not torch.equal(sd[f"{layer}.weight"], plain.state_dict()[f"{layer}.weight"]), layer
    video, audio = forward_inputs(version, dict(np.load(mtr.OUT_DIR / "refs.npz")))
    out_video, out_audio = fused.float()(video=video, audio=audio, perturbations=None)
    refs[f"{version}.out.video"], refs[f"{version}.out.audio"] = out_video, out_audio
    return refs, paths


def ic_states(reference: torch.Tensor, image: torch.Tensor, token_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    components = mtr.PipelineComponents(dtype=torch.float32, device=torch.device("cpu"))
    tools = VideoLatentTools(components.video_patchifier, IC_TARGET, IC_FPS)
    base = tools.create_initial_state(torch.device("cpu"), torch.float32)
    base = VideoConditionByLatentIndex(latent=image, strength=1.0, latent_idx=0).apply_to(base, tools)
    item = VideoConditionByReferenceLatent(latent=reference, downscale_factor=IC_DOWNSCALE, strength=IC_STRENGTH)
    refs = {}
    for name, cond in (
        ("bare", item),
        ("scalar", ConditioningItemAttentionStrengthWrapper(item, attention_mask=IC_ATTENTION)),
        ("mask", ConditioningItemAttentionStrengthWrapper(item, attention_mask=token_mask)),
    ):
        state = cond.apply_to(base, tools)
        refs.update(
            {
                f"ic.{name}.latent": state.latent,
                f"ic.{name}.clean_latent": state.clean_latent,
                f"ic.{name}.denoise_mask": state.denoise_mask,
                f"ic.{name}.positions": state.positions,
            }
        )
        if state.attention_mask is not None:
            refs[f"ic.{name}.attention_mask"] = state.attention_mask
        else:
            assert name == "bare"
    # A second reference on top of the first (the masks' block structure: no attention between references).
    twice = ConditioningItemAttentionStrengthWrapper(item, attention_mask=IC_ATTENTION)
    state = twice.apply_to(twice.apply_to(base, tools), tools)
    refs["ic.twice.attention_mask"] = state.attention_mask
    refs["ic.twice.positions"] = state.positions
    return refs


def import_ic_lora() -> types.ModuleType:
    """``ltx_pipelines.ic_lora`` without PyAV / PIL / torchaudio: stand-ins for the modules only its media and audio
    paths use (never called here)."""
    if "torchaudio" not in sys.modules:
        torchaudio = types.ModuleType("torchaudio")
        for sub in ("transforms", "functional"):
            setattr(torchaudio, sub, types.ModuleType(f"torchaudio.{sub}"))
            sys.modules[f"torchaudio.{sub}"] = getattr(torchaudio, sub)
        sys.modules["torchaudio"] = torchaudio
    media_io = sys.modules.setdefault("ltx_pipelines.utils.media_io", types.ModuleType("ltx_pipelines.utils.media_io"))
    for name in ("encode_video", "load_video_conditioning"):
        if not hasattr(media_io, name):
            setattr(media_io, name, None)
    args = types.ModuleType("ltx_pipelines.utils.args")
    for name in ("ImageConditioningInput", "VideoConditioningAction", "VideoMaskConditioningAction"):
        setattr(args, name, object)
    args.default_2_stage_distilled_arg_parser = args.detect_checkpoint_path = None
    sys.modules.setdefault("ltx_pipelines.utils.args", args)
    utils = sys.modules["ltx_pipelines.utils"]  # the bare namespace package make_transformer_refs registers
    for name in ("ModelLedger", "assert_resolution", "cleanup_memory", "combined_image_conditionings",
                 "denoise_audio_video", "encode_prompts", "euler_denoising_loop", "simple_denoising_func"):  # fmt: skip
        if not hasattr(utils, name):
            setattr(utils, name, None)
    if not hasattr(utils, "get_device"):
        utils.get_device = lambda: torch.device("cpu")
    return importlib.import_module("ltx_pipelines.ic_lora")


@torch.no_grad()
def conditioning_references() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(SEED)
    reference = torch.randn(IC_REFERENCE.to_torch_shape(), generator=gen)
    image = torch.randn(IC_TARGET._replace(frames=1).to_torch_shape(), generator=gen)
    token_mask = torch.rand(1, IC_REFERENCE.frames * IC_REFERENCE.height * IC_REFERENCE.width, generator=gen)
    token_mask[0, :3] = 0.0  # fully masked tokens: the additive bias is the dtype's minimum there
    refs = {"ic.reference_latent": reference, "ic.image_latent": image, "ic.token_mask": token_mask}
    refs.update(ic_states(reference, image, token_mask))
    pixel_mask = torch.rand(PIXEL_MASK_SHAPE, generator=gen)
    ic_lora = import_ic_lora()
    refs["ic.pixel_mask"] = pixel_mask
    refs["ic.latent_mask"] = ic_lora.ICLoraPipeline._downsample_mask_to_latent(pixel_mask, IC_REFERENCE)
    return refs


@torch.no_grad()
def masked_forward_references(refs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The plain t23 model (video only: independent of the A<->V timestep rule) on the IC-conditioned state with the
    per-token attention mask, and without it: the reference for the transformer's self-attention mask."""
    model = build("t23", []).float()
    text = np.load(mtr.OUT_DIR / "refs.npz")
    sigma = torch.tensor([mtr.SIGMA])
    out = {}
    for name, mask in (("masked", refs["ic.mask.attention_mask"]), ("unmasked", None)):
        video = Modality(
            latent=refs["ic.mask.latent"],
            sigma=sigma,
            timesteps=(refs["ic.mask.denoise_mask"] * sigma).squeeze(-1),
            positions=refs["ic.mask.positions"],
            context=torch.from_numpy(text["t23.text.video_context"].copy()),
            attention_mask=mask,
        )
        out[f"ic.forward_{name}.video"] = model(video=video, audio=None, perturbations=None)[0]
    assert not torch.allclose(out["ic.forward_masked.video"], out["ic.forward_unmasked.video"])
    return out


@torch.no_grad()
def loop_references(version: str, loras: list[Path]) -> dict[str, torch.Tensor]:
    """ICLoraPipeline stage 1: distilled sigmas, image + reference conditioning, the two LoRAs fused (0.7, -0.3:
    the weights of ``<version>_fused.safetensors``, so that the loop can be checked apart from the fusion)."""
    model = X0Model(build(version, list(zip(loras, STRENGTHS, strict=True))).float()).eval()
    v_ctx, a_ctx = msr.positive_contexts(version)
    gen = torch.Generator().manual_seed(SEED + 1)
    latent_shape = msr.video_latent_shape()  # (1, 16, 3, 2, 3): OUTPUT_SHAPE 17 x 64 x 96
    image = torch.randn(latent_shape._replace(frames=1).to_torch_shape(), generator=gen)
    reference = torch.randn(latent_shape._replace(height=1, width=2).to_torch_shape(), generator=gen)
    conditionings = [
        VideoConditionByLatentIndex(latent=image, strength=1.0, latent_idx=0),
        VideoConditionByReferenceLatent(latent=reference, downscale_factor=IC_DOWNSCALE, strength=1.0),
    ]

    def simple():
        return msr.helpers.simple_denoising_func(video_context=v_ctx, audio_context=a_ctx, transformer=model)

    noiser = msr.RecordingNoiser(torch.Generator().manual_seed(msr.NOISE_SEED))
    sigmas = torch.Tensor(msr.constants.DISTILLED_SIGMA_VALUES)
    name = f"{version}.iclora_s1"
    video, audio, record = msr.run_denoise(name, noiser, sigmas, simple, conditionings=conditionings)
    refs = {f"{version}.iclora_s1.image_latent": image, f"{version}.iclora_s1.reference_latent": reference}
    refs.update(msr.take_draws(noiser))
    refs.update(msr.state_arrays(name, record, (video, audio)))
    return refs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rule", choices=("1.0", "1.2"), default="1.0", help="A<->V cross-attention timestep rule")
    args = parser.parse_args()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for old in OUT_DIR.glob("*.safetensors"):
        old.unlink()
    refs: dict[str, torch.Tensor] = {}
    loras = {}
    for version in mtr.VERSIONS:
        fused, paths = fusion_references(version)
        refs.update(fused)
        loras[version] = paths
    refs.update(conditioning_references())
    refs.update(masked_forward_references(refs))
    if args.rule == "1.2":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        rule = importlib.import_module("ltx_core_1_2_rule")
        rule.apply()
        print(f"ltx-core 1.0.0 + 1.2.0 rule reproduces fixture b: {rule.check_against_fixture()}")
    for version in mtr.VERSIONS:
        refs.update(loop_references(version, loras[version]))
    refs["loop_rule"] = torch.tensor([float(args.rule)])
    fixture_io.save_npz({k: v.detach().float().numpy() for k, v in refs.items()}, OUT_DIR / "refs.npz", np.float32)
    fixture_io.write_json(
        {"strengths": list(STRENGTHS), "loop_rule": args.rule, "ic_downscale": IC_DOWNSCALE}, OUT_DIR / "refs.json"
    )
    size = sum(p.stat().st_size for p in OUT_DIR.iterdir()) / 1024
    print(f"wrote {OUT_DIR.relative_to(mtr.REPO)} ({size:.0f} KiB, loop rule {args.rule})")


if __name__ == "__main__":
    main()

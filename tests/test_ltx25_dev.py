"""The LTX-2.5 dev (guided) two-stage flow end to end, on the tiny 2.5 dev release (`make-tiny --version 2.5
--variant dev`: the dev transformer and the distilled LoRA in ``loras/``, random weights, CPU).

What ltx-pipelines 1.2.0 runs for a 2.5 dev checkpoint (``ltx25-facts`` §4.2, §4.3; ``TI2VidTwoStagesPipeline``):
stage 1 at half size guided by the multi-modal guider with ``LTX_2_3_PARAMS`` (30 steps of ``LTX2Scheduler``,
deterministic Euler: no ancestral noise; video cfg 3 / STG 1 on block 28 / rescale 0.7 / modality 3, audio cfg 7),
the guider combining its predictions in float32; stage 2 after the x2 upsample with ``DISTILLED_STAGE_2``, unguided,
on stage 1's model plus the distilled LoRA (``with_additional_loras``). No 1.2.0 fixture covers a guided step (the
fixtures are the transformer, text path, duration head and ancestral loop), so the guided step is checked against
the 1.2.0 formula computed here from the step's own cond / uncond / perturbed / isolated predictions.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from click.testing import CliRunner
from media_probe import frames, probe, write_image
from mlx.utils import tree_flatten
from safetensors.numpy import save_file

from ltx_backend import events
from ltx_backend.cli.main import cli
from ltx_backend.models.transformer import LTXModel, Perturbations, TransformerConfig
from ltx_backend.pipeline import ancestral, ltx25_flow
from ltx_backend.pipeline import engine as engines
from ltx_backend.pipeline import sampler as s
from ltx_backend.pipeline import stage_plan as sp
from ltx_backend.pipeline.engine import Engine
from ltx_backend.pipeline.request import GenerationRequest, Keyframe
from ltx_backend.pipeline.schedules import DISTILLED_STAGE_2, ltx2_sigmas
from ltx_backend.tiny import random_lora, write_tiny_model
from ltx_backend.weights.checkpoint import open_checkpoint
from ltx_backend.weights.lora import LoraSpec, model_targets, our_layer
from ltx_backend.weights.transformer import transformer_section

SMALL = {"width": 128, "height": 128, "fps": 24.0}
GUIDED_ATOL = 1e-6  # float32 (measured 2.4e-7): the guided output vs the formula on its passes run one by one


@pytest.fixture(scope="module")
def tiny25dev(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny-2.5-dev", "2.5", variant="dev")


@pytest.fixture(scope="module")
def style(tiny25dev: Path, tmp_path_factory: pytest.TempPathFactory) -> LoraSpec:
    """A user LoRA: stage 1 carries it alone, stage 2 carries it and the distilled LoRA."""
    model = LTXModel(TransformerConfig.from_section(transformer_section(open_checkpoint(tiny25dev))))
    path = tmp_path_factory.mktemp("loras") / "style.safetensors"
    mx.save_safetensors(str(path), random_lora(model, rank=2, seed=5, every=3))
    return LoraSpec(path, 0.5)


@pytest.fixture(scope="module")
def engine(tiny25dev: Path) -> Engine:
    return Engine(tiny25dev)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_image(tmp_path_factory.mktemp("images") / "start.png", 160, 96)


def run(engine: Engine, out: Path, **fields) -> tuple[events.Result, list[events.Event]]:
    seen: list[events.Event] = []
    defaults = {"prompt": "a red fox runs through snow", "seed": 7, "output_path": str(out), **SMALL}
    return engine.generate(GenerationRequest(**{**defaults, **fields}), emit=seen.append), seen


@pytest.fixture(scope="module")
def t2v(tiny25dev: Path, style: LoraSpec, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One T2V job with audio and a user LoRA, recording each stage's loop (sigmas), each transformer load (its
    LoRAs and the model), the first guided step (its stage, inputs and output) and any ancestral noise draw."""
    record: dict = {"loops": [], "loads": [], "guided": [], "ancestral": 0}
    real_load, real_guided, real_euler = engines.load_transformer, s.guided_denoiser, sp.LOOPS["euler"]
    real_noise = ancestral.SeededNoise.__call__

    def load(ckpt, dtype=None, quantize=None, loras=()):
        model = real_load(ckpt, dtype, quantize, loras=loras)
        record["loads"].append((tuple(loras), model))
        return model

    def guided(stage, negative_video, negative_audio, video_params, audio_params, runner=s.run_together):
        denoise = real_guided(stage, negative_video, negative_audio, video_params, audio_params, runner)

        def step(video, audio, sigma):
            out = denoise(video, audio, sigma)
            if not record["guided"]:
                record["guided"].append((stage, negative_video, negative_audio, video_params, audio_params, video,
                                         audio, sigma, out))  # fmt: skip
            return out

        return step

    def loop(sigmas, video, audio, denoise, on_step, seed):
        record["loops"].append(np.asarray(sigmas, dtype=np.float32))
        return real_euler(sigmas, video, audio, denoise, on_step, seed)

    def noise(self, shape, dtype):
        record["ancestral"] += 1
        return real_noise(self, shape, dtype)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engines, "load_transformer", load)
        patch.setattr(s, "guided_denoiser", guided)
        patch.setitem(sp.LOOPS, "euler", loop)
        patch.setattr(ancestral.SeededNoise, "__call__", noise)
        engine = Engine(tiny25dev, loras=[style])
        out = tmp_path_factory.mktemp("t2v")
        result, seen = run(engine, out / "out.mp4", num_frames=9, audio_output_path=str(out / "a.wav"))
    return {**record, "engine": engine, "result": result, "seen": seen}


# --- the release and what the engine makes of it -------------------------------------------------------------------


def test_the_tiny_dev_release(tiny25dev: Path, engine: Engine) -> None:
    ckpt = open_checkpoint(tiny25dev)
    assert ckpt.files[0].path.name == "ltx-2.5-tiny-dev-transformer-f32.safetensors"
    assert (engine.variant, engine.version) == ("dev", "2.5")
    assert engine.distilled_lora == LoraSpec(tiny25dev / "loras" / "ltx-2.5-tiny-distilled-lora-f32.safetensors")
    assert ltx25_flow.bundled_text_encoder(ckpt).parent.name == "text_encoders"
    # a distilled release brings no distilled LoRA for stage 2, a dev one its own unless the caller names another
    assert ltx25_flow.bundled_distilled_lora(ckpt, "distilled") is None
    other = LoraSpec(engine.distilled_lora.path, 0.8)
    assert Engine(tiny25dev, distilled_lora=other).distilled_lora == other


def test_make_tiny_dev_variant(tmp_path: Path) -> None:
    runner = CliRunner()
    made = runner.invoke(cli, ["make-tiny", "--version", "2.5", "--variant", "dev", str(tmp_path / "dev")])
    assert made.exit_code == 0, made.output
    folders = sorted(path.parent.name for path in (tmp_path / "dev").glob("*/*.safetensors"))
    assert folders == ["diffusion_models", "latent_upscale_models", "loras", "model_patches", "text_encoders", "vae",
                       "vae"]  # fmt: skip
    for args in (["--version", "2.5", "--variant", "dev"], ["--version", "2.3", "--variant", "dev", str(tmp_path)]):
        refused = runner.invoke(cli, ["make-tiny", *args])
        assert refused.exit_code == 2 and "--variant dev needs --version 2.5 and a PATH" in refused.output


def test_the_dev_transformer_of_a_release_with_both(tiny25dev: Path, tmp_path: Path) -> None:
    """Lightricks/LTX-2.5 ships the distilled and the dev transformer side by side: the folder opens the distilled
    one, the dev file's path opens the same release with the dev transformer (its text encoder, duration head and
    distilled LoRA found beside it)."""
    release = shutil.copytree(tiny25dev, tmp_path / "release")
    dev = release / "diffusion_models" / "ltx-2.5-tiny-dev-transformer-f32.safetensors"
    shutil.copyfile(dev, release / "diffusion_models" / "ltx-2.5-tiny-distilled-transformer-f32.safetensors")
    assert engines.checkpoint_variant(open_checkpoint(release)) == "distilled"
    ckpt = open_checkpoint(dev)
    assert ckpt.root == release and engines.checkpoint_variant(ckpt) == "dev"
    assert [f.path.parent.name for f in ckpt.files] == ["diffusion_models", "vae", "vae"]
    chosen = Engine(dev)
    assert chosen.variant == "dev" and chosen.distilled_lora.path.parent == release / "loras"
    assert Path(chosen.text_encoder_root).parent == release / "text_encoders"
    assert ltx25_flow.duration_head_path(ckpt).parent == release / "model_patches"


def test_a_full_single_file_checkpoint_in_a_diffusion_models_folder_opens_alone(tmp_path: Path) -> None:
    """ComfyUI keeps full single-file checkpoints in ``models/diffusion_models/`` beside ``models/vae/``: such a file
    (its config has a VAE section) is a checkpoint of its own, not a release tree's transformer."""
    models = tmp_path / "models"
    for folder in ("vae", "diffusion_models"):
        (models / folder).mkdir(parents=True)
    path = models / "diffusion_models" / "ltx-2.3-22b-dev.safetensors"
    sections = json.dumps({"transformer": {"num_layers": 2}, "vae": {}, "audio_vae": {}})
    save_file({"x": np.zeros(1, np.float32)}, str(path), metadata={"config": sections})
    save_file({"x": np.zeros(1, np.float32)}, str(models / "vae" / "other.safetensors"))
    ckpt = open_checkpoint(path)
    assert ckpt.root == path.parent and [f.path for f in ckpt.files] == [path]


# --- T2V with audio: guided stage 1, stage 2 with the distilled LoRA ----------------------------------------------


def test_text_to_video_with_audio(t2v: dict) -> None:
    result = t2v["result"]
    info = probe(result.video_path)
    assert (info.video_codec, info.width, info.height, info.frames) == ("h264", 128, 128, 9)
    assert (info.audio_codec, info.sample_rate) == ("aac", 48000)
    assert Path(result.audio_path).is_file() and result.sampler == "dev" and result.steps == (30, 3)
    totals = {(e.stage, e.total) for e in t2v["seen"] if isinstance(e, events.DenoiseStep)}
    assert totals == {(1, 30), (2, 3)}
    assert not [e for e in t2v["seen"] if isinstance(e, events.Warning)]


def test_stage_1_is_ltx2_scheduler_euler_and_stage_2_the_distilled_refinement(t2v: dict) -> None:
    """``ti2vid_two_stages``: ``LTX2Scheduler().execute(30)`` (4096 tokens) with the deterministic Euler step, then
    ``STAGE_2_DISTILLED_SIGMA_VALUES``; unlike the distilled 2.5 stage 1, no ancestral noise is drawn."""
    stage1, stage2 = t2v["loops"]
    np.testing.assert_array_equal(stage1, ltx2_sigmas(30))
    np.testing.assert_array_equal(stage2, np.asarray(DISTILLED_STAGE_2, dtype=np.float32))
    assert t2v["ancestral"] == 0
    assert len(t2v["guided"]) == 1  # stage 1 only: stage 2's denoiser is the simple one


def test_stage_2_adds_the_distilled_lora_to_stage_1s_set(t2v: dict, style: LoraSpec) -> None:
    (stage1_loras, stage1), (stage2_loras, stage2) = t2v["loads"]
    distilled = t2v["engine"].distilled_lora
    assert stage1_loras == (style,) and stage2_loras == (style, distilled)
    # the stage-2 weights are stage 1's plus the distilled LoRA's deltas: the layers it names changed, no other
    first, second = dict(tree_flatten(stage1.parameters())), dict(tree_flatten(stage2.parameters()))
    changed = {key for key in first if not mx.array_equal(first[key], second[key]).item()}
    targets = model_targets(stage1)  # q/k/v of one stacked layer share its weight
    layers = {key.removeprefix("diffusion_model.").rsplit(".lora_", 1)[0] for key in mx.load(str(distilled.path))}
    named = {targets[our_layer(layer)].module for layer in layers}
    assert {key.removesuffix(".weight") for key in changed} == named


def test_the_guided_step_is_the_1_2_0_guider_formula(t2v: dict) -> None:
    """The first stage-1 step: its output equals ltx-core 1.2.0's ``MultiModalGuider.calculate`` evaluated here in
    float32 on the step's four predictions (each run on its own): ``cond + (cfg - 1)(cond - uncond) + stg(cond -
    perturbed) + (modality - 1)(cond - isolated)``, then the std rescale ``pred * (r * std(cond) / std(pred) + 1 -
    r)`` (unbiased std over the whole tensor), with 2.5's defaults (``LTX_2_3_PARAMS``: STG on block 28, here the
    tiny model's last block)."""
    stage, negative_video, negative_audio, video_params, audio_params, video, audio, sigma, out = t2v["guided"][0]
    block = min(28, stage.model.config.num_layers - 1)
    assert video_params == s.GuidanceParams(3.0, 1.0, (block,), 0.7, 3.0)
    assert audio_params == s.GuidanceParams(7.0, 1.0, (block,), 0.7, 3.0)
    assert sigma == pytest.approx(float(ltx2_sigmas(30)[0]))
    stg = Perturbations(skip_video_self_attention=frozenset({block}), skip_audio_self_attention=frozenset({block}))
    passes = {
        "cond": s.x0_forward(stage, video, audio, sigma),
        "uncond": s.x0_forward(stage, video, audio, sigma, negative_video, negative_audio),
        "perturbed": s.x0_forward(stage, video, audio, sigma, perturbations=stg),
        "isolated": s.x0_forward(stage, video, audio, sigma, perturbations=Perturbations(skip_cross_modal=True)),
    }
    for index, params in enumerate((video_params, audio_params)):
        cond, uncond, perturbed, isolated = (np.array(passes[name][index], dtype=np.float32) for name in passes)
        pred = (cond + np.float32(params.cfg_scale - 1) * (cond - uncond) + np.float32(params.stg_scale)
                * (cond - perturbed) + np.float32(params.modality_scale - 1) * (cond - isolated))  # fmt: skip
        factor = cond.std(ddof=1) / pred.std(ddof=1)
        expected = pred * np.float32(params.rescale_scale * factor + (1 - params.rescale_scale))
        got = np.array(out[index])
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=0, atol=GUIDED_ATOL)
        # every term counts: the guided prediction is far from the conditional one
        assert np.abs(expected - cond).max() > 100 * GUIDED_ATOL
        for name in ("uncond", "perturbed", "isolated"):
            assert np.abs(np.array(passes[name][index]) - cond).max() > 100 * GUIDED_ATOL, name


def test_hq_runs_the_distilled_lora_in_both_stages(engine: Engine, tmp_path: Path, monkeypatch) -> None:
    """``TI2VidTwoStagesHQPipeline``: the distilled LoRA at 0.25 in stage 1 and 0.5 in stage 2 (the CLI's defaults,
    not the file's strength), res_2s in both stages."""
    loads, real_load = [], engines.load_transformer
    monkeypatch.setattr(engines, "load_transformer", lambda ckpt, dtype=None, quantize=None, loras=():
                        loads.append(tuple(loras)) or real_load(ckpt, dtype, quantize, loras=loras))  # fmt: skip
    result, _ = run(engine, tmp_path / "hq.mp4", num_frames=9, audio=False, pipeline="hq", steps=2)
    path = engine.distilled_lora.path
    assert loads == [(LoraSpec(path, 0.25),), (LoraSpec(path, 0.5),)]
    assert result.steps == (2, 3) and probe(result.video_path).frames == 9


# --- I2V, automatic length, determinism ----------------------------------------------------------------------------


def test_image_to_video(engine: Engine, image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    crfs, masks = [], []
    real_frame, real_guided = engines.conditioning_frame, s.guided_denoiser

    def spy(path, height, width, crf=33):
        crfs.append(crf)
        return real_frame(path, height, width, crf=crf)

    def guided(stage, *args):
        denoise = real_guided(stage, *args)

        def step(video, audio, sigma):
            masks.append(np.array(video.denoise_mask))
            return denoise(video, audio, sigma)

        return step

    monkeypatch.setattr(engines, "conditioning_frame", spy)
    monkeypatch.setattr(s, "guided_denoiser", guided)
    result, _ = run(engine, tmp_path / "i2v.mp4", num_frames=9, keyframes=(Keyframe(str(image)),))
    assert crfs == [18, 18]  # both stage sizes, the 2.5 VAE's CRF
    assert probe(result.video_path).frames == 9 and result.steps == (30, 3)
    # every guided step sees the first latent frame (2 x 2 tokens at stage 1) conditioned, the rest generated
    assert len(masks) == 30 and all(m.tolist() == [[0.0] * 4 + [1.0] * 4] for m in masks)


def test_the_duration_head_chooses_the_length(engine: Engine, tmp_path: Path) -> None:
    result, seen = run(engine, tmp_path / "auto.mp4", audio=True)  # no num_frames
    (choice,) = [e for e in seen if isinstance(e, events.DurationChosen)]
    assert choice.num_frames == result.num_frames == 33 and not choice.clamped  # ~1.5 s, snapped to 8k+1
    assert probe(result.video_path).frames == 33 and result.steps == (30, 3)


def test_the_same_seed_gives_the_same_bytes(engine: Engine, tmp_path: Path) -> None:
    def job(name: str, seed: int) -> tuple[bytes, bytes, np.ndarray]:
        out, wav = tmp_path / f"{name}.mp4", tmp_path / f"{name}.wav"
        run(engine, out, num_frames=9, seed=seed, audio_output_path=str(wav))
        return out.read_bytes(), wav.read_bytes(), frames(out)

    a, b, c = job("a", 11), job("b", 11), job("c", 12)
    assert a[0] == b[0] and a[1] == b[1]
    assert a[1] != c[1] and not np.array_equal(a[2], c[2])

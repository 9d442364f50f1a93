"""Low-RAM jobs: the planner's choices (resident -> streaming -> tiling -> refusal naming what fits) and whole tiny
jobs with the transformer streamed, which must write the very same MP4 as with it resident."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import mlx.core as mx
import pytest

from ltx_backend import events
from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.models.vae_tiling import decode_work, tiling_for
from ltx_backend.pipeline import memory
from ltx_backend.pipeline.engine import Engine
from ltx_backend.pipeline.request import GenerationRequest, validate
from ltx_backend.tiny import write_tiny_model
from ltx_backend.weights.checkpoint import Checkpoint, Layout
from ltx_backend.weights.safetensors_file import TensorInfo
from tests.test_memory_plan import HeaderOnlyFile, ltx2_checkpoint

GB = 1e9
SMALL = {"width": 128, "height": 128, "num_frames": 9, "fps": 24.0}


def q4_checkpoint() -> Checkpoint:
    """ltx2_checkpoint with every block linear stored as MLX 4-bit (group 64), as the Q4 conversions store it."""
    bf16 = ltx2_checkpoint()
    path = bf16.files[0].path
    tensors: dict[str, TensorInfo] = {}
    for key, info in bf16.files[0].tensors.items():
        if ".transformer_blocks." in key and key.endswith(".weight") and len(info.shape) == 2:
            out, inner = info.shape
            base = key.removesuffix(".weight")
            tensors[key] = TensorInfo(path, key, (out, inner // 8), "U32")
            for leaf in ("scales", "biases"):
                tensors[f"{base}.{leaf}"] = TensorInfo(path, f"{base}.{leaf}", (out, inner // 64), "BF16")
        else:
            tensors[key] = info
    return Checkpoint(root=path.parent, layout=Layout.UNIFIED, files=[HeaderOnlyFile(path, tensors)])


def job(width: int, height: int, frames: int, **fields) -> GenerationRequest:
    return validate(GenerationRequest("a fox", "/tmp/out.mp4", width=width, height=height, num_frames=frames, **fields))


# (model, width, height, frames, memory field, limit GB) -> (transformer, tiling) the planner must choose
CHOICES = [
    ("bf16", 768, 512, 121, "auto", 64, ("resident", "auto")),
    ("bf16", 768, 512, 121, "auto", 30, ("streaming", "auto")),
    ("q4", 768, 512, 121, "auto", 24, ("resident", "auto")),
    ("q4", 768, 512, 121, "auto", 10, ("streaming", "auto")),
    ("q4", 768, 512, 121, "low", 64, ("streaming", "auto")),
    ("q4", 512, 320, 97, "auto", 8, ("streaming", "auto")),
]


@pytest.fixture(scope="module")
def models() -> dict[str, Checkpoint]:
    return {"bf16": ltx2_checkpoint(), "q4": q4_checkpoint()}


@pytest.mark.parametrize(("model", "width", "height", "frames", "mode", "limit", "expected"), CHOICES)
def test_planner_picks_the_cheapest_mode_that_fits(models, model, width, height, frames, mode, limit, expected):
    request = job(width, height, frames, memory=mode)
    choice = memory.choose(models[model], None, request, mx.bfloat16, None, int(limit * GB))
    assert ("streaming" if choice.streaming else "resident", choice.tiling) == expected
    assert choice.plan.peak <= limit * GB
    event = choice.event()
    assert event.transformer == expected[0] and event.reasons
    if expected[0] == "resident":
        assert "fits resident" in event.reasons[0]
    elif mode == "low":
        assert "--low-ram" in event.reasons[0]
    else:  # says what resident would need
        resident = memory.estimate(models[model], None, request, mx.bfloat16).phases["denoising"].total
        assert f"{resident / GB:.1f} GB" in event.reasons[0] and "streamed" in event.reasons[0]


def test_streaming_holds_four_blocks_instead_of_all(models) -> None:
    request = job(768, 512, 121)
    resident = memory.estimate(models["q4"], None, request, mx.bfloat16).phases["denoising"]
    streamed = memory.estimate(models["q4"], None, request, mx.bfloat16, streaming=True).phases["denoising"]
    block = sum(
        math.prod(i.shape) * (4 if i.dtype == "U32" else 2)
        for k, i in models["q4"].component("transformer").tensors.items()
        if k.startswith("transformer_blocks.0.")
    )
    rest = resident.weights - 48 * block
    assert streamed.weights == rest + memory.STREAMED_BLOCKS * block
    assert streamed.activations == resident.activations
    assert streamed.weights < resident.weights / 6  # 1.6 GB instead of 11.1 GB


@pytest.mark.parametrize("limit", [7, 10, 14])
def test_streaming_keeps_the_blocks_that_fit(models, limit: int) -> None:
    """Streamed, the planner holds as many blocks once read as `KEPT_SHARE` of the memory left allows (each one
    held is one block fewer read per step); `--low-ram` holds none: the least memory."""
    request = job(768, 512, 121)
    streamed = memory.estimate(models["q4"], None, request, mx.bfloat16, streaming=True).phases["denoising"]
    blocks, block = memory._streamed_blocks(models["q4"], 2)
    assert blocks == 48
    choice = memory.choose(models["q4"], None, request, mx.bfloat16, None, int(limit * GB))
    spare = limit * GB - streamed.total
    assert choice.streaming and choice.kept_blocks == min(47, int(spare * memory.KEPT_SHARE) // block)
    assert choice.kept_blocks > 0 and choice.plan.peak <= limit * GB
    denoising = choice.plan.phases["denoising"]
    assert denoising.weights == streamed.weights + choice.kept_blocks * block
    assert f"{choice.kept_blocks} of its 48 blocks held once read" in choice.reasons[0]
    assert f"{choice.kept_blocks} kept" in denoising.detail
    low = memory.choose(models["q4"], None, replace(request, memory="low"), mx.bfloat16, None, int(limit * GB))
    assert low.streaming and low.kept_blocks == 0


def test_planner_tiles_the_decode_when_only_tiles_fit(models) -> None:
    request = job(512, 320, 97, tiling="auto")  # auto decodes 65-frame tiles here; streamed denoising is smaller
    plan = memory.estimate(models["q4"], None, request, mx.bfloat16, streaming=True)
    aggressive = memory.estimate(models["q4"], None, replace(request, tiling="aggressive"), mx.bfloat16, streaming=True)
    decode, tiled = plan.phases["video_decode"].total, aggressive.phases["video_decode"].total
    assert tiled < decode
    # a limit between the two decodes, above the streamed denoising
    limit = max(tiled, aggressive.phases["denoising"].total, (tiled + decode) / 2)
    assert limit < decode
    choice = memory.choose(models["q4"], None, request, mx.bfloat16, None, int(limit))
    assert (choice.streaming, choice.tiling) == (True, "aggressive")
    assert "tiling aggressive" in choice.reasons[-1]
    # an explicit tiling is the user's: the planner refuses instead of overriding it
    with pytest.raises(LtxError):
        memory.choose(models["q4"], None, replace(request, tiling="default"), mx.bfloat16, None, int(limit))


def test_planner_tiles_the_decode_with_the_least_work_that_fits(models) -> None:
    """Between the untiled decode and generate_av's tiles, ``auto`` picks the tiling with the least decode work
    within UNTILED_SHARE of the memory: fewer voxels and calls than generate_av's 36 tiles of 768x512x121."""
    request = job(768, 512, 121)
    auto = memory.estimate(models["q4"], None, request, mx.bfloat16).phases["video_decode"].total  # generate_av's
    limit = 14 * GB  # the untiled decode (13.7 GB) is more than 60% of it
    assert memory.choose(models["q4"], None, request, mx.bfloat16, None, int(limit)).tiling == "auto"  # unchanged
    spec = memory.auto_tiling(models["q4"], request, mx.bfloat16, int(limit))
    tiled = memory.estimate(models["q4"], None, replace(request, tiling=spec), mx.bfloat16).phases["video_decode"]
    assert auto < tiled.total <= memory.UNTILED_SHARE * limit
    assert (
        decode_work(16, 16, 24, tiling_for(spec, 512, 768, 121))[:2]
        < decode_work(16, 16, 24, tiling_for("auto", 512, 768, 121))[:2]
    )
    assert memory.auto_tiling(models["q4"], request, mx.bfloat16, int(30 * GB)) == "none"
    assert memory.auto_tiling(models["q4"], request, mx.bfloat16, 0) == "auto"  # memory unknown: generate_av's


def test_refusal_names_the_frame_count_that_fits(models) -> None:
    request = job(768, 512, 121)
    with pytest.raises(LtxError) as caught:
        memory.choose(models["q4"], None, request, mx.bfloat16, None, int(4 * GB))
    error = caught.value
    assert error.code is ErrorCode.INSUFFICIENT_MEMORY
    assert error.message.startswith("Not enough memory even with the transformer's blocks streamed")
    assert "denoising needs" in error.message and "4.00 GB is available" in error.message
    frames = int(error.hint.split("--num-frames ")[1].split()[0])
    assert frames < 121 and (frames - 1) % 8 == 0
    tiling = error.message.split(" and tiling ")[1].split(":")[0]  # the count is for the tiling the refusal names
    fits, more = (
        memory.estimate(models["q4"], None, replace(job(768, 512, n), tiling=tiling), mx.bfloat16, streaming=True).peak
        for n in (frames, frames + 8)
    )
    assert fits <= 4 * GB < more


def test_refusal_names_a_smaller_pack_when_the_streamed_weights_are_the_problem(models) -> None:
    with pytest.raises(LtxError) as caught:
        memory.choose(models["bf16"], None, job(512, 320, 97), mx.bfloat16, None, int(2 * GB))
    assert memory.LOW_RAM_PACK in caught.value.hint and caught.value.details["streaming"] is True


def test_refusal_names_a_smaller_text_encoder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_tiny_model(tmp_path / "tiny")
    from ltx_backend.weights.checkpoint import open_checkpoint

    ckpt = open_checkpoint(root)
    request = job(128, 128, 9)
    text = memory.estimate(ckpt, root / "text_encoder", request, mx.float32).phases["text_encoding"].total
    monkeypatch.setenv(memory.ENV_LIMIT, str(text / 2 / GB))
    with pytest.raises(LtxError) as caught:
        memory.choose(ckpt, root / "text_encoder", request, mx.float32, None, memory.available_memory())
    assert memory.SMALLER_TEXT_ENCODER in caught.value.hint and memory.ENV_LIMIT in caught.value.hint


def test_unknown_memory_never_refuses(models) -> None:
    choice = memory.choose(models["bf16"], None, job(768, 512, 121), mx.bfloat16, None, 0)
    assert not choice.streaming and "unknown" in choice.reasons[0]


def test_memory_field_is_validated() -> None:
    with pytest.raises(LtxError) as caught:
        job(128, 128, 9, memory="tiny")
    assert caught.value.details["field"] == "memory"


# --- whole jobs ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mixed", [False, True], ids=["2.3 q4", "2.3 mixed precision"])
def test_streamed_job_writes_the_same_mp4(tmp_path: Path, mixed: bool) -> None:
    engine = Engine(write_tiny_model(tmp_path / "model", "2.3", mixed=mixed))
    outputs, plans = [], []
    for mode in ("auto", "low"):
        seen: list[events.Event] = []
        request = GenerationRequest("a fox", str(tmp_path / f"{mode}.mp4"), seed=3, memory=mode, **SMALL)
        engine.generate(request, emit=seen.append)
        outputs.append((tmp_path / f"{mode}.mp4").read_bytes())
        plans += [e for e in seen if isinstance(e, events.MemoryPlan)]
    assert [p.transformer for p in plans] == ["resident", "streaming"]
    assert outputs[0] == outputs[1]


def test_a_job_streaming_with_kept_blocks_writes_the_same_mp4(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The planner's kept blocks reach the streamed transformer the job borrows (a tiny model never needs them: its
    choice is patched), which reads the kept block once, and the video is the resident one's."""
    from ltx_backend.pipeline import engine as engine_module

    engine = Engine(write_tiny_model(tmp_path / "model", "2.3"))
    choose = engine.choose_memory
    monkeypatch.setattr(engine, "choose_memory", lambda request: replace(choose(request), kept_blocks=1))
    loaded = []
    load = engine_module.load_streamed_transformer
    monkeypatch.setattr(
        engine_module, "load_streamed_transformer", lambda *a, **k: loaded.append(load(*a, **k)) or loaded[-1]
    )
    outputs = []
    for mode in ("auto", "low"):
        request = GenerationRequest("a fox", str(tmp_path / f"{mode}.mp4"), seed=3, memory=mode, **SMALL)
        engine.generate(request)
        outputs.append((tmp_path / f"{mode}.mp4").read_bytes())
    assert outputs[0] == outputs[1]
    assert len(loaded) == 1 and loaded[0].block_stream.keep == frozenset({0})
    reads = dict(loaded[0].block_stream.stats.reads)
    assert reads[0] == 1 and reads[1] > 1  # the kept block once, the other one every step


def test_cli_low_ram_and_inspect_bits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import msgspec
    from click.testing import CliRunner

    from ltx_backend.cli.main import cli

    monkeypatch.setenv("LTX_BACKEND_HOME", str(tmp_path / "home"))
    model = write_tiny_model(tmp_path / "mixed", "2.3", mixed=True)
    shown = CliRunner().invoke(cli, ["inspect", str(model), "--json"])
    assert shown.exit_code == 0, shown.output
    bits = msgspec.json.decode(shown.stdout)["transformer_bits"]
    assert {key.split("-")[0] for key in bits} == {"2", "3", "4", "5", "6", "8"}
    text = CliRunner().invoke(cli, ["inspect", str(model)])
    assert "quantized: mixed precision" in text.output and "8-bit g64 x" in text.output

    output = tmp_path / "low.mp4"
    args = ["generate", "-m", str(model), "-p", "waves", "-W", "128", "-H", "128", "-n", "9", "-o", str(output)]
    result = CliRunner().invoke(cli, [*args, "--low-ram"])
    assert result.exit_code == 0, result.output
    assert "memory plan" in result.output and "transformer streaming" in result.output and "--low-ram" in result.output
    assert output.is_file()

"""Memory planning: per-phase estimates from checkpoint headers, the device's memory, and the up-front refusal."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import pytest

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.models.vae_tiling import KEPT_VOXEL_SHARE, decode_work, tiling_for
from ltx_backend.pipeline import memory
from ltx_backend.pipeline.request import GenerationRequest, validate
from ltx_backend.tiny import write_tiny_model
from ltx_backend.weights.checkpoint import Checkpoint, Layout, open_checkpoint
from ltx_backend.weights.safetensors_file import TensorInfo

GB = 1e9


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Checkpoint, Path]:
    root = write_tiny_model(tmp_path_factory.mktemp("memory") / "tiny")
    return open_checkpoint(root), root / "text_encoder"


def request(width: int = 256, height: int = 192, frames: int = 25, **fields) -> GenerationRequest:
    return validate(GenerationRequest("a fox", "/tmp/out.mp4", width=width, height=height, num_frames=frames, **fields))


def plan_for(tiny, dtype=mx.bfloat16, quantize=None, **fields) -> memory.MemoryPlan:
    ckpt, text_encoder = tiny
    return memory.estimate(ckpt, text_encoder, request(**fields), dtype, quantize)


def test_phases_and_peak(tiny) -> None:
    plan = plan_for(tiny)
    assert list(plan.phases) == ["text_encoding", "connectors", "denoising", "video_decode", "audio_decode"]
    assert plan.peak == max(phase.total for phase in plan.phases.values())
    assert plan.peak_phase.total == plan.peak
    assert all(phase.weights > 0 and phase.activations > 0 for phase in plan.phases.values())
    assert "audio_decode" not in plan_for(tiny, audio=False).phases


def test_weights_are_the_tensors_each_phase_loads(tiny) -> None:
    ckpt, _ = tiny
    bf16, f32 = plan_for(tiny, mx.bfloat16), plan_for(tiny, mx.float32)
    floats = [info for info in ckpt.component("transformer").tensors.values() if info.dtype in ("BF16", "F32")]
    assert bf16.phases["denoising"].weights == sum(2 * math.prod(info.shape) for info in floats)
    assert f32.phases["denoising"].weights == 2 * bf16.phases["denoising"].weights
    decoder = ckpt.component("vae_decoder").tensors.values()
    assert bf16.phases["video_decode"].weights == sum(2 * math.prod(info.shape) for info in decoder)
    assert bf16.phases["text_encoding"].weights > 0
    # float32 compute doubles the (bf16-calibrated) working memory
    assert f32.phases["video_decode"].activations == pytest.approx(2 * bf16.phases["video_decode"].activations, 1e-6)


def test_estimates_grow_with_size_and_frames(tiny) -> None:
    small = plan_for(tiny, width=256, height=192, frames=25)
    wider = plan_for(tiny, width=512, height=384, frames=25)
    longer = plan_for(tiny, width=256, height=192, frames=49)
    for bigger in (wider, longer):
        assert bigger.peak > small.peak
        for phase in ("denoising", "video_decode"):
            assert bigger.phases[phase].activations > small.phases[phase].activations
            assert bigger.phases[phase].weights == small.phases[phase].weights
    assert longer.phases["audio_decode"].total > small.phases["audio_decode"].total


def test_tiling_lowers_video_decode(tiny) -> None:
    decode = {
        mode: plan_for(tiny, width=768, height=512, frames=121, tiling=mode).phases["video_decode"].total
        for mode in ("none", "conservative", "default", "auto", "aggressive")
    }
    assert decode["none"] > decode["conservative"] > decode["default"] > decode["auto"] > decode["aggressive"]


@pytest.mark.parametrize("tiling", ["none", "aggressive", "temporal"])
def test_video_decode_estimate_bounds_the_measured_peak(tiny, tiling: str) -> None:
    """The tiny model's decode (fp32, CPU, batched and pipelined as the engine runs it) peaks below the estimate."""
    from ltx_backend.models.vae_tiling import decode_tiled, tiling_for
    from ltx_backend.weights.video import load_video_decoder

    ckpt, _ = tiny
    width, height, frames = 320, 256, 81  # aggressive: 2x2 tiles x 4 windows; temporal: 2 windows
    phase = plan_for(tiny, mx.float32, width=width, height=height, frames=frames, tiling=tiling).phases
    decoder = load_video_decoder(ckpt, mx.float32)
    latent = mx.random.normal((1, (frames - 1) // 8 + 1, height // 32, width // 32, decoder.config.latent_channels))
    mx.eval(latent)
    mx.clear_cache()
    mx.reset_peak_memory()
    for _ in decode_tiled(decoder, latent, tiling_for(tiling, height, width, frames), progress=lambda fraction: None):
        pass
    assert mx.get_peak_memory() <= phase["video_decode"].total


def test_quantize_lowers_denoise_weights_only(tiny) -> None:
    plans = {bits: plan_for(tiny, quantize=bits) for bits in (None, 8, 4)}
    weights = {bits: plan.phases["denoising"].weights for bits, plan in plans.items()}
    assert weights[None] > weights[8] > weights[4]
    activations = {plan.phases["denoising"].activations for plan in plans.values()}
    assert len(activations) == 1
    assert plans[8].phases["video_decode"] == plans[None].phases["video_decode"]


def test_check_suggests_aggressive_tiling_when_decode_is_the_peak(tiny) -> None:
    plan = plan_for(tiny, width=768, height=512, frames=121, tiling="none")
    assert plan.peak_phase.name == "video_decode"
    fits = plan.options["--tiling aggressive"]
    assert fits < plan.peak
    limit = (fits + plan.peak) // 2
    with pytest.raises(LtxError) as caught:
        memory.check(plan, limit)
    error = caught.value
    assert error.code is ErrorCode.INSUFFICIENT_MEMORY
    assert "video decode" in error.message and "GB" in error.message
    assert "--tiling aggressive" in error.hint
    assert error.details["peak_gb"] == round(plan.peak / GB, 2)


def test_check_passes_when_it_fits_or_memory_is_unknown(tiny) -> None:
    plan = plan_for(tiny)
    memory.check(plan, plan.peak)
    memory.check(plan, plan.peak * 10)
    memory.check(plan, 0)


def test_check_suggests_a_smaller_video_when_no_flag_helps(tiny) -> None:
    plan = plan_for(tiny, tiling="aggressive")
    with pytest.raises(LtxError) as caught:
        memory.check(plan, plan.peak - 1)
    assert caught.value.code is ErrorCode.INSUFFICIENT_MEMORY
    assert "smaller size or fewer frames" in caught.value.hint


def test_env_override(monkeypatch) -> None:
    monkeypatch.setenv(memory.ENV_LIMIT, "12.5")
    assert memory.available_memory() == 12_500_000_000
    monkeypatch.setenv(memory.ENV_LIMIT, "lots")
    with pytest.raises(LtxError) as caught:
        memory.available_memory()
    assert caught.value.code is ErrorCode.INVALID_PARAMS
    monkeypatch.delenv(memory.ENV_LIMIT)
    assert memory.available_memory() > 0


G = 10**9  # device queries report whole bytes


def _device_reports(monkeypatch, info: dict, cache_bytes: int = 0, active_bytes: int = 0, limit_bytes: int = 0) -> None:
    """Pretend to run on a GPU whose MLX reports `info`, with `cache_bytes` in MLX's buffer cache, `active_bytes`
    in live arrays and a memory limit of `limit_bytes` (0: none)."""
    monkeypatch.delenv(memory.ENV_LIMIT, raising=False)
    monkeypatch.setattr(memory.mx, "default_device", lambda: mx.Device(mx.gpu))
    monkeypatch.setattr(memory, "_device_info", lambda: info)
    monkeypatch.setattr(memory.mx, "get_cache_memory", lambda: cache_bytes)
    monkeypatch.setattr(memory.mx, "get_active_memory", lambda: active_bytes)
    monkeypatch.setattr(memory.mx, "get_memory_limit", lambda: limit_bytes)


def test_session_budget_counts_what_the_session_holds_beside_free_memory(monkeypatch) -> None:
    # Measured on an H100: after a first 768x512x121 job, CUDA's free memory had dropped by the ~28 GB MLX kept in
    # its cache, and a budget of free + resident alone made the planner stream the resident transformer in job 3.
    _device_reports(
        monkeypatch, {"free_memory": 10 * G, "total_memory": 85 * G}, cache_bytes=20 * G, active_bytes=38 * G
    )
    assert memory.available_memory() == 10 * G
    assert memory.session_budget(38 * G) == 10 * G + 38 * G + 20 * G


def test_session_budget_stops_at_mlx_memory_limit(monkeypatch) -> None:
    # Measured on an H100 (85.5 GB, MLX's limit 80% of it): a plan of free + held memory kept 49 GB of models
    # resident beside an untiled decode and the decode ran out of memory. What is past MLX's limit is not MLX's.
    _device_reports(monkeypatch, {"free_memory": 21 * G}, active_bytes=49 * G, cache_bytes=6 * G, limit_bytes=68 * G)
    assert memory.session_budget(49 * G) == 68 * G


def test_session_budget_leaves_out_arrays_that_are_not_resident_models(monkeypatch) -> None:
    _device_reports(monkeypatch, {"free_memory": 30 * G}, active_bytes=45 * G, limit_bytes=100 * G)
    assert memory.session_budget(40 * G) == 30 * G + 45 * G - 5 * G


def test_session_budget_is_the_fixed_working_set_on_metal(monkeypatch) -> None:
    # The recommended working set already covers what the process holds: adding the resident models counted them
    # twice and let a 32 GB Mac plan to keep more than fits.
    _device_reports(monkeypatch, {"max_recommended_working_set_size": 21 * G}, cache_bytes=4 * G)
    assert memory.session_budget(15 * G) == 21 * G


def test_session_budget_is_the_limit_when_one_is_set(monkeypatch) -> None:
    _device_reports(monkeypatch, {"free_memory": 18 * G}, cache_bytes=33 * G)
    monkeypatch.setenv(memory.ENV_LIMIT, "40")
    assert memory.session_budget(38 * G) == 40 * G


def test_session_budget_on_the_cpu_adds_the_resident_models_to_available_ram(monkeypatch) -> None:
    monkeypatch.delenv(memory.ENV_LIMIT, raising=False)
    monkeypatch.setattr(memory.mx, "default_device", lambda: mx.Device(mx.cpu))
    monkeypatch.setattr(memory, "_system_available", lambda: 9 * G)
    monkeypatch.setattr(memory.mx, "get_cache_memory", lambda: 0)
    monkeypatch.setattr(memory.mx, "get_active_memory", lambda: 5 * G)
    monkeypatch.setattr(memory.mx, "get_memory_limit", lambda: 20 * G)
    assert memory.session_budget(5 * G) == 14 * G
    monkeypatch.setattr(memory, "_system_available", lambda: 0)
    assert memory.session_budget(5 * G) == 0  # unknown stays unknown


def test_env_override_is_named_in_the_hint(tiny, monkeypatch) -> None:
    monkeypatch.setenv(memory.ENV_LIMIT, "0.001")
    plan = plan_for(tiny)
    with pytest.raises(LtxError) as caught:
        memory.check(plan, memory.available_memory())
    assert memory.ENV_LIMIT in caught.value.hint


# --- real LTX-2.0 sizes, from headers alone ----------------------------------------------------------------------


@dataclass
class HeaderOnlyFile:
    """A tensor listing with no data: all an estimate reads."""

    path: Path
    tensors: dict[str, TensorInfo]

    def array(self, name: str) -> mx.array:
        raise AssertionError("an estimate must not read tensor data")


def ltx2_checkpoint() -> Checkpoint:
    """LTX-2.0's transformer (48 blocks, video 4096 / audio 2048 wide, FFN x4: 18.88 B parameters) and its
    528 M-parameter video decoder, in the unified layout, bf16."""
    path = Path("/nonexistent/model.safetensors")
    tensors: dict[str, TensorInfo] = {}

    def add(key: str, *shape: int) -> None:
        tensors[key] = TensorInfo(path, key, shape, "BF16")

    v, a = 4096, 2048
    linears = {  # (out, in) per block: self-attn, text cross-attn, A<->V cross-attn, feed-forwards
        "attn1": [(v, v)] * 4, "attn2": [(v, v)] * 4, "audio_attn1": [(a, a)] * 4, "audio_attn2": [(a, a)] * 4,
        "audio_to_video_attn": [(a, v), (a, a), (a, a), (v, a)],
        "video_to_audio_attn": [(a, a), (a, v), (a, v), (a, a)],
    }  # fmt: skip
    for block in range(48):
        prefix = f"transformer.transformer_blocks.{block}."
        for attn, shapes in linears.items():
            for name, shape in zip(("to_q", "to_k", "to_v", "to_out.0"), shapes, strict=True):
                add(f"{prefix}{attn}.{name}.weight", *shape)
        add(f"{prefix}ff.net.0.proj.weight", 4 * v, v)
        add(f"{prefix}ff.net.2.weight", v, 4 * v)
        add(f"{prefix}audio_ff.net.0.proj.weight", 4 * a, a)
        add(f"{prefix}audio_ff.net.2.weight", a, 4 * a)
    # AdaLN, caption projections, biases and norms, lumped together: up to the published 18,876,174,592
    rest = 18_876_174_592 - sum(math.prod(info.shape) for info in tensors.values())
    add("transformer.misc.weight", rest)
    add("vae_decoder.misc.weight", 528_380_976)
    ckpt = Checkpoint(root=path.parent, layout=Layout.UNIFIED, files=[HeaderOnlyFile(path, tensors)])
    assert 18.8e9 < sum(math.prod(i.shape) for i in ckpt.component("transformer").tensors.values()) < 19e9
    return ckpt


def test_ltx2_denoise_peak_matches_the_h100_measurements() -> None:
    ckpt = ltx2_checkpoint()
    job = memory.estimate(ckpt, None, request(768, 512, 121), mx.bfloat16)
    assert "text_encoding" not in job.phases
    denoise = job.phases["denoising"]
    assert denoise.weights == pytest.approx(37.75e9, rel=0.01)
    # Measured 41.05 GB (6144 video tokens) and 38.66 GB (1536): the estimate covers both, within 5%.
    assert 41.05e9 <= denoise.total <= 1.05 * 41.05e9  # stage 2: 6144 video tokens
    # a job whose stage 2 has stage 1's 1536 tokens
    small = memory.estimate(ckpt, None, request(384, 256, 121), mx.bfloat16).phases["denoising"].total
    assert 38.66e9 <= small <= 1.05 * 38.66e9
    # auto tiling at 768x512x121: 4.05 GB measured when generate_av's temporal tiles were blended; its tiles in time
    # chunks 3.44 GB, and the full frames in 8-frame chunks it now decodes within their memory 2.69 GB (H100,
    # 2026-12-06): the estimate (the fit to the blended tiles, and the inputs to the last decoder segment kept
    # besides) stays above them
    decode = job.phases["video_decode"]
    kept_bytes_per_voxel = KEPT_VOXEL_SHARE * memory.VAE_BYTES_PER_VOXEL
    kept = kept_bytes_per_voxel * decode_work(16, 16, 24, tiling_for("auto", 512, 768, 121))[0]
    assert decode.total == pytest.approx(4.05e9 + kept, rel=0.1)
    assert 3.44e9 <= decode.total <= 1.4 * 3.44e9
    assert memory.estimate(ckpt, None, request(768, 512, 121, tiling="none"), mx.bfloat16).phases[
        "video_decode"
    ].total == pytest.approx(13.7e9, rel=0.1)


def test_ltx2_quantized_weights_and_hints() -> None:
    ckpt = ltx2_checkpoint()
    job = request(768, 512, 121)
    q4 = memory.estimate(ckpt, None, job, mx.bfloat16, 4).phases["denoising"]
    assert 10e9 < q4.weights < 12e9  # the published q4 transformer file is 10.5 GB
    plan = memory.estimate(ckpt, None, job, mx.bfloat16)
    assert plan.peak_phase.name == "denoising"

    with pytest.raises(LtxError) as caught:
        memory.check(plan, int(40 * GB))  # bf16 needs 42.3 GB, 8-bit 24.9 GB, 4-bit 15.6 GB
    assert caught.value.code is ErrorCode.INSUFFICIENT_MEMORY
    assert "denoising" in caught.value.message and "40.0 GB" in caught.value.message
    assert caught.value.hint.startswith("Use --quantize 8")

    with pytest.raises(LtxError) as caught:
        memory.check(plan, int(20 * GB))
    assert caught.value.hint.startswith("Use --quantize 4")

    with pytest.raises(LtxError) as caught:
        memory.check(plan, int(8 * GB))
    assert "weights alone" in caught.value.hint


def test_per_rank_plan_splits_the_denoising_weights_under_tensor_parallelism(tiny) -> None:
    ckpt, _ = tiny
    plan = plan_for(tiny, width=1280, height=704, frames=257)
    share = memory._tensor_parallel_share(ckpt)
    assert 0.3 < share < 1  # the blocks' attentions and feed-forwards (tiny: its embedders are large beside them)
    two = memory.per_rank(plan, ckpt, 2, "tensor")
    whole, half = plan.phases["denoising"], two.phases["denoising"]
    assert half.weights == int(whole.weights * (1 - share / 2))
    assert whole.activations / 2 < half.activations < whole.activations
    assert {k: v for k, v in two.phases.items() if k != "denoising"} == {
        k: v for k, v in plan.phases.items() if k != "denoising"
    }  # text encoding and decoding run whole on a rank
    assert memory.per_rank(plan, ckpt, 2, "guidance") is plan  # every rank holds the whole model
    # Denoising that does not fit one device fits each of two.
    limit = (whole.total + half.total) // 2
    with pytest.raises(LtxError):
        memory.check(memory.MemoryPlan({"denoising": whole}), limit)
    memory.check(memory.MemoryPlan({"denoising": half}), limit)


def test_mlx_limit_is_fitted_to_what_mlx_can_hold_on_cuda(monkeypatch) -> None:
    # The H100's numbers at a job's start with 48.7 GB resident: MLX's default limit (80.8 GB) let its cache grow
    # until the device refused an allocation, 10-15 GB of the device being held outside MLX's counts.
    total = int(85.5 * G)
    _device_reports(monkeypatch, {"free_memory": int(21.6 * G), "total_memory": total}, active_bytes=int(48.7 * G),
                    cache_bytes=int(0.5 * G), limit_bytes=int(80.8 * G))  # fmt: skip
    limits: list[int] = []
    monkeypatch.setattr(memory.mx, "set_memory_limit", limits.append)
    monkeypatch.setattr(memory, "_mlx_default_limit", 0)
    monkeypatch.setattr(memory, "_refused_at", 0)
    fitted = memory.fit_mlx_limit()
    assert fitted == limits[-1] == pytest.approx(70.8 * G - memory.DEVICE_MARGIN * total)
    monkeypatch.setattr(memory.mx, "get_memory_limit", lambda: fitted)
    assert memory.session_budget(int(48.7 * G)) == fitted
    # after a refusal at 60 GB held, the limit never goes back above it
    monkeypatch.setattr(memory, "_refused_at", 60 * G)
    assert memory.fit_mlx_limit() == 60 * G


def test_mlx_limit_is_left_alone_off_cuda(monkeypatch) -> None:
    _device_reports(monkeypatch, {"max_recommended_working_set_size": 21 * G}, limit_bytes=31 * G)
    monkeypatch.setattr(memory.mx, "set_memory_limit", lambda value: pytest.fail("set on Metal"))
    assert memory.fit_mlx_limit() == 0

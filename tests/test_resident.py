"""A session holds models; a job borrows them: residency, the prompt cache, batches and previews on the tiny model.

Every comparison is of output bytes: residency, the prompt cache, batching and previews may change what is read
and when, never what is written."""

from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from ltx_backend import events
from ltx_backend.errors import LtxError
from ltx_backend.pipeline import memory
from ltx_backend.pipeline import resident as r
from ltx_backend.pipeline.batch import batch_seeds, numbered
from ltx_backend.pipeline.engine import Engine
from ltx_backend.pipeline.preview import Previewer, PreviewOptions, downscale, pool, pool_factor, write_png
from ltx_backend.pipeline.request import GenerationRequest, validate
from ltx_backend.tiny import write_tiny_model
from ltx_backend.weights.safetensors_file import SafetensorsFile

SMALL = {"width": 128, "height": 128, "num_frames": 9, "fps": 24.0}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


def request(tmp_path: Path, name: str, seed: int = 7, prompt: str = "a red fox runs through snow", **fields):
    return GenerationRequest(prompt=prompt, seed=seed, output_path=str(tmp_path / name), **{**SMALL, **fields})


def digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every tensor any loader asks a safetensors file for."""
    seen: list[str] = []
    original = SafetensorsFile.array

    def array(self: SafetensorsFile, name: str, stream: mx.Stream | None = None) -> mx.array:
        seen.append(name)
        return original(self, name, stream)

    monkeypatch.setattr(SafetensorsFile, "array", array)
    return seen


@pytest.fixture(scope="module")
def reference(model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, str]:
    """Today's behaviour: policy none, each model loaded for its phase and freed; output digests by seed."""
    folder = tmp_path_factory.mktemp("none")
    engine = Engine(model, residency="none")
    digests = {seed: digest(engine.generate(request(folder, f"{seed}.mp4", seed)).video_path) for seed in (7, 8)}
    assert engine.models.names() == []  # nothing stays loaded
    assert set(engine.models.loads) == set(r.COMPONENTS) - {r.VIDEO_ENCODER, r.AUDIO_ENCODER}
    return digests


def test_second_job_reads_no_weights_and_gives_the_same_bytes(
    model: Path, tmp_path: Path, reads: list[str], reference: dict[int, str]
) -> None:
    engine = Engine(
        model, residency="auto"
    )  # residency auto; a CPU's available memory holds the tiny model many times over
    first = engine.generate(request(tmp_path, "a.mp4", 7))
    assert reads and first.timings["load"] > 0
    reads.clear()
    loads = dict(engine.models.loads)
    second = engine.generate(request(tmp_path, "b.mp4", 8))  # same prompt, another seed
    assert reads == [] and engine.models.loads == loads  # no tensor read, no component loaded
    assert second.timings["load"] < 0.01 and second.timings["text_encoding"] < 0.01  # the prompt cache
    assert engine.prompts.hits == 1
    assert digest(first.video_path) == reference[7] and digest(second.video_path) == reference[8]


def test_a_new_prompt_reuses_the_resident_text_encoder(model: Path, tmp_path: Path, reads: list[str]) -> None:
    engine = Engine(model, residency="auto")
    engine.generate(request(tmp_path, "a.mp4"))
    reads.clear()
    result = engine.generate(request(tmp_path, "b.mp4", prompt="a blue whale sings"))
    assert reads == [] and result.timings["load"] < 0.01 and engine.prompts.misses == 2


def test_unload_frees_everything(model: Path, tmp_path: Path) -> None:
    mx.clear_cache()
    start = mx.get_active_memory()
    engine = Engine(model, residency="all")
    engine.generate(request(tmp_path, "a.mp4"))
    held = engine.models.nbytes
    assert held > 0 and mx.get_active_memory() - start >= held
    engine.unload()
    assert engine.models.names() == [] and len(engine.prompts) == 0
    assert mx.get_active_memory() - start < 0.02 * held  # back to (near) where it started


def test_previews_do_not_change_the_result(model: Path, tmp_path: Path, reference: dict[int, str]) -> None:
    engine = Engine(model, residency="auto")
    seen: list[events.Event] = []
    options = PreviewOptions(str(tmp_path / "previews"), every=4, max_side=32)
    result = engine.generate(request(tmp_path, "p.mp4", 7), emit=seen.append, preview=options)
    assert digest(result.video_path) == reference[7]
    previews = [event for event in seen if isinstance(event, events.Preview)]
    # stage 1 (8 steps) at steps 4 and 8, stage 2 (3 steps) at its last; latent frames 0 and 1 (the middle of 2)
    assert [(p.stage, p.step, p.frame) for p in previews] == [
        (1, 4, 0), (1, 4, 1), (1, 8, 0), (1, 8, 1), (2, 3, 0), (2, 3, 1)
    ]  # fmt: skip
    for preview in previews:
        data = Path(preview.path).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24]) == (32, 32)
    assert (preview.width, preview.height) == (32, 32) and result.timings["preview"] > 0


def test_a_preview_the_disk_refuses_stops_the_previews_not_the_video(
    model: Path, tmp_path: Path, reference: dict[int, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from ltx_backend.pipeline import preview as preview_module

    written, real_write_png = [], preview_module.write_png

    def write_png(path, pixels) -> None:  # the first PNG is written, then the disk is full
        if written:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(path)
        real_write_png(path, pixels)

    monkeypatch.setattr(preview_module, "write_png", write_png)
    seen: list[events.Event] = []
    options = PreviewOptions(str(tmp_path / "previews"), every=4, max_side=32)
    result = Engine(model, residency="auto").generate(request(tmp_path, "p.mp4", 7), emit=seen.append, preview=options)
    assert digest(result.video_path) == reference[7]
    assert [(p.stage, p.step, p.frame) for p in seen if isinstance(p, events.Preview)] == [(1, 4, 0)]
    warnings = [event.message for event in seen if isinstance(event, events.Warning)]
    assert len(warnings) == 1 and "disk_full" in warnings[0] and "No space left" in warnings[0]
    assert sorted(path.name for path in (tmp_path / "previews").iterdir()) == ["stage1-step004-frame000.png"]


def test_a_due_preview_is_decoded_in_the_next_denoiser_call_after_the_forward(model: Path, tmp_path: Path) -> None:
    """A preview due at a step is not decoded at that step's end (the device would idle while the host builds the
    decode) but in the next denoiser call, after the forward is submitted; `flush` submits the last one."""
    from ltx_backend.weights.checkpoint import open_checkpoint
    from ltx_backend.weights.video import load_video_decoder

    decoder = load_video_decoder(open_checkpoint(model), mx.float32)
    order: list[str] = []
    real_decode = decoder.decode

    class Decoder:
        config = decoder.config

        def decode(self, *args):
            order.append("decode")
            return real_decode(*args)

    seen: list[events.Event] = []
    previewer = Previewer(PreviewOptions(str(tmp_path), every=1, max_side=32), Decoder, seen.append, mx.float32)
    x0 = mx.random.normal((1, 2 * 2 * 2, decoder.config.latent_channels), key=mx.random.key(1))

    def forward(video, audio, sigma):
        order.append("forward")
        return x0, audio

    denoise = previewer.tap(forward)
    for step in (1, 2):
        denoise(x0, None, 1.0)
        previewer.write(1, step, 2, 8, (2, 2, 2))
    assert order == ["forward", "forward", "decode"]  # step 1's preview, after step 2's forward
    previewer.close()
    assert order == ["forward", "forward", "decode", "decode"]  # step 2's, at the end
    assert [(p.step, p.frame) for p in seen] == [(1, 0), (1, 1), (2, 0), (2, 1)]


def read_png(path: str) -> np.ndarray:
    data = Path(path).read_bytes()
    width, height = struct.unpack(">II", data[16:24])
    idat = data.index(b"IDAT")
    length = struct.unpack(">I", data[idat - 4 : idat])[0]
    rows = zlib.decompress(data[idat + 4 : idat + 4 + length])
    return np.frombuffer(rows, np.uint8).reshape(height, 1 + width * 3)[:, 1:].reshape(height, width, 3)


def test_png_writer_round_trips(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    write_png(tmp_path / "x.png", pixels)
    assert np.array_equal(read_png(str(tmp_path / "x.png")), pixels)
    assert downscale(np.zeros((512, 768, 3), np.uint8), 256).shape == (170, 256, 3)
    assert pool_factor(16, 24, 256) == 3 and pool_factor(16, 24, 1024) == 1  # 768x512 -> a 256x170 decode
    assert pool_factor(4, 4, 16) == 2 and pool_factor(1, 2, 16) == 1  # at least 2 latent pixels a side
    latent = mx.arange(2 * 4 * 6).reshape(1, 1, 4, 6, 2).astype(mx.float32)
    pooled = pool(latent, 2)
    assert pooled.shape == (1, 1, 2, 3, 2) and pooled[0, 0, 0, 0, 0].item() == (0 + 2 + 12 + 14) / 4


def test_batch_seeds_and_numbered_outputs() -> None:
    assert batch_seeds(5, 3) == [5, 6, 7] and batch_seeds(5, 1) == [5] and batch_seeds(None, 2, [9, 4]) == [9, 4]
    assert numbered("/x/out.mp4", 0) == "/x/out_1.mp4" and numbered(None, 1) is None
    for bad in ({"count": 0}, {"count": 2, "seeds": [1, 2, 3]}, {"count": 1, "seeds": []}):
        with pytest.raises(LtxError) as error:
            batch_seeds(1, **bad)
        assert error.value.details["field"] in ("count", "seeds")


def test_planner_gives_up_components_one_by_one_within_the_limit(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: dict[int, str]
) -> None:
    engine = Engine(model, residency="auto")
    job = validate(request(tmp_path, "a.mp4"))
    plan = memory.estimate(engine.checkpoint, engine.text_encoder_root, job, engine.dtype)
    sizes = memory.component_bytes(engine.checkpoint, engine.text_encoder_root, engine.dtype)
    used = memory.used_components(plan)
    everything = memory.residency_peak(plan, sizes, used)
    assert memory.residency_peak(plan, sizes, set()) == plan.peak  # nothing resident: today's peak
    assert memory.plan_residency(plan, sizes, everything, used) == used
    without_text = memory.plan_residency(plan, sizes, everything - 1, used)
    assert without_text == used - {r.TEXT_ENCODER}  # the text encoder goes first
    assert memory.residency_peak(plan, sizes, without_text) <= everything - 1
    kept: list[int] = []
    for budget in np.linspace(plan.peak, everything, 12).astype(int):
        keep = memory.plan_residency(plan, sizes, int(budget), used)
        assert memory.residency_peak(plan, sizes, keep) <= budget
        kept.append(len(keep))
    assert kept == sorted(kept) and kept[0] < kept[-1] == len(used)  # more memory, more resident

    # The engine under LTX_BACKEND_MEMORY_LIMIT_GB: the text encoder is freed after its phase, the rest stays.
    monkeypatch.setenv(memory.ENV_LIMIT, str((everything - 1) / memory.GB))
    result = engine.generate(job)
    assert set(engine.models.names()) == without_text
    assert sum(info.bytes for info in engine.models.report()) <= everything - 1
    assert digest(result.video_path) == reference[7]


def test_policy_all_and_unknown_policy(model: Path) -> None:
    engine = Engine(model, residency="all")
    engine.models.plan(set())
    assert engine.models.keep == set(r.COMPONENTS)
    with pytest.raises(LtxError) as error:
        Engine(model, residency="some")
    assert error.value.details["field"] == "residency"


def test_preload_reads_what_stays_resident(model: Path, tmp_path: Path, reads: list[str]) -> None:
    engine = Engine(model, residency="auto")
    loaded = engine.preload()
    assert set(loaded) == set(r.COMPONENTS) - {r.VIDEO_ENCODER, r.AUDIO_ENCODER} and reads
    reads.clear()
    result = engine.generate(request(tmp_path, "a.mp4"))
    assert reads == [] and result.timings["load"] < 0.01
    assert all(count == 1 for count in engine.models.loads.values())


def test_serve_session_batch_and_a_second_job(tmp_path: Path) -> None:
    """In one `serve`: a batch's videos equal single jobs with their seeds; jobs after the first load nothing."""
    from test_server import Backend

    backend = Backend(tmp_path / "home")
    try:
        assert backend.next()["type"] == "ready"
        job = {"prompt": "a fox", **{k: v for k, v in SMALL.items() if k != "fps"}}
        backend.send(type="load", id="l", model="tiny")
        assert backend.until(lambda msg: msg.get("id") == "l")["type"] == "accepted"
        loaded = backend.until(lambda msg: msg.get("id") == "l" and msg["type"] != "heartbeat")
        assert loaded["type"] == "loaded" and loaded["resident_bytes"] > 0
        assert {c["name"] for c in loaded["resident"]} >= {"transformer", "text_encoder", "video_decoder"}
        backend.send(type="generate", id="b", output_path=str(tmp_path / "b.mp4"), seeds=[3, 5], **job)
        backend.send(type="generate", id="s", output_path=str(tmp_path / "s.mp4"), seed=5, **job)
        results = [backend.until(lambda msg: msg["type"] in ("result", "error")) for _ in range(3)]
        assert [(m["type"], m["id"], m["seed"]) for m in results] == [("result", "b", 3), ("result", "b", 5),
                                                                      ("result", "s", 5)]  # fmt: skip
        accepted = [m for m in backend.seen if m["type"] == "accepted" and m["id"] == "b"]
        assert [m["batch_index"] for m in accepted] == [0, 1] and len({m["job_id"] for m in accepted}) == 2
        assert results[1]["video_path"] == str(tmp_path / "b_2.mp4")
        assert digest(results[1]["video_path"]) == digest(results[2]["video_path"])
        for result in results:  # preloaded by `load`; the prompt encoded once
            assert result["timings"]["load"] < 0.01
        assert results[1]["timings"]["text_encoding"] < 0.01 and results[2]["timings"]["text_encoding"] < 0.01
        backend.send(type="unload", id="u")
        backend.until(lambda msg: msg["type"] == "unloaded")
        backend.send(type="status", id="st")
        status = backend.until(lambda msg: msg["type"] == "status")
        assert status["resident"] == [] and status["resident_bytes"] == 0
    finally:
        backend.close()


def test_warmup_runs_a_tiny_job_and_leaves_nothing(model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ltx_backend.pipeline.warmup import PTX_CACHE_ENV, use_persistent_kernel_cache, warmup

    engine = Engine(model, residency="auto")
    assert warmup(engine) > 0
    assert len(engine.prompts) == 0 and r.TRANSFORMER in engine.models.names()  # kept for the first real job
    monkeypatch.delenv(PTX_CACHE_ENV, raising=False)
    cuda = getattr(mx, "cuda", None)
    if cuda is None or not cuda.is_available():  # only CUDA builds JIT-compile kernels with NVRTC
        assert use_persistent_kernel_cache() is None and PTX_CACHE_ENV not in __import__("os").environ


def test_cli_count_writes_numbered_videos_and_previews(model: Path, tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from ltx_backend.cli.main import cli

    output, previews = tmp_path / "fox.mp4", tmp_path / "previews"
    args = ["generate", "-m", str(model), "-p", "a fox", "-W", "128", "-H", "128", "-n", "9", "-s", "3", "--count",
            "2", "-o", str(output), "--preview-dir", str(previews), "--preview-every", "8", "--json"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [(r["video_path"], r["seed"]) for r in lines] == [(str(tmp_path / "fox_1.mp4"), 3),
                                                             (str(tmp_path / "fox_2.mp4"), 4)]  # fmt: skip
    assert lines[1]["timings"]["load"] < 0.01 and lines[1]["timings"]["text_encoding"] < 0.01
    assert sorted(p.name for p in (previews / "2").iterdir()) == [
        "stage1-step008-frame000.png", "stage1-step008-frame001.png",
        "stage2-step003-frame000.png", "stage2-step003-frame001.png",
    ]  # fmt: skip


def test_another_quantization_reloads_only_the_transformer(model: Path, tmp_path: Path) -> None:
    engine = Engine(model, residency="auto")
    engine.generate(request(tmp_path, "a.mp4"))
    loads = dict(engine.models.loads)
    engine.reconfigure(quantize=8)
    engine.generate(request(tmp_path, "b.mp4", prompt="another prompt"))
    changed = {name for name, count in engine.models.loads.items() if count != loads.get(name)}
    assert changed == {r.TRANSFORMER}


def test_importing_the_package_turns_off_mlx_cuda_cache_thrashing_aborts() -> None:
    """A long-lived session meets more convolution / SDPA / graph shapes than MLX's CUDA caches hold; MLX's lifetime
    miss check would then raise inside a job. The package turns it off on import unless the user set it."""
    import subprocess
    import sys

    names = "MLX_ENABLE_CACHE_THRASHING_CHECK", "MLX_CUDA_CONV_CACHE_SIZE"
    code = f"import os, ltx_backend; print(*(os.environ[name] for name in {names}))"
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("MLX_")}
    shown = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert shown.stdout.split() == ["0", "4096"]
    env |= {"MLX_ENABLE_CACHE_THRASHING_CHECK": "1", "MLX_CUDA_CONV_CACHE_SIZE": "64"}
    shown = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert shown.stdout.split() == ["1", "64"]  # the user's choice wins


def test_a_decode_the_device_refuses_frees_the_unused_models_and_gives_the_same_bytes(
    model: Path, tmp_path: Path, reference: dict[int, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen on an H100: a plan kept 49 GB of models resident beside an untiled decode that the device then refused.
    The decode frees what it does not use and runs again (the same tiling and noise: the same bytes), and MLX's
    limit comes down to what fit, so the next plans keep less."""
    from ltx_backend.pipeline import engine as engine_module

    original, calls = engine_module.decode_tiled, []

    def refused_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("cudaMallocAsync(&data, size, stream) failed: out of memory")
        yield from original(*args, **kwargs)

    monkeypatch.setattr(engine_module, "decode_tiled", refused_once)
    limit = mx.get_memory_limit()
    try:
        engine = Engine(model, residency="all")
        seen: list[events.Event] = []
        result = engine.generate(request(tmp_path, "a.mp4", 7), emit=seen.append)
        assert mx.get_memory_limit() < limit
    finally:
        mx.set_memory_limit(limit)
    assert digest(result.video_path) == reference[7] and len(calls) == 2
    assert r.TRANSFORMER not in engine.models.names() and r.TEXT_ENCODER not in engine.models.names()
    warnings = [event.message for event in seen if isinstance(event, events.Warning)]
    assert any("ran out of memory beside the resident" in w and r.TRANSFORMER in w for w in warnings)


def test_a_decode_error_that_is_not_a_refusal_fails_the_job(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ltx_backend.pipeline import engine as engine_module

    def broken(*args, **kwargs):
        raise RuntimeError("a real bug")
        yield

    monkeypatch.setattr(engine_module, "decode_tiled", broken)
    engine = Engine(model, residency="all")
    with pytest.raises(RuntimeError, match="a real bug"):
        engine.generate(request(tmp_path, "a.mp4", 7))
    assert not (tmp_path / "a.mp4").exists()


def test_previews_decode_both_frames_in_one_call_as_one_by_one(model: Path, tmp_path: Path) -> None:
    """The first and middle latent frames decode in one batched call, written when the next preview (or `flush`)
    comes: the same pixels as decoding each frame alone, synchronously. A 1-pixel latent side (a 64-pixel video's
    stage 1) is repeated to 2: the decoder's output for it is not defined."""
    from ltx_backend.media.video import to_uint8
    from ltx_backend.pipeline.preview import at_least_two
    from ltx_backend.weights.checkpoint import open_checkpoint
    from ltx_backend.weights.video import load_video_decoder

    decoder = load_video_decoder(open_checkpoint(model), mx.float32)
    for f, h, w, max_side in ((3, 4, 4, 64), (3, 1, 2, 64)):
        seen: list[events.Event] = []
        options = PreviewOptions(str(tmp_path), every=1, max_side=max_side)
        previewer = Previewer(options, lambda: decoder, seen.append, mx.float32)
        x0 = mx.random.normal((1, f * h * w, decoder.config.latent_channels), key=mx.random.key(3))
        denoise = previewer.tap(lambda video, audio, sigma, x0=x0: (x0, audio))
        denoise(x0, None, 1.0)
        previewer.write(1, 1, 2, f * h * w, (f, h, w))
        assert seen == []  # submitted, not yet written
        previewer.close()
        assert [(p.step, p.frame) for p in seen] == [(1, 0), (1, 1)]
        latent = x0.reshape(1, f, h, w, -1)
        for event in seen:
            one = at_least_two(pool(latent[:, event.frame : event.frame + 1], pool_factor(h, w, max_side)))
            noise = mx.zeros(one.shape) if decoder.config.timestep_conditioning else None
            expected = downscale(to_uint8(decoder.decode(one, None, noise)[0, 0].astype(mx.float32)), max_side)
            assert np.array_equal(read_png(event.path), expected)

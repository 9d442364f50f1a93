"""Failure paths of a job's outputs: refused before any work, both files or neither, no litter, prompt cancellation.

Every case asserts the error code (never a traceback) and what the output folder holds afterwards: nothing but what
a successful job writes. A full disk is a real one where the tests may mount a small tmpfs (root on Linux), and a
simulated one (an ENOSPC raised by the write) elsewhere.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from media_probe import probe, write_image

from ltx_backend import events
from ltx_backend.cli.main import cli
from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.media import outputs
from ltx_backend.media.outputs import JobFolder, sweep_stale_job_folders
from ltx_backend.pipeline.engine import Cancelled, CancelToken, Engine
from ltx_backend.pipeline.request import GenerationRequest, Keyframe, validate
from ltx_backend.server.progress import ProgressTracker
from ltx_backend.tiny import tiny_model_dir, write_tiny_model

SMALL = {"width": 128, "height": 128, "num_frames": 9, "fps": 24.0, "seed": 1}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LTX_BACKEND_HOME with both tiny models written (subprocesses find them there)."""
    home = tmp_path_factory.mktemp("home")
    saved = os.environ.get("LTX_BACKEND_HOME")
    os.environ["LTX_BACKEND_HOME"] = str(home)
    write_tiny_model(tiny_model_dir("2.0"), "2.0")
    write_tiny_model(tiny_model_dir("2.3"), "2.3")
    yield home
    if saved is None:
        os.environ.pop("LTX_BACKEND_HOME", None)
    else:
        os.environ["LTX_BACKEND_HOME"] = saved


@pytest.fixture(scope="module")
def engine(home: Path) -> Engine:
    return Engine(tiny_model_dir("2.0"))


def request(folder: Path, **fields) -> GenerationRequest:
    return GenerationRequest(**{"prompt": "a red fox", "output_path": str(folder / "out.mp4"), **SMALL, **fields})


def refused(code: ErrorCode, field: str | None = None, **fields) -> LtxError:
    with pytest.raises(LtxError) as caught:
        validate(GenerationRequest(**{"prompt": "a fox", **SMALL, **fields}))
    assert caught.value.code is code, caught.value
    assert caught.value.hint
    if field is not None:
        assert caught.value.details.get("field") == field
    return caught.value


def entries(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


# --- output paths: validated before compute ------------------------------------------------------------------------


def test_missing_folders_of_both_outputs_are_created(tmp_path: Path) -> None:
    valid = validate(request(tmp_path / "a" / "b", audio_output_path=str(tmp_path / "c" / "d" / "x.wav")))
    assert (tmp_path / "a" / "b").is_dir() and (tmp_path / "c" / "d").is_dir()
    assert entries(tmp_path / "a" / "b") == [] and entries(tmp_path / "c" / "d") == []  # the probe file is gone
    assert valid.output_path == str(tmp_path / "a" / "b" / "out.mp4")


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/proc/out.mp4", "pseudo-filesystem"),
        ("/sys/kernel/out.mp4", "pseudo-filesystem"),
        ("/tmp/a\0b.mp4", "NUL byte"),
        ("/tmp/" + "n" * 300 + ".mp4", "longer than the 255 bytes"),
        ("/tmp/" + "d/" * 2100 + "out.mp4", "longer than the 4096 bytes"),
    ],
    ids=["proc", "sys", "nul", "long-name", "long-path"],
)
def test_impossible_output_paths_are_refused(path: str, reason: str) -> None:
    error = refused(ErrorCode.OUTPUT_WRITE_FAILED, "output_path", output_path=path)
    assert reason in error.message


def test_a_directory_or_a_file_in_the_way_is_refused(tmp_path: Path) -> None:
    error = refused(ErrorCode.OUTPUT_WRITE_FAILED, "output_path", output_path=str(tmp_path))
    assert "existing directory" in error.message
    (tmp_path / "file").write_text("x")
    error = refused(ErrorCode.OUTPUT_WRITE_FAILED, "output_path", output_path=str(tmp_path / "file" / "out.mp4"))
    assert "not a folder" in error.message or "Not a directory" in error.message
    error = refused(
        ErrorCode.OUTPUT_WRITE_FAILED, "audio_output_path", output_path=str(tmp_path / "v.mp4"),
        audio_output_path=str(tmp_path),
    )  # fmt: skip
    assert "existing directory" in error.message


def test_the_audio_path_must_differ_from_the_video_path(tmp_path: Path) -> None:
    same = str(tmp_path / "v.mp4")
    refused(ErrorCode.INVALID_PARAMS, "audio_output_path", output_path=same, audio_output_path=same)
    (tmp_path / "link.mp4").symlink_to(tmp_path / "v.mp4")
    link = str(tmp_path / "link.mp4")
    refused(ErrorCode.INVALID_PARAMS, "audio_output_path", output_path=same, audio_output_path=link)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[callable]:
    """mount(size_kb, read_only) -> a fresh tmpfs; skipped where this process may not mount (not root)."""
    mounted: list[Path] = []

    def mount(size_kb: int, read_only: bool = False) -> Path:
        point = tmp_path / f"fs{len(mounted)}"
        point.mkdir()
        options = f"size={size_kb}k" + (",ro" if read_only else "")
        if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True).returncode:
            pytest.skip("cannot mount a tmpfs here (needs root)")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def test_a_read_only_folder_is_refused_before_any_work(tmpfs) -> None:
    folder = tmpfs(64, read_only=True)
    error = refused(ErrorCode.OUTPUT_WRITE_FAILED, "output_path", output_path=str(folder / "out.mp4"))
    assert str(folder) in error.message and "Read-only file system" in error.message


def test_a_legal_name_as_long_as_the_filesystem_allows_is_written(engine: Engine, tmp_path: Path) -> None:
    name = "n" * 251 + ".mp4"  # 255 bytes: the temporary names must be shorter than the output's
    result = engine.generate(request(tmp_path, output_path=str(tmp_path / name), audio=False))
    assert entries(tmp_path) == [name] and probe(result.video_path).frames == 9


# --- both files or neither -----------------------------------------------------------------------------------------


def test_video_and_audio_are_written_together(engine: Engine, tmp_path: Path) -> None:
    wav = tmp_path / "sound" / "a.wav"  # another folder: staged there, renamed with the video
    result = engine.generate(request(tmp_path / "video", audio_output_path=str(wav)))
    assert entries(tmp_path / "video") == ["out.mp4"] and entries(tmp_path / "sound") == ["a.wav"]
    assert result.audio_path == str(wav)


def test_a_full_disk_leaves_neither_file(engine: Engine, tmpfs) -> None:
    """A real full disk: a 1 MiB tmpfs filled but for 8 KiB, so the checks pass and the WAV write fails."""
    folder = tmpfs(1024)
    (folder / "filler").write_bytes(b"\0" * (1016 * 1024))
    seen: list[events.Event] = []
    with pytest.raises(LtxError) as caught:
        engine.generate(request(folder, audio_output_path=str(folder / "a.wav")), emit=seen.append)
    assert caught.value.code is ErrorCode.DISK_FULL and str(folder) in caught.value.hint
    started = [e.phase for e in seen if isinstance(e, events.PhaseStarted)]
    assert events.Phase.AUDIO_DECODE in started  # it failed writing, not before the work
    assert entries(folder) == ["filler"]


def test_a_failed_wav_write_leaves_neither_file(engine: Engine, tmp_path: Path, monkeypatch) -> None:
    """A simulated full disk (ENOSPC from the WAV write), for machines where no tmpfs can be mounted."""
    import ltx_backend.media.audio as audio

    real_open = open

    def full(path, mode="r", *args, **kwargs):
        if "w" in mode and str(path).endswith(".wav"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(audio, "open", full, raising=False)
    with pytest.raises(LtxError) as caught:
        engine.generate(request(tmp_path, audio_output_path=str(tmp_path / "a.wav")))
    assert caught.value.code is ErrorCode.DISK_FULL
    assert entries(tmp_path) == []


def test_a_failed_second_commit_rolls_back_the_first(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "v.mp4").write_bytes(b"the previous video")
    real_replace = os.replace

    def replace(source, target):
        if str(target).endswith(".wav"):
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(target))
        return real_replace(source, target)

    with JobFolder(tmp_path / "v.mp4") as job:
        video, wav = job.path("v.mp4"), job.path("a.wav")
        video.write_bytes(b"new video")
        wav.write_bytes(b"new audio")
        monkeypatch.setattr(outputs.os, "replace", replace)
        with pytest.raises(LtxError) as caught:
            job.commit({video: tmp_path / "v.mp4", wav: tmp_path / "a.wav"})
        monkeypatch.setattr(outputs.os, "replace", real_replace)
    assert caught.value.code is ErrorCode.OUTPUT_WRITE_FAILED
    assert entries(tmp_path) == ["v.mp4"] and (tmp_path / "v.mp4").read_bytes() == b"the previous video"


# --- no litter: leftovers of killed runs ---------------------------------------------------------------------------


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_job_folders_of_dead_processes_are_swept_and_live_ones_kept(tmp_path: Path) -> None:
    dead = tmp_path / f".ltx-{_dead_pid()}-0123abcd"
    live = tmp_path / f".ltx-{os.getppid()}-0123abcd"
    other = tmp_path / ".ltx-notours"
    for folder in (dead, live, other):
        folder.mkdir()
        (folder / "v.mp4").write_bytes(b"partial")
    probe = tmp_path / f".ltx-probe-{_dead_pid()}-4567cdef"  # a writability probe of a killed validation
    probe.touch()
    assert sorted(sweep_stale_job_folders(tmp_path)) == sorted([dead, probe])
    assert entries(tmp_path) == sorted([live.name, other.name])


# --- signals to `ltx-backend generate` in video decode ------------------------------------------------------------

# The real command, with the video decoder slowed down so that a signal surely lands inside the decode.
DRIVER = textwrap.dedent("""
    import sys, time
    from ltx_backend.models import video_vae
    prepare = video_vae.VideoDecoder.prepare  # the first step of every decode, tiled or not
    def slow(self, *args, **kwargs):
        print("DECODING", file=sys.stderr, flush=True)
        time.sleep(60)
        return prepare(self, *args, **kwargs)
    video_vae.VideoDecoder.prepare = slow
    from ltx_backend.cli.main import main
    sys.argv[0] = "ltx-backend"
    main()
""")


COMPAT = Path(__file__).resolve().parents[1] / "compat"


def _generate_until_decode(home: Path, folder: Path, compat: bool = False) -> subprocess.Popen:
    args = ["generate", "-p", "waves", "-W", "128", "-H", "128", "-n", "9", "-s", "1", "--tiling", "aggressive",
            "-o", str(folder / "out.mp4"), "--output-audio", str(folder / "out.wav")]  # fmt: skip
    driver = DRIVER
    if compat:  # python -m mlx_video.generate_av with the same job
        args = ["-p", "waves", "-W", "128", "-H", "128", "-n", "9", "--model-repo", "tiny", "--tiling", "aggressive",
                "--output-path", str(folder / "out.mp4"), "--output-audio", str(folder / "out.wav")]  # fmt: skip
        driver = DRIVER.replace("from ltx_backend.cli.main import main", "from mlx_video.generate_av import main")
    env = {**os.environ, "LTX_BACKEND_HOME": str(home), "PYTHONPATH": f"{COMPAT}:{os.environ.get('PYTHONPATH', '')}"}
    process = subprocess.Popen([sys.executable, "-c", driver, *args], stderr=subprocess.PIPE, env=env, text=True)
    for line in process.stderr:
        if line.startswith("DECODING"):
            return process
    process.wait()
    raise AssertionError(f"the job never reached the decode (exit {process.returncode})")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_in_decode_leaves_nothing(home: Path, tmp_path: Path, signum: int) -> None:
    process = _generate_until_decode(home, tmp_path)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ltx-")]  # the job folder exists now
    start = time.monotonic()
    process.send_signal(signum)
    process.send_signal(signum)  # a second signal while stopping must not break the cleanup
    rest = process.stderr.read()
    assert process.wait(timeout=30) == 130, rest
    assert time.monotonic() - start < 5
    assert "cancelled: nothing was written" in rest and "Traceback" not in rest
    assert entries(tmp_path) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_the_compat_command_in_decode_leaves_nothing(home: Path, tmp_path: Path, signum: int) -> None:
    process = _generate_until_decode(home, tmp_path, compat=True)
    process.send_signal(signum)
    process.send_signal(signum)
    rest = process.stderr.read()
    assert process.wait(timeout=30) == 130, rest
    assert "❌ Cancelled: no video was written" in rest and "Traceback" not in rest
    assert entries(tmp_path) == []


def test_a_sigkill_leaves_a_temp_folder_only_and_the_next_run_sweeps_it(home: Path, tmp_path: Path) -> None:
    process = _generate_until_decode(home, tmp_path)
    process.kill()
    process.wait(timeout=30)
    left = entries(tmp_path)
    assert len(left) == 1 and left[0].startswith(f".ltx-{process.pid}-")  # never anything at an output path
    result = CliRunner().invoke(
        cli, ["generate", "-p", "x", "-W", "128", "-H", "128", "-n", "9", "--no-audio", "-o", str(tmp_path / "b.mp4")]
    )
    assert result.exit_code == 0, result.output
    assert entries(tmp_path) == ["b.mp4"]


# --- cancellation inside decode and text encoding -------------------------------------------------------------------


def test_decode_reports_progress_that_the_host_sees_move(engine: Engine, tmp_path: Path) -> None:
    seen: list[events.Event] = []
    engine.generate(request(tmp_path, tiling="none", audio=False), emit=seen.append)
    fractions = [e.fraction for e in seen if isinstance(e, events.DecodeProgress)]
    assert len(fractions) > 1 and fractions == sorted(fractions) and fractions[-1] == 1.0
    tracker = ProgressTracker(request(tmp_path, audio=False))
    reported = [p["fraction"] for p in map(tracker.update, seen) if p is not None and p["phase"] == "video_decode"]
    assert len(reported) == 1 + len(fractions)  # the phase's start, then one per decoder block
    assert reported == sorted(reported) and reported[-1] - reported[0] > 0.1  # no stall at the decode's start


def test_a_tiled_decode_stops_within_one_call_of_one_tile(engine: Engine) -> None:
    """A tiled decode reports after every decoder call (a segment of the decoder's layers, `time_segments`, on one
    tile's time chunk) and stops at the first report that raises."""
    import mlx.core as mx

    from ltx_backend.models.vae_tiling import TilingConfig, decode_tiled
    from ltx_backend.weights.video import load_video_decoder

    decoder = load_video_decoder(engine.checkpoint, mx.float32)
    latent = mx.random.normal((1, 2, 4, 4, decoder.config.latent_channels), key=mx.random.key(0))
    noise = mx.zeros_like(latent) if decoder.config.timestep_conditioning else None
    tiling = TilingConfig(64, 32)  # 4x4 latent cells = 128 px: 3x3 tiles
    fractions: list[float] = []
    for _ in decode_tiled(decoder, latent, tiling, noise=noise, progress=fractions.append):
        pass
    segments = len(decoder.time_segments())
    assert len(fractions) == 9 * segments and fractions == sorted(fractions) and fractions[-1] == 1.0

    decoded: list[float] = []

    def cancel_at_first(fraction: float) -> None:
        decoded.append(fraction)
        raise Cancelled()

    with pytest.raises(Cancelled):
        list(decode_tiled(decoder, latent, tiling, noise=noise, progress=cancel_at_first))
    assert decoded == [fractions[0]]  # one decoder call of one tile, not one more


def test_cancel_in_decode_leaves_nothing(engine: Engine, tmp_path: Path) -> None:
    token = CancelToken()

    def emit(event: events.Event) -> None:
        if isinstance(event, events.DecodeProgress):
            token.cancel()

    with pytest.raises(Cancelled):
        engine.generate(request(tmp_path, audio_output_path=str(tmp_path / "a.wav")), token, emit)
    assert entries(tmp_path) == []


def test_untiled_decode_cancels_within_one_decoder_block(engine: Engine, tmp_path: Path) -> None:
    token = CancelToken()
    progress: list[float] = []

    def emit(event: events.Event) -> None:
        if isinstance(event, events.DecodeProgress):
            progress.append(event.fraction)
            token.cancel()

    with pytest.raises(Cancelled):
        engine.generate(request(tmp_path, tiling="none", audio=False), token, emit)
    assert len(progress) == 1 and progress[0] < 1.0
    assert entries(tmp_path) == []


def test_text_encoding_cancels_within_one_layer(engine: Engine) -> None:
    from ltx_backend.pipeline.text import TextEncoder

    encoder = TextEncoder(engine.text_encoder_root)
    layers = []

    def check() -> None:
        layers.append(1)
        if len(layers) > 1:  # the first call comes before the first layer
            raise Cancelled()

    with pytest.raises(Cancelled):
        encoder.encode("a fox", check=check)
    assert len(layers) == 2 < encoder.num_states  # stopped after one of the layers


# --- warnings for options without effect, images, hints ------------------------------------------------------------


def warnings_of(engine: Engine, req: GenerationRequest) -> list[str]:
    seen: list[events.Event] = []
    engine.generate(req, emit=seen.append)
    return [e.message for e in seen if isinstance(e, events.Warning)]


def test_options_without_effect_are_warned_about(engine: Engine, tmp_path: Path) -> None:
    warned = warnings_of(
        engine,
        request(tmp_path, audio=False, audio_output_path=str(tmp_path / "a.wav"), negative_prompt="blur",
                prompt="fox " * 1100),
    )  # fmt: skip
    assert any("audio_output_path" in w and "no audio" in w for w in warned)
    assert any("negative prompt is ignored" in w for w in warned)
    assert any("only the first 1024 are used" in w and "tokens" in w for w in warned)
    assert entries(tmp_path) == ["out.mp4"]  # no WAV for a job without audio


def test_quantize_on_a_quantized_checkpoint_is_warned_about(home: Path, tmp_path: Path) -> None:
    warned = warnings_of(Engine(tiny_model_dir("2.3"), quantize=8), request(tmp_path, audio=False))
    assert any("quantize 8 is ignored" in w and "4-bit" in w for w in warned)


def test_cli_image_with_a_frame_0_keyframe_is_warned_about(home: Path, tmp_path: Path) -> None:
    image = write_image(tmp_path / "i.png")
    args = ["generate", "-p", "x", "-W", "128", "-H", "128", "-n", "9", "--no-audio", "-o", str(tmp_path / "v.mp4"),
            "-i", str(image), "--keyframe", f"{image}|0|1.0"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "--image" in result.output and "is ignored" in result.output


def test_an_unreadable_image_is_refused_before_any_work(engine: Engine, tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    seen: list[events.Event] = []
    with pytest.raises(LtxError) as caught:
        engine.generate(request(tmp_path / "o", keyframes=(Keyframe(str(text)),)), emit=seen.append)
    error = caught.value
    assert error.code is ErrorCode.IMAGE_UNREADABLE and error.details["field"] == "keyframes[0].path"
    assert "\n" not in error.message and "ffmpeg version" not in error.message and len(error.message) < 300
    assert not any(isinstance(e, events.PhaseStarted) for e in seen)


@pytest.mark.parametrize(
    ("width", "wanted", "unwanted"),
    [(100000, "at most 2048", "99968"), (0, "at least 64", "smaller"), (100, "to 128", "smaller"),
     (2047, "to 2048", "2112")],
)  # fmt: skip
def test_size_hints_are_valid_values_and_name_the_flag(width: int, wanted: str, unwanted: str) -> None:
    error = refused(ErrorCode.INVALID_PARAMS, "width", width=width, output_path="/tmp/x.mp4")
    assert wanted in error.hint and unwanted not in error.hint and "-W/--width" in error.hint


# --- environment, ffmpeg, tiny model -------------------------------------------------------------------------------


def test_a_bad_ffmpeg_is_reported_by_validate_env_and_refuses_jobs(home: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(tmp_path / "no-ffmpeg"))
    report = CliRunner().invoke(cli, ["validate-env", "--json"])
    import json

    ffmpeg = next(c for c in json.loads(report.output)["checks"] if c["name"] == "ffmpeg")
    assert not ffmpeg["ok"] and ffmpeg["code"] == "ffmpeg_missing" and "IMAGEIO_FFMPEG_EXE" in ffmpeg["fix"]
    assert report.exit_code == 1
    job = CliRunner().invoke(cli, ["generate", "-p", "x", "-W", "128", "-H", "128", "-n", "9",
                                   "-o", str(tmp_path / "v.mp4")])  # fmt: skip
    assert job.exit_code == 1 and "error [ffmpeg_missing]" in job.output and "Traceback" not in job.output
    assert not (tmp_path / "v.mp4").exists()


def test_the_env_report_names_a_problem_whenever_it_is_not_ok() -> None:
    from ltx_backend.server.environment import EnvironmentCache
    from ltx_backend.server.messages import ValidateEnv

    report = EnvironmentCache().report(ValidateEnv(id="1", model="nobody/not-downloaded"))
    assert not report.ok and any(p.code == "model_not_cached" for p in report.problems)


def test_a_corrupt_tiny_model_says_make_tiny(home: Path, tmp_path: Path) -> None:
    from ltx_backend.weights.checkpoint import open_checkpoint

    model = tiny_model_dir("2.0")
    data = (model / "model.safetensors").read_bytes()
    try:
        (model / "model.safetensors").write_bytes(data[:1000])
        with pytest.raises(LtxError) as caught:
            open_checkpoint(model).component("transformer")
        assert caught.value.code is ErrorCode.CHECKPOINT_CORRUPT and "ltx-backend make-tiny" in caught.value.hint
    finally:
        (model / "model.safetensors").write_bytes(data)


def test_models_lists_both_tiny_models(home: Path) -> None:
    from ltx_backend.weights.cache import list_models

    names = [entry["name"] for entry in list_models()["models"]]
    assert "tiny" in names and "tiny-2.3" in names


def test_an_unexpected_failure_is_a_code_not_a_traceback(home: Path, tmp_path: Path, monkeypatch) -> None:
    from ltx_backend.pipeline import engine as engines

    def broken(self, *args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(engines.Engine, "generate", broken)
    result = CliRunner().invoke(cli, ["generate", "-p", "x", "-W", "128", "-H", "128", "-n", "9",
                                      "-o", str(tmp_path / "v.mp4")])  # fmt: skip
    assert result.exit_code == 1 and "error [internal]: RuntimeError: boom" in result.output
    assert "Traceback" not in result.output


def test_serve_refuses_bad_outputs_and_images_before_accepted(tmp_path: Path) -> None:
    from test_server import JOB, Backend

    server = Backend(tmp_path / "home")
    try:
        assert server.next()["type"] == "ready"
        text = tmp_path / "notes.png"
        text.write_text("not an image")
        cases = [
            ("dir", {"output_path": str(tmp_path)}, "output_write_failed", "output_path"),
            ("proc", {"output_path": "/proc/v.mp4"}, "output_write_failed", "output_path"),
            ("same", {"output_path": str(tmp_path / "v.mp4"), "audio_output_path": str(tmp_path / "v.mp4")},
             "invalid_params", "audio_output_path"),
            ("image", {"output_path": str(tmp_path / "v.mp4"), "keyframes": [{"path": str(text)}]},
             "image_unreadable", "keyframes[0].path"),
        ]  # fmt: skip
        for name, fields, code, field in cases:
            server.send(type="generate", id=name, **{**JOB, **fields})
            reply = server.until(lambda msg, name=name: msg.get("id") == name)
            assert (reply["type"], reply["code"], reply["field"]) == ("error", code, field), reply
            assert "\n" not in reply["message"] and reply["hint"]
        assert not any(msg["type"] == "accepted" for msg in server.seen)
        assert [name for name in entries(tmp_path) if name != "home"] == ["notes.png"]
    finally:
        server.process.kill()
        server.process.wait()


def test_a_cancel_while_ffmpeg_finishes_stops_it(tmp_path: Path) -> None:
    import numpy as np

    from ltx_backend.media.video import VideoWriter

    calls = []

    def check() -> None:
        calls.append(1)
        raise Cancelled()

    frames = np.random.default_rng(0).integers(0, 255, (48, 256, 256, 3), dtype=np.uint8)
    with pytest.raises(Cancelled), VideoWriter(tmp_path / "v.mp4", 256, 256, 24.0, check=check) as writer:
        writer.write(frames)
        process = writer._process
    assert calls and process.poll() is not None  # the wait was cut short and ffmpeg is gone
    assert entries(tmp_path) == []

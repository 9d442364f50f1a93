"""compat/: the drop-in ``mlx_video.generate_av`` (mlx-video-with-audio 0.1.37 interface) run by ltx-backend.

Fast checks of the command line and of the request it builds (no model is loaded), the download and failure
paths with a stand-in engine, and one real tiny-model run exactly as the LTX Video Generator app's wrapper starts
it (a fresh subprocess with the app's environment and arguments), parsed with the app's rules.
The golden transcript of a real run is in test_compat_golden.py.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest
from media_probe import frames, probe, write_image

from ltx_backend import events
from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.events import Phase

try:
    from mlx_video import generate_av
except ImportError as exc:  # pragma: no cover - scripts/test installs it
    raise ImportError("the compat package is not installed: run `.venv/bin/pip install -e compat`") from exc

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


# --- helpers ---------------------------------------------------------------------------------------------------


class _Stream:
    """A stand-in for sys.stdout / sys.stderr that records whole lines, in order, into a shared list."""

    def __init__(self, name: str, lines: list[tuple[str, str]]) -> None:
        self.name, self.lines, self.buffer = name, lines, ""

    def write(self, text: str) -> int:
        self.buffer += text
        while "\n" in self.buffer:
            line, self.buffer = self.buffer.split("\n", 1)
            self.lines.append((self.name, line))
        return len(text)

    def flush(self) -> None:
        pass


def run_in_process(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> tuple[int, list[tuple[str, str]]]:
    """``generate_av.run(argv)`` with stdout ("O") and stderr ("E") lines recorded in their merged order."""
    lines: list[tuple[str, str]] = []
    monkeypatch.setattr(sys, "stdout", _Stream("O", lines))
    monkeypatch.setattr(sys, "stderr", _Stream("E", lines))
    try:
        code = generate_av.run(argv)
    except SystemExit as exit_:
        code = exit_.code
    monkeypatch.undo()
    return code, lines


def texts(lines: list[tuple[str, str]]) -> list[str]:
    return [ANSI.sub("", text) for _, text in lines]


@dataclass
class AppView:
    """What the app makes of the merged output (host-app-contract.md, "Lines it parses")."""

    progress: list[float] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    steps: dict[int, list[int]] = field(default_factory=lambda: {1: [], 2: []})
    totals: dict[int, set[int]] = field(default_factory=lambda: {1: set(), 2: set()})
    version: str | None = None
    cached: list[str] = field(default_factory=list)
    downloads: list[str] = field(default_factory=list)
    enhanced_prompt: str | None = None
    failure_hints: list[str] = field(default_factory=list)


WRAPPER_STATUS = [  # the wrapper's own substring rules, on every relayed line
    ("decoding video", "Decoding video..."),
    ("video encoded", "Saving video frames..."),
    ("decoding audio", "Decoding audio..."),
    ("combining video and audio", "Saving final video..."),
    ("saved video with audio", "Saving final video..."),
]
FAILURE_HINTS = [
    "valueerror: [conv] expect the input channels",
    "kiogpucommandbuffercallbackerroroutofmemory",
    "insufficient memory",
    "std::bad_alloc",
    "impacting interactivity",
]
STAGE_TEXT = re.compile(r"stage\s+([12])\s*\((\d+)/(\d+)\)")


def _status_progress(text: str) -> float:
    if "Stage 1" in text:
        return 0.1
    if "Stage 2" in text or "Upsampling" in text:
        return 0.5
    if "Decoding" in text:
        return 0.9
    if "Saving" in text:
        return 0.95
    if "Loading" in text:
        return 0.08
    return 0.05


def app_parse(output: bytes) -> AppView:
    """The app's parsing rules: split on \\n or \\r, strip ANSI, first matching rule wins."""
    view = AppView()

    def stage(s: int, i: int, n: int) -> None:
        view.steps[s].append(i)
        view.totals[s].add(n)
        view.progress.append(0.1 + 0.4 * i / n if s == 1 else 0.5 + 0.4 * i / n)

    def status(text: str) -> None:
        view.statuses.append(text)
        view.progress.append(_status_progress(text))

    lines = re.split(r"[\r\n]", output.decode("utf-8"))
    relayed = []
    for raw in lines:  # the wrapper relays every line, adding STATUS lines for the stdout phrases
        relayed.append(raw)
        relayed += [f"STATUS:{s}" for key, s in WRAPPER_STATUS if key in raw.lower()][:1]
    for raw in relayed:
        line = ANSI.sub("", raw)
        lower = line.lower()
        if any(hint in lower for hint in FAILURE_HINTS) or ("metal" in lower and "out of memory" in lower):
            view.failure_hints.append(line)
        if line.startswith("STAGE:") and len(parts := line.split(":")) >= 5:
            stage(int(parts[1]), int(parts[3]), int(parts[4]))
        elif line.startswith("STATUS:"):
            status(line.removeprefix("STATUS:"))
        elif match := STAGE_TEXT.search(lower):
            stage(int(match[1]), int(match[2]), int(match[3]))
        elif line.startswith("MLX_VIDEO_VERSION:"):
            view.version = line.split(":", 1)[1]
        elif line.startswith("MODEL:CACHED:"):
            view.cached.append(line.removeprefix("MODEL:CACHED:"))
            view.progress.append(0.08)
        elif line.startswith("DOWNLOAD:"):
            view.downloads.append(line)
        elif line.startswith("ENHANCED_PROMPT:") or lower.startswith("enhanced prompt:"):
            view.enhanced_prompt = line.split(":", 1)[1]
    return view


# --- the app's wrapper, on the tiny model ---------------------------------------------------------------------------


def app_environment(tmp_path: Path) -> dict[str, str]:
    """The app's environment built from scratch (PATH, HOME, USER, TMPDIR) plus where the tiny model lives."""
    for name in ("home", "tmp", "ltx-home"):
        (tmp_path / name).mkdir(exist_ok=True)
    bin_dir = Path(sys.executable).parent
    return {
        "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin:/opt/homebrew/bin",
        "HOME": str(tmp_path / "home"),
        "USER": os.environ.get("USER", "tester"),
        "TMPDIR": str(tmp_path / "tmp"),
        # ltx-backend's built-in tiny model is written on demand under $LTX_BACKEND_HOME/tiny.
        "LTX_BACKEND_HOME": str(tmp_path / "ltx-home"),
    }


def run_like_the_app(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, bytes, list[float]]:
    """``Popen([python, "-m", "mlx_video.generate_av", ...], stdout=PIPE, stderr=STDOUT)``, read unbuffered."""
    process = subprocess.Popen(
        [sys.executable, "-m", "mlx_video.generate_av", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=cwd,
    )
    output, arrivals = b"", []
    while chunk := os.read(process.stdout.fileno(), 65536):
        output += chunk
        arrivals.append(time.monotonic())
    return process.wait(timeout=120), output, arrivals


APP_ARGS = [  # LTXBridge.swift's argument list (v2.3.54), with the tiny model and a small size
    "--prompt", "A red fox trotting through fresh snow at dawn",
    "--height", "128", "--width", "128", "--num-frames", "25", "--seed", "1234", "--fps", "24",
    "--steps", "30", "--cfg-scale", "3.0",
]  # fmt: skip


def test_the_app_wrapper_runs_the_module_on_the_tiny_model(tmp_path: Path) -> None:
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    output_path = tmp_path / "videos" / "fox.mp4"
    args = [
        *APP_ARGS, "--output-path", str(output_path), "--model-repo", "tiny", "--tiling", "auto",
        "--negative-prompt", "blurry, low quality", "--save-audio-separately",
    ]  # fmt: skip
    code, output, _ = run_like_the_app(args, app_environment(tmp_path), cwd)
    text = output.decode("utf-8")
    assert code == 0, text
    view = app_parse(output)
    assert view.version == "0.1.37"
    assert view.cached[0] == "tiny"
    assert view.steps == {1: list(range(1, 9)), 2: [1, 2, 3]}
    assert view.totals == {1: {8}, 2: {3}}
    assert view.statuses == ["Decoding video...", "Saving video frames...", "Decoding audio...",
                             "Saving final video...", "Saving final video..."]  # fmt: skip
    assert max(view.progress) == pytest.approx(0.95) and view.progress[-1] == pytest.approx(0.95)
    assert not view.failure_hints and not view.downloads
    # Flushed line by line: stdout lines sit between the stderr tokens, as they were printed.
    lines = texts([("", line) for line in text.splitlines()])
    order = [
        "📝 Loading text encoder...", "TEXT_ENCODER:LOAD_START", "⚡ Stage 1: Generating at 64x64 (8 steps)...",
        "STAGE:1:STEP:1:8:Denoising", "STAGE:1:STEP:8:8:Denoising", "🔍 Upsampling video latents 2x...",
        "STAGE:2:STEP:3:3:Denoising", "🎞️  Decoding video...", "✅ Video encoded",
        f"✅ Saved video with audio to {output_path}",
    ]  # fmt: skip
    assert [lines.index(line) for line in order] == sorted(lines.index(line) for line in order)
    assert f"✅ Saved audio to {output_path.with_suffix('.wav')}" in lines
    assert re.search(r"🎉 Done! Generated in \d+\.\ds", text) and re.search(r"✨ Peak memory: \d+\.\d\dGB", text)
    # The MP4 exists, has the requested size and length with sound, and every frame decodes.
    info = probe(output_path)
    assert (info.video_codec, info.width, info.height, info.frames) == ("h264", 128, 128, 25)
    assert info.audio_codec == "aac" and info.duration == pytest.approx(25 / 24, abs=0.1)
    assert frames(output_path).shape == (25, 128, 128, 3)
    assert output_path.with_suffix(".wav").is_file()
    assert not list(cwd.iterdir()), "nothing may be written to the working directory"


def test_module_import_is_fast_and_side_effect_free(tmp_path: Path) -> None:
    code = (
        "import sys, os, time; t = time.perf_counter(); import mlx_video.generate_av as g, mlx_video.version as v; "
        "print(v.__version__, g.generate_av is g.generate_video_with_audio, "
        "any(m.split('.')[0] in ('mlx', 'ltx_backend', 'transformers') for m in sys.modules), "
        "'TRANSFORMERS_NO_ADVISORY_WARNINGS' in os.environ, round(time.perf_counter() - t, 3))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=app_environment(tmp_path), timeout=60
    )
    version, alias, heavy, env_set, seconds = result.stdout.split()
    assert (version, alias, heavy, env_set) == ("0.1.37", "True", "False", "False"), result.stderr
    assert float(seconds) < 0.5


def test_help_exits_zero_and_usage_errors_exit_two(tmp_path: Path) -> None:
    env = app_environment(tmp_path)
    help_ = subprocess.run([sys.executable, "-m", "mlx_video.generate_av", "--help"], capture_output=True, env=env)
    assert help_.returncode == 0 and b"--keyframe PATH|FRAME_IDX|STRENGTH" in help_.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "mlx_video.generate_av", "-p", "x", "--output", "a.mp4"], capture_output=True, env=env
    )
    assert bad.returncode == 2
    assert b"ambiguous option: --output could match --output-path, --output-audio" in bad.stderr


# --- the command line (argparse) -----------------------------------------------------------------------------------

REFERENCE_USAGE = """\
usage: python -m mlx_video.generate_av [-h] --prompt PROMPT [--height HEIGHT] [--width WIDTH]
                                       [--num-frames NUM_FRAMES] [--seed SEED] [--fps FPS]
                                       [--output-path OUTPUT_PATH] [--output-audio OUTPUT_AUDIO]
                                       [--save-audio-separately] [--no-audio]
                                       [--model-repo MODEL_REPO]
                                       [--text-encoder-repo TEXT_ENCODER_REPO]
                                       [--num-inference-steps NUM_INFERENCE_STEPS]
                                       [--negative-prompt NEGATIVE_PROMPT] [--cfg-scale CFG_SCALE]
                                       [--verbose] [--enhance-prompt] [--use-uncensored-enhancer]
                                       [--max-tokens MAX_TOKENS] [--temperature TEMPERATURE]
                                       [--image IMAGE] [--image-strength IMAGE_STRENGTH]
                                       [--image-frame-idx IMAGE_FRAME_IDX]
                                       [--keyframe PATH|FRAME_IDX|STRENGTH]
                                       [--tiling {auto,none,default,aggressive,conservative,spatial,temporal}]
"""


def parse(argv: list[str]) -> argparse.Namespace:
    return generate_av.build_parser().parse_args(argv)


def test_usage_matches_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    usage = generate_av.build_parser(prog="python -m mlx_video.generate_av").format_usage()
    assert usage == REFERENCE_USAGE


def test_defaults_match_the_reference() -> None:
    args = vars(parse(["--prompt", "x"]))
    assert args == {
        "prompt": "x", "height": 512, "width": 512, "num_frames": 65, "seed": 42, "fps": 24,
        "output_path": "output_av.mp4", "output_audio": None, "save_audio_separately": False, "no_audio": False,
        "model_repo": "notapalindrome/ltx2-mlx-av", "text_encoder_repo": None, "num_inference_steps": 30,
        "negative_prompt": None, "cfg_scale": 3.0, "verbose": False, "enhance_prompt": False,
        "use_uncensored_enhancer": False, "max_tokens": 512, "temperature": 0.7, "image": None,
        "image_strength": 1.0, "image_frame_idx": 0, "keyframe": None, "tiling": "auto",
    }  # fmt: skip


def test_aliases_and_unique_prefixes_are_accepted() -> None:
    args = parse([
        "-p", "x", "-H", "320", "-W", "512", "-n", "49", "-s", "3", "-i", "a.png", "--steps", "15",
        "--guidance-scale", "2.5", "--neg", "blur", "--guid", "4", "--temp", "0.2", "--keyf", "k.png|2|0.5",
        "--keyf", "j.png", "--verb", "--enh", "--use-unc", "--max-t", "64", "--image-s", "0.8", "--image-f", "1",
    ])  # fmt: skip
    assert (args.prompt, args.height, args.width, args.num_frames, args.seed, args.image) == (
        "x", 320, 512, 49, 3, "a.png"
    )  # fmt: skip
    assert (args.num_inference_steps, args.cfg_scale, args.negative_prompt, args.temperature) == (15, 4.0, "blur", 0.2)
    assert args.keyframe == ["k.png|2|0.5", "j.png"] and args.verbose and args.enhance_prompt
    assert (args.use_uncensored_enhancer, args.max_tokens, args.image_strength, args.image_frame_idx) == (
        True, 64, 0.8, 1
    )  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--output", "a.mp4"], "ambiguous option: --output could match --output-path, --output-audio"),
        (["--fps", "23.976"], "argument --fps: invalid int value: '23.976'"),
        (["--tiling", "huge"], "argument --tiling: invalid choice: 'huge'"),
        (["--preview-every", "2"], "unrecognized arguments: --preview-every 2"),
        (["--keyframe", "a.png|one"], "argument --keyframe"),
        ([], None),  # --prompt missing
    ],
)
def test_usage_errors_exit_two(argv: list[str], message: str | None, monkeypatch, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        generate_av.run((["-p", "x"] if argv else []) + argv)
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert "usage:" in error
    assert message in error if message else "the following arguments are required: --prompt/-p" in error


def test_the_argument_lists_of_each_app_build_parse() -> None:
    base = [*APP_ARGS, "--output-path", "/o/v.mp4", "--model-repo", "notapalindrome/ltx2-mlx-av", "--tiling", "auto"]
    v2354 = parse([*base, "--negative-prompt", "n", "--no-audio", "--image", "/i.png", "--image-strength", "1.0"])
    later = parse([*base, "--text-encoder-repo", "mlx-community/gemma-3-12b-it-4bit",
                   "--keyframe", "/a.png|0|1.0", "--keyframe", "/b.png|3|0.7", "--save-audio-separately"])  # fmt: skip
    older = parse([*base, "--enhance-prompt", "--use-uncensored-enhancer", "--temperature", "0.7"])
    assert v2354.no_audio and v2354.image == "/i.png"
    assert later.keyframe == ["/a.png|0|1.0", "/b.png|3|0.7"] and later.text_encoder_repo.endswith("4bit")
    assert older.enhance_prompt and older.use_uncensored_enhancer


def test_keyframe_specs_parse_as_in_the_reference() -> None:
    assert generate_av.parse_keyframe("a.png") == {"path": "a.png", "frame_idx": 0, "strength": 1.0}
    assert generate_av.parse_keyframe("a.png|3") == {"path": "a.png", "frame_idx": 3, "strength": 1.0}
    assert generate_av.parse_keyframe("a.png||0.4") == {"path": "a.png", "frame_idx": 0, "strength": 0.4}
    assert generate_av.parse_keyframe("a.png|2|0.5|x") == {"path": "a.png", "frame_idx": 2, "strength": 0.5}


# --- the request built from the flags (nothing is loaded) -----------------------------------------------------------


def plan(**options):
    return generate_av.prepare(**{"prompt": "a fox", "output_path": "/tmp/out/v.mp4", **options})


@pytest.mark.parametrize(("sent", "used"), [(25, 25), (49, 49), (50, 49), (75, 73), (100, 97), (121, 121), (20, 17)])
def test_the_apps_frame_counts_are_rounded_and_reported(sent: int, used: int) -> None:
    result = plan(num_frames=sent, width=768, height=512)
    assert result.request.num_frames == used and result.requested_frames == sent
    assert result.request.warnings == ()  # the shim prints "Adjusted frames to N" itself, once


def test_too_many_frames_are_rejected_clearly() -> None:
    with pytest.raises(LtxError) as error:
        plan(num_frames=1000)
    assert error.value.code is ErrorCode.INVALID_PARAMS
    assert "1001 frames at 24 fps is longer than the 20 s the model supports" in error.value.message
    assert "at most 481 frames" in error.value.hint


@pytest.mark.parametrize(("width", "height"), [(2048, 1152), (1152, 2048), (768, 512), (512, 320), (320, 320)])
def test_sizes_up_to_2048_are_accepted(width: int, height: int) -> None:
    result = plan(width=width, height=height, num_frames=121)
    assert (result.request.width, result.request.height) == (width, height)


@pytest.mark.parametrize(
    ("width", "height", "message"),
    [
        (2112, 1152, "width 2112 is outside 64..2048"),
        (2048, 4096, "height 4096 is outside 64..2048"),
        (1000, 512, "Width must be divisible by 64, got 1000"),
        (512, 500, "Height must be divisible by 64, got 500"),
    ],
)
def test_bad_sizes_are_rejected_clearly(width: int, height: int, message: str) -> None:
    with pytest.raises(LtxError, match=re.escape(message)):
        plan(width=width, height=height)


@pytest.mark.parametrize("fps", [12, 20, 24, 30])
def test_the_apps_frame_rates_are_accepted(fps: int) -> None:
    assert plan(fps=fps, num_frames=121).request.fps == float(fps)


def test_out_of_range_seeds_are_handled() -> None:
    negative = plan(seed=-1)
    assert 0 <= negative.request.seed < 2**31 and "Seed -1 is negative" in negative.notes[0]
    huge = plan(seed=2**64 + 5)
    assert huge.request.seed == 5 and "above 2**64-1" in huge.notes[0]
    assert plan(seed=2**64 - 1).request.seed == 2**64 - 1 and not plan(seed=0).notes


def test_latent_keyframe_indices_become_video_frames(tmp_path: Path) -> None:
    a, b, c = (write_image(tmp_path / f"{name}.png") for name in "abc")
    # 121 frames -> 16 latent frames; latent k is video frame 8k; past the end is clamped (and reported).
    result = plan(num_frames=121, keyframes=[
        {"path": str(a), "frame_idx": 0, "strength": 1.0},
        {"path": str(b), "frame_idx": 3, "strength": 0.7},
        {"path": str(c), "frame_idx": 40, "strength": 0.5},
    ])  # fmt: skip
    got = [(Path(k.path).name, k.frame_index, k.strength) for k in result.request.keyframes]
    assert got == [("a.png", 0, 1.0), ("b.png", 24, 0.7), ("c.png", 120, 0.5)]
    assert "latent frame 40 is past the last one; using 15" in result.notes[0]
    assert result.mode == "I2V+Audio"
    assert result.keyframe_lines[1] == f"Keyframe: {b} (strength=0.7, frame=3)"
    # Python indexing for negative indices, and a later keyframe at the same frame replaces an earlier one.
    last = plan(num_frames=121, keyframes=[{"path": str(a), "frame_idx": -1}, {"path": str(b), "frame_idx": 15}])
    assert [(Path(k.path).name, k.frame_index) for k in last.request.keyframes] == [("b.png", 120)]


def test_image_flags_and_keyframe_precedence(tmp_path: Path) -> None:
    image = write_image(tmp_path / "i.png")
    single = plan(image=str(image), image_strength=0.8, image_frame_idx=2, num_frames=49)
    # Same meaning as 0.1.37's code (not its help text): 1.0 keeps the image, 0.0 ignores it.
    assert [(k.frame_index, k.strength) for k in single.request.keyframes] == [(16, 0.8)]
    other = write_image(tmp_path / "k.png")
    both = plan(image=str(image), keyframes=[{"path": str(other), "frame_idx": 1, "strength": 1.0}], num_frames=49)
    assert [Path(k.path).name for k in both.request.keyframes] == ["k.png"]
    assert f"--image {image} is ignored: --keyframe takes precedence" in both.notes
    with pytest.raises(LtxError, match="no such file") as missing:
        plan(image=str(tmp_path / "missing.png"))
    assert missing.value.code is ErrorCode.IMAGE_UNREADABLE
    assert plan().mode == "T2V+Audio"


def test_audio_paths() -> None:
    assert plan(save_audio_separately=True).request.audio_output_path == "/tmp/out/v.wav"
    assert plan(output_audio_path="/tmp/a.wav", save_audio_separately=True).audio_display == "/tmp/a.wav"
    silent = plan(no_audio=True, save_audio_separately=True)
    assert not silent.request.audio and silent.request.audio_output_path is None


# --- whole jobs with a stand-in engine -------------------------------------------------------------------------------


class FakeEngine:
    """Emits the events of a real distilled run; writes the MP4 unless `writes` is False."""

    writes = True
    created: ClassVar[list[tuple]] = []

    def __init__(self, model, text_encoder=None, **_) -> None:
        FakeEngine.created.append((Path(model), Path(text_encoder) if text_encoder else None))

    def generate(self, request, cancel=None, emit=events.ignore):
        def phase(p, detail=""):
            emit(events.PhaseStarted(p, detail))
            emit(events.PhaseFinished(p, 0.01))

        phase(Phase.TEXT_ENCODING)
        emit(events.PhaseStarted(Phase.LOAD, "transformer"))
        emit(events.PhaseFinished(Phase.LOAD, 0.01))
        for stage, total, p in ((1, 8, Phase.STAGE1), (2, 3, Phase.STAGE2)):
            if stage == 2:
                phase(Phase.UPSAMPLE)
            emit(events.PhaseStarted(p))
            for step in range(1, total + 1):
                emit(events.DenoiseStep(stage, step, total))
            emit(events.PhaseFinished(p, 0.01))
        phase(Phase.AUDIO_DECODE)
        phase(Phase.VIDEO_DECODE)
        if self.writes:
            Path(request.output_path).write_bytes(b"\x00\x00\x00\x18ftypmp42")
        return events.Result(
            video_path=request.output_path, audio_path=None, seed=request.seed, width=request.width,
            height=request.height, num_frames=request.num_frames, fps=request.fps, has_audio=request.audio,
            sampler="distilled", steps=(8, 3), prompt=request.prompt, timings={}, peak_memory_gb=0.0,
        )  # fmt: skip


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from ltx_backend.pipeline import engine

    monkeypatch.setenv("LTX_BACKEND_HOME", str(tmp_path / "ltx-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(engine, "Engine", FakeEngine)
    FakeEngine.writes, FakeEngine.created = True, []
    return FakeEngine


def test_a_repo_that_is_not_cached_is_downloaded_with_download_lines(
    fake_engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from ltx_backend.tiny import ensure_tiny_model
    from ltx_backend.weights import download

    repo = "someorg/ltx-test-model"
    tiny = ensure_tiny_model()

    def fake_download(repo_id, revision="main", emit=events.ignore, **_):
        assert (repo_id, revision) == (repo, "main")
        emit(events.DownloadProgress(repo_id, 0, None))  # total unknown yet: no line
        emit(events.DownloadProgress(repo_id, 5 * 2**30, 40 * 2**30))
        time.sleep(0.3)  # long enough for heartbeats
        emit(events.DownloadProgress(repo_id, 40 * 2**30, 40 * 2**30))
        return tiny

    monkeypatch.setattr(download, "download_model", fake_download)
    monkeypatch.setattr(generate_av, "HEARTBEAT_SECONDS", 0.1)
    monkeypatch.setattr(generate_av, "PROGRESS_SECONDS", 0.0)
    out = tmp_path / "v.mp4"
    code, lines = run_in_process(monkeypatch, ["-p", "x", "-W", "128", "-H", "128", "-n", "9",
                                               "--model-repo", repo, "--output-path", str(out)])  # fmt: skip
    assert code == 0, lines
    got = texts(lines)
    tokens = [line for stream, line in lines if stream == "E" and line.startswith(("DOWNLOAD:", "STATUS:", "MODEL:"))]
    assert tokens[:3] == [
        f"DOWNLOAD:START:{repo}",
        "STATUS:Downloading model from Hugging Face (first run can take a long time)...",
        f"DOWNLOAD:PROGRESS:{5 * 2**30}:{40 * 2**30}:12%",
    ]
    assert tokens[3:5] == [
        f"DOWNLOAD:HEARTBEAT:{repo}",
        "STATUS:Still downloading model — large checkpoints can pause between progress updates.",
    ]
    assert f"If this hangs for hours, try: hf download {repo}   # then retry generation" in got
    complete = tokens.index(f"DOWNLOAD:COMPLETE:{repo}")
    assert tokens[complete - 1] == f"DOWNLOAD:PROGRESS:{40 * 2**30}:{40 * 2**30}:100%"
    assert tokens[complete + 1] == f"MODEL:CACHED:{tiny / 'text_encoder'}"  # no MODEL:CACHED for the model
    assert f"MODEL:CACHED:{repo}" not in got
    assert FakeEngine.created == [(tiny, tiny / "text_encoder")]
    assert got[-3] == f"✅ Saved video with audio to {out}"


def test_a_failed_download_exits_nonzero_without_complete(fake_engine, monkeypatch, tmp_path: Path) -> None:
    from ltx_backend.weights import download

    def offline(repo_id, revision="main", emit=events.ignore, **_):
        raise LtxError(ErrorCode.NETWORK_UNAVAILABLE, f"cannot reach the Hugging Face Hub to download {repo_id}", "x")

    monkeypatch.setattr(download, "download_model", offline)
    code, lines = run_in_process(monkeypatch, ["-p", "x", "--model-repo", "someorg/m", "--output-path",
                                               str(tmp_path / "v.mp4")])  # fmt: skip
    got = texts(lines)
    assert code == 1 and "DOWNLOAD:START:someorg/m" in got
    assert not any(line.startswith("DOWNLOAD:COMPLETE") for line in got) and not FakeEngine.created
    assert "❌ ltx-backend error (network unavailable): cannot reach the Hugging Face Hub to download someorg/m" in got


@pytest.mark.parametrize("stale", [False, True])
def test_no_mp4_means_a_nonzero_exit(stale: bool, fake_engine, monkeypatch, tmp_path: Path) -> None:
    fake_engine.writes = False
    out = tmp_path / "v.mp4"
    if stale:  # a file from an earlier job is not this job's video
        out.write_bytes(b"old video")
        os.utime(out, (time.time() - 3600, time.time() - 3600))
    code, lines = run_in_process(monkeypatch, ["-p", "x", "-W", "128", "-H", "128", "-n", "9",
                                               "--model-repo", "tiny", "--output-path", str(out)])  # fmt: skip
    got = texts(lines)
    assert code == 1 and out.exists() == stale
    assert f"❌ ltx-backend error (output write failed): Video encoding failed: no video was written to {out}" in got
    assert not any("Saved video" in line or "Video encoded" in line or "Done!" in line for line in got)


def test_bad_requests_fail_before_any_model_is_touched(fake_engine, monkeypatch, tmp_path: Path) -> None:
    from ltx_backend.weights import resolve

    def touched(*_, **__):
        raise AssertionError("a model was resolved")

    monkeypatch.setattr(resolve, "resolve_model", touched)
    for argv, message in [
        (["-W", "2112", "-H", "1152"], "width 2112 is outside 64..2048"),
        (["-n", "1000"], "1001 frames at 24 fps is longer than the 20 s the model supports"),
        (["-H", "500"], "Height must be divisible by 64, got 500"),
        (["--image", str(tmp_path / "none.png")], "image unreadable): Cannot read image"),
        (["--output-path", str(tmp_path / "v.mov")], "v.mov is not an .mp4 path"),
        (["--output-path", str(tmp_path)], "output write failed): output_path"),
        (["--output-path", "/proc/v.mp4"], "output write failed): output_path"),
    ]:
        code, lines = run_in_process(monkeypatch, ["-p", "x", "--model-repo", "someorg/m", *argv])
        got = texts(lines)
        assert code == 1, got
        assert any(line.startswith("❌ ltx-backend error (") and message in line for line in got), got
        assert not any(line.startswith(("MODEL:", "DOWNLOAD:", "MLX_VIDEO_VERSION")) for line in got)
        assert not FakeEngine.created


def test_no_audio_lines(fake_engine, monkeypatch, tmp_path: Path) -> None:
    out = tmp_path / "v.mp4"
    code, lines = run_in_process(monkeypatch, ["-p", "x", "-W", "128", "-H", "128", "-n", "9", "--no-audio",
                                               "--model-repo", "tiny", "--output-path", str(out)])  # fmt: skip
    got = texts(lines)
    assert code == 0
    assert "🎬 [T2V+Audio] Generating 128x128 video with 9 frames + audio" in got  # 0.1.37 wording, kept
    assert got[-4:-2] == ["✅ Video encoded", f"✅ Saved video-only to {out}"]
    assert not any("Decoding audio" in line or "Combining" in line for line in got)


def test_memory_errors_carry_the_apps_hint_text(fake_engine, monkeypatch, tmp_path: Path) -> None:
    def too_big(self, request, cancel=None, emit=events.ignore):
        raise LtxError(ErrorCode.INSUFFICIENT_MEMORY, "Not enough memory for denoising: it needs 60 GB", "Use 4-bit.")

    monkeypatch.setattr(FakeEngine, "generate", too_big)
    code, lines = run_in_process(monkeypatch, ["-p", "x", "--model-repo", "tiny", "--output-path",
                                               str(tmp_path / "v.mp4")])  # fmt: skip
    assert code == 1
    view = app_parse("\n".join(text for _, text in lines).encode())
    assert view.failure_hints and "Not enough memory" in view.failure_hints[0]
    assert "   hint: Use 4-bit." in texts(lines)


def test_sigterm_cancels_with_exit_130(tmp_path: Path) -> None:
    """The app's cancel: SIGTERM while the engine runs unwinds it and exits 130 (nothing at the output path)."""
    code = (
        "import sys, time\n"
        "from ltx_backend.pipeline import engine\n"
        "class Slow:\n"
        "    def __init__(self, *args, **kwargs): pass\n"
        "    def generate(self, request, cancel=None, emit=None):\n"
        "        print('ENGINE:STARTED', file=sys.stderr, flush=True)\n"
        "        time.sleep(60)\n"
        "engine.Engine = Slow\n"
        "from mlx_video.generate_av import main\n"
        "main(sys.argv[1:])\n"
    )
    out = tmp_path / "v.mp4"
    process = subprocess.Popen(
        [sys.executable, "-c", code, "-p", "x", "--model-repo", "tiny", "--output-path", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=app_environment(tmp_path),
        cwd=tmp_path,
    )
    seen = []
    for line in iter(process.stdout.readline, b""):
        seen.append(line.decode())
        if line.startswith(b"ENGINE:STARTED"):
            process.terminate()
    assert process.wait(timeout=30) == 130, "".join(seen)
    assert "❌ Cancelled: no video was written\n" in seen and not out.exists()


def test_the_tiling_line_reports_the_mode_the_engine_applies() -> None:
    """`--tiling auto` at 768x512x121 decodes within the memory of generate_av's tiles by size (384 px, 48 frames):
    full frames in 8-frame chunks; unless the engine decodes untiled where memory allows."""
    from ltx_backend.pipeline.request import GenerationRequest

    request = GenerationRequest(prompt="p", output_path="/o.mp4", width=768, height=512, num_frames=121)
    plan = generate_av.Plan(request, 121, [], [], "/o.mp4", None)
    renderer = generate_av._Renderer(plan, 8, verbose=False, uncensored=False)
    assert renderer.tiling_line("tiling auto") == "  Tiling (auto): spatial=none, temporal=8f"
    assert renderer.tiling_line("tiling none") == "  Tiling: disabled"
    assert renderer.tiling_line("tiling 0/0/56/16") == "  Tiling (auto): spatial=none, temporal=56f"  # least work
    assert renderer.tiling_line() == renderer.tiling_line("tiling auto")  # no detail: the requested mode

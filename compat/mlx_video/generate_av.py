"""`python -m mlx_video.generate_av`: the mlx-video-with-audio 0.1.37 command line, run by ltx-backend.

The flags (names, aliases, types, defaults, choices, argparse prefix abbreviations, exit code 2 on usage errors)
and the log lines (stdout: coloured human lines; stderr: machine tokens such as ``STAGE:1:STEP:3:8:Denoising``)
are those of the reference, so the LTX Video Generator app runs this module unchanged. The work is done by
``ltx_backend.pipeline.engine.Engine``; this module only turns flags into a `GenerationRequest` and engine events
into the legacy lines. Where the reference had a defect that hurts users, the interface is kept and the behaviour
fixed; compat/README.md lists every such decision.

Importing this module is fast and has no side effects: ltx-backend and MLX are imported when a job runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mlx_video.version import __version__

DEFAULT_MODEL_REPO = "notapalindrome/ltx2-mlx-av"
DEFAULT_TEXT_ENCODER_REPO = "mlx-community/gemma-3-12b-it-bf16"
TILING_CHOICES = ["auto", "none", "default", "aggressive", "conservative", "spatial", "temporal"]
LOCAL_MODELS = ("tiny", "tiny-2.3")  # ltx-backend's built-in tiny random-weight models (tests, smoke runs)
SIZE_MULTIPLE = 64
SEED_LIMIT = 2**64
HEARTBEAT_SECONDS = 120.0  # DOWNLOAD:HEARTBEAT period (the app's stall watchdog waits far longer)
PROGRESS_SECONDS = 1.0  # at most one DOWNLOAD:PROGRESS line a second (plus the last one)
STAGE_2_STEPS = 3
DISTILLED_STAGE_1_STEPS = 8


class Colors:
    CYAN = "\033[96m"
    BLUE = "\033[94m"
    GREEN = "\033[92m"
    YELLOW = "\033[93m"
    RED = "\033[91m"
    MAGENTA = "\033[95m"
    BOLD = "\033[1m"
    DIM = "\033[2m"
    RESET = "\033[0m"


C = Colors


class _Console:
    """Human lines on stdout, machine tokens on stderr, every line flushed at once (one lock for both)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def _write(self, stream: Any, text: str) -> None:
        with self.lock:
            stream.write(text + "\n")
            stream.flush()

    def out(self, text: str, *styles: str) -> None:
        self._write(sys.stdout, "".join(styles) + text + C.RESET if styles else text)

    def token(self, text: str) -> None:
        self._write(sys.stderr, text)


console = _Console()


# --- command line -----------------------------------------------------------------------------------------------

EPILOG = """
Examples:
  # Text-to-Video with Audio (T2V+Audio)
  python -m mlx_video.generate_av --prompt "Ocean waves crashing on a beach"
  python -m mlx_video.generate_av --prompt "A jazz band playing" --enhance-prompt
  python -m mlx_video.generate_av --prompt "..." --output-path my_video.mp4 --output-audio my_audio.wav

  # Image-to-Video with Audio (I2V+Audio)
  python -m mlx_video.generate_av --prompt "A person dancing" --image photo.jpg
  python -m mlx_video.generate_av --prompt "Waves crashing" --image beach.png --image-strength 0.8
"""


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The 0.1.37 parser: the same flags, in the same order, with the same behaviour."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Generate videos with synchronized audio using MLX LTX-2 (T2V and I2V)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    add = parser.add_argument
    add("--prompt", "-p", type=str, required=True, help="Text description of the video/audio to generate")
    add("--height", "-H", type=int, default=512, help="Output video height (default: 512)")
    add("--width", "-W", type=int, default=512, help="Output video width (default: 512)")
    add("--num-frames", "-n", type=int, default=65, help="Number of frames (default: 65)")
    add("--seed", "-s", type=int, default=42, help="Random seed (default: 42)")
    add("--fps", type=int, default=24, help="Frames per second (default: 24)")
    add("--output-path", type=str, default="output_av.mp4", help="Output video path (default: output_av.mp4)")
    add("--output-audio", type=str, default=None, help="Also write the audio to this WAV file (default: none)")
    add(
        "--save-audio-separately",
        action="store_true",
        help="Keep the .wav audio file alongside the video (default: off, audio only in mp4)",
    )
    add(
        "--no-audio",
        action="store_true",
        help="Video-only output (skip audio VAE/vocoder and mux). Full A/V denoising still runs.",
    )
    add(
        "--model-repo",
        type=str,
        default=DEFAULT_MODEL_REPO,
        help=f"Model repository (default: {DEFAULT_MODEL_REPO}, ~42GB unified MLX)",
    )
    add("--text-encoder-repo", type=str, default=None, help="Text encoder repository")
    add(
        "--num-inference-steps",
        "--steps",
        type=int,
        default=30,
        help="Total denoising steps across both stages (default: 30, matches app)",
    )
    add(
        "--negative-prompt",
        type=str,
        default=None,
        help="Negative prompt for CFG guidance (default: official LTX negative prompt)",
    )
    add(
        "--cfg-scale",
        "--guidance-scale",
        type=float,
        default=3.0,
        help="Classifier-free guidance scale (default: 3.0, set 1.0 to disable)",
    )
    add("--verbose", action="store_true", help="Verbose output")
    add("--enhance-prompt", action="store_true", help="Enhance prompt using Gemma")
    add(
        "--use-uncensored-enhancer",
        action="store_true",
        help="Use uncensored Gemma 12B for prompt enhancement (avoids content filters)",
    )
    add("--max-tokens", type=int, default=512, help="Max tokens for prompt enhancement")
    add("--temperature", type=float, default=0.7, help="Temperature for prompt enhancement")
    add("--image", "-i", type=str, default=None, help="Path to conditioning image for I2V (Image-to-Video) generation")
    add(
        "--image-strength",
        type=float,
        default=1.0,
        help="Conditioning strength for I2V (1.0 = keep the image, 0.0 = ignore it, default: 1.0)",
    )
    add(
        "--image-frame-idx",
        type=int,
        default=0,
        help="Latent frame index to condition for I2V (0 = first frame, k = video frame 8k, default: 0)",
    )
    add(
        "--keyframe",
        type=str,
        action="append",
        default=None,
        metavar="PATH|FRAME_IDX|STRENGTH",
        help="Add a conditioning keyframe (repeatable). Format: PATH|FRAME_IDX|STRENGTH (FRAME_IDX is a latent "
        "frame index; STRENGTH optional, default 1.0). Takes precedence over --image.",
    )
    add(
        "--tiling",
        type=str,
        default="auto",
        choices=TILING_CHOICES,
        help="Tiling mode for VAE decoding (default: auto). auto=based on size, none=disabled, default=512px/64f, "
        "aggressive=256px/32f (lowest memory), conservative=768px/96f",
    )
    return parser


def parse_keyframe(spec: str) -> dict[str, Any]:
    """``PATH|FRAME_IDX|STRENGTH`` as 0.1.37 reads it (empty or missing fields: 0 and 1.0; extra fields ignored)."""
    parts = spec.split("|")
    frame_idx = int(parts[1]) if len(parts) > 1 and parts[1] != "" else 0
    strength = float(parts[2]) if len(parts) > 2 and parts[2] != "" else 1.0
    return {"path": parts[0], "frame_idx": frame_idx, "strength": strength}


# --- the job before any model is loaded ---------------------------------------------------------------------------


@dataclass
class Plan:
    """A validated request and what the header lines report; building it loads nothing."""

    request: Any  # ltx_backend.pipeline.request.GenerationRequest (validated, warnings already reported)
    requested_frames: int
    notes: list[str]  # adjustments made on the user's behalf, printed as ⚠️ lines
    keyframe_lines: list[str]
    output_display: str  # the output path as given (the reference prints it unresolved)
    audio_display: str | None

    @property
    def mode(self) -> str:
        return "I2V+Audio" if self.request.keyframes else "T2V+Audio"

    @property
    def audio_frames(self) -> int:
        return round(self.request.num_frames / self.request.fps * 25)


def _invalid(message: str, hint: str, **details: object):
    from ltx_backend.errors import ErrorCode, LtxError

    return LtxError(ErrorCode.INVALID_PARAMS, message, hint, **details)


def prepare(
    *,
    prompt: str,
    height: int = 512,
    width: int = 512,
    num_frames: int = 65,
    seed: int = 42,
    fps: int = 24,
    output_path: str = "output_av.mp4",
    output_audio_path: str | None = None,
    save_audio_separately: bool = False,
    no_audio: bool = False,
    negative_prompt: str | None = None,
    tiling: str = "auto",
    enhance_prompt: bool = False,
    image: str | None = None,
    image_strength: float = 1.0,
    image_frame_idx: int = 0,
    keyframes: list | None = None,
) -> Plan:
    """Check and convert the 0.1.37 arguments; every error is an `LtxError` raised before anything is loaded."""
    from ltx_backend.pipeline.request import GenerationRequest, Keyframe, size_hint, validate

    for name, value in (("Height", height), ("Width", width)):
        if value % SIZE_MULTIPLE:
            raise _invalid(
                f"{name} must be divisible by {SIZE_MULTIPLE}, got {value}", size_hint(name.lower(), value),
                field=name.lower(),
            )  # fmt: skip
    notes = []
    if seed < 0:  # some hosts send -1 for "random"; 0.1.37 crashed in mx.random.seed
        chosen = random.randrange(2**31)
        notes.append(f"Seed {seed} is negative: using random seed {chosen}")
        seed = chosen
    elif seed >= SEED_LIMIT:
        notes.append(f"Seed {seed} is above 2**64-1: using {seed % SEED_LIMIT}")
        seed %= SEED_LIMIT
    audio = not no_audio
    if no_audio and output_audio_path:
        notes.append(f"--output-audio {output_audio_path} is ignored: --no-audio writes no audio")
    audio_display = None
    if audio and output_audio_path:
        audio_display = output_audio_path
    elif audio and save_audio_separately:
        audio_display = str(Path(output_path).with_suffix(".wav"))
    base = GenerationRequest(
        prompt=prompt,
        output_path=output_path,
        width=width,
        height=height,
        num_frames=num_frames,
        fps=float(fps),
        seed=seed,
        negative_prompt=negative_prompt,
        tiling=tiling,
        audio=audio,
        audio_output_path=audio_display,
        enhance_prompt=enhance_prompt,
    )
    frames = validate(base).num_frames  # the rounding, size, length, fps and output checks
    latent_frames = 1 + (frames - 1) // 8

    specs = list(keyframes or [])
    if specs and image:
        notes.append(f"--image {image} is ignored: --keyframe takes precedence")
    if not specs and image:
        specs = [{"path": image, "frame_idx": image_frame_idx, "strength": image_strength}]
    chosen_frames: dict[int, Keyframe] = {}
    lines = []
    for spec in specs:
        if not isinstance(spec, dict):
            spec = dict(zip(("path", "frame_idx", "strength"), spec, strict=False))
        path, index, strength = str(spec["path"]), int(spec.get("frame_idx", 0)), float(spec.get("strength", 1.0))
        lines.append(f"Keyframe: {path} (strength={strength}, frame={index})")
        latent = index + latent_frames if index < 0 else index  # Python indexing, as 0.1.37's latent[k]
        if latent < 0:
            raise _invalid(
                f"keyframe {path}: latent frame {index} is outside 0..{latent_frames - 1}",
                f"This video has {latent_frames} latent frames (video frame = 8 x latent frame).",
                field="keyframe",
            )
        if latent > latent_frames - 1:
            notes.append(
                f"Keyframe {path}: latent frame {index} is past the last one; using {latent_frames - 1} "
                f"(video frame {(latent_frames - 1) * 8})"
            )
            latent = latent_frames - 1
        chosen_frames.pop(latent, None)  # a later keyframe at the same frame replaces an earlier one
        chosen_frames[latent] = Keyframe(path=path, frame_index=latent * 8, strength=strength)
    request = validate(replace(base, keyframes=tuple(chosen_frames.values())))
    return Plan(
        request=replace(request, warnings=()),
        requested_frames=num_frames,
        notes=notes,
        keyframe_lines=lines,
        output_display=output_path,
        audio_display=audio_display,
    )


# --- models: cached, or downloaded with DOWNLOAD:* lines -----------------------------------------------------------


class _DownloadProgress:
    """`events.DownloadProgress` -> ``DOWNLOAD:PROGRESS:<bytes>:<total>:<pct>%``, at most one a second."""

    def __init__(self, repo: str) -> None:
        self.repo = repo
        self.last_time = float("-inf")
        self.last_line = ""
        self.lock = threading.Lock()

    def __call__(self, event: Any) -> None:
        from ltx_backend import events

        if not isinstance(event, events.DownloadProgress) or not event.total:
            return
        done = min(event.bytes, event.total)
        line = f"DOWNLOAD:PROGRESS:{done}:{event.total}:{done * 100 // event.total}%"
        with self.lock:
            now = time.monotonic()
            if line == self.last_line or (now - self.last_time < PROGRESS_SECONDS and done < event.total):
                return
            self.last_time, self.last_line = now, line
        console.token(line)


def _heartbeat(repo: str, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_SECONDS):
        console.token(f"DOWNLOAD:HEARTBEAT:{repo}")
        console.token("STATUS:Still downloading model — large checkpoints can pause between progress updates.")
        console.token(f"If this hangs for hours, try: hf download {repo}   # then retry generation")


def download(repo: str) -> Path:
    from ltx_backend.weights import download as downloads

    console.token(f"DOWNLOAD:START:{repo}")
    console.token("STATUS:Downloading model from Hugging Face (first run can take a long time)...")
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(repo, stop), name="download-heartbeat", daemon=True)
    beat.start()
    try:
        path = downloads.download_model(repo, "main", emit=_DownloadProgress(repo))
    finally:
        stop.set()
        beat.join(timeout=5)
    console.token(f"DOWNLOAD:COMPLETE:{repo}")
    return Path(path)


def fetch_model(repo: str) -> Path:
    """A local path as is; a cached repo (or ``tiny``) with ``MODEL:CACHED:``; any other repo id downloaded."""
    from ltx_backend.errors import ErrorCode, LtxError
    from ltx_backend.weights.resolve import REPO_ID, resolve_model

    if Path(repo).expanduser().exists():
        return resolve_model(repo)
    try:
        path = resolve_model(repo)
    except LtxError as error:
        if error.code is not ErrorCode.MODEL_NOT_FOUND or not REPO_ID.match(repo):
            raise
        return download(repo)
    console.token(f"MODEL:CACHED:{repo}")
    return path


# --- engine events -> legacy lines ---------------------------------------------------------------------------------


class _Renderer:
    """Prints the 0.1.37 lines for the engine's events, in the reference's order."""

    def __init__(self, plan: Plan, stage1_steps: int, verbose: bool, uncensored: bool) -> None:
        self.plan = plan
        self.stage1_steps = stage1_steps
        self.verbose = verbose
        self.uncensored = uncensored
        self.text_loaded = False
        self.decoding = False
        self.enhancement_failed = False

    def _text_encoder_loaded(self) -> None:
        if not self.text_loaded:
            self.text_loaded = True
            console.out("Text encoder loaded successfully")
            console.token("TEXT_ENCODER:LOAD_COMPLETE")

    def tiling_line(self, detail: str = "") -> str:
        """generate_av's tiling line for the mode the engine applies (its decode phases say ``tiling <mode>``:
        ``auto`` becomes ``none`` where the whole video fits in memory, else the sizes of the least-work tiling that
        does: ``px/overlap/frames/overlap``)."""
        from ltx_backend.models.vae_tiling import tiling_for

        r = self.plan.request
        mode = detail.removeprefix("tiling ") if detail.startswith("tiling ") else r.tiling
        config = tiling_for(mode, r.height, r.width, r.num_frames)
        if config is None:
            return "  Tiling: disabled"
        spatial = f"{config.spatial_tile_px}px" if config.spatial_tile_px else "none"
        temporal = f"{config.temporal_tile_frames}f" if config.temporal_tile_frames else "none"
        return f"  Tiling ({r.tiling}): spatial={spatial}, temporal={temporal}"

    def __call__(self, event: Any) -> None:
        from ltx_backend import events
        from ltx_backend.events import Phase

        r = self.plan.request
        if isinstance(event, events.DenoiseStep):
            console.token(f"STAGE:{event.stage}:STEP:{event.step}:{event.total}:Denoising")
        elif isinstance(event, events.PhaseStarted):
            phase = event.phase
            if phase is Phase.TEXT_ENCODING:
                console.out("📝 Loading text encoder...", C.BLUE)
                console.token("TEXT_ENCODER:LOAD_START")
            elif phase is Phase.PROMPT_ENHANCEMENT:
                self._text_encoder_loaded()
                label = "✨ Enhancing prompt (uncensored)..." if self.uncensored else "✨ Enhancing prompt..."
                console.out(label, C.MAGENTA)
            elif phase is Phase.IMAGE_ENCODING:
                console.out(f"🖼️  Loading VAE encoder and encoding {len(r.keyframes)} keyframe image(s)...", C.BLUE)
            elif phase is Phase.LOAD and event.detail == "transformer":
                console.out("🤖 Loading transformer (A/V mode)...", C.BLUE)
            elif phase is Phase.STAGE1:
                console.out(
                    f"⚡ Stage 1: Generating at {r.width // 2}x{r.height // 2} ({self.stage1_steps} steps)...", C.YELLOW
                )
            elif phase is Phase.UPSAMPLE:
                console.out("🔍 Upsampling video latents 2x...", C.MAGENTA)
            elif phase is Phase.STAGE2:
                console.out(f"⚡ Stage 2: Refining at {r.width}x{r.height} ({STAGE_2_STEPS} steps)...", C.YELLOW)
            elif phase in (Phase.AUDIO_DECODE, Phase.VIDEO_DECODE) and not self.decoding:
                # ltx-backend decodes the audio while ffmpeg encodes the video and muxes it in at the end; the
                # lines keep 0.1.37's order (see README.md).
                self.decoding = True
                console.out("🎞️  Decoding video...", C.BLUE)
                console.out(self.tiling_line(event.detail), C.DIM)
        elif isinstance(event, events.PhaseFinished):
            if event.phase is Phase.TEXT_ENCODING:
                self._text_encoder_loaded()
                console.token("TEXT_ENCODER:ENCODE_START")
                console.token("TEXT_ENCODER:ENCODE_POSITIVE_COMPLETE")
                if r.cfg_scale is not None:  # dev checkpoints encode the negative prompt too
                    console.token("TEXT_ENCODER:ENCODE_NEGATIVE_COMPLETE")
                console.token("TEXT_ENCODER:ENCODE_COMPLETE")
            elif event.phase is Phase.IMAGE_ENCODING:
                console.out("VAE encoder loaded successfully")
            if self.verbose:
                console.out(f"  {event.phase.value}: {event.seconds:.2f}s", C.DIM)
        elif isinstance(event, events.EnhancedPrompt):
            if not self.enhancement_failed:
                prompt = " ".join(event.prompt.split())  # one line: hosts read ENHANCED_PROMPT: line by line
                console.token(f"ENHANCED_PROMPT:{prompt}")
                console.out(f"Enhanced: {prompt[:150]}{'...' if len(prompt) > 150 else ''}", C.DIM)
        elif isinstance(event, events.Warning):
            if event.message.startswith("Prompt enhancement"):
                self.enhancement_failed = True
                console.out(f"⚠️  Prompt enhancement failed; using original prompt: {event.message}", C.YELLOW)
                console.token(f"ENHANCER_FALLBACK:{event.message}")
            else:
                console.out(f"⚠️  {event.message}", C.YELLOW)


# --- the job -------------------------------------------------------------------------------------------------------


def _config_keys(path: Path) -> str:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return ""
    return ",".join(sorted(config.keys())[:20]) if isinstance(config, dict) else ""


def generate_video_with_audio(
    model_repo: str = DEFAULT_MODEL_REPO,
    text_encoder_repo: str | None = None,
    prompt: str = "",
    height: int = 512,
    width: int = 512,
    num_frames: int = 33,
    seed: int = 42,
    fps: int = 24,
    output_path: str = "output_av.mp4",
    output_audio_path: str | None = None,
    save_audio_separately: bool = False,
    no_audio: bool = False,
    num_inference_steps: int = 30,
    negative_prompt: str | None = None,
    cfg_scale: float = 3.0,
    verbose: bool = True,
    enhance_prompt: bool = False,
    use_uncensored_enhancer: bool = False,
    max_tokens: int = 512,
    temperature: float = 0.7,
    image: str | None = None,
    image_strength: float = 1.0,
    image_frame_idx: int = 0,
    keyframes: list | None = None,
    tiling: str = "auto",
) -> tuple[str, str | None]:
    """Generate one video with ltx-backend, printing 0.1.37's lines; returns (video path, kept WAV path or None).

    Raises `ltx_backend.errors.LtxError` on every failure (0.1.37 returned (None, None) when encoding failed).
    `max_tokens` and `temperature` are accepted for compatibility; ltx-backend's enhancer uses its own settings.
    """
    start = time.time()
    import mlx.core as mx

    from ltx_backend import __version__ as backend_version
    from ltx_backend.errors import ErrorCode, LtxError
    from ltx_backend.pipeline import engine as engines
    from ltx_backend.pipeline import ltx25_flow
    from ltx_backend.weights.checkpoint import Layout, open_checkpoint
    from ltx_backend.weights.ltx25 import is_ltx25

    console.out(f"MLX default device: {mx.default_device()}", C.DIM)
    plan = prepare(
        prompt=prompt,
        height=height,
        width=width,
        num_frames=num_frames,
        seed=seed,
        fps=fps,
        output_path=output_path,
        output_audio_path=output_audio_path,
        save_audio_separately=save_audio_separately,
        no_audio=no_audio,
        negative_prompt=negative_prompt,
        tiling=tiling,
        enhance_prompt=enhance_prompt,
        image=image,
        image_strength=image_strength,
        image_frame_idx=image_frame_idx,
        keyframes=keyframes,
    )
    request = plan.request
    if request.num_frames != plan.requested_frames:
        console.out(f"⚠️  Adjusted frames to {request.num_frames}", C.YELLOW)
    for note in plan.notes:
        console.out(f"⚠️  {note}", C.YELLOW)
    console.out(
        f"🎬 [{plan.mode}] Generating {request.width}x{request.height} video with {request.num_frames} frames + audio",
        C.BOLD,
        C.CYAN,
    )
    console.out(f"Audio: {plan.audio_frames} latent frames @ 24000Hz", C.DIM)
    console.out(f"Prompt: {prompt[:80]}{'...' if len(prompt) > 80 else ''}", C.DIM)
    for line in plan.keyframe_lines:
        console.out(line, C.DIM)
    console.out(f"mlx-video-with-audio v{__version__}", C.DIM)
    console.out(f"Backend: ltx-backend {backend_version} (mlx_video compat shim)", C.DIM)
    console.token(f"MLX_VIDEO_VERSION:{__version__}")

    model_path = fetch_model(model_repo)
    checkpoint = open_checkpoint(model_path)
    variant, version = engines.checkpoint_variant(checkpoint), engines.model_version(checkpoint)
    if is_ltx25(checkpoint):  # not in 0.1.37 (it cannot run 2.5): the shim says what it runs
        console.out(f"Detected LTX-2.5 {variant} model family (Gemma 4 text encoder)", C.DIM)
    elif version == "2.3":
        console.out(f"Detected LTX-2.3 {variant} model family (gated attention)", C.DIM)
    if variant == "distilled":
        stage1_steps = DISTILLED_STAGE_1_STEPS
        if cfg_scale > 1.0 and version in ("2.3", "2.5"):
            console.out(f"Distilled model: ignoring CFG scale {cfg_scale:.2f} (guidance is baked in).", C.DIM)
        elif cfg_scale > 1.0:
            console.out(
                f"Unified fast path: ignoring advanced CFG (requested {cfg_scale:.2f}) to preserve original "
                "performance.",
                C.DIM,
            )
    else:  # dev checkpoints: --steps is the total over both stages, stage 2 keeps its 3 distilled steps
        stage1_steps = max(1, num_inference_steps - STAGE_2_STEPS)
        request = replace(request, steps=stage1_steps, cfg_scale=cfg_scale)
        console.out(f"Dev model: {stage1_steps} + {STAGE_2_STEPS} denoising steps, CFG scale {cfg_scale:.2f}", C.DIM)
    unified = checkpoint.layout is not Layout.OFFICIAL
    if unified:
        console.out("Using unified MLX model format (no Lightricks download)", C.DIM)

    bundled = model_path / "text_encoder"
    official_encoder = ltx25_flow.bundled_text_encoder(checkpoint)  # LTX-2.5: text_encoders/<file>
    if text_encoder_repo:
        text_encoder_path = fetch_model(text_encoder_repo)
    elif bundled.is_dir():
        text_encoder_path = bundled
        console.token(f"MODEL:CACHED:{bundled}")
    elif official_encoder is not None:
        text_encoder_path = official_encoder
    else:
        text_encoder_path = fetch_model(DEFAULT_TEXT_ENCODER_REPO)
    console.token(f"RESOLVE:MODEL_PATH:{model_path}")
    console.token(f"RESOLVE:USE_UNIFIED:{unified}")
    console.token(f"RESOLVE:TEXT_ENCODER_PATH:{text_encoder_path}")
    console.token(f"TEXT_ENCODER:PATH:{text_encoder_path}")
    console.token(f"TEXT_ENCODER:CONFIG_KEYS:{_config_keys(text_encoder_path)}")
    if variant == "distilled":
        console.out(
            "LTX-2 Unified classic path: fixed stage sigmas (stage1=8 + stage2=3 denoise steps; --steps ignored "
            "for sampler parity with pre-2.3 releases).",
            C.DIM,
        )

    Path(request.output_path).parent.mkdir(parents=True, exist_ok=True)
    engine = engines.Engine(model_path, text_encoder_path)
    plan = replace(plan, request=request)
    renderer = _Renderer(plan, stage1_steps, verbose, use_uncensored_enhancer)
    result = engine.generate(request, emit=renderer)

    video = Path(result.video_path)
    if not video.is_file() or video.stat().st_size == 0 or video.stat().st_mtime < start - 2:  # none, or stale
        raise LtxError(
            ErrorCode.OUTPUT_WRITE_FAILED,
            f"Video encoding failed: no video was written to {plan.output_display}",
            "See the messages above; check the free disk space and that the output folder is writable.",
        )
    console.out("✅ Video encoded", C.GREEN)
    if request.audio:
        console.out("🔊 Decoding audio...", C.BLUE)
        if plan.audio_display:
            console.out(f"{C.GREEN}✅ Saved audio to{C.RESET} {plan.audio_display}")
        console.out("🎬 Combining video and audio...", C.BLUE)
        console.out(f"{C.GREEN}✅ Saved video with audio to{C.RESET} {plan.output_display}")
    else:
        console.out(f"{C.GREEN}✅ Saved video-only to{C.RESET} {plan.output_display}")
    console.out(f"🎉 Done! Generated in {time.time() - start:.1f}s", C.BOLD, C.GREEN)
    console.out(f"✨ Peak memory: {mx.get_peak_memory() / (1024**3):.2f}GB", C.BOLD, C.GREEN)
    return str(video), result.audio_path


generate_av = generate_video_with_audio  # the alias integrations import


# --- entry point ---------------------------------------------------------------------------------------------------


def report_error(error: Any) -> None:
    """An `LtxError` as lines hosts can match ("insufficient memory", TEXT_ENCODER_CONFIG_ERROR:...)."""
    from ltx_backend.errors import ErrorCode

    if error.code is ErrorCode.TEXT_ENCODER_INVALID:
        console.token(f"TEXT_ENCODER_CONFIG_ERROR:{error.message}")
    console.token(f"❌ ltx-backend error ({error.code.value.replace('_', ' ')}): {error.message}")
    if error.hint:
        console.token(f"   hint: {error.hint}")


def _utf8_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        encoding = str(getattr(stream, "encoding", "") or "").lower().replace("-", "")
        if reconfigure is not None and encoding != "utf8":
            with contextlib.suppress(ValueError, OSError):  # a stream that cannot change encoding: leave it
                reconfigure(encoding="utf-8", errors="replace")


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM/SIGINT: one KeyboardInterrupt unwinds the engine, which removes its temporary folder (nothing is left
    at the output); later signals are ignored so they cannot interrupt that cleanup."""
    for other in (signal.SIGTERM, signal.SIGINT):
        signal.signal(other, signal.SIG_IGN)
    raise KeyboardInterrupt


def run(argv: list[str] | None = None) -> int:
    """The command: 0 when the MP4 was written, 1 on any failure, 2 on usage errors (argparse), 130 if stopped."""
    _utf8_streams()
    parser = build_parser()
    args = parser.parse_args(argv)
    keyframes = None
    if args.keyframe:
        try:
            keyframes = [parse_keyframe(spec) for spec in args.keyframe]
        except ValueError as exc:
            parser.error(f"argument --keyframe: {exc} (format: PATH|FRAME_IDX|STRENGTH)")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {signum: signal.signal(signum, _terminate) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _run_job(args, keyframes)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _run_job(args: argparse.Namespace, keyframes: list | None) -> int:
    from ltx_backend.errors import LtxError
    from ltx_backend.pipeline.engine import Cancelled

    try:
        generate_video_with_audio(
            model_repo=args.model_repo,
            text_encoder_repo=args.text_encoder_repo,
            prompt=args.prompt,
            height=args.height,
            width=args.width,
            num_frames=args.num_frames,
            seed=args.seed,
            fps=args.fps,
            output_path=args.output_path,
            output_audio_path=args.output_audio,
            save_audio_separately=args.save_audio_separately,
            no_audio=args.no_audio,
            num_inference_steps=args.num_inference_steps,
            negative_prompt=args.negative_prompt,
            cfg_scale=args.cfg_scale,
            verbose=args.verbose,
            enhance_prompt=args.enhance_prompt,
            use_uncensored_enhancer=args.use_uncensored_enhancer,
            max_tokens=args.max_tokens,
            temperature=args.temperature,
            image=args.image,
            image_strength=args.image_strength,
            image_frame_idx=args.image_frame_idx,
            keyframes=keyframes,
            tiling=args.tiling,
        )
    except LtxError as error:
        report_error(error)
        return 1
    except (Cancelled, KeyboardInterrupt):
        console.token("❌ Cancelled: no video was written")
        return 130
    except Exception as exc:  # a code and a line, never a traceback
        report_error(_as_error(exc))
        return 1
    return 0


def _as_error(exc: Exception) -> Any:
    """An unexpected exception as an `LtxError`: an OS failure by its errno (full disk: disk_full), else internal."""
    from ltx_backend.errors import ErrorCode, LtxError
    from ltx_backend.media.outputs import write_error

    if os.environ.get("LTX_BACKEND_DEBUG"):
        import traceback

        traceback.print_exception(exc)
    if isinstance(exc, OSError) and exc.filename:
        return write_error(exc, exc.filename, "Cannot access")
    hint = "This is a bug in ltx-backend: please report it (run with LTX_BACKEND_DEBUG=1 for the traceback)."
    return LtxError(ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}", hint)


def main(argv: list[str] | None = None) -> None:
    code = run(argv)
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()

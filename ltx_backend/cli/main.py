"""`ltx-backend` commands. Errors print their code, message and hint, and exit non-zero."""

from __future__ import annotations

import json
import sys

import click

from ltx_backend import __version__
from ltx_backend.errors import LtxError


def _fail(error: LtxError) -> None:
    click.echo(f"error [{error.code.value}]: {error.message}", err=True)
    if error.hint:
        click.echo(f"  hint: {error.hint}", err=True)
    sys.exit(1)


def _as_error(exc: Exception) -> LtxError:
    """An exception that is not an `LtxError`: an OS failure gets its code (a full disk: disk_full), anything else
    is a bug (`internal`), reported as a code and a line, never a traceback (``LTX_BACKEND_DEBUG=1`` shows it)."""
    import os

    from ltx_backend.errors import ErrorCode
    from ltx_backend.media.outputs import write_error

    if os.environ.get("LTX_BACKEND_DEBUG"):
        import traceback

        traceback.print_exception(exc)
    if isinstance(exc, OSError) and exc.filename:
        return write_error(exc, exc.filename, "Cannot access")
    return LtxError(
        ErrorCode.INTERNAL,
        f"{type(exc).__name__}: {exc}",
        "This is a bug in ltx-backend: please report it (run with LTX_BACKEND_DEBUG=1 for the traceback).",
    )


class StopSignals:
    """SIGTERM (and SIGINT) become one KeyboardInterrupt, so every cleanup on the way out runs (the job's temporary
    folder, ffmpeg); further signals while stopping are ignored rather than interrupting that cleanup."""

    def __init__(self) -> None:
        self._previous: dict = {}

    def _stop(self, signum: int, frame: object) -> None:
        import signal

        for other in self._previous:
            signal.signal(other, signal.SIG_IGN)
        raise KeyboardInterrupt

    def __enter__(self) -> StopSignals:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._stop)
        return self

    def __exit__(self, *exc_info: object) -> None:
        import signal

        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


@click.group()
@click.version_option(__version__, prog_name="ltx-backend")
def cli() -> None:
    """Generate video with synchronized audio from text with LTX-2 / LTX-2.3 on MLX."""


@cli.command("validate-env")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def validate_env(as_json: bool) -> None:
    """Check Python, MLX and its device, ffmpeg, memory, disk and package versions."""
    from ltx_backend.env import validate_environment

    report = validate_environment()
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(f"ltx-backend {report.backend_version} | Python {report.python} | {report.platform}")
        for check in report.checks:
            mark = click.style("ok ", fg="green") if check.ok else click.style("FIX", fg="red")
            click.echo(f"  {mark} {check.name:<16} {check.detail}")
            if not check.ok and check.fix:
                click.echo(f"      -> {check.fix}")
        click.echo("ready to generate" if report.ok else "not ready: fix the items marked FIX")
    sys.exit(0 if report.ok else 1)


@cli.command()
@click.argument("model")
@click.option("--text-encoder", default=None, help="Also check this text encoder (default: the model's bundled one).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def inspect(model: str, text_encoder: str | None, as_json: bool) -> None:
    """Show a checkpoint's layout, components, dtypes and quantization, and check that every part would load
    (MODEL: directory, file, cached repo id or tiny). Exits 1 when something would not load. A LoRA file: its
    key format, target model, rank, layers and metadata."""
    from ltx_backend.weights.lora import is_lora_file
    from ltx_backend.weights.verify import ensure_loadable, inspect_model

    try:
        if is_lora_file(model):
            _inspect_lora(model, as_json)
            return
        report = inspect_model(model, text_encoder)
        if report.layout is None:  # not a checkpoint at all: its error, as loading it would say
            ensure_loadable(report)
    except LtxError as error:
        _fail(error)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        sys.exit(0 if report.ok else 1)
    version = report.model_version or "?"
    click.echo(f"{report.path}\n  layout: {report.layout or '?'}  version: {version}  variant: {report.variant or '?'}")
    if len(report.transformer_bits or {}) > 1:
        click.echo("  quantized: mixed precision (per-layer bits below)")
    elif report.quantization:
        click.echo(f"  quantized: {report.quantization['bits']}-bit, group {report.quantization['group_size']}")
    if report.transformer_bits:
        bits = ", ".join(f"{kind} x{count}" for kind, count in report.transformer_bits.items())
        click.echo(f"  transformer layers: {bits}")
    click.echo(f"  config sections: {', '.join(report.config_sections) or 'none (LTX-2.0 defaults)'}")
    for note in report.unsupported:
        click.echo(f"  not used: {note}")
    for component in report.components:
        dtypes = ", ".join(f"{k} x{v}" for k, v in component.dtypes.items())
        mark = click.style("ok ", fg="green") if component.ok else click.style("BAD", fg="red")
        size = _size(component.bytes)
        click.echo(f"  {mark} {component.name:<22} {component.tensors:>6} tensors {size:>9}  ({dtypes})")
        if component.error:
            click.echo(f"      error [{component.error['code']}]: {component.error['message']}")
            click.echo(f"      hint: {component.error['hint']}")
    click.echo("loads" if report.ok else "would not load: see the components marked BAD")
    sys.exit(0 if report.ok else 1)


def _inspect_lora(path: str, as_json: bool) -> None:
    from ltx_backend.weights.lora import lora_info

    info = lora_info(path)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    rank = info["rank"] if isinstance(info["rank"], int) else "/".join(map(str, info["rank"]))
    click.echo(f"{info['path']}\n  LoRA ({info['format']} keys) for {info['target']}")
    click.echo(f"  rank {rank}, {info['layers']} layers in {info['blocks']} blocks, streams: "
               f"{', '.join(info['streams'])}{', alpha scaled' if info['has_alpha'] else ''}")  # fmt: skip
    factor = info["reference_downscale_factor"]
    if factor != 1:
        click.echo(f"  IC-LoRA: reference video at 1/{factor} of the stage-1 size (reference_downscale_factor)")
    for key, value in info["metadata"].items():
        click.echo(f"  {key}: {value if len(str(value)) <= 200 else str(value)[:200] + '...'}")


def _parse_keyframe(text: str) -> tuple[str, int, float]:
    """``PATH[|FRAME[|STRENGTH]]`` (FRAME: an output frame, 0 = first; STRENGTH 0..1, default 1)."""
    parts = text.split("|")
    if not 1 <= len(parts) <= 3 or not parts[0]:
        raise click.BadParameter(f"{text!r}: use PATH, PATH|FRAME or PATH|FRAME|STRENGTH", param_hint="--keyframe")
    try:
        frame = int(parts[1]) if len(parts) > 1 and parts[1] else 0
        strength = float(parts[2]) if len(parts) > 2 and parts[2] else 1.0
    except ValueError as exc:
        raise click.BadParameter(
            f"{text!r}: FRAME must be an integer, STRENGTH a number", param_hint="--keyframe"
        ) from exc
    return parts[0], frame, strength


def _control_video(options: dict, control_video: type):
    """The IC-LoRA control options as a request's ControlVideos (None without --control-video): each
    ``PATH[:STRENGTH]`` (default --control-strength), the mask and attention strength shared, as ICLoraPipeline."""
    from ltx_backend.weights.lora import split_strength

    if not options["control_video"]:
        for flag in ("control_mask", "control_strength", "control_attention"):
            default = None if flag == "control_mask" else 1.0
            if options[flag] != default:
                raise click.UsageError(f"--{flag.replace('_', '-')} needs --control-video")
        return None
    controls = []
    for text in options["control_video"]:
        path, strength = split_strength(text, options["control_strength"])
        controls.append(control_video(path, strength, options["control_mask"], options["control_attention"]))
    return tuple(controls)


def _parse_window(text: str | None) -> tuple[float, float] | None:
    """``START:END`` seconds (``--retake``)."""
    if text is None:
        return None
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        return float(parts[0]), float(parts[1])
    except ValueError:
        raise click.BadParameter(f"{text!r}: use START:END in seconds, e.g. 1.5:3", param_hint="--retake") from None


def _parse_streams(options: dict) -> tuple[bool, bool]:
    """What a retake regenerates: ``--retake-streams video,audio`` or the two on/off flags (not both)."""
    video, audio = options["retake_video"], options["retake_audio"]
    if options["retake_streams"] is None:
        return video is not False, audio is not False
    if video is not None or audio is not None:
        raise click.UsageError("give --retake-streams or --retake-video/--retake-audio, not both")
    streams = {part.strip() for part in options["retake_streams"].split(",") if part.strip()}
    if not streams or streams - {"video", "audio"}:
        raise click.BadParameter(f"{options['retake_streams']!r}: use video, audio or video,audio",
                                 param_hint="--retake-streams")  # fmt: skip
    return "video" in streams, "audio" in streams


def _mode(options: dict) -> str:
    """The mode the flags ask for: --audio (a2v), --source with --retake or --extend, --pipeline interpolate."""
    asked = [name for name, flag in (("a2v", "audio"), ("retake", "retake"), ("extend", "extend")) if options[flag]]
    if len(asked) > 1:
        raise click.UsageError(f"--{' and --'.join(asked)}: choose one mode (a2v: --audio, --retake or --extend)")
    if options["source"] and not asked:
        raise click.UsageError("--source needs --retake START:END or --extend SECONDS")
    if asked and asked[0] != "a2v" and not options["source"]:
        raise click.UsageError(f"--{asked[0]} needs --source PATH (the clip to {asked[0]})")
    if asked:
        return asked[0]
    return "interpolate" if options["pipeline"] == "interpolate" else "t2v"


class Progress:
    """Renders engine events on stderr: one line per phase, a counter for denoising steps."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def __call__(self, event) -> None:
        from ltx_backend import events

        if isinstance(event, events.Warning):
            click.echo(click.style("warning: ", fg="yellow") + event.message, err=True)
        elif self.quiet:
            return
        elif isinstance(event, events.PhaseStarted):
            click.echo(f"{event.phase.value:<18}{event.detail}", err=True)
        elif isinstance(event, events.DenoiseStep):
            bar = "#" * event.step + "." * (event.total - event.step)
            click.echo(f"\r  stage {event.stage} [{bar}] {event.step}/{event.total}", err=True, nl=False)
            if event.step == event.total:
                click.echo("", err=True)
        elif isinstance(event, events.PhaseFinished):
            click.echo(f"  done in {event.seconds:.2f} s", err=True)
        elif isinstance(event, events.EnhancedPrompt):
            click.echo(f"  enhanced prompt: {event.prompt}", err=True)
        elif isinstance(event, (events.MemoryPlan, events.DurationChosen)):
            click.echo(event.text(), err=True)
        elif isinstance(event, events.Preview):
            click.echo(f"\n  preview {event.path}", err=True, nl=False)


_DISTRIBUTED = click.option(
    "--distributed", type=click.IntRange(1, 64), default=1, show_default=True,
    help="Ranks on this host (GPUs; CPU processes with the ring backend); rank 0 is this process.",
)  # fmt: skip
_PARALLEL = click.option(
    "--parallel", type=click.Choice(["tensor", "guidance"]), default="tensor", show_default=True,
    help="With --distributed: split every forward's heads (tensor) or a guided step's passes (guidance, dev).",
)  # fmt: skip


@cli.command()
@click.option("--prompt", "-p", required=True, help="What the video shows and what is heard.")
@click.option("--negative-prompt", default=None, help="What to avoid (dev checkpoints; default: the official one).")
@click.option("--width", "-W", default=768, show_default=True, help="Output width, a multiple of 64.")
@click.option("--height", "-H", default=512, show_default=True, help="Output height, a multiple of 64.")
@click.option(
    "--num-frames",
    "-n",
    type=int,
    default=None,
    help="Frames; rounded to 8k+1. Default: 121, or on LTX-2.5 the length its duration head predicts.",
)
@click.option("--min-seconds", type=float, default=None, help="LTX-2.5 automatic length: at least this (default 1).")
@click.option("--max-seconds", type=float, default=None, help="LTX-2.5 automatic length: at most this (default 20).")
@click.option("--fps", default=24.0, show_default=True, help="Frames per second (also sets the audio length).")
@click.option("--seed", "-s", type=int, default=None, help="Random seed (default: a random one, reported).")
@click.option("--steps", type=int, default=None, help="Stage-1 denoising steps (dev checkpoints only).")
@click.option("--cfg-scale", type=float, default=None, help="Classifier-free guidance scale (dev checkpoints only).")
@click.option("--image", "-i", default=None, help="Image to start from (image-to-video).")
@click.option(
    "--keyframe",
    multiple=True,
    metavar="PATH|FRAME|STRENGTH",
    help="Condition output frame FRAME on an image (repeatable; STRENGTH 0..1, 1 keeps the image).",
)
@click.option(
    "--tiling",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "none", "default", "aggressive", "conservative", "spatial", "temporal"]),
    help="VAE decode tiling (lower memory, slower); auto: untiled where the video fits in memory. A named mode bounds "
    "the memory of generate_av's tiles of that name: the decode does the least work within it (often full frames "
    "in short time chunks).",
)
@click.option(
    "--low-ram",
    is_flag=True,
    help="Stream the transformer's blocks from disk (the planner also does so when memory is short).",
)
@click.option(
    "--video-encoder",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "libx264", "videotoolbox", "nvenc"]),
    help="H.264 encoder; auto: the platform's hardware encoder where it works (VideoToolbox on macOS), else libx264.",
)
@click.option(
    "--video-crf",
    type=click.IntRange(0, 51),
    default=18,
    show_default=True,
    help="Video quality (x264 CRF: lower is better).",
)
@click.option(
    "--video-preset",
    default="medium",
    show_default=True,
    type=click.Choice(["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"]),
    help="x264 speed preset (faster: larger files).",
)
@click.option("--no-audio", is_flag=True, help="Video only: skip the audio decode and mux.")
@click.option(
    "--pipeline",
    type=click.Choice(["two-stage", "one-stage", "hq", "interpolate"]),
    default="two-stage",
    show_default=True,
    help="Stage layout: two-stage (half size, then full), one-stage (full size), hq (res_2s sampler), "
    "interpolate (video between --keyframe images).",
)
@click.option("--audio", default=None, metavar="PATH", help="Audio-to-video: generate the video for this soundtrack.")
@click.option("--audio-start", type=float, default=0.0, show_default=True, help="Where --audio starts (seconds).")
@click.option("--source", default=None, metavar="PATH", help="The clip to --retake or --extend.")
@click.option("--retake", default=None, metavar="START:END", help="Regenerate these seconds of --source.")
@click.option("--retake-video/--no-retake-video", default=None, help="Regenerate the window's video (default on).")
@click.option("--retake-audio/--no-retake-audio", default=None, help="Regenerate the window's audio (default on).")
@click.option("--retake-streams", default=None, metavar="video,audio", help="What --retake regenerates, at once.")
@click.option("--extend", type=float, default=None, metavar="SECONDS", help="Continue --source by this long.")
@click.option("--output-path", "-o", default="output.mp4", show_default=True, help="Where to write the MP4.")
@click.option("--output-audio", default=None, help="Also write the audio to this WAV file.")
@click.option("--enhance-prompt", is_flag=True, help="Rewrite the prompt with Gemma first.")
@click.option("--round-dimensions", is_flag=True, help="Round width/height to multiples of 64 instead of failing.")
@click.option(
    "--model",
    "-m",
    default="tiny",
    show_default=True,
    help="Checkpoint: a directory, a cached Hugging Face repo id, or 'tiny' (built-in, random weights).",
)
@click.option("--text-encoder", default=None, help="Gemma 3 repo or directory (default: the model's own).")
@click.option("--quantize", type=click.Choice(["4", "8"]), default=None, help="Quantize the transformer on load.")
@click.option(
    "--lora",
    "loras",
    multiple=True,
    metavar="PATH[:STRENGTH]",
    help="Fuse a LoRA into the transformer (repeatable; STRENGTH default 1.0, negative subtracts it).",
)
@click.option(
    "--distilled-lora",
    default=None,
    metavar="PATH[:STRENGTH]",
    help="Dev checkpoints: the distilled LoRA fused for stage 2 (as ltx-pipelines' two-stage pipeline; an LTX-2.5 "
    "dev release: its loras/ file by default).",
)
@click.option(
    "--control-video",
    multiple=True,
    metavar="PATH[:STRENGTH]",
    help="IC-LoRA control video (depth, canny, pose, ...; repeatable, appended in order); needs --lora.",
)
@click.option("--control-strength", type=float, default=1.0, show_default=True,
              help="How strictly the control videos' tokens are kept (0..1) where PATH has no STRENGTH.")  # fmt: skip
@click.option("--control-mask", default=None, help="Grayscale mask video: where the control video applies.")
@click.option("--control-attention", type=float, default=1.0, show_default=True,
              help="Attention strength between the control video and the output (0..1; scales the mask).")  # fmt: skip
@click.option(
    "--count",
    default=1,
    show_default=True,
    help="Videos to make (seeds seed, seed+1, ...), numbered out_1.mp4, out_2.mp4, ...; models and the "
    "prompt's encoding are reused.",
)
@click.option(
    "--residency",
    type=click.Choice(["auto", "all", "none"]),
    default=None,
    help="Which models stay loaded between the videos of --count: what fits in memory, all, or none "
    "[default: auto with --count, else none].",
)
@click.option("--preview-dir", default=None, help="Write PNG previews of the denoising here (every --preview-every).")
@click.option("--preview-every", default=2, show_default=True, help="Denoising steps between previews.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout (one line per video).")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@_DISTRIBUTED
@_PARALLEL
def generate(**options) -> None:  # fmt: skip
    """Generate a video with sound from a prompt (and optional images).

    Modes: text-to-video (default); audio-to-video (--audio PATH); retake a span of a clip (--source PATH --retake
    START:END); extend a clip (--source PATH --extend SECONDS); keyframe interpolation (--pipeline interpolate
    with --keyframe images). --pipeline one-stage / hq pick text-to-video's stage layout."""

    from dataclasses import replace
    from pathlib import Path

    from ltx_backend.pipeline.batch import batch_seeds, numbered
    from ltx_backend.pipeline.engine import Cancelled, Engine
    from ltx_backend.pipeline.preview import PreviewOptions
    from ltx_backend.pipeline.request import ControlVideo, GenerationRequest, Keyframe, validate
    from ltx_backend.weights.lora import parse_lora_arg

    keyframes = [Keyframe(*_parse_keyframe(text)) for text in options["keyframe"]]
    mode = _mode(options)
    retake_video, retake_audio = _parse_streams(options)
    warnings = []
    if options["image"] and not any(k.frame_index == 0 for k in keyframes):
        keyframes.insert(0, Keyframe(options["image"]))
    elif options["image"]:
        warnings.append(f"--image {options['image']} is ignored: a --keyframe already conditions frame 0")
    request = GenerationRequest(
        prompt=options["prompt"],
        output_path=options["output_path"],
        width=options["width"],
        height=options["height"],
        num_frames=options["num_frames"],
        fps=options["fps"],
        seed=options["seed"],
        negative_prompt=options["negative_prompt"],
        steps=options["steps"],
        cfg_scale=options["cfg_scale"],
        keyframes=tuple(keyframes),
        audio=not options["no_audio"],
        tiling=options["tiling"],
        memory="low" if options["low_ram"] else "auto",
        video_encoder=options["video_encoder"],
        video_crf=options["video_crf"],
        video_preset=options["video_preset"],
        audio_output_path=options["output_audio"],
        enhance_prompt=options["enhance_prompt"],
        round_dimensions=options["round_dimensions"],
        min_seconds=options["min_seconds"],
        max_seconds=options["max_seconds"],
        control_video=_control_video(options, ControlVideo),
        mode=mode,
        pipeline=options["pipeline"],
        audio_input_path=options["audio"],
        audio_start=options["audio_start"],
        source_path=options["source"],
        retake_window=_parse_window(options["retake"]),
        retake_video=retake_video,
        retake_audio=retake_audio,
        extend_seconds=options["extend"],
        warnings=tuple(warnings),
    )
    quantize = int(options["quantize"]) if options["quantize"] else None
    loras = [parse_lora_arg(text) for text in options["loras"]]
    distilled = parse_lora_arg(options["distilled_lora"]) if options["distilled_lora"] else None
    ranks = None
    try:
        with StopSignals():
            seeds = batch_seeds(options["seed"], options["count"])
            jobs = []  # every video's request validated before any model is opened: a bad path costs nothing
            for index, seed in enumerate(seeds):
                one, preview_dir = request, options["preview_dir"]
                if len(seeds) > 1:
                    one = replace(request, seed=seed, output_path=numbered(request.output_path, index),
                                  audio_output_path=numbered(request.audio_output_path, index))  # fmt: skip
                    preview_dir = preview_dir and str(Path(preview_dir) / str(index + 1))
                preview = PreviewOptions(preview_dir, options["preview_every"]) if preview_dir else None
                jobs.append((validate(one), preview))
            residency = options["residency"] or ("auto" if len(seeds) > 1 else "none")
            engine = Engine(options["model"], options["text_encoder"], quantize=quantize, residency=residency,
                            loras=loras, distilled_lora=distilled)  # fmt: skip
            if options["distributed"] > 1:
                from ltx_backend.parallel.run import start

                engine, ranks = start(engine, options["distributed"], options["parallel"])
            for one, preview in jobs:
                result = engine.generate(one, emit=Progress(options["quiet"]), preview=preview)
                _report(result, options["as_json"])
    except LtxError as error:
        _fail(error)
    except (Cancelled, KeyboardInterrupt):
        click.echo("cancelled: nothing was written", err=True)
        sys.exit(130)
    except Exception as exc:  # a code and a line, never a traceback
        _fail(_as_error(exc))
    finally:
        if ranks is not None:
            ranks.close()


def _report(result, as_json: bool) -> None:
    import msgspec

    if as_json:
        click.echo(msgspec.json.encode(result).decode())
    else:
        seconds = sum(result.timings.values())
        click.echo(
            f"wrote {result.video_path} ({result.width}x{result.height}, {result.num_frames} frames at "
            f"{result.fps:g} fps, {'with' if result.has_audio else 'no'} audio) seed {result.seed} "
            f"in {seconds:.1f} s, peak memory {result.peak_memory_gb:.2f} GB"
        )


@cli.command("make-tiny")
@click.argument("path", required=False)
@click.option("--version", "version", type=click.Choice(["2.0", "2.3", "2.5"]), default="2.0", show_default=True,
              help="2.0: unified layout; 2.3: split layout with a 4-bit transformer; 2.5: Lightricks' official "
                   "split release layout with Gemma 4 and the duration head.")  # fmt: skip
@click.option("--mixed-precision", "mixed", is_flag=True,
              help="2.3 only: quantize the transformer's block layers with per-layer 2-8 bits.")  # fmt: skip
@click.option("--variant", type=click.Choice(["distilled", "dev"]), default="distilled", show_default=True,
              help="2.5 only: dev writes the dev release (guided two-stage flow) with its distilled LoRA.")  # fmt: skip
def make_tiny(path: str | None, version: str, mixed: bool, variant: str) -> None:
    """Write the built-in tiny random-weight model (default: where --model tiny / tiny-2.3 looks for it)."""
    from ltx_backend.tiny import tiny_model_dir, write_tiny_model

    if mixed and (version != "2.3" or path is None):
        raise click.UsageError("--mixed-precision needs --version 2.3 and a PATH (the built-in tiny stays 4-bit)")
    if variant == "dev" and (version != "2.5" or path is None):
        raise click.UsageError("--variant dev needs --version 2.5 and a PATH (the built-in tiny-2.5 stays distilled)")
    try:
        written = write_tiny_model(path or tiny_model_dir(version), version, mixed=mixed, variant=variant)
    except LtxError as error:
        _fail(error)
    click.echo(f"wrote the tiny model to {written} (random weights: its videos are noise)")


def _size(count: int | None) -> str:
    if count is None:
        return "?"
    value = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"  # unreachable


def _what(entry: dict) -> str:
    if entry["kind"] == "ltx":
        text = f"LTX {entry['model_version'] or '?'} {entry['layout'] or '?'}"
    elif entry["kind"] == "text_encoder":
        text = "Gemma 3 text encoder"
    else:
        text = "other"
    if entry.get("quantization"):
        text += f" {entry['quantization']['bits']}-bit"
    if entry.get("text_encoder"):
        text += " + text encoder"
    return text


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def models(as_json: bool) -> None:
    """List the models in the local Hugging Face cache (and the tiny model), with their kind and size."""
    from ltx_backend.weights.cache import list_models

    report = list_models()
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    entries = report["models"]
    click.echo(f"{report['cache']}: {len(entries)} model(s), {_size(report['total_bytes'])} on disk")
    if not entries:
        click.echo("  nothing downloaded yet: `ltx-backend download REPO` fetches a model")
    for entry in entries:
        name = entry["name"] + (f"@{entry['revision'][:8]}" if entry["revision"] and not entry["refs"] else "")
        if entry["error"]:
            error = entry["error"]
            what = click.style(f"error [{error['code']}]", fg="red") + f" {error['message']}"
        else:
            what = _what(entry)
        click.echo(f"  {name:<40} {_size(entry['size_bytes']):>9}  {what}")
        if entry["error"] and entry["error"]["hint"]:
            click.echo(f"      hint: {entry['error']['hint']}")
        click.echo(f"      {entry['path']}")


@cli.command()
@click.argument("model")
@click.option("--revision", default=None, help="Delete only this revision (commit, branch or tag) of the repo.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print what was deleted as JSON.")
def delete(model: str, revision: str | None, yes: bool, as_json: bool) -> None:
    """Delete a cached model (MODEL: a repo id as `models` lists it, or tiny / tiny-2.3) and report the bytes freed."""
    from ltx_backend.weights.cache import delete_model, plan_deletion

    try:
        deletion = plan_deletion(model, revision)
    except LtxError as error:
        _fail(error)
    if not yes and not as_json:
        click.confirm(f"delete {model} ({_size(deletion.freed_bytes)}: {', '.join(map(str, deletion.paths[:3]))})?",
                      abort=True, err=True)  # fmt: skip
    freed = delete_model(deletion)
    if as_json:
        paths = [str(path) for path in deletion.paths]
        click.echo(json.dumps({"model": model, "revision": revision, "paths": paths, "freed_bytes": freed}))
    else:
        click.echo(f"deleted {model}: {_size(freed)} freed")


class DownloadBar:
    """Renders `DownloadProgress` as a click progress bar on stderr (the total can grow as files start)."""

    def __init__(self, repo: str) -> None:
        self.bar = click.progressbar(
            length=0,
            label=f"downloading {repo}",
            file=sys.stderr,
            show_eta=True,
            show_percent=True,
            item_show_func=lambda _: self.detail,
        )
        self.detail = ""
        self.bar.__enter__()

    def __call__(self, event) -> None:
        from ltx_backend import events

        if not isinstance(event, events.DownloadProgress):
            return
        self.bar.length = max(event.total or 0, event.bytes, 1)
        self.detail = f"{_size(event.bytes)} / {_size(event.total)}"
        self.bar.finished = False  # click latches it when pos reaches length; the total may have grown since
        self.bar.update(max(0, event.bytes - self.bar.pos))

    def close(self) -> None:
        self.bar.__exit__(None, None, None)


@cli.command()
@click.argument("repo")
@click.option("--revision", default="main", show_default=True, help="Branch, tag or commit to download.")
@click.option("--variant", type=click.Choice(["distilled", "dev"]), default="distilled", show_default=True,
              help="Of an official repo's checkpoints: the distilled one, or the dev one with the distilled LoRA "
              "its two-stage flow uses.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Newline-delimited JSON events and result on stdout.")
def download(repo: str, revision: str, variant: str, as_json: bool) -> None:
    """Download a model repo (org/name) into the local Hugging Face cache and check that it loads."""
    import threading

    import msgspec

    from ltx_backend import events
    from ltx_backend.weights.cache import describe_model
    from ltx_backend.weights.download import DownloadResult, download_model

    lock = threading.Lock()  # progress arrives from the download threads

    def write_line(event) -> None:
        with lock:
            click.echo(msgspec.json.encode(event).decode())

    bar = None if as_json else DownloadBar(repo)
    try:
        try:
            path = download_model(repo, revision, emit=write_line if as_json else bar, variant=variant)
        finally:
            if bar is not None:
                bar.close()
        entry = describe_model(path, repo)
    except LtxError as error:
        if as_json:
            write_line(events.ErrorEvent(error.code.value, error.message, error.hint))
        _fail(error)
    except KeyboardInterrupt:
        click.echo("cancelled: run the command again to resume", err=True)
        sys.exit(130)
    result = DownloadResult(
        repo=repo,
        revision=revision,
        path=str(path),
        kind=entry.kind,
        size_bytes=entry.size_bytes,
        layout=entry.layout,
        model_version=entry.model_version,
        quantization=entry.quantization,
        text_encoder=entry.text_encoder,
    )
    if as_json:
        write_line(result)
    else:
        click.echo(f"downloaded {repo} ({_what(entry.to_dict())}, {_size(entry.size_bytes)}) to {path}")


def _positive_seconds(_ctx: click.Context, param: click.Parameter, value: float) -> float:
    import math

    if not math.isfinite(value) or value <= 0 or value > 3600:
        raise click.BadParameter(f"{value} is not a number of seconds in (0, 3600]", param=param)
    return value


@cli.command()
@click.option("--log-file", default=None, help="Also write the log to this file (attach it to bug reports).")
@click.option(
    "--heartbeat",
    type=float,
    default=5.0,
    show_default=True,
    callback=_positive_seconds,
    help="Seconds of silence during a job before a heartbeat event (0 < S <= 3600).",
)
@click.option("--log-dir", default=None, help="Write a log file per generate job into this folder.")
@_DISTRIBUTED
@_PARALLEL
def serve(log_file: str | None, heartbeat: float, log_dir: str | None, distributed: int, parallel: str) -> None:
    """Serve the NDJSON protocol on stdin/stdout (see protocol/PROTOCOL.md); logs go to stderr."""
    from ltx_backend.server.server import run_stdio

    sys.exit(run_stdio(log_file, heartbeat, log_dir, distributed=distributed, parallel=parallel))


def main() -> None:
    cli()


if __name__ == "__main__":
    main()

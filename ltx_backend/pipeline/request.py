"""A generation request and the rules that make it valid (clear errors, explicit rounding with warnings)."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field, replace
from pathlib import Path

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.media.encoders import DEFAULT_CRF, DEFAULT_PRESET, ENCODERS, PRESETS
from ltx_backend.media.image import read_image
from ltx_backend.media.outputs import check_distinct, check_output_path
from ltx_backend.media.video import ffmpeg_exe
from ltx_backend.models.vae_tiling import TILING_MODES

DEFAULT_NEGATIVE_PROMPT = (  # ltx-pipelines' default
    "blurry, out of focus, overexposed, underexposed, low contrast, washed out colors, excessive noise, "
    "grainy texture, poor lighting, flickering, motion blur, distorted proportions, unnatural skin tones, "
    "deformed facial features, asymmetrical face, missing facial features, extra limbs, disfigured hands, "
    "wrong hand count, artifacts around text, inconsistent perspective, camera shake, incorrect depth of "
    "field, background too sharp, background clutter, distracting reflections, harsh shadows, inconsistent "
    "lighting direction, color banding, cartoonish rendering, 3D CGI look, unrealistic materials, uncanny "
    "valley effect, incorrect ethnicity, wrong gender, exaggerated expressions, wrong gaze direction, "
    "mismatched lip sync, silent or muted audio, distorted voice, robotic voice, echo, background noise, "
    "off-sync audio, incorrect dialogue, added dialogue, repetitive speech, jittery movement, awkward "
    "pauses, incorrect timing, unnatural transitions, inconsistent framing, tilted camera, flat lighting, "
    "inconsistent tone, cinematic oversaturation, stylized filters, or AI artifacts."
)
SIZE_MULTIPLE = 64  # two-stage: stage 1 runs at half size, which must still be a multiple of the VAE's 32
MIN_SIZE, MAX_SIZE = 64, 2048  # past 2048 px an axis leaves the RoPE range the models were trained on
MAX_SECONDS = 20  # temporal RoPE positions are normalised by 20 s
SEED_LIMIT = 2**64


@dataclass(frozen=True)
class Keyframe:
    """An image to condition on: `frame_index` is a pixel frame (0 = the first frame, image-to-video)."""

    path: str
    frame_index: int = 0
    strength: float = 1.0  # 1.0 keeps the image, 0.0 ignores it


@dataclass(frozen=True)
class ControlVideo:
    """An IC-LoRA's control video (depth, canny, pose, ...) and how strongly it steers (ltx-pipelines
    ``ICLoraPipeline``: ``video_conditioning`` (path, strength), ``conditioning_attention_mask`` / ``_strength``)."""

    path: str
    strength: float = 1.0  # the reference tokens' conditioning strength: 1.0 keeps them clean (denoise mask 0)
    mask_path: str | None = None  # a grayscale video: per-region attention between the reference and the output
    attention_strength: float = 1.0  # scales that attention (the mask's values, or all of it without a mask)


MEMORY_MODES = ("auto", "low")
# What to generate: from text (and images), video for a soundtrack, a span of a source clip again, a source clip
# continued, or video between keyframes (the keyframe-interpolation pipeline).
MODES = ("t2v", "a2v", "retake", "extend", "interpolate")
# How the t2v / interpolate stages run (pipeline/modes.py `stages`); a2v, retake and extend have their own layout.
PIPELINES = ("two-stage", "one-stage", "hq", "interpolate")
SOURCE_MODES = ("retake", "extend")  # modes that read a source clip
SINGLE_STAGE = ("one-stage", "retake", "extend")  # full size only: sizes need a multiple of the VAE's 32
VAE_MULTIPLE = 32


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    output_path: str
    width: int = 768
    height: int = 512
    num_frames: int | None = None  # None: LTX-2.5's duration head chooses (bounded below); other models: 121
    fps: float = 24.0
    seed: int | None = None
    negative_prompt: str | None = None
    steps: int | None = None  # dev checkpoints only; distilled ones use their fixed 8 + 3 sigmas
    cfg_scale: float | None = None  # dev checkpoints only
    keyframes: tuple[Keyframe, ...] = ()
    audio: bool = True
    tiling: str = "auto"
    memory: str = "auto"  # "auto": the planner decides; "low": stream the transformer's blocks from disk
    video_encoder: str = "auto"  # auto: the platform's hardware H.264 encoder where it works, else libx264
    video_crf: int = DEFAULT_CRF  # x264's constant-quality scale (hardware encoders get the nearest equivalent)
    video_preset: str = DEFAULT_PRESET  # x264's speed preset
    audio_output_path: str | None = None
    enhance_prompt: bool = False
    round_dimensions: bool = False  # round width/height to multiples of 64 instead of refusing them
    min_seconds: float | None = None  # bounds of the duration head's choice (default 1 s and 20 s)
    max_seconds: float | None = None
    # One or several (ltx-pipelines' video_conditioning list); needs an IC-LoRA among the engine's LoRAs.
    control_video: ControlVideo | tuple[ControlVideo, ...] | None = None
    mode: str = "t2v"  # MODES
    pipeline: str = "two-stage"  # PIPELINES ("interpolate" and mode "interpolate" are the same thing)
    audio_input_path: str | None = None  # a2v: the soundtrack (an audio file or a video with sound)
    audio_start: float = 0.0  # a2v: where in it the clip's soundtrack starts, seconds
    source_path: str | None = None  # retake / extend: the source clip
    retake_window: tuple[float, float] | None = None  # retake: [start, end) seconds of the source to regenerate
    retake_video: bool = True  # retake: regenerate the window's video
    retake_audio: bool = True  # retake: regenerate the window's audio
    extend_seconds: float | None = None  # extend: seconds to add after the source
    source_frames: int | None = None  # retake / extend: the source's frames used (8k+1), set by `validate`
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def latent_frames(self) -> int:
        return (self.num_frames - 1) // 8 + 1

    @property
    def controls(self) -> tuple[ControlVideo, ...]:
        """The control videos, none, one or several."""
        control = self.control_video
        return () if control is None else (control,) if isinstance(control, ControlVideo) else tuple(control)

    @property
    def layout(self) -> str:
        """The stage layout `modes.stages` runs: the mode's own for a2v / retake / extend, else the pipeline."""
        return self.mode if self.mode in ("a2v", *SOURCE_MODES) else self.pipeline


def _invalid(field_name: str, message: str, hint: str) -> LtxError:
    return LtxError(ErrorCode.INVALID_PARAMS, message, hint, field=field_name)


def _warn(warnings: list[str], message: str) -> None:
    """Add a warning once: a request may be validated more than once (server, then engine)."""
    if message not in warnings:
        warnings.append(message)


FLAGS = {"width": "width (-W/--width)", "height": "height (-H/--height)"}


def nearest_size(value: int) -> int:
    """The valid size nearest to `value`: a multiple of 64 within MIN_SIZE..MAX_SIZE."""
    return min(MAX_SIZE, max(MIN_SIZE, round(value / SIZE_MULTIPLE) * SIZE_MULTIPLE))


def size_hint(name: str, value: int) -> str:
    """A fix that is itself valid: never a size outside the range, never "smaller" for a size that is too small."""
    flag = FLAGS.get(name, name)
    if value < MIN_SIZE:
        return f"Set {flag} to at least {MIN_SIZE} (a multiple of {SIZE_MULTIPLE} up to {MAX_SIZE})."
    if value > MAX_SIZE:
        return f"Set {flag} to at most {MAX_SIZE} (a multiple of {SIZE_MULTIPLE} from {MIN_SIZE})."
    return f"Set {flag} to {nearest_size(value)}, a multiple of {SIZE_MULTIPLE} (or enable rounding)."


def ignored_options(
    request: GenerationRequest, variant: str, quantize: int | None, quantized: dict | None
) -> list[str]:
    """Warnings for options the checkpoint will not use (known once the checkpoint is open, before any work)."""
    ignored = []
    if variant == "distilled":
        if request.steps is not None or request.cfg_scale is not None:
            ignored.append("This is a distilled checkpoint: it uses its fixed 8 + 3 steps and no CFG; "
                           "steps and cfg_scale are ignored.")  # fmt: skip
        if request.negative_prompt:
            ignored.append("This is a distilled checkpoint: it uses no CFG, so the negative prompt is ignored.")
        if request.pipeline == "hq":
            ignored.append("pipeline hq guides a dev checkpoint: on this distilled one it runs the fixed distilled "
                           "steps, unguided, with hq's res_2s sampler.")  # fmt: skip
    if quantize is not None and quantized:
        ignored.append(f"quantize {quantize} is ignored: the checkpoint's transformer is already "
                       f"{quantized.get('bits', '?')}-bit quantized.")  # fmt: skip
    return ignored


def _shortest_automatic_length(request: GenerationRequest) -> int:
    """The fewest frames the duration head may choose within the request's bounds (checked to hold one)."""
    from ltx_backend.models.duration_head import MAX_SECONDS as HEAD_MAX
    from ltx_backend.models.duration_head import MIN_SECONDS as HEAD_MIN
    from ltx_backend.models.duration_head import frame_bounds

    low = HEAD_MIN if request.min_seconds is None else request.min_seconds
    high = HEAD_MAX if request.max_seconds is None else request.max_seconds
    if high > MAX_SECONDS:
        raise _invalid("max_seconds", f"max_seconds {high:g} is longer than the {MAX_SECONDS} s the model supports",
                       f"Use at most {MAX_SECONDS}.")  # fmt: skip
    try:
        first, _ = frame_bounds(request.fps, low, high)
    except ValueError as exc:
        name = "min_seconds" if request.min_seconds is not None else "max_seconds"
        raise _invalid(
            name, f"duration bounds [{low:g}, {high:g}] s: {exc}", "Widen min_seconds..max_seconds."
        ) from exc
    return (first - 1 + 7) // 8 * 8 + 1


def _media_field(error: LtxError, name: str) -> LtxError:
    """A media error (media/*: it names the path) with the request field it came from."""
    error.details.setdefault("field", name)
    return error


def _mode_and_pipeline(request: GenerationRequest, warnings: list[str]) -> GenerationRequest:
    """Known mode and pipeline; the inputs of other modes dropped with a warning; each mode's required input there."""
    mode, pipeline = request.mode, request.pipeline
    if mode not in MODES:
        raise _invalid("mode", f"unknown mode {mode!r}", f"Use one of {', '.join(MODES)}.")
    if pipeline not in PIPELINES:
        raise _invalid("pipeline", f"unknown pipeline {pipeline!r}", f"Use one of {', '.join(PIPELINES)}.")
    if pipeline == "interpolate" and mode == "t2v":
        mode = "interpolate"
    if mode == "interpolate":
        if pipeline not in ("interpolate", "two-stage"):
            _warn(warnings, f"pipeline {pipeline} is ignored: keyframe interpolation is its own two-stage pipeline")
        pipeline = "interpolate"
    elif pipeline == "interpolate":
        raise _invalid("pipeline", f"pipeline interpolate is keyframe interpolation, not mode {mode}",
                       f"Drop --pipeline interpolate, or drop the {mode} inputs.")  # fmt: skip
    elif mode != "t2v" and pipeline != "two-stage":
        _warn(warnings, f"pipeline {pipeline} is ignored: {mode} runs its own stage layout")
        pipeline = "two-stage"
    request = replace(request, mode=mode, pipeline=pipeline)

    unused = {
        "audio_input_path": (request.audio_input_path is not None and mode != "a2v", None),
        "audio_start": (request.audio_start != 0.0 and mode != "a2v", 0.0),
        "source_path": (request.source_path is not None and mode not in SOURCE_MODES, None),
        "retake_window": (request.retake_window is not None and mode != "retake", None),
        "retake_video": (not request.retake_video and mode != "retake", True),
        "retake_audio": (not request.retake_audio and mode != "retake", True),
        "extend_seconds": (request.extend_seconds is not None and mode != "extend", None),
    }
    for name, (ignored, default) in unused.items():
        if ignored:
            _warn(warnings, f"{name} is ignored: mode {mode} does not use it")
            request = replace(request, **{name: default})

    needed = {
        "a2v": (
            "audio_input_path",
            "a2v needs a soundtrack",
            "Give --audio PATH (a sound or video file).",
        ),
        "retake": ("source_path", "retake needs a source clip", "Give --source PATH with --retake START:END."),
        "extend": ("source_path", "extend needs a source clip", "Give --source PATH with --extend SECONDS."),
    }
    if mode in needed and getattr(request, needed[mode][0]) is None:
        raise _invalid(*needed[mode])
    if mode == "retake" and request.retake_window is None:
        raise _invalid("retake_window", "retake needs the window to regenerate",
                       "Give --retake START:END in seconds of the source clip.")  # fmt: skip
    if mode == "retake" and not (request.retake_video or request.retake_audio):
        raise _invalid("retake_video", "retake regenerates neither video nor audio",
                       "Keep --retake-video or --retake-audio (or both: --retake-streams video,audio).")  # fmt: skip
    if mode == "extend" and request.extend_seconds is None:
        raise _invalid("extend_seconds", "extend needs the seconds to add", "Give --extend SECONDS.")
    if mode == "a2v" and not request.audio:
        _warn(warnings, "audio=False is ignored: a2v writes the given soundtrack into the video")
        request = replace(request, audio=True)
    return request


def _source_clip(request: GenerationRequest, warnings: list[str]) -> GenerationRequest:
    """retake / extend: the source opens, is long enough, and sets the output's size, rate and frame count (the
    reference generates at the source's size and rate). The frames are counted exactly (no decode)."""
    from ltx_backend.media.video_in import frame_count, video_info
    from ltx_backend.pipeline import modes
    from ltx_backend.pipeline.source import usable_frames

    try:
        info = video_info(request.source_path)
        count = frame_count(info.path)
    except LtxError as error:
        raise _media_field(error, "source_path") from None
    frames = usable_frames(count)
    if frames < 9:
        raise LtxError(ErrorCode.MEDIA_TOO_SHORT, f"{info.path} has {count} video frames; at least 9 are needed",
                       "Use a longer source clip.", path=str(info.path), field="source_path")  # fmt: skip
    if frames != count:
        _warn(warnings, f"the source's last {count - frames} frame(s) are left out (the model takes 8k+1 frames)")
    fps = info.video.fps
    sizes = {}
    for name, value in (("width", info.video.width), ("height", info.video.height)):
        fitted = min(MAX_SIZE, value // VAE_MULTIPLE * VAE_MULTIPLE)
        if fitted < MIN_SIZE:
            raise _invalid("source_path", f"{info.path} is {value} px in {name}; at least {MIN_SIZE} are needed",
                           "Use a larger source clip.")  # fmt: skip
        if fitted != value:
            _warn(warnings, f"the source's {name} {value} is cropped to {fitted} (a multiple of {VAE_MULTIPLE})")
        sizes[name] = fitted
    if request.mode == "retake":
        start, end = request.retake_window
        modes.check_retake_window(start, end, frames / fps)
        total = frames
        if request.retake_audio and info.audio is None:
            _warn(warnings, "the source has no sound: its whole soundtrack is generated")
    else:
        seconds = request.extend_seconds
        modes.check_extend_seconds(seconds, fps)
        total = modes.extended_frames(frames, seconds, fps)
        longest = int(MAX_SECONDS * fps) + 1
        if total > longest:
            room = max(0.0, (longest - frames) / fps)
            raise _invalid("extend_seconds", f"{frames} + {total - frames} frames at {fps:g} fps is longer than "
                           f"the {MAX_SECONDS} s the model supports", f"Extend by at most {room:.2f} s.")  # fmt: skip
    given = {"width": request.width, "height": request.height, "num_frames": request.num_frames, "fps": request.fps}
    wanted = {**sizes, "num_frames": total, "fps": fps}
    for name, value in given.items():
        default = GenerationRequest.__dataclass_fields__[name].default
        if value not in (default, wanted[name]):
            _warn(warnings, f"{name} {value:g} is ignored: {request.mode} keeps the source's ({wanted[name]:g})")
    return replace(request, **wanted, source_path=str(info.path), source_frames=frames)


def _soundtrack(request: GenerationRequest, frames: int, warnings: list[str]) -> GenerationRequest:
    """a2v: the soundtrack decodes and lasts the clip's duration from its start (read now, as the job will)."""
    from ltx_backend.pipeline.source import read_soundtrack

    if not (0 <= request.audio_start < 86400):
        raise _invalid("audio_start", f"audio_start {request.audio_start:g} is not a time in the soundtrack",
                       "Give the start in seconds, 0 or more (--audio-start).")  # fmt: skip
    try:
        read_soundtrack(request.audio_input_path, request.audio_start, frames, request.fps)
    except LtxError as error:
        raise _media_field(error, "audio_input_path") from None
    return replace(request, audio_input_path=str(Path(request.audio_input_path).expanduser().absolute()))


def validate(request: GenerationRequest) -> GenerationRequest:
    """The request with frame counts rounded, a seed chosen and paths made absolute; every rounding is a warning.

    Checked completely before anything is loaded: values, ffmpeg, every image (decoded once), and the output paths
    (their folders are created and proved writable; see media/outputs.py)."""
    warnings = list(request.warnings)
    if not request.prompt or not request.prompt.strip():
        raise _invalid("prompt", "The prompt is empty", "Describe the video to generate.")
    request = _mode_and_pipeline(request, warnings)
    if request.mode in SOURCE_MODES:  # the source clip decides size, rate and length
        request = _source_clip(request, warnings)

    sizes = {}
    for name in ("width", "height"):
        value = int(getattr(request, name))
        if not MIN_SIZE <= value <= MAX_SIZE:
            raise _invalid(name, f"{name} {value} is outside {MIN_SIZE}..{MAX_SIZE}", size_hint(name, value))
        if value % (VAE_MULTIPLE if request.layout in SINGLE_STAGE else SIZE_MULTIPLE):
            if not request.round_dimensions:
                raise _invalid(name, f"{name} {value} is not a multiple of {SIZE_MULTIPLE}", size_hint(name, value))
            rounded = nearest_size(value)
            _warn(warnings, f"{name} {value} rounded to {rounded} (a multiple of {SIZE_MULTIPLE})")
            value = rounded
        sizes[name] = value

    if not 0 < request.fps <= 120:
        raise _invalid("fps", f"fps {request.fps} is outside (0, 120]", "Use 24 (the training rate), 25 or 30.")
    frames = request.num_frames
    if frames is None:
        frames = _shortest_automatic_length(request)  # keyframes must lie inside any length the head may choose
    elif request.min_seconds is not None or request.max_seconds is not None:
        warnings.append("min_seconds/max_seconds have no effect: num_frames is given (they bound the automatic length)")
    if frames < 1:
        raise _invalid("num_frames", "num_frames must be at least 1", "Use 8k+1 frames, e.g. 121.")
    if (frames - 1) % 8:
        frames = max(1, round((frames - 1) / 8) * 8 + 1)
        _warn(warnings, f"num_frames {request.num_frames} rounded to {frames} (the model needs 8k+1 frames)")
    longest = int(MAX_SECONDS * request.fps) + 1
    if frames > longest:
        raise _invalid(
            "num_frames",
            f"{frames} frames at {request.fps:g} fps is longer than the {MAX_SECONDS} s the model supports",
            f"Use at most {(longest - 1) // 8 * 8 + 1} frames at this frame rate.",
        )

    seed = request.seed if request.seed is not None else random.randrange(2**31)
    if not 0 <= seed < SEED_LIMIT:
        raise _invalid("seed", f"seed {seed} is outside 0..2**64-1", "Use a non-negative seed below 2**64.")

    if request.tiling not in ("auto", *TILING_MODES):
        raise _invalid("tiling", f"unknown tiling mode {request.tiling!r}", f"Use auto or {', '.join(TILING_MODES)}.")
    if request.memory not in MEMORY_MODES:
        raise _invalid(
            "memory", f"unknown memory mode {request.memory!r}", f"Use {' or '.join(MEMORY_MODES)} (low: --low-ram)."
        )
    if request.video_encoder not in ENCODERS:
        raise _invalid(
            "video_encoder", f"unknown video encoder {request.video_encoder!r}", f"Use {', '.join(ENCODERS)}."
        )
    if not 0 <= request.video_crf <= 51:
        raise _invalid("video_crf", f"video_crf {request.video_crf} is outside 0..51", "Use 18 (default) to 28.")
    if request.video_preset not in PRESETS:
        raise _invalid(
            "video_preset", f"unknown video preset {request.video_preset!r}", f"Use one of {', '.join(PRESETS)}."
        )
    if request.steps is not None and not 1 <= request.steps <= 200:
        raise _invalid("steps", f"steps {request.steps} is outside 1..200", "Use 20 to 40 for dev checkpoints.")
    if request.cfg_scale is not None and not 0 < request.cfg_scale <= 30:
        raise _invalid("cfg_scale", f"cfg_scale {request.cfg_scale} is outside (0, 30]", "Use about 3.")

    ffmpeg_exe()  # every job ends in ffmpeg: a missing or broken one is found now
    if request.mode == "a2v":
        request = _soundtrack(request, frames, warnings)
    if request.mode in SOURCE_MODES and request.keyframes:
        _warn(warnings, f"keyframes are ignored: {request.mode} conditions on the source clip, not on images")
        request = replace(request, keyframes=())
    if request.mode == "interpolate" and not request.keyframes:
        raise _invalid("keyframes", "keyframe interpolation needs at least one keyframe",
                       "Give keyframes (--keyframe PATH|FRAME), e.g. the first and the last frame.")  # fmt: skip
    keyframes = []
    for index, keyframe in enumerate(request.keyframes):
        where = f"keyframes[{index}]"
        if not 0.0 <= keyframe.strength <= 1.0:
            raise _invalid(where + ".strength", f"strength {keyframe.strength} is outside 0..1", "Use 0..1.")
        if not 0 <= keyframe.frame_index < frames:
            raise _invalid(
                where + ".frame_index", f"frame {keyframe.frame_index} is outside 0..{frames - 1}", "Pick a frame."
            )
        read_image(keyframe.path, where + ".path")  # image_unreadable now (the cheap checks first), not after accepted
        keyframes.append(replace(keyframe, path=str(Path(keyframe.path).expanduser().absolute())))

    controls = request.controls
    names = [f"control_video[{index}]" if len(controls) > 1 else "control_video" for index in range(len(controls))]
    control = tuple(check_control_video(c, frames, name) for c, name in zip(controls, names, strict=True)) or None

    named = "\0" not in request.output_path and not os.path.isdir(os.path.expanduser(request.output_path))
    if named and Path(request.output_path).suffix.lower() != ".mp4":
        name = Path(request.output_path).name
        raise _invalid("output_path", f"{name} is not an .mp4 path", "Name the output file *.mp4.")
    output = check_output_path(request.output_path, "output_path")
    audio_output = request.audio_output_path
    if audio_output is not None and not request.audio:
        _warn(warnings, f"audio_output_path {audio_output} is ignored: the job has no audio (--no-audio)")
        audio_output = None
    if audio_output is not None:
        check_distinct(output, Path(audio_output).expanduser().absolute())
        audio_output = str(check_output_path(audio_output, "audio_output_path"))
    return replace(
        request,
        width=sizes["width"],
        height=sizes["height"],
        num_frames=None if request.num_frames is None else frames,
        seed=seed,
        keyframes=tuple(keyframes),
        control_video=control,
        output_path=str(output),
        audio_output_path=audio_output,
        warnings=tuple(warnings),
    )


def _with_field(error: LtxError, field_name: str) -> LtxError:
    error.details.setdefault("field", field_name)
    return error


def check_control_video(control: ControlVideo, frames: int, where: str = "control_video") -> ControlVideo:
    """The control video and its mask decodable (probed, nothing read yet), strengths in range, and the mask's frame
    count one that pools onto the reference's latent frames (ICLoraPipeline ``_downsample_mask_to_latent``).
    Returns it with absolute paths."""
    from ltx_backend.media.control_video import encodable_frames, probe_control_video

    for name in ("strength", "attention_strength"):
        value = getattr(control, name)
        if not 0.0 <= value <= 1.0:
            raise _invalid(f"{where}.{name}", f"{where} {name} {value} is outside 0..1", "Use 0..1.")
    try:
        info = probe_control_video(control.path)
    except LtxError as error:
        raise _with_field(error, f"{where}.path") from None
    mask_path = None
    if control.mask_path is not None:
        try:
            mask = probe_control_video(control.mask_path)
        except LtxError as error:
            raise _with_field(error, f"{where}.mask_path") from None
        latent = (encodable_frames(min(info.frames, frames)) - 1) // 8 + 1
        used = encodable_frames(min(mask.frames, frames))
        if used > 1 and latent > 1 and (used - 1) % (latent - 1):
            raise _invalid(
                f"{where}.mask_path",
                f"the mask's {used} frames do not pool onto the control video's {latent} latent frames",
                "Give the mask as many frames as the control video.",
            )
        mask_path = str(mask.path.absolute())
    return replace(control, path=str(info.path.absolute()), mask_path=mask_path)

"""The stdio protocol's messages: one JSON object per line, a tagged union on ``type`` (see protocol/PROTOCOL.md).

Host requests carry a host-chosen ``id``; every reply and event about a request echoes it. Field names are
snake_case; ``type`` values are kebab-case. Unknown fields are ignored so hosts can be newer than the backend.
"""

from __future__ import annotations

import msgspec

PROTOCOL_VERSION = 1


class Request(msgspec.Struct, tag_field="type", forbid_unknown_fields=False):
    id: str | None = None


# --- host -> backend ------------------------------------------------------------------------------------------


class ValidateEnv(Request, tag="validate-env"):
    fresh: bool = False  # bypass the 5-minute cache
    model: str | None = None  # also report whether these are cached
    text_encoder: str | None = None


class LoraRef(msgspec.Struct, forbid_unknown_fields=False):
    path: str  # a LoRA .safetensors file
    strength: float = 1.0  # negative subtracts it


class Load(Request, tag="load"):
    model: str = "tiny"
    text_encoder: str | None = None
    quantize: int | None = None
    residency: str = "auto"  # which models stay loaded between jobs: auto (what fits), all, none
    warmup: bool = False  # also run one tiny job now, so kernels are compiled before the first real job
    loras: list[LoraRef] = []  # fused into the transformer: part of what is loaded, not of a job
    distilled_lora: LoraRef | None = None  # dev checkpoints: fused for stage 2 (ltx-pipelines' two-stage flow)


class Unload(Request, tag="unload"):
    pass


class KeyframeSpec(msgspec.Struct, forbid_unknown_fields=False):
    path: str
    frame_idx: int = 0  # an output (pixel) frame: 0 is the first frame
    strength: float = 1.0  # 1.0 keeps the image


class PreviewSpec(msgspec.Struct, forbid_unknown_fields=False):
    every: int = 2  # denoising steps between previews (and the last step of each stage)
    max_side: int = 256  # the PNG's longer side at most
    folder: str | None = None  # default: beside the output, "<output without .mp4>.previews/"


class ControlVideoSpec(msgspec.Struct, forbid_unknown_fields=False):
    path: str  # the IC-LoRA's control video (depth, canny, pose, ...)
    strength: float = 1.0  # 1.0 keeps the reference tokens clean
    mask_path: str | None = None  # grayscale video: where the control applies
    attention_strength: float = 1.0  # scales the attention between reference and output (0..1)


class Generate(Request, tag="generate"):
    prompt: str = ""
    output_path: str = ""
    negative_prompt: str | None = None
    width: int = 768
    height: int = 512
    num_frames: int | None = None  # None: 121, or LTX-2.5's duration head within min/max_seconds
    fps: float = 24.0
    seed: int | None = None
    steps: int | None = None
    cfg_scale: float | None = None
    keyframes: list[KeyframeSpec] = []
    audio: bool = True
    tiling: str = "auto"
    memory: str = "auto"  # "low": stream the transformer's blocks from disk (the planner may choose it itself)
    video_encoder: str = "auto"  # auto | libx264 | videotoolbox | nvenc (auto: hardware where it works)
    video_crf: int = 18  # 0..51, x264's scale
    video_preset: str = "medium"  # x264 speed preset
    audio_output_path: str | None = None
    enhance_prompt: bool = False
    round_dimensions: bool = False
    log_file: str | None = None  # write this job's log here (default: a file in `serve --log-dir`, if given)
    count: int = 1  # a batch: this many videos, seeds seed, seed+1, ...; outputs numbered name_1.mp4, name_2.mp4, ...
    seeds: list[int] | None = None  # a batch with these seeds (one video each; count, if given, must match)
    preview: PreviewSpec | None = None  # opt-in previews during denoising (`preview` messages)
    min_seconds: float | None = None
    max_seconds: float | None = None
    # One control video, or a list (appended in order); needs an IC-LoRA among the loaded `loras`.
    control_video: ControlVideoSpec | list[ControlVideoSpec] | None = None
    mode: str = "t2v"  # t2v | a2v | retake | extend | interpolate
    pipeline: str = "two-stage"  # two-stage | one-stage | hq | interpolate (t2v and interpolate)
    audio_input_path: str | None = None  # a2v: the soundtrack
    audio_start: float = 0.0  # a2v: seconds into the soundtrack
    source_path: str | None = None  # retake / extend: the source clip
    retake_window: list[float] | None = None  # retake: [start, end] seconds
    retake_video: bool = True
    retake_audio: bool = True
    extend_seconds: float | None = None  # extend: seconds to add


class Cancel(Request, tag="cancel"):
    job_id: str | None = None  # None: the running job


class Status(Request, tag="status"):
    pass


class Shutdown(Request, tag="shutdown"):
    pass


# --- backend -> host ------------------------------------------------------------------------------------------


class Reply(msgspec.Struct, tag_field="type", omit_defaults=False):
    pass


class Ready(Reply, tag="ready"):
    protocol: int
    version: str
    device: str
    capabilities: list[str]


class EnvCheck(msgspec.Struct):
    name: str
    ok: bool
    detail: str
    fix: str = ""
    code: str = ""


class EnvReport(Reply, tag="env-report"):
    id: str | None
    ok: bool
    problems: list[EnvCheck]  # the checks that failed, most important first
    checks: list[EnvCheck]
    python: str
    device: str
    backend_version: str
    backend_path: str
    editable: bool
    model_cached: bool | None = None
    text_encoder_cached: bool | None = None
    cached_at: float = 0.0  # unix time the report was made (reports are reused for 5 minutes)


class ResidentComponent(msgspec.Struct):
    name: str  # text_encoder, text_processor, video_encoder, transformer, upsampler, audio_decoder, ...
    bytes: int


class Loaded(Reply, tag="loaded"):
    id: str | None
    job_id: str
    model: str
    path: str
    layout: str
    model_version: str
    variant: str
    quantization: dict | None  # as applied: the checkpoint's own, or the load-time `quantize` bits
    text_encoder: str
    residency: str = "auto"
    resident: list[ResidentComponent] = []  # what stays loaded between jobs now
    resident_bytes: int = 0
    memory_left_gb: float | None = None  # what the session may still use (None: unknown)
    load_s: float = 0.0  # seconds this load spent reading weights (0: all were resident already)
    warmup_s: float | None = None  # seconds the warm-up job took (None: no warm-up)
    loras: list[LoraRef] = []  # as fused: absolute paths
    distilled_lora: LoraRef | None = None


class Unloaded(Reply, tag="unloaded"):
    id: str | None
    job_id: str


class Accepted(Reply, tag="accepted"):
    id: str | None
    job_id: str
    queue_position: int  # 0: starts now
    batch_index: int | None = None  # a batch's jobs: 0, 1, ... (each its own job, cancellable on its own)


class Progress(Reply, tag="progress", omit_defaults=True):  # absent fields do not apply to this event
    id: str | None
    job_id: str
    phase: str
    fraction: float  # overall, monotonic, 0..1
    elapsed: float
    eta: float | None = None
    stage: int | None = None
    step: int | None = None
    total: int | None = None
    bytes: int | None = None
    total_bytes: int | None = None
    speed: float | None = None  # download bytes per second
    message: str | None = None  # warnings and the enhanced prompt


class Heartbeat(Reply, tag="heartbeat"):
    id: str | None
    job_id: str | None
    phase: str | None
    elapsed: float


class Result(Reply, tag="result"):
    id: str | None
    job_id: str
    video_path: str
    audio_path: str | None
    seed: int
    width: int
    height: int
    num_frames: int
    fps: float
    has_audio: bool
    sampler: str
    steps: list[int]
    prompt: str
    timings: dict[str, float]
    peak_memory_gb: float
    warnings: list[str]
    log_path: str | None = None  # the job's log file, when it has one


class Preview(Reply, tag="preview"):
    id: str | None
    job_id: str
    path: str  # a PNG
    stage: int
    step: int
    frame: int  # the latent frame shown (0: the first)
    width: int
    height: int


class Cancelled(Reply, tag="cancelled"):
    id: str | None
    job_id: str


class QueuedJob(msgspec.Struct):
    job_id: str
    id: str | None
    kind: str


class StatusReport(Reply, tag="status"):
    id: str | None
    model: str | None
    device: str
    memory_gb: float
    peak_memory_gb: float
    running: QueuedJob | None
    progress: float | None
    queue: list[QueuedJob]
    residency: str | None = None
    resident: list[ResidentComponent] = []
    resident_bytes: int = 0
    memory_left_gb: float | None = None


class Error(Reply, tag="error"):
    id: str | None
    code: str
    message: str
    hint: str = ""
    job_id: str | None = None
    field: str | None = None
    log_path: str | None = None  # the job's log file (with the traceback), when it has one


class Bye(Reply, tag="bye"):
    id: str | None


# --- model management (host -> backend) ----------------------------------------------------------------------


class Models(Request, tag="models"):
    pass


class Download(Request, tag="download"):
    repo: str = ""  # a Hugging Face repo id (org/name): an LTX model or a Gemma 3 text encoder
    revision: str = "main"
    files: list[str] | None = None  # glob patterns to fetch instead of the files a job needs
    variant: str = "distilled"  # of an official repo's checkpoints: distilled, or dev (+ its distilled LoRA)


class Delete(Request, tag="delete"):
    model: str = ""  # a cached repo id, or `tiny` / `tiny-2.3`
    revision: str | None = None  # one snapshot (a commit hash or a branch); None: the whole repo


class Inspect(Request, tag="inspect"):
    model: str = ""  # a local path, a cached repo id, or `tiny`
    text_encoder: str | None = None  # also check this text encoder (default: the model's bundled one)


HostMessage = ValidateEnv | Load | Unload | Generate | Cancel | Status | Shutdown | Models | Download | Delete | Inspect


# --- model management (backend -> host) ----------------------------------------------------------------------


class ProblemInfo(msgspec.Struct):
    code: str
    message: str
    hint: str = ""


class CachedModel(msgspec.Struct):
    name: str  # the repo id, or `tiny` / `tiny-2.3`
    path: str
    kind: str  # "ltx", "text_encoder" or "other"
    size_bytes: int
    complete: bool  # false: damaged or partly downloaded (`error` says how)
    repo: str | None
    revision: str | None
    refs: list[str]
    layout: str | None
    model_version: str | None
    quantization: dict | None
    components: list[str]
    text_encoder: str | None
    last_used: float | None  # unix time this backend last loaded it (None: never)
    error: ProblemInfo | None


class ModelsReport(Reply, tag="models"):
    id: str | None
    cache: str
    models: list[CachedModel]
    total_bytes: int
    free_bytes: int  # free space on the cache's disk


class Downloaded(Reply, tag="downloaded"):
    id: str | None
    job_id: str
    repo: str
    revision: str
    commit: str
    path: str
    kind: str
    size_bytes: int  # of the files fetched for jobs
    downloaded_bytes: int  # fetched by this job (the rest was cached, or resumed from a partial file)
    skipped: list[str]  # repo files not fetched (duplicates, other variants, media, FP8/FP4/LoRA)
    layout: str | None
    model_version: str | None
    quantization: dict | None
    text_encoder: str | None


class Deleted(Reply, tag="deleted"):
    id: str | None
    model: str
    revision: str | None
    paths: list[str]
    freed_bytes: int


class ComponentInfo(msgspec.Struct):
    name: str
    tensors: int
    bytes: int
    dtypes: dict[str, int]
    quantization: dict | None
    ok: bool  # its config builds a module whose every parameter has a tensor of the right shape and dtype
    error: ProblemInfo | None


class Inspected(Reply, tag="inspected"):
    id: str | None
    job_id: str
    model: str
    path: str
    layout: str | None
    model_version: str | None
    variant: str | None
    quantization: dict | None
    config_sections: list[str]
    components: list[ComponentInfo]
    text_encoder: str | None
    ok: bool  # everything a job loads would load (the same checks the loader runs, without reading tensors)
    problems: list[ProblemInfo]
    transformer_bits: dict[str, int] | None = None  # quantized transformers: layers per "<bits>-bit g<group>"
    unsupported: list[str] = []  # parts of the release ltx-backend does not use (LTX-2.5's diffusion decoder)


BackendMessage = (
    Ready
    | EnvReport
    | Loaded
    | Unloaded
    | Accepted
    | Progress
    | Heartbeat
    | Result
    | Preview
    | Cancelled
    | StatusReport
    | Error
    | Bye
    | ModelsReport
    | Downloaded
    | Deleted
    | Inspected
)

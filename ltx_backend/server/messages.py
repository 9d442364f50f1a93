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


class Load(Request, tag="load"):
    model: str = "tiny"
    text_encoder: str | None = None
    quantize: int | None = None


class Unload(Request, tag="unload"):
    pass


class KeyframeSpec(msgspec.Struct, forbid_unknown_fields=False):
    path: str
    frame_idx: int = 0  # an output (pixel) frame: 0 is the first frame
    strength: float = 1.0  # 1.0 keeps the image


class Generate(Request, tag="generate"):
    prompt: str = ""
    output_path: str = ""
    negative_prompt: str | None = None
    width: int = 768
    height: int = 512
    num_frames: int = 121
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


class Unloaded(Reply, tag="unloaded"):
    id: str | None
    job_id: str


class Accepted(Reply, tag="accepted"):
    id: str | None
    job_id: str
    queue_position: int  # 0: starts now


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


BackendMessage = (
    Ready
    | EnvReport
    | Loaded
    | Unloaded
    | Accepted
    | Progress
    | Heartbeat
    | Result
    | Cancelled
    | StatusReport
    | Error
    | Bye
    | ModelsReport
    | Downloaded
    | Deleted
    | Inspected
)

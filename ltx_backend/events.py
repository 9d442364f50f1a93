"""Typed events of a generation. The engine emits them; the CLI, the stdio server and the compat shim render them."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

import msgspec


class Phase(str, Enum):
    DOWNLOAD = "download"
    LOAD = "load"
    TEXT_ENCODING = "text_encoding"
    PROMPT_ENHANCEMENT = "prompt_enhancement"
    IMAGE_ENCODING = "image_encoding"
    STAGE1 = "stage1"
    UPSAMPLE = "upsample"
    STAGE2 = "stage2"
    AUDIO_DECODE = "audio_decode"
    VIDEO_DECODE = "video_decode"
    MUX = "mux"
    SOURCE_ENCODING = "source_encoding"  # a2v's soundtrack, retake / extend's source clip, through the VAE encoders


class PhaseStarted(msgspec.Struct, tag="phase_started"):
    phase: Phase
    detail: str = ""


class PhaseFinished(msgspec.Struct, tag="phase_finished"):
    phase: Phase
    seconds: float


class DenoiseStep(msgspec.Struct, tag="denoise_step"):
    stage: int
    step: int
    total: int


class DownloadProgress(msgspec.Struct, tag="download_progress"):
    repo: str
    bytes: int  # on disk so far, including what earlier (interrupted) downloads left
    total: int | None
    speed: float | None = None  # bytes per second over the last few seconds of this download
    eta: float | None = None  # seconds left at that speed


class DecodeProgress(msgspec.Struct, tag="decode_progress"):
    """Video decode: the fraction of tiles (untiled: of decoder blocks) done, 0..1."""

    fraction: float


class Warning(msgspec.Struct, tag="warning"):
    message: str


class EnhancedPrompt(msgspec.Struct, tag="enhanced_prompt"):
    prompt: str


class DurationChosen(msgspec.Struct, tag="duration_chosen"):
    """LTX-2.5: the length the duration head chose for a request without num_frames."""

    num_frames: int
    seconds: float  # num_frames / fps
    predicted_seconds: float  # the head's raw prediction, before the bounds and the 8k+1 snap
    clamped: bool  # the prediction was outside [min_seconds, max_seconds]

    def text(self) -> str:
        """``duration: 33 frames (1.375 s), predicted 1.50 s``: LTX-2.5's automatic length."""
        bounded = " (outside the bounds)" if self.clamped else ""
        return (f"duration: {self.num_frames} frames ({self.seconds:g} s), predicted "
                f"{self.predicted_seconds:.2f} s{bounded}")  # fmt: skip


class Result(msgspec.Struct, tag="result"):
    video_path: str
    audio_path: str | None
    seed: int
    width: int
    height: int
    num_frames: int
    fps: float
    has_audio: bool
    sampler: str  # "distilled" or "dev"
    steps: tuple[int, ...]  # per stage (one-stage, retake and extend have one)
    prompt: str  # the prompt that was encoded (enhanced or not)
    timings: dict[str, float]
    peak_memory_gb: float


class MemoryPlan(msgspec.Struct, tag="memory_plan"):
    """What the memory planner chose for the job, before anything is loaded, and why."""

    transformer: str  # "resident" or "streaming" (blocks read from disk for every step)
    tiling: str  # the video decode's tiling mode
    peak_gb: float  # the plan's estimated peak
    available_gb: float  # 0: unknown
    reasons: list[str]
    suggestions: list[str] = msgspec.field(default_factory=list)  # what would lower it further (not applied)

    def text(self) -> str:
        """One line: ``memory plan: transformer streaming, tiling auto, peak ~6.1 GB: why``."""
        line = f"memory plan: transformer {self.transformer}, tiling {self.tiling}, peak ~{self.peak_gb:.1f} GB"
        return line + ": " + "; ".join(self.reasons)


class ErrorEvent(msgspec.Struct, tag="error"):
    code: str
    message: str
    hint: str = ""


class Preview(msgspec.Struct, tag="preview"):
    """A PNG of the current x0 prediction of one latent frame (opt-in, see pipeline/preview.py)."""

    path: str
    stage: int
    step: int
    frame: int  # the latent frame previewed (0: the first)
    width: int
    height: int


Event = (
    PhaseStarted
    | PhaseFinished
    | DenoiseStep
    | DecodeProgress
    | DownloadProgress
    | Warning
    | EnhancedPrompt
    | DurationChosen
    | MemoryPlan
    | Preview
    | Result
    | ErrorEvent
)
Emit = Callable[[Event], None]


def ignore(_: Event) -> None:
    """An event sink that drops everything."""

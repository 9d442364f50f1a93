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
    bytes: int
    total: int | None


class Warning(msgspec.Struct, tag="warning"):
    message: str


class EnhancedPrompt(msgspec.Struct, tag="enhanced_prompt"):
    prompt: str


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
    steps: tuple[int, int]  # stage 1, stage 2
    prompt: str  # the prompt that was encoded (enhanced or not)
    timings: dict[str, float]
    peak_memory_gb: float


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
    PhaseStarted | PhaseFinished | DenoiseStep | DownloadProgress | Warning | EnhancedPrompt | Result | ErrorEvent
    | Preview
)  # fmt: skip
Emit = Callable[[Event], None]


def ignore(_: Event) -> None:
    """An event sink that drops everything."""

"""Errors a user can meet, each with a stable code, a message and a fix hint.

Every front end (CLI, stdio server, compat shim) renders an `LtxError` the same way: the code is
part of the public contract (hosts switch on it), the message says what happened, the hint says
what to do about it.
"""

from __future__ import annotations

from enum import Enum


class ErrorCode(str, Enum):
    """Stable error codes. Never rename a value: hosts match on them."""

    INVALID_PARAMS = "invalid_params"
    MODEL_NOT_FOUND = "model_not_found"
    MODEL_ACCESS_DENIED = "model_access_denied"  # gated or private repo: accept the license / log in
    NETWORK_UNAVAILABLE = "network_unavailable"
    DOWNLOAD_FAILED = "download_failed"
    LAYOUT_UNKNOWN = "layout_unknown"
    CHECKPOINT_CORRUPT = "checkpoint_corrupt"
    CONFIG_INVALID = "config_invalid"
    TEXT_ENCODER_INVALID = "text_encoder_invalid"
    WEIGHTS_MISSING_KEY = "weights_missing_key"
    WEIGHTS_UNEXPECTED_KEY = "weights_unexpected_key"
    WEIGHTS_SHAPE_MISMATCH = "weights_shape_mismatch"
    WEIGHTS_LAYOUT_CONFLICT = "weights_layout_conflict"
    WEIGHTS_DTYPE_UNSUPPORTED = "weights_dtype_unsupported"
    OUTPUT_WRITE_FAILED = "output_write_failed"
    FFMPEG_MISSING = "ffmpeg_missing"
    INSUFFICIENT_MEMORY = "insufficient_memory"
    PARSE_ERROR = "parse_error"  # stdio protocol: a line that is not one JSON object
    UNKNOWN_TYPE = "unknown_type"  # stdio protocol: a message type this backend does not know
    JOB_NOT_FOUND = "job_not_found"
    MODEL_NOT_LOADED = "model_not_loaded"
    INTERNAL = "internal"
    TEXT_ENCODER_MISMATCH = "text_encoder_mismatch"  # LTX-2.5 needs its Gemma 4, LTX-2/2.3 their Gemma 3
    MEDIA_UNREADABLE = "media_unreadable"  # an input audio/video file that is missing or cannot be decoded
    MEDIA_TOO_SHORT = "media_too_short"  # an input shorter than the span the request needs
    MEDIA_NO_AUDIO = "media_no_audio"  # an input that must carry a soundtrack has none
    LORA_MISMATCH = "lora_mismatch"  # a LoRA whose layers or shapes do not fit the model
    IMAGE_UNREADABLE = "image_unreadable"  # a conditioning image that is missing, unreadable or not an image
    DISK_FULL = "disk_full"  # ENOSPC / EDQUOT while writing; or too little free space for a download (bytes named)
    MODEL_IN_USE = "model_in_use"  # `delete` of a model that is loaded or used by a queued job


class LtxError(Exception):
    """An error with a stable code, a human message and a hint on how to fix it."""

    def __init__(self, code: ErrorCode, message: str, hint: str = "", **details: object) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint
        self.details = details

    def __str__(self) -> str:
        text = f"[{self.code.value}] {self.message}"
        return f"{text}\n  hint: {self.hint}" if self.hint else text

    def to_dict(self) -> dict[str, object]:
        return {"code": self.code.value, "message": self.message, "hint": self.hint, **self.details}

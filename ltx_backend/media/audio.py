"""Audio output: peak normalisation and WAV files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.media.atomic import atomic_output
from ltx_backend.media.outputs import write_error

TARGET_PEAK = 0.95
SILENCE = 1e-6  # below this peak the signal is left alone rather than amplified from nothing


def normalize_peak(wave: np.ndarray, target: float = TARGET_PEAK) -> np.ndarray:
    """Scale so the largest absolute sample is `target` (mlx-video-with-audio's loudness), float32."""
    wave = np.asarray(wave, dtype=np.float32)
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    if not np.isfinite(peak):
        raise LtxError(
            ErrorCode.INTERNAL,
            "The decoded audio contains NaN or infinite samples",
            "Retry in float32 (the bf16 decode overflowed), or report the model and prompt.",
        )
    return wave * (target / peak) if peak > SILENCE else wave


def write_wav(path: str | Path, wave: np.ndarray, sample_rate: int, normalize: bool = True) -> Path:
    """Write a (channels, samples) float waveform as 16-bit PCM WAV, atomically. Returns the final path."""
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 2:
        raise ValueError(f"expected (channels, samples), got shape {wave.shape}")
    if normalize:
        wave = normalize_peak(wave)
    target = Path(path).expanduser().absolute()
    # Encoded in memory, written by Python: an OS failure keeps its errno (full disk -> disk_full), where
    # libsndfile would only say "System error". A WAV is small (20 s of 48 kHz stereo PCM16: 3.8 MB).
    encoded = io.BytesIO()
    soundfile.write(encoded, np.clip(wave, -1.0, 1.0).T, sample_rate, subtype="PCM_16", format="WAV")
    with atomic_output(target) as temporary:
        try:
            with open(temporary, "wb") as file:
                file.write(encoded.getbuffer())
        except OSError as exc:
            raise write_error(exc, target) from exc
    return target

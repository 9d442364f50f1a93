"""Previews during denoising: every N steps, the current x0 prediction of a representative latent frame (the
first and the middle one) decoded with the real VAE decoder and written as a PNG.

Cheap by construction: one latent frame decodes to one image (the causal decoder's first frame), without the
decode noise (zeros: a preview must not draw from any random stream), and the latent is first average-pooled
by the integer factor that still leaves the image at least `max_side` on its longer side (a 768x512 frame for a
256-pixel preview decodes from a 3x smaller latent: ~9x less decoder work). Read-only with respect to the job: it
looks at the denoiser's output and never feeds anything back, so the result is the same with or without it.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np

from ltx_backend import events
from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.media.atomic import atomic_output
from ltx_backend.media.outputs import write_error
from ltx_backend.media.video import to_uint8
from ltx_backend.models.video_vae import SPACE_SCALE

DEFAULT_MAX_SIDE = 256


@dataclass(frozen=True)
class PreviewOptions:
    folder: str  # where the PNGs go
    every: int = 2  # denoising steps between previews (and the last step of each stage)
    max_side: int = DEFAULT_MAX_SIDE  # the PNG's longer side at most (integer downscale of the decoded frame)

    def validate(self) -> PreviewOptions:
        if self.every < 1:
            hint = "Give the number of denoising steps between previews, e.g. 2."
            message = f"preview.every must be >= 1, not {self.every}"
            raise LtxError(ErrorCode.INVALID_PARAMS, message, hint, field="preview.every")
        if self.max_side < 16:
            hint = "Give the preview's longer side in pixels, e.g. 256."
            message = f"preview.max_side must be >= 16, not {self.max_side}"
            raise LtxError(ErrorCode.INVALID_PARAMS, message, hint, field="preview.max_side")
        folder = Path(self.folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LtxError(ErrorCode.INVALID_PARAMS, f"cannot create the preview folder {folder}: {exc.strerror}",
                           "Give a writable folder for the previews.", field="preview.folder") from exc  # fmt: skip
        return self


def write_png(path: str | Path, pixels: np.ndarray) -> None:
    """An RGB uint8 (H, W, 3) image as a PNG (no imaging library needed), written atomically."""
    height, width, _ = pixels.shape
    raw = b"".join(b"\x00" + pixels[row].tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    with atomic_output(path) as temporary:
        Path(temporary).write_bytes(data)


def pool_factor(latent_height: int, latent_width: int, max_side: int) -> int:
    """The largest latent pooling that still decodes to at least `max_side` pixels on the longer side and leaves
    at least 2 latent pixels on the shorter one (see `at_least_two`)."""
    factor = max(latent_height, latent_width) * SPACE_SCALE // max_side
    return max(1, min(factor, min(latent_height, latent_width) // 2))


def at_least_two(latent: mx.array) -> mx.array:
    """A (B, T, H, W, C) latent with H and W of at least 2, a 1-pixel side repeated: the video decoder's output
    for a 1-pixel side is not defined (it varies from call to call), and a 64-pixel video's stage 1 is one."""
    for axis in (2, 3):
        if latent.shape[axis] == 1:
            latent = mx.repeat(latent, 2, axis=axis)
    return latent


def pool(latent: mx.array, factor: int) -> mx.array:
    """Average-pool a channels-last latent (1, 1, H, W, C) spatially by `factor` (cropping the remainder)."""
    if factor <= 1:
        return latent
    _, t, h, w, c = latent.shape
    h, w = h // factor * factor, w // factor * factor
    blocks = latent[:, :, :h, :w].reshape(1, t, h // factor, factor, w // factor, factor, c)
    return blocks.astype(mx.float32).mean(axis=(3, 5)).astype(latent.dtype)


def downscale(pixels: np.ndarray, max_side: int) -> np.ndarray:
    """Area-average by the smallest integer factor that brings the longer side to at most `max_side`."""
    height, width, _ = pixels.shape
    factor = -(-max(height, width) // max_side)
    if factor <= 1:
        return pixels
    h, w = height // factor * factor, width // factor * factor
    blocks = pixels[:h, :w].astype(np.float32).reshape(h // factor, factor, w // factor, factor, 3)
    return blocks.mean(axis=(1, 3)).round().astype(np.uint8)


class Previewer:
    """Taps a stage's denoiser for its video x0 and writes previews on the steps the options ask for.

    The device and the host never wait for each other. A preview that comes due at a step (`write`) is submitted in
    the next step's denoiser call, once that step's forward is on its way to the device: the host builds the decode
    while the device runs the forward, and the device decodes right after it. The pixels are taken at the next
    preview (or `flush`), when the decode has long run, and a writer thread downscales, encodes and writes the PNGs
    and announces them while the job goes on. `close` waits for the last ones."""

    def __init__(self, options: PreviewOptions, decoder_for: Callable[[], object], emit: events.Emit, dtype) -> None:
        self.options = options
        self.decoder_for = decoder_for  # borrows the video decoder (from the resident set) when a preview is due
        self.emit = emit
        self.dtype = dtype
        self._x0: mx.array | None = None
        self._due: tuple[int, int, mx.array, tuple[int, int, int]] | None = None  # due, not yet submitted
        self._submitted: tuple[int, int, list[int], mx.array] | None = None  # on the device, not yet written
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ltx-preview")
        self._writes: list[Future] = []
        self._stopped = False  # a preview could not be written: the rest are skipped

    def tap(self, denoise):
        """The same denoiser, remembering the last video x0 it returned and submitting the preview due, if any."""

        def tapped(video, audio, sigma):
            denoised_video, denoised_audio = denoise(video, audio, sigma)
            self._submit()
            self._x0 = denoised_video
            return denoised_video, denoised_audio

        return tapped

    def due(self, step: int, total: int) -> bool:
        return step % self.options.every == 0 or step == total

    def write(self, stage: int, step: int, total: int, tokens: int, shape: tuple[int, int, int]) -> None:
        """At the end of a step: when a preview is due, hand the previous one to the writer and keep this step's x0
        (its first `tokens` tokens, latent size (f, h, w)) for the next submission."""
        if self._x0 is None or self._stopped or not self.due(step, total):
            return
        self._submit()  # not submitted yet only when no denoiser call came since (a test's direct calls)
        self._hand_over()
        self._due = (stage, step, self._x0[:, :tokens], shape)

    def flush(self) -> None:
        """After the last step: submit what is due and hand it to the writer."""
        self._submit()
        self._hand_over()

    def close(self) -> None:
        """Write what is still pending, wait for the writer, and raise the first error it met (a bug: what the OS
        refuses is a warning, see `_write_pngs`)."""
        self.flush()
        self._writer.shutdown(wait=True)
        writes, self._writes = self._writes, []
        for write in writes:
            write.result()

    def abandon(self) -> None:
        """A failed or cancelled job's end: let the writes under way finish (each file is whole or absent), drop
        the rest and their errors."""
        self._due = self._submitted = None
        self._writer.shutdown(wait=True, cancel_futures=True)
        self._writes = []

    def _submit(self) -> None:
        """The due preview's decode, to the device: frame 0 and the middle latent frame in one decoder call."""
        if self._due is None:
            return
        stage, step, x0, (f, h, w) = self._due
        self._due = None
        latent = x0.reshape(1, f, h, w, x0.shape[-1]).astype(self.dtype)  # channels-last, as decode() takes
        decoder = self.decoder_for()
        frames = sorted({0, f // 2})
        factor = pool_factor(h, w, self.options.max_side)
        batch = at_least_two(mx.concatenate([pool(latent[:, index : index + 1], factor) for index in frames]))
        noise = mx.zeros(batch.shape, dtype=self.dtype) if decoder.config.timestep_conditioning else None
        images = decoder.decode(batch, None, noise)[:, 0].astype(mx.float32)
        mx.async_eval(images)
        self._submitted = (stage, step, frames, images)

    def _hand_over(self) -> None:
        """The submitted previews' pixels to the writer thread (MLX arrays stay on this thread)."""
        if self._submitted is None:
            return
        stage, step, frames, images = self._submitted
        self._submitted = None
        self._writes.append(self._writer.submit(self._write_pngs, stage, step, frames, to_uint8(images)))

    def _write_pngs(self, stage: int, step: int, frames: list[int], images: np.ndarray) -> None:
        """Write and announce one preview's PNGs. A preview the OS refuses (a full disk, a folder made read-only)
        costs the previews, not the video: a warning, and no more previews in this job."""
        for index, image in zip(frames, images, strict=True):
            if self._stopped:
                return
            pixels = downscale(image, self.options.max_side)
            path = Path(self.options.folder) / f"stage{stage}-step{step:03d}-frame{index:03d}.png"
            try:
                write_png(path, pixels)
            except (OSError, LtxError) as exc:  # LtxError: the temporary file could not be made (atomic_output)
                error = exc if isinstance(exc, LtxError) else write_error(exc, path)
                if error.code not in (ErrorCode.DISK_FULL, ErrorCode.OUTPUT_WRITE_FAILED):
                    raise
                self._stopped = True
                self.emit(events.Warning(f"Preview not written ({error.code.value}): {error.message}. {error.hint} "
                                         "No more previews in this job; the video goes on."))  # fmt: skip
                return
            self.emit(events.Preview(str(path), stage, step, index, pixels.shape[1], pixels.shape[0]))

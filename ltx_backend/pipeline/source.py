"""A source clip (retake, extend) or a soundtrack (a2v) as latents: read, validate, encode.

Video: ltx-pipelines' retake encodes the source's frames at the source size with the video VAE encoder
(``load_video_conditioning``: each frame resized to cover and centre-cropped, scaled to [-1, 1]); the encoder takes
8k+1 frames, so the reference refuses other counts. We keep the longest 8k+1 prefix instead and say so in
`SourceClip.dropped_frames`. Audio: the soundtrack over the kept frames, encoded by the audio VAE encoder
(`audio_encode.encode_audio`) and fit to ``audio_latent_frames(frames, fps)`` latent frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.media.audio_in import DecodedAudio, read_audio
from ltx_backend.media.video_in import encoder_input, read_video, video_info
from ltx_backend.models.audio_vae import AudioEncoder
from ltx_backend.models.video_vae import VideoEncoder
from ltx_backend.pipeline.audio_encode import encode_audio, fit_latent_frames
from ltx_backend.pipeline.sampler import audio_latent_frames

TIME_SCALE = 8


def usable_frames(frames: int) -> int:
    """The longest 8k+1 count that fits in `frames` (0 if none)."""
    return 0 if frames < 1 else (frames - 1) // TIME_SCALE * TIME_SCALE + 1


@dataclass(frozen=True)
class SourceClip:
    video_latent: mx.array  # (1, C, f, h, w)
    audio_latent: mx.array | None  # (1, 8, T, 16), T = audio_latent_frames(frames, fps); None: the clip is silent
    frames: int  # pixel frames encoded (8k+1)
    fps: float
    dropped_frames: int  # trailing frames left out to reach 8k+1

    @property
    def duration(self) -> float:
        return self.frames / self.fps


def check_source(path: str | Path, min_frames: int = TIME_SCALE + 1) -> tuple[int, int, float]:
    """Validate before compute: the clip opens and has a video stream. (width, height, fps)."""
    info = video_info(path)
    if info.duration is not None and info.duration * info.video.fps < min_frames - 0.5:
        raise LtxError(
            ErrorCode.MEDIA_TOO_SHORT,
            f"{info.path} lasts {info.duration:.3f} s; at least {min_frames} frames are needed",
            "Use a longer source clip.",
            path=str(info.path),
        )
    return info.video.width, info.video.height, info.video.fps


def encode_source(
    path: str | Path,
    video_encoder: VideoEncoder,
    audio_encoder: AudioEncoder | None,
    height: int,
    width: int,
    max_frames: int | None = None,
) -> SourceClip:
    """Read `path` (at most `max_frames` frames), keep 8k+1 of them, encode video (at `height` x `width`) and sound."""
    clip = read_video(path, frame_cap=max_frames, min_frames=TIME_SCALE + 1, with_audio=audio_encoder is not None)
    frames = usable_frames(clip.frames.shape[0])
    pixels = mx.array(encoder_input(clip.frames[:frames], height, width))
    dtype = video_encoder.conv_in.conv.weight.dtype
    video_latent = video_encoder(pixels.astype(dtype))
    audio_latent = None
    if audio_encoder is not None and clip.audio is not None:
        audio_latent = encode_soundtrack(clip.audio, audio_encoder, frames, clip.fps)
    return SourceClip(video_latent, audio_latent, frames, clip.fps, clip.frames.shape[0] - frames)


def encode_soundtrack(audio: DecodedAudio, encoder: AudioEncoder, frames: int, fps: float) -> mx.array:
    """Encode a soundtrack and fit it to the audio latent frames of `frames` video frames (crop or zero latents)."""
    latent = encode_audio(audio.waveform, audio.sample_rate, encoder)
    return fit_latent_frames(latent, audio_latent_frames(frames, fps))


def read_soundtrack(path: str | Path, start: float, frames: int, fps: float) -> DecodedAudio:
    """a2v: the soundtrack for a video of `frames` at `fps`, from `start`; exactly its duration is needed (the
    reference reads ``num_frames / frame_rate`` seconds and writes that waveform into the MP4)."""
    seconds = frames / fps
    return read_audio(path, start, seconds, min_duration=seconds)

"""Every mode and pipeline end to end on the tiny random-weight models (CPU, 128x128, 17 frames): a valid MP4 of the
right duration with audio; a2v muxes the input soundtrack itself; retake and extend keep the source's latents outside
their window bit for bit (compared before decoding: the decoder is not causal, so decoded kept frames are only close);
extend's joined clip keeps audio and video in sync; bad requests fail before any work."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile
from media_probe import probe

from ltx_backend import events
from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.media.audio_in import read_audio
from ltx_backend.media.video import ffmpeg_exe
from ltx_backend.models.rope import audio_positions
from ltx_backend.pipeline import sampler as s
from ltx_backend.pipeline.engine import Engine
from ltx_backend.pipeline.request import GenerationRequest, Keyframe

SMALL = {"width": 128, "height": 128, "num_frames": 17, "fps": 24.0}
DURATION = 17 / 24


@pytest.fixture
def dev(engine: Engine) -> Engine:
    """The tiny model run as a dev checkpoint: guided stages (negative prompt, CFG / STG / modality passes)."""
    engine.variant = "dev"
    yield engine
    engine.variant = "distilled"


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("media")
    # 1 s of 44.1 kHz stereo: two tones under a 3 Hz envelope (an AAC encode keeps the envelope)
    t = np.arange(44100) / 44100
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 3 * t))
    wave = (0.6 * envelope * np.sin(2 * np.pi * np.array([[330.0], [550.0]]) * t)).T.astype(np.float32)
    soundfile.write(folder / "voice.wav", wave, 44100, subtype="PCM_16")
    source = folder / "source.mp4"  # 17 frames of 128x128 with a 440 Hz stereo AAC track
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=128x128:rate=24",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-ac", "2", "-c:a", "aac",
                    "-frames:v", "17", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-shortest", str(source)],
                   check=True)  # fmt: skip
    image = folder / "key.png"
    pixels = np.random.default_rng(4).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    subprocess.run([ffmpeg_exe(), "-y", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "128x128", "-i",
                    "-", str(image)], input=pixels.tobytes(), check=True)  # fmt: skip
    return {"wav": folder / "voice.wav", "source": source, "image": image}


def run(engine: Engine, tmp_path: Path, **fields) -> tuple[events.Result, list[events.Event], dict]:
    """Generate, recording the events and what the engine denoised: the encoded inputs and the output latents."""
    seen: list[events.Event] = []
    captured: dict = {}
    denoise = engine._denoise

    def recording(request, encoded, *args, **kwargs):
        captured["encoded"] = encoded
        captured["video"], captured["audio"] = denoise(request, encoded, *args, **kwargs)
        return captured["video"], captured["audio"]

    engine._denoise = recording
    try:
        request = GenerationRequest(
            **{"prompt": "a fox sings", "seed": 5, "output_path": str(tmp_path / "out.mp4"), **SMALL, **fields}
        )
        result = engine.generate(request, emit=seen.append)
    finally:
        del engine._denoise
    return result, seen, captured


def check_mp4(path: str, frames: int, width: int = 128, height: int = 128) -> None:
    info = probe(path)
    assert (info.video_codec, info.width, info.height, info.frames, info.fps) == ("h264", width, height, frames, 24)
    assert info.audio_codec == "aac" and info.channels == "stereo"
    assert info.duration == pytest.approx(frames / 24, abs=0.06)


def envelope(wave: np.ndarray, rate: int, window_s: float = 0.04) -> np.ndarray:
    size = round(rate * window_s)
    frames = wave.shape[1] // size
    return np.sqrt(np.mean(wave[:, : frames * size].reshape(2, frames, size) ** 2, axis=(0, 2)))


def outside(frames: int, start: float, end: float) -> np.ndarray:
    """Audio latent frames whose time span (their RoPE positions, seconds) misses [start, end)."""
    bounds = audio_positions(frames)[0, 0]
    return ~((bounds[:, 1] > start) & (bounds[:, 0] < end))


def phases(seen: list[events.Event]) -> list[events.Phase]:
    return [e.phase for e in seen if isinstance(e, events.PhaseFinished)]


def steps(seen: list[events.Event]) -> dict[int, int]:
    return {e.stage: e.total for e in seen if isinstance(e, events.DenoiseStep)}


# -------------------------------------------------------------------------------------------------- pipelines


def test_one_stage_runs_at_full_size_only(engine: Engine, tmp_path: Path) -> None:
    result, seen, captured = run(engine, tmp_path, pipeline="one-stage")
    check_mp4(result.video_path, 17)
    assert result.steps == (8,) and steps(seen) == {1: 8}
    assert events.Phase.UPSAMPLE not in phases(seen) and events.Phase.STAGE2 not in phases(seen)
    assert captured["video"].shape[2:] == (3, 4, 4)


def test_hq_runs_res2s_in_both_stages(dev: Engine, tmp_path: Path) -> None:
    result, seen, _ = run(dev, tmp_path, pipeline="hq", steps=2)
    check_mp4(result.video_path, 17)
    assert result.steps == (2, 3) and steps(seen) == {1: 2, 2: 3}
    assert result.sampler == "dev"


def test_interpolate_appends_every_keyframe(engine: Engine, media: dict, tmp_path: Path) -> None:
    keyframes = (Keyframe(str(media["image"]), 0), Keyframe(str(media["image"]), 16))
    result, seen, _ = run(engine, tmp_path, pipeline="interpolate", keyframes=keyframes)
    check_mp4(result.video_path, 17)
    assert result.steps == (8, 3)
    assert events.Phase.IMAGE_ENCODING in phases(seen)


def test_one_stage_dev_is_guided(dev: Engine, tmp_path: Path) -> None:
    result, _, _ = run(dev, tmp_path, pipeline="one-stage", steps=2, cfg_scale=2.0)
    check_mp4(result.video_path, 17)
    assert result.steps == (2,)


# ------------------------------------------------------------------------------------------------------- a2v


@pytest.mark.parametrize("variant", ["distilled", "dev"])
def test_a2v_keeps_the_soundtrack_and_muxes_the_original(
    any_engine: Engine, media: dict, tmp_path: Path, variant: str
) -> None:
    any_engine.variant = variant
    try:
        result, seen, captured = run(any_engine, tmp_path, mode="a2v", audio_input_path=str(media["wav"]),
                                     audio_start=0.25, audio_output_path=str(tmp_path / "a.wav"),
                                     **({"steps": 2} if variant == "dev" else {}))  # fmt: skip
    finally:
        any_engine.variant = "distilled"
    check_mp4(result.video_path, 17)
    assert events.Phase.SOURCE_ENCODING in phases(seen)
    assert events.Phase.AUDIO_DECODE not in phases(seen)  # the soundtrack is not re-decoded
    # The audio latent left the sampler exactly as encoded (denoise mask 0 throughout).
    encoded = captured["encoded"].soundtrack
    np.testing.assert_array_equal(np.array(captured["audio"]), np.array(encoded.astype(any_engine.dtype)))
    # The output soundtrack is the input's, from audio_start, for the clip's duration, at the input's rate.
    written, rate = soundfile.read(result.audio_path, dtype="float32", always_2d=True)
    original, _ = soundfile.read(media["wav"], dtype="float32", always_2d=True)
    first = round(0.25 * 44100)
    assert rate == 44100 and written.shape == (round(DURATION * 44100), 2)
    np.testing.assert_array_equal(written, original[first : first + written.shape[0]])  # PCM16 both: exact
    # ... and it is what the MP4 carries (AAC at 48 kHz: compare loudness envelopes over 40 ms, not samples).
    muxed = read_audio(result.video_path).waveform
    assert muxed.shape[1] / 48000 == pytest.approx(DURATION, abs=0.03)
    ours, theirs = envelope(muxed, 48000), envelope(written.T, 44100)
    count = min(len(ours), len(theirs))
    assert np.corrcoef(ours[:count], theirs[:count])[0, 1] > 0.95


# ---------------------------------------------------------------------------------------------------- retake


@pytest.mark.parametrize("variant", ["distilled", "dev"])
def test_retake_keeps_everything_outside_the_window(
    any_engine: Engine, media: dict, tmp_path: Path, variant: str
) -> None:
    any_engine.variant = variant
    try:
        steps = {"steps": 2} if variant == "dev" else {}
        result, _, captured = run(any_engine, tmp_path, mode="retake", source_path=str(media["source"]),
                                  retake_window=(0.4, 0.7), **steps)  # fmt: skip
    finally:
        any_engine.variant = "distilled"
    check_mp4(result.video_path, 17)
    assert result.steps == ((2,) if variant == "dev" else (8,))
    source = captured["encoded"].source
    out, src = np.array(captured["video"]), np.array(source.video_latent.astype(any_engine.dtype))
    # latent frames 0 and 1 end by 9 / 24 = 0.375 s < 0.4: kept bit for bit; frame 2 is regenerated
    np.testing.assert_array_equal(out[:, :, :2], src[:, :, :2])
    assert np.abs(out[:, :, 2] - src[:, :, 2]).max() > 1e-3
    audio, src_audio = np.array(captured["audio"]), np.array(source.audio_latent.astype(any_engine.dtype))
    kept = outside(audio.shape[2], 0.4, 0.7)
    np.testing.assert_array_equal(audio[:, :, kept], src_audio[:, :, kept])
    assert np.abs(audio[:, :, ~kept] - src_audio[:, :, ~kept]).max() > 1e-3


def test_retake_video_only_keeps_the_whole_soundtrack(engine: Engine, media: dict, tmp_path: Path) -> None:
    result, _, captured = run(engine, tmp_path, mode="retake", source_path=str(media["source"]),
                              retake_window=(0.0, 0.7), retake_audio=False)  # fmt: skip
    check_mp4(result.video_path, 17)
    source = captured["encoded"].source
    np.testing.assert_array_equal(np.array(captured["audio"]), np.array(source.audio_latent.astype(engine.dtype)))
    assert np.abs(np.array(captured["video"]) - np.array(source.video_latent)).max() > 1e-3


# ---------------------------------------------------------------------------------------------------- extend


def test_extend_outputs_the_joined_clip_in_sync(any_engine: Engine, media: dict, tmp_path: Path) -> None:
    result, _, captured = run(any_engine, tmp_path, mode="extend", source_path=str(media["source"]),
                                 extend_seconds=0.5, audio_output_path=str(tmp_path / "a.wav"))  # fmt: skip
    assert result.num_frames == 33
    check_mp4(result.video_path, 33)
    source = captured["encoded"].source
    out = np.array(captured["video"])
    assert out.shape[2] == 5
    np.testing.assert_array_equal(out[:, :, :3], np.array(source.video_latent.astype(any_engine.dtype)))
    assert np.abs(out[:, :, 3:]).max() > 0
    # A/V sync: the soundtrack lasts exactly the joined clip (33 / 24 s), and the MP4's streams agree.
    wave, rate = soundfile.read(result.audio_path, always_2d=True)
    assert wave.shape[0] == round(33 / 24 * rate)
    muxed = read_audio(result.video_path).waveform
    assert muxed.shape[1] / 48000 == pytest.approx(33 / 24, abs=0.03)
    audio_latent = np.array(captured["audio"])
    assert audio_latent.shape[2] == s.audio_latent_frames(33, 24.0)
    kept = outside(18, 17 / 24, np.inf)  # the source's 18 audio latents that end by the seam (here: all)
    assert kept.sum() > 0 and np.abs(audio_latent[:, :, 18:]).max() > 0
    np.testing.assert_array_equal(audio_latent[:, :, :18][:, :, kept],
                                  np.array(source.audio_latent.astype(any_engine.dtype))[:, :, kept])  # fmt: skip


# ------------------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "fields, code, field",
    [
        ({"mode": "a2v"}, ErrorCode.INVALID_PARAMS, "audio_input_path"),
        ({"mode": "a2v", "audio_input_path": "/nonexistent/voice.wav"}, ErrorCode.MEDIA_UNREADABLE, "audio_input_path"),
        ({"mode": "retake", "source_path": "SOURCE", "retake_window": (0.9, 1.2)}, ErrorCode.INVALID_PARAMS,
         "retake_window"),
        ({"mode": "extend", "source_path": "SOURCE", "extend_seconds": 30.0}, ErrorCode.INVALID_PARAMS,
         "extend_seconds"),
        ({"mode": "retake", "source_path": "WAV", "retake_window": (0, 1)}, ErrorCode.MEDIA_UNREADABLE, "source_path"),
    ],
)  # fmt: skip
def test_mode_errors_come_before_any_work(
    engine: Engine, media: dict, tmp_path: Path, fields: dict, code: ErrorCode, field: str
) -> None:
    fields = {k: str(media["source"]) if v == "SOURCE" else str(media["wav"]) if v == "WAV" else v
              for k, v in fields.items()}  # fmt: skip
    seen: list[events.Event] = []
    request = GenerationRequest(prompt="a fox", output_path=str(tmp_path / "out.mp4"), **SMALL, **fields)
    with pytest.raises(LtxError) as info:
        engine.generate(request, emit=seen.append)
    assert info.value.code is code and info.value.details.get("field") == field and info.value.hint
    assert seen == [] and not (tmp_path / "out.mp4").exists()


# ------------------------------------------------------------------------------------------------ session


def test_a_session_keeps_the_encoders_and_previews_follow_the_stage_sizes(
    engine: Engine, media: dict, tmp_path: Path
) -> None:
    """A resident session borrows the audio / video encoders once for several retakes; previews of a one-stage
    retake decode its full-size latents (the preview's size follows the stage plan, not a fixed half size)."""
    from ltx_backend.pipeline import resident as r
    from ltx_backend.pipeline.preview import PreviewOptions

    session = Engine(engine.checkpoint.root, residency="all")
    fields = {"mode": "retake", "source_path": str(media["source"]), "retake_window": (0.4, 0.7)}
    first, _, _ = run(session, tmp_path / "1", **fields)
    seen: list[events.Event] = []
    request = GenerationRequest(prompt="a fox sings", seed=6, output_path=str(tmp_path / "2.mp4"), **SMALL, **fields)
    options = PreviewOptions(str(tmp_path / "previews"), every=4, max_side=128)
    session.generate(request, emit=seen.append, preview=options)
    assert session.models.loads[r.AUDIO_ENCODER] == 1 and session.models.loads[r.VIDEO_ENCODER] == 1
    previews = [e for e in seen if isinstance(e, events.Preview)]
    assert previews and {(p.stage, p.width, p.height) for p in previews} == {(1, 128, 128)}
    check_mp4(first.video_path, 17)


def test_a_checkpoint_without_the_audio_encoder_is_refused_before_work(
    engine: Engine, media: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some conversions ship the VAE decoders only: a2v / retake / extend say so before loading anything."""
    has = engine.checkpoint.has
    monkeypatch.setattr(engine.checkpoint, "has", lambda name: name != "audio_vae" and has(name))
    seen: list[events.Event] = []
    request = GenerationRequest(prompt="a fox", output_path=str(tmp_path / "out.mp4"), mode="a2v",
                                audio_input_path=str(media["wav"]), **SMALL)  # fmt: skip
    with pytest.raises(LtxError) as info:
        engine.generate(request, emit=seen.append)
    assert info.value.code is ErrorCode.WEIGHTS_MISSING_KEY and "audio VAE encoder" in info.value.message
    assert not any(isinstance(e, events.PhaseStarted) for e in seen)

"""Audio latents to a WAV file on disk: decode, peak normalisation, atomic writing."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import soundfile

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.media.atomic import atomic_output
from ltx_backend.media.audio import TARGET_PEAK, normalize_peak, write_wav
from ltx_backend.pipeline.audio import decode_audio
from ltx_backend.weights.audio import load_audio_decoder, load_vocoder
from ltx_backend.weights.checkpoint import open_checkpoint

FIXTURES = Path(__file__).parent / "fixtures" / "audio"


def test_normalize_peak_scales_to_095_and_leaves_silence_alone() -> None:
    wave = np.array([[0.1, -0.5], [0.25, 0.0]], dtype=np.float32)
    assert np.abs(normalize_peak(wave)).max() == pytest.approx(TARGET_PEAK)
    silence = np.full((2, 4), 1e-8, dtype=np.float32)
    np.testing.assert_array_equal(normalize_peak(silence), silence)
    with pytest.raises(LtxError) as error:
        normalize_peak(np.array([[np.nan, 0.1]]))
    assert error.value.code is ErrorCode.INTERNAL


@pytest.mark.parametrize(("version", "rate"), [("ltx20", 24000), ("ltx23", 48000)])
def test_decode_audio_writes_a_stereo_wav(tmp_path: Path, version: str, rate: int) -> None:
    ckpt = open_checkpoint(FIXTURES / f"{version}_unified")
    latent = mx.array(np.load(FIXTURES / "refs.npz")[f"{version}.latent"])
    wave, sample_rate = decode_audio(latent, load_audio_decoder(ckpt), load_vocoder(ckpt))
    assert sample_rate == rate and wave.dtype == np.float32 and wave.shape[0] == 2

    path = write_wav(tmp_path / "out" / "audio.wav", wave, sample_rate)
    info = soundfile.info(path)
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (rate, 2, wave.shape[1], "PCM_16")
    written, _ = soundfile.read(path, dtype="float32")
    assert np.abs(written).max() == pytest.approx(TARGET_PEAK, abs=1e-4)
    assert [p.name for p in path.parent.iterdir()] == ["audio.wav"]  # no temporary left behind


def test_bf16_decode_returns_float32_samples() -> None:
    ckpt = open_checkpoint(FIXTURES / "ltx20_split")
    latent = mx.array(np.load(FIXTURES / "refs.npz")["ltx20.latent"])
    decoder, vocoder = load_audio_decoder(ckpt, mx.bfloat16), load_vocoder(ckpt, mx.bfloat16)
    wave, _ = decode_audio(latent, decoder, vocoder)
    assert wave.dtype == np.float32 and np.isfinite(wave).all()


def test_atomic_output_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "video.wav"
    target.write_bytes(b"previous")
    with pytest.raises(RuntimeError), atomic_output(target) as temporary:
        temporary.write_bytes(b"half")
        raise RuntimeError("cancelled")
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["video.wav"]


def test_atomic_output_reports_unwritable_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(LtxError) as error, atomic_output(blocker / "out.wav"):
        pass
    assert error.value.code is ErrorCode.OUTPUT_WRITE_FAILED

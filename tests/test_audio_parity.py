"""Our audio path against ltx-core 1.0.0 on tiny random-weight models, in every on-disk layout.

References come from `tests/reference/make_audio_refs.py` (PyTorch, float32). Errors are measured as
max |ours - reference| / max |reference| ("of peak"). ltx-core 1.2.0 changed one thing here: ``VocoderWithBWE`` runs in
float32 whatever the model dtype. The float32 references are the same under both versions; the bf16 behaviour is
tested below against the same weights upcast.
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_map
from parity import relative_error

from ltx_backend.models.bwe import VocoderWithBWE
from ltx_backend.models.vocoder import Vocoder
from ltx_backend.weights.audio import load_audio_decoder, load_audio_encoder, load_vocoder
from ltx_backend.weights.checkpoint import Layout, open_checkpoint

FIXTURES = Path(__file__).parent / "fixtures" / "audio"
FP32_TOLERANCE = 1e-4
# bf16 keeps 8 significant bits (relative step 2^-8 = 0.4%); through ~10 conv/norm layers the rounding of
# weights and activations adds up to a few percent of peak. Measured worst case on these models: see BF16_CASES.
BF16_TOLERANCE = 5e-2
LAYOUTS = ["official", "unified", "split"]


@pytest.fixture(scope="module")
def refs() -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURES / "refs.npz"))


def checkpoint(version: str, layout: str):
    return open_checkpoint(FIXTURES / f"{version}_{layout}")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layout_detected(layout: str) -> None:
    for version in ("ltx20", "ltx23"):
        assert checkpoint(version, layout).layout is Layout(layout)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("version", ["ltx20", "ltx23"])
def test_audio_decoder_matches_ltx_core(refs, version: str, layout: str) -> None:
    decoder = load_audio_decoder(checkpoint(version, layout))
    assert ("attn_1" in decoder.mid) is (version == "ltx23")  # with and without mid attention
    mel = decoder(mx.array(refs[f"{version}.latent"]))
    assert relative_error(mel, refs[f"{version}.mel"]) <= FP32_TOLERANCE


@pytest.mark.parametrize("layout", ["official", "split"])
def test_audio_encoder_matches_ltx_core(refs, layout: str) -> None:
    versions = ["ltx20", "ltx23"] if layout == "official" else ["ltx23"]  # the ltx20 split file has no encoder
    for version in versions:
        encoder = load_audio_encoder(checkpoint(version, layout))
        latent = encoder(mx.array(refs[f"{version}.encoder_in"]))
        assert relative_error(latent, refs[f"{version}.encoder_out"]) <= FP32_TOLERANCE


@pytest.mark.parametrize("layout", LAYOUTS)
def test_hifigan_vocoder_matches_ltx_core(refs, layout: str) -> None:
    vocoder = load_vocoder(checkpoint("ltx20", layout))
    assert type(vocoder) is Vocoder and vocoder.output_sampling_rate == 24000
    wave = vocoder(mx.array(refs["ltx20.vocoder_in"]))
    assert relative_error(wave, refs["ltx20.vocoder_out"]) <= FP32_TOLERANCE


@pytest.mark.parametrize("layout", LAYOUTS)
def test_bigvgan_vocoder_with_bwe_matches_ltx_core(refs, layout: str) -> None:
    vocoder = load_vocoder(checkpoint("ltx23", layout))
    assert isinstance(vocoder, VocoderWithBWE) and vocoder.output_sampling_rate == 48000
    mel = mx.array(refs["ltx23.vocoder_in"])
    assert relative_error(vocoder.vocoder(mel), refs["ltx23.base_vocoder_out"]) <= FP32_TOLERANCE
    assert relative_error(vocoder(mel), refs["ltx23.vocoder_out"]) <= FP32_TOLERANCE


def test_bwe_mel_stft_matches_ltx_core(refs) -> None:
    vocoder = load_vocoder(checkpoint("ltx23", "split"))  # split stores the STFT bases as (514, n_fft, 1)
    for wave_key, mel_key in (("ltx23.stft_in", "ltx23.stft_mel"), ("ltx23.base_wave", "ltx23.bwe_mel")):
        wave = refs[wave_key]
        hop = vocoder.config.hop_length
        wave = np.pad(wave, [(0, 0), (0, 0), (0, -wave.shape[-1] % hop)])
        mel = vocoder.mel_stft(mx.array(wave.reshape(2, -1)))  # (C, frames, mels)
        assert relative_error(mel.transpose(0, 2, 1)[None], refs[mel_key]) <= FP32_TOLERANCE


def test_bwe_skip_resampler_matches_ltx_core(refs) -> None:
    """The Hann-windowed sinc resampler on its own (mlx-video-with-audio interpolates linearly here)."""
    vocoder = load_vocoder(checkpoint("ltx23", "unified"))
    np.testing.assert_allclose(np.array(vocoder._skip_taps), refs["resampler.filter"], atol=1e-6)
    signal = mx.array(refs["resampler.input"]).transpose(0, 2, 1)
    out = vocoder.resample(signal).transpose(0, 2, 1)
    assert relative_error(out, refs["resampler.output"]) <= FP32_TOLERANCE


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("version", ["ltx20", "ltx23"])
def test_full_audio_chain_matches_ltx_core(refs, version: str, layout: str) -> None:
    ckpt = checkpoint(version, layout)
    decoder, vocoder = load_audio_decoder(ckpt), load_vocoder(ckpt)
    wave = vocoder(decoder(mx.array(refs[f"{version}.latent"])))
    assert relative_error(wave, refs[f"{version}.wave"]) <= FP32_TOLERANCE


BF16_CASES = [("ltx20", "latent", "wave"), ("ltx23", "latent", "wave"), ("ltx23", "vocoder_in", "vocoder_out")]


@pytest.mark.parametrize(("version", "input_key", "output_key"), BF16_CASES)
def test_bf16_close_to_fp32_reference(refs, version: str, input_key: str, output_key: str) -> None:
    ckpt = checkpoint(version, "unified")
    decoder = load_audio_decoder(ckpt, dtype=mx.bfloat16)
    vocoder = load_vocoder(ckpt, dtype=mx.bfloat16)
    assert decoder.conv_in.conv.weight.dtype == mx.bfloat16
    x = mx.array(refs[f"{version}.{input_key}"]).astype(mx.bfloat16)
    wave = vocoder(decoder(x) if input_key == "latent" else x)
    assert wave.dtype == mx.bfloat16
    assert relative_error(wave, refs[f"{version}.{output_key}"]) <= BF16_TOLERANCE


def test_bwe_vocoder_runs_in_float32_with_bf16_weights(refs) -> None:
    """ltx-core 1.2.0: ``VocoderWithBWE`` computes in float32 even with bf16 weights (cast for the call) and returns the
    mel's dtype. So bf16 weights give exactly what the same weights upcast to float32 give, rounded to bf16."""
    ckpt = checkpoint("ltx23", "unified")
    vocoder = load_vocoder(ckpt, dtype=mx.bfloat16)
    mel = mx.array(refs["ltx23.vocoder_in"]).astype(mx.bfloat16)
    wave = vocoder(mel)
    assert wave.dtype == mx.bfloat16
    assert vocoder.vocoder.conv_pre.weight.dtype == mx.bfloat16, "the call must leave the loaded weights as they were"
    upcast = load_vocoder(ckpt, dtype=mx.bfloat16)
    upcast.update(tree_map(lambda w: w.astype(mx.float32), upcast.parameters()))
    expected = upcast(mel.astype(mx.float32)).astype(mx.bfloat16)
    np.testing.assert_array_equal(np.array(wave.astype(mx.float32)), np.array(expected.astype(mx.float32)))
    # Measured: 0.019 of peak from the float32 reference, against 0.031 computing in bf16 (ltx-core 1.0.0's way).
    bf16_compute = vocoder.waveform(mel).transpose(0, 2, 1)
    reference = refs["ltx23.vocoder_out"]
    assert relative_error(wave, reference) < relative_error(bf16_compute, reference)

"""LoRAs and IC-LoRAs through the loaders, the engine and the front ends, on the built-in tiny model.

The fusion arithmetic itself is checked against ltx-core in test_lora.py, the reference conditioning against
ltx-pipelines in test_conditioning_reference.py; here: streamed == resident with the same LoRAs (same bytes), whole
jobs that write MP4s, refusals before any compute, and what ``inspect`` shows.
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from lora_files import write_lora

from ltx_backend.models.transformer import LTXModel, StreamInput
from ltx_backend.pipeline import sampler as s
from ltx_backend.tiny import write_tiny_model
from ltx_backend.weights.checkpoint import open_checkpoint
from ltx_backend.weights.lora import LoraSpec
from ltx_backend.weights.streaming import load_streamed_transformer
from ltx_backend.weights.transformer import load_transformer


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {"2.0": write_tiny_model(root / "tiny", "2.0"), "2.3": write_tiny_model(root / "tiny-2.3", "2.3")}


@pytest.fixture(scope="module")
def loras(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("loras")
    made = {}
    for version, model in models.items():
        made[version] = write_lora(root / f"style-{version}.safetensors", model, seed=1)
        made[f"{version}-ic"] = write_lora(root / f"ic-{version}.safetensors", model, rank=3, seed=2, every=2,
                                           metadata={"reference_downscale_factor": "2"})  # fmt: skip
    return made


def _inputs(model: LTXModel) -> tuple[StreamInput, StreamInput]:
    c = model.config
    key = iter(mx.random.split(mx.random.key(7), 4))
    sigma = mx.array([0.7])
    video_context = c.caption_channels or c.video_dim
    audio_context = c.caption_channels or c.audio_dim
    video = StreamInput(
        mx.random.normal((1, 12, c.in_channels), key=next(key)), mx.full((1, 12), 0.7), sigma,
        mx.random.normal((1, 16, video_context), key=next(key)), None,
        model.rope(s.video_positions(2, 2, 3, 24.0), "video"),
    )  # fmt: skip
    audio = StreamInput(
        mx.random.normal((1, 5, c.audio_in_channels), key=next(key)), mx.full((1, 5), 0.7), sigma,
        mx.random.normal((1, 16, audio_context), key=next(key)), None, model.rope(s.audio_positions(5), "audio"),
    )  # fmt: skip
    return video, audio


def _bytes(outputs: tuple) -> list[bytes]:
    return [np.array(x).tobytes() for x in outputs]


@pytest.mark.parametrize("version", ["2.0", "2.3"], ids=["2.0 float", "2.3 q4"])
def test_streamed_loras_compute_the_resident_bytes(models, loras, version: str) -> None:
    """Block streaming fuses each block's deltas as it is read (block_transform): the same weights, bit for bit,
    as fusing into the resident model, for float and pre-quantized (requantized) layers, two LoRAs summed."""
    ckpt = open_checkpoint(models[version])
    specs = [LoraSpec(loras[version], 0.7), LoraSpec(loras[f"{version}-ic"], -0.3)]
    resident = load_transformer(ckpt, mx.float32, loras=specs)
    streamed = load_streamed_transformer(ckpt, mx.float32, loras=specs)
    plain = load_transformer(ckpt, mx.float32)
    video, audio = _inputs(resident)
    expected = _bytes(resident(video, audio))
    assert _bytes(streamed(video, audio)) == expected
    assert _bytes(streamed(video, audio)) == expected  # every forward reads (and fuses) the blocks again
    assert _bytes(plain(video, audio)) != expected  # the LoRAs change the output

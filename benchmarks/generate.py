"""Whole-job benchmark: one full-size LTX-2.0 distilled text-to-video+audio generation through the real engine.

    python benchmarks/generate.py                                   # 768x512x121, bf16, Gemma 3 12B
    python benchmarks/generate.py --width 1280 --height 704 --quantize 8

Every model has its real size and config but random weights (no real checkpoint can be downloaded here): the
loaders are swapped for builders of random-weight modules, everything else (tokenisation, the two stages, the
upsampler, tiled decoding, ffmpeg muxing) is the code a user runs. Load time is therefore not representative
(``wall_excluding_load_s`` leaves it out); every other phase is, except that random weights decode to noise,
x264's worst case. So by default (``--content pattern``) every decoded chunk is computed in full and then replaced
by the same frames of ffmpeg's moving testsrc2 pattern, which x264 encodes like real video; ``--content noise``
encodes what the random decoder produced. ``x264_on_test_pattern`` also times the encoder alone on that pattern.
Prints one JSON document: per-phase seconds (each phase's own; all weight loading under ``load``), total, peak
memory.
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import json
import platform
import pstats
import tempfile
import time
from pathlib import Path

import imageio_ffmpeg
import mlx.core as mx
import mlx.nn as nn
import numpy as np
from text_encode import gemma_config  # benchmarks/ is on sys.path when this script runs

from ltx_backend import events
from ltx_backend.media.video import VideoWriter
from ltx_backend.models.audio_vae import AudioDecoder, AudioEncoder, AudioVAEConfig
from ltx_backend.models.gemma3 import Gemma3TextModel
from ltx_backend.models.text_connector import TextEmbeddingsProcessor, TextProcessorConfig
from ltx_backend.models.transformer import LTXModel, TransformerConfig
from ltx_backend.models.upsampler import LatentUpsampler, UpsamplerConfig
from ltx_backend.models.video_vae import LTX2_VAE_SECTION, VideoDecoder, VideoEncoder, VideoVAEConfig
from ltx_backend.models.vocoder import LTX2_VOCODER_SECTION, Vocoder, VocoderConfig
from ltx_backend.pipeline import engine as engine_module
from ltx_backend.pipeline import ltx25_flow, sampler
from ltx_backend.pipeline.request import GenerationRequest
from ltx_backend.pipeline.text import TextEncoder
from ltx_backend.pipeline.tokenizer import PromptTokenizer
from ltx_backend.tiny import write_tiny_model
from ltx_backend.weights.gemma import tokenizer_dir
from ltx_backend.weights.transformer import LTX2_TRANSFORMER_SECTION, quantizable_layer

PROMPT = "A red fox trots through fresh snow at dawn; its paws crunch softly while wind hisses."


def _ready(module: nn.Module, dtype: mx.Dtype | None) -> nn.Module:
    if dtype is not None:
        module.set_dtype(dtype)
    mx.eval(module.parameters())
    return module


def install_random_loaders(tokenizer_root: Path) -> None:
    """Replace the engine's checkpoint loaders with builders of full-size random-weight modules (LTX-2.0 shapes).

    The engine loads the text encoder and its processor through pipeline/ltx25_flow.py (Gemma 3 or 4 by the
    checkpoint's version), everything else through the loaders it imports: both are patched."""
    e = engine_module

    class RandomGemma(TextEncoder):
        def __init__(self, root: Path, dtype: mx.Dtype | None = None) -> None:
            self.root = Path(root)
            self.tokenizer = PromptTokenizer(tokenizer_dir(tokenizer_root))
            self.model = _ready(Gemma3TextModel(gemma_config("12b")), dtype)
            self.config = self.model.config  # as TextEncoder keeps it (the connectors are sized by it)

    def transformer(ckpt, dtype=None, quantize=None, loras=()):
        model = _ready(LTXModel(TransformerConfig.from_section(LTX2_TRANSFORMER_SECTION)), dtype)
        if quantize:
            nn.quantize(model, group_size=64, bits=quantize, class_predicate=quantizable_layer)
        model.fuse_projections()  # as load_transformer does
        return model

    def processor(ckpt, dtype=None, hidden=3840, states=49):
        config = TextProcessorConfig.from_section(LTX2_TRANSFORMER_SECTION, hidden, states)
        return _ready(TextEmbeddingsProcessor(config), dtype)

    vae = VideoVAEConfig.from_config({"vae": LTX2_VAE_SECTION})
    ltx25_flow.TextEncoder = RandomGemma
    ltx25_flow.load_text_processor = processor
    e.load_transformer = transformer
    e.load_upsampler = lambda ckpt, kind="spatial_x2", dtype=None: _ready(LatentUpsampler(UpsamplerConfig()), dtype)
    e.load_video_decoder = lambda ckpt, dtype=None: _ready(VideoDecoder(vae), dtype)
    e.load_video_encoder = lambda ckpt, dtype=None: _ready(VideoEncoder(vae), dtype)
    e.load_audio_encoder = lambda ckpt, dtype=None: _ready(AudioEncoder(AudioVAEConfig.from_config({})), dtype)
    e.load_audio_decoder = lambda ckpt, dtype=None: _ready(AudioDecoder(AudioVAEConfig.from_config({})), dtype)
    e.load_vocoder = lambda ckpt, dtype=None: _ready(Vocoder(VocoderConfig.from_section(LTX2_VOCODER_SECTION)), dtype)


def test_pattern(width: int, height: int, frames: int, fps: float = 24.0) -> np.ndarray:
    """(frames, height, width, 3) uint8 of ffmpeg's moving testsrc2 pattern: content x264 encodes like video."""
    source = imageio_ffmpeg.read_frames(
        f"testsrc2=size={width}x{height}:rate={fps}:duration={frames / fps}", input_params=["-f", "lavfi"]
    )
    next(source)  # metadata
    return np.stack([np.frombuffer(f, np.uint8).reshape(height, width, 3) for f in source][:frames])


def decode_to_pattern(width: int, height: int, frames: int) -> None:
    """Make the engine's decode compute every chunk in full, then hand over the pattern's frames in its place."""
    pattern = mx.array(test_pattern(width, height, frames).astype(np.float32) / 127.5 - 1.0)[None]
    real = engine_module.decode_tiled

    def decode_tiled(*args, **kwargs):
        start = 0
        for chunk in real(*args, **kwargs):
            mx.eval(chunk)
            count = chunk.shape[1]
            yield pattern[:, start : start + count]
            start += count

    engine_module.decode_tiled = decode_tiled


def encode_test_pattern(folder: Path, width: int, height: int, frames: int, fps: float = 24.0) -> dict:
    """x264 alone on the test pattern: seconds to encode the clip the way the engine hands it over (all frames
    after an untiled decode)."""
    clip = test_pattern(width, height, frames, fps)
    path = folder / "pattern.mp4"
    start = time.perf_counter()
    with VideoWriter(path, width, height, fps) as writer:
        writer.write(clip)
    return {"encode_s": round(time.perf_counter() - start, 3), "frames": len(clip), "mp4_bytes": path.stat().st_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--frames", type=int, default=121)
    parser.add_argument("--tiling", default="auto")
    parser.add_argument(
        "--content",
        choices=("pattern", "noise"),
        default="pattern",
        help="what ffmpeg encodes: a moving test pattern (like video) or the random decoder's noise",
    )
    parser.add_argument("--quantize", type=int, choices=(4, 8), default=None)
    parser.add_argument("--runs", type=int, default=2, help="the first run warms up kernels; the last is reported")
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile of the last run (by cumulative time)")
    parser.add_argument(
        "--split-from-tokens",
        type=int,
        default=sampler.SPLIT_BLOCKS_FROM_TOKENS,
        help="stages with this many video tokens or more submit the compiled blocks in halves",
    )
    parser.add_argument("--in-flight", type=int, default=sampler.IN_FLIGHT, help="forward submissions left unfinished")
    args = parser.parse_args()
    sampler.IN_FLIGHT = args.in_flight
    sampler.SPLIT_BLOCKS_FROM_TOKENS = args.split_from_tokens

    with tempfile.TemporaryDirectory() as folder:
        tiny = write_tiny_model(Path(folder) / "tiny")  # a real checkpoint directory for the engine to open
        install_random_loaders(tiny / "text_encoder")
        if args.content == "pattern":
            decode_to_pattern(args.width, args.height, args.frames)
        engine = engine_module.Engine(tiny, quantize=args.quantize)
        runs = []
        for run in range(args.runs):
            request = GenerationRequest(
                prompt=f"{PROMPT} Take {run}.",  # new per run: a cached prompt skips the text encoder
                output_path=str(Path(folder) / f"out{run}.mp4"),
                width=args.width, height=args.height, num_frames=args.frames, seed=run, tiling=args.tiling,
            )  # fmt: skip
            step_times: dict[int, list[float]] = {1: [], 2: []}
            profiler = cProfile.Profile() if args.profile and run == args.runs - 1 else None

            def on_event(event: object, step_times: dict = step_times) -> None:
                if isinstance(event, events.DenoiseStep):
                    step_times[event.stage].append(time.perf_counter())

            start = time.perf_counter()
            if profiler:
                profiler.enable()
            result = engine.generate(request, emit=on_event)
            wall = time.perf_counter() - start
            if profiler:
                profiler.disable()
                with open(args.profile, "w") as stream:
                    pstats.Stats(profiler, stream=stream).sort_stats("cumulative").print_stats(80)
            steps = {f"stage{stage}": [round(b - a, 3) for a, b in itertools.pairwise(times)]
                     for stage, times in step_times.items()}  # fmt: skip
            runs.append({"wall_s": round(wall, 2), "wall_excluding_load_s": round(wall - result.timings["load"], 2),
                         "phases_s": result.timings, "step_s_after_the_first": steps,
                         "peak_memory_gb": result.peak_memory_gb,
                         "mp4_bytes": Path(result.video_path).stat().st_size})  # fmt: skip
        x264 = encode_test_pattern(Path(folder), args.width, args.height, args.frames)
    print(json.dumps({
        "benchmark": "generate", "model": "LTX-2.0 distilled (random weights) + Gemma 3 12B", "device":
        str(mx.default_device()), "machine": platform.machine(), "dtype": str(engine.dtype),
        "quantize": args.quantize, "in_flight": args.in_flight, "split_from_tokens": args.split_from_tokens,
        "size": [args.width, args.height, args.frames],
        "tiling": args.tiling, "content": args.content,
        "note": "load phases build random modules: not representative of checkpoint loading",
        "runs": runs, "x264_on_test_pattern": x264,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()

"""One forward of the full-size LTX-2 audio-video transformer (random weights): seconds, peak memory, TFLOP/s.

    python benchmarks/transformer_forward.py                         # LTX-2.0, bf16, 1536 and 6144 video tokens
    python benchmarks/transformer_forward.py --compile               # blocks through one shared mx.compile trace
    python benchmarks/transformer_forward.py --compile --split-blocks  # each block submitted in two halves
    python benchmarks/transformer_forward.py --version 2.3 --quantize 4
    python benchmarks/transformer_forward.py --backend ltx-core      # the same shapes in ltx-core (PyTorch, CUDA)

The shapes are those of a 768x512x121 two-stage job: 1536 video tokens in stage 1 (16x8x12 latent cells) and
6144 in stage 2 (16x16x24), 126 audio tokens and 1024 text tokens. FLOPs count the matrix products only
(``flops()``: projections, attention scores and values, feed-forward, caption projection), 2 per multiply-add.
The inputs are those the engine passes for an unconditioned job: no text mask (the connectors' registers make
every context token valid) and one timestep for all tokens. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

TEXT_TOKENS, AUDIO_TOKENS = 1024, 126
VIDEO_GRIDS = {1536: (16, 8, 12), 3072: (16, 12, 16), 4096: (16, 16, 16), 6144: (16, 16, 24)}


def section(version: str) -> dict:
    from ltx_backend.weights.transformer import LTX2_TRANSFORMER_SECTION

    if version == "2.0":
        return dict(LTX2_TRANSFORMER_SECTION)
    return {
        **LTX2_TRANSFORMER_SECTION,
        "apply_gated_attention": True, "cross_attention_adaln": True, "caption_proj_before_connector": True,
        "caption_projection_first_linear": False, "caption_projection_second_linear": False,
        "caption_proj_input_norm": False,
    }  # fmt: skip


def flops(cfg: dict, video: int, audio: int = AUDIO_TOKENS, text: int = TEXT_TOKENS) -> float:
    """Matrix-product FLOPs of one forward (2 per multiply-add)."""
    d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    da = cfg["audio_num_attention_heads"] * cfg["audio_attention_head_dim"]
    caption = cfg.get("caption_channels") if not cfg.get("caption_proj_before_connector") else None
    coefficient = 9 if cfg.get("cross_attention_adaln") else 6

    def stream(t: int, dim: int) -> tuple[float, float]:
        # The context reaches the blocks at the stream width (projected before or after the connectors).
        self_attn = 4 * 2 * t * dim * dim + 2 * 2 * t * t * dim
        cross = 2 * 2 * t * dim * dim + 2 * 2 * text * dim * dim + 2 * 2 * t * text * dim
        # Per-token AdaLN: timestep MLP (256 -> dim -> dim) and the modulation linear (dim -> coefficient * dim).
        adaln = 2 * t * (256 * dim + dim * dim) + 2 * t * dim * coefficient * dim
        return self_attn + cross + 2 * 2 * t * dim * 4 * dim, adaln

    a2v = 2 * video * d * da + 2 * 2 * audio * da * da + 2 * 2 * video * audio * da + 2 * video * da * d
    v2a = 2 * audio * da * da + 2 * 2 * video * d * da + 2 * 2 * audio * video * da + 2 * audio * da * da
    (video_block, video_adaln), (audio_block, audio_adaln) = stream(video, d), stream(audio, da)
    total = cfg["num_layers"] * (video_block + audio_block + a2v + v2a) + video_adaln + audio_adaln
    total += 2 * video * cfg["in_channels"] * d * 2 + 2 * audio * cfg["audio_in_channels"] * da * 2
    if caption is not None:  # two-layer caption projection per stream
        total += 2 * text * (caption * d + d * d) + 2 * text * (caption * da + da * da)
    return float(total)


def engine_inputs(
    model,
    count: int,
    rng: np.random.Generator,
    grid: tuple[int, int, int] | None = None,
    context_tokens: int = TEXT_TOKENS,
    audio_tokens: int = AUDIO_TOKENS,
    marked: bool = False,
) -> tuple:
    """(video, audio) ``StreamInput`` of an unconditioned job as the engine passes them: random bf16 latents and
    contexts, one timestep for all tokens, no text mask, RoPE tables for `count` video tokens (laid out as `grid`,
    default ``VIDEO_GRIDS[count]``). `marked`: LTX-2.5's keyframe marker on the first latent frame."""
    import mlx.core as mx

    from ltx_backend.models.rope import audio_positions, video_positions
    from ltx_backend.models.transformer import StreamInput
    from ltx_backend.pipeline.sampler import first_frame_keyframes_mask

    config = model.config

    def stream(tokens: int, channels: int, context_width: int, rope, marker=None) -> StreamInput:
        return StreamInput(
            latent=mx.array(rng.standard_normal((1, tokens, channels)), dtype=mx.bfloat16),
            timesteps=mx.full((1, 1), 0.9, dtype=mx.bfloat16),
            sigma=mx.array([0.9], dtype=mx.bfloat16),
            context=mx.array(rng.standard_normal((1, context_tokens, context_width)), dtype=mx.bfloat16),
            context_mask=None,
            rope=rope,
            keyframes_mask=marker,
        )

    f, h, w = grid or VIDEO_GRIDS[count]
    video_rope = model.rope(video_positions(f, h, w, 24.0), "video", mx.bfloat16)
    audio_rope = model.rope(audio_positions(audio_tokens), "audio", mx.bfloat16)
    marker = first_frame_keyframes_mask(f, h, w) if marked else None
    video = stream(count, config.in_channels, config.caption_channels or config.video_dim, video_rope, marker)
    audio = stream(audio_tokens, config.audio_in_channels, config.caption_channels or config.audio_dim, audio_rope)
    return video, audio


def timed_passes(fn, repeat: int) -> tuple[float, float]:
    """(seconds of the first pass, which compiles and traces; mean seconds of `repeat` passes after it), with MLX's
    peak memory reset between the two, so the caller's ``mx.get_peak_memory()`` is the timed passes' peak."""
    import mlx.core as mx

    start = time.perf_counter()
    mx.eval(fn())
    first = time.perf_counter() - start
    mx.reset_peak_memory()
    start = time.perf_counter()
    for _ in range(repeat):
        mx.eval(fn())
    return first, (time.perf_counter() - start) / repeat


def run_mlx(
    version: str,
    tokens: list[int],
    quantize: int | None,
    repeat: int,
    compiled: bool = False,
    qmm: bool = False,
    submit: tuple[int, int] | None = None,
    split: bool = False,
) -> dict:
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    from ltx_backend.models.quantized_linear import dequantize_large_products
    from ltx_backend.models.transformer import LTXModel, StreamInput, TransformerConfig
    from ltx_backend.pipeline.sampler import IN_FLIGHT, SUBMIT_EVERY_BLOCKS
    from ltx_backend.weights.transformer import quantizable_layer

    every, in_flight = submit or (SUBMIT_EVERY_BLOCKS, IN_FLIGHT)  # by default as the sampler runs it
    cfg = section(version)
    config = TransformerConfig.from_section(cfg)
    model = LTXModel(config)
    model.set_dtype(mx.bfloat16)
    if quantize:
        nn.quantize(model, group_size=64, bits=quantize, class_predicate=quantizable_layer)
    mx.eval(model.parameters())
    model.fuse_projections()  # as load_transformer does
    if quantize and getattr(mx, "cuda", None) and mx.cuda.is_available() and not qmm:  # as the engine does on CUDA
        dequantize_large_products(model)
    weights_gb = sum(v.nbytes for _, v in tree_flatten(model.parameters())) / 1e9
    rng = np.random.default_rng(0)
    results = []
    for count in tokens:
        video, audio = engine_inputs(model, count, rng)
        blocks = model.compiled_blocks(split) if compiled else None

        def forward(video: StreamInput = video, audio: StreamInput = audio, blocks=blocks) -> tuple:
            return model(video, audio, compiled=blocks, eval_every=every, in_flight=in_flight)

        first, seconds = timed_passes(forward, repeat)
        work = flops(cfg, count)
        results.append({
            "video_tokens": count, "seconds": round(seconds, 4), "first_pass_s": round(first, 3),
            "peak_gb": round(mx.get_peak_memory() / 1e9, 2),
            "tflop": round(work / 1e12, 1), "tflop_per_s": round(work / seconds / 1e12, 1),
        })  # fmt: skip
    backend = "ltx-backend (MLX)" + (", compiled blocks" if compiled else "") + (", qmm" if qmm else "")
    return {"backend": backend, "submit_every_blocks": every, "in_flight": in_flight, "split_blocks": split,
            "device": str(mx.default_device()), "mlx": mx.__version__,
            "weights_gb": round(weights_gb, 2), "quantize": quantize, "results": results}  # fmt: skip


def run_ltx_core(version: str, tokens: list[int], repeat: int) -> dict:
    import torch
    from ltx_core.model.transformer.modality import Modality
    from ltx_core.model.transformer.model_configurator import LTXModelConfigurator

    from ltx_backend.models.rope import audio_positions, video_positions

    cfg = section(version)
    full = {**cfg, "dropout": 0.0, "attention_bias": True, "num_vector_embeds": None,
            "activation_fn": "gelu-approximate", "num_embeds_ada_norm": 1000, "use_linear_projection": False,
            "only_cross_attention": False, "cross_attention_norm": True, "double_self_attention": False,
            "upcast_attention": False, "standardization_norm": "rms_norm", "norm_elementwise_affine": False,
            "qk_norm": "rms_norm", "positional_embedding_type": "rope", "use_audio_video_cross_attention": True,
            "share_ff": False, "av_cross_ada_norm": True}  # fmt: skip
    with torch.device("cuda"):
        model = LTXModelConfigurator.from_config({"transformer": full})
    # ltx-core builds some tables (and 2.0's caption projections) uninitialised or on the meta device.
    model = model.to_empty(device="cuda").to(torch.bfloat16).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.02)
    rng = np.random.default_rng(0)
    caption = cfg.get("caption_channels", 3840) if not cfg.get("caption_proj_before_connector") else None
    d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    da = cfg["audio_num_attention_heads"] * cfg["audio_attention_head_dim"]

    def tensor(shape, dtype=torch.bfloat16):
        return torch.from_numpy(rng.standard_normal(shape).astype(np.float32)).to("cuda", dtype)

    results = []
    for count in tokens:
        f, h, w = VIDEO_GRIDS[count]
        sigma = torch.full((1,), 0.9, device="cuda", dtype=torch.bfloat16)
        video = Modality(latent=tensor((1, count, 128)), sigma=sigma,
                         timesteps=torch.full((1, count), 0.9, device="cuda", dtype=torch.bfloat16),
                         positions=torch.from_numpy(video_positions(f, h, w, 24.0)).to("cuda", torch.bfloat16),
                         context=tensor((1, TEXT_TOKENS, caption or d)))  # fmt: skip
        audio = Modality(latent=tensor((1, AUDIO_TOKENS, 128)), sigma=sigma,
                         timesteps=torch.full((1, AUDIO_TOKENS), 0.9, device="cuda", dtype=torch.bfloat16),
                         positions=torch.from_numpy(audio_positions(AUDIO_TOKENS)).to("cuda", torch.bfloat16),
                         context=tensor((1, TEXT_TOKENS, caption or da)))  # fmt: skip
        with torch.no_grad():
            model(video, audio, None)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            for _ in range(repeat):
                model(video, audio, None)
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / repeat
        work = flops(cfg, count)
        results.append({
            "video_tokens": count, "seconds": round(seconds, 4),
            "peak_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2),
            "tflop": round(work / 1e12, 1), "tflop_per_s": round(work / seconds / 1e12, 1),
        })  # fmt: skip
    return {"backend": "ltx-core (PyTorch)", "torch": torch.__version__, "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", choices=["2.0", "2.3"], default="2.0")
    parser.add_argument("--tokens", default="1536,6144", help="video token counts among 1536, 3072, 4096, 6144")
    parser.add_argument("--quantize", type=int, choices=[4, 8], default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--backend", choices=["mlx", "ltx-core"], default="mlx")
    parser.add_argument("--compile", action="store_true", help="run the blocks through one mx.compile trace")
    parser.add_argument(
        "--split-blocks",
        action="store_true",
        help="compiled blocks in two halves, each submitted on its own (--submit counts halves then)",
    )
    parser.add_argument("--qmm", action="store_true", help="quantized: keep MLX's quantized matmul on CUDA too")
    parser.add_argument("--submit", metavar="EVERY:IN_FLIGHT", help="submit every N blocks, K left unfinished (0: "
                        "unbounded); default: the sampler's")  # fmt: skip
    args = parser.parse_args()
    tokens = [int(t) for t in args.tokens.split(",")]
    if args.backend == "mlx":
        submit = tuple(int(n) for n in args.submit.split(":")) if args.submit else None
        report = run_mlx(
            args.version, tokens, args.quantize, args.repeat, args.compile, args.qmm, submit, args.split_blocks
        )
    else:
        report = run_ltx_core(args.version, tokens, args.repeat)
    report.update(benchmark="transformer forward", model=f"LTX-{args.version}, random weights, bf16",
                  audio_tokens=AUDIO_TOKENS, text_tokens=TEXT_TOKENS, peak_reference_tflops=790)  # fmt: skip
    for row in report["results"]:
        row["mfu"] = round(row["tflop_per_s"] / 790, 3)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

"""The one entry point every front end uses: a request, a cancel token and an event sink in, an MP4 out.

Every mode and pipeline is a list of stages (pipeline/stage_plan.py, from pipeline/modes.py) run by the same code:
e.g. two-stage sampling as ltx-pipelines does it: stage 1 at half resolution, x2 latent upsample, re-noise to the
first stage-2 sigma, stage 2 at full resolution, video and audio latents denoised together; a2v holds the encoded
soundtrack fixed; retake / extend keep the encoded source outside their window through the denoise mask. Memory is
planned by phase: the text encoder is freed before denoising, the transformer before decoding; decoding streams
video chunks straight into ffmpeg.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import mlx.core as mx

from ltx_backend import events
from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.events import Emit, Phase
from ltx_backend.media.audio import write_wav
from ltx_backend.media.audio_in import DecodedAudio
from ltx_backend.media.image import conditioning_frame
from ltx_backend.media.outputs import JobFolder
from ltx_backend.media.video import VideoWriter, to_uint8
from ltx_backend.models.quantized_linear import dequantize_large_products
from ltx_backend.models.upsampler import upsample_latent
from ltx_backend.models.vae_tiling import decode_tiled, tiling_for
from ltx_backend.pipeline import memory
from ltx_backend.pipeline import sampler as s
from ltx_backend.pipeline import stage_plan as sp
from ltx_backend.pipeline.audio import decode_audio, fit_to_duration
from ltx_backend.pipeline.request import (
    DEFAULT_NEGATIVE_PROMPT,
    SOURCE_MODES,
    GenerationRequest,
    ignored_options,
    validate,
)
from ltx_backend.pipeline.source import encode_soundtrack, encode_source, read_soundtrack
from ltx_backend.pipeline.text import TextEncoder, enhance_or_keep
from ltx_backend.weights.audio import load_audio_decoder, load_audio_encoder, load_vocoder
from ltx_backend.weights.checkpoint import Checkpoint, Layout, open_checkpoint
from ltx_backend.weights.resolve import resolve_model
from ltx_backend.weights.streaming import load_streamed_transformer
from ltx_backend.weights.transformer import load_text_processor, load_transformer
from ltx_backend.weights.video import load_upsampler, load_video_decoder, load_video_encoder

log = logging.getLogger(__name__)
DEFAULT_TEXT_ENCODER = "mlx-community/gemma-3-12b-it-bf16"
STG_BLOCK = {"2.0": 29, "2.3": 28}
STAGE_PHASES = {1: Phase.STAGE1, 2: Phase.STAGE2}


class Cancelled(Exception):
    """The job was cancelled; nothing was written at the output path."""


class CancelToken:
    """Set from any thread; the engine checks it between denoising steps and between decoded chunks."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled()


def checkpoint_variant(ckpt: Checkpoint) -> str:
    """``distilled`` or ``dev``, from what the checkpoint says about itself (never from a repo name)."""
    declared = ckpt.split_manifest.get("variant") or ckpt.model_info.get("variant")
    if declared in ("distilled", "dev"):
        return declared
    if ckpt.layout is Layout.OFFICIAL:
        name = ckpt.files[0].path.name
        return "dev" if "dev" in name and "distilled" not in name else "distilled"
    return "distilled"  # the MLX conversions in circulation are all of the distilled model


def model_version(ckpt: Checkpoint) -> str:
    version = str(ckpt.model_info.get("model_version") or ckpt.split_manifest.get("model_version") or "")
    if version.startswith("2.3") or ckpt.section("transformer").get("cross_attention_adaln"):
        return "2.3"
    return "2.0"


@dataclass
class Timer:
    """Seconds per phase, each phase's own: time spent in a nested phase or in loading weights (``loading``) is
    counted there, so the timings add up to the job's wall time and ``load`` holds all weight loading."""

    timings: dict[str, float]
    emit: Emit
    _nested: list[float] = field(default_factory=list)  # seconds of finished children, per open measurement

    @contextmanager
    def _measure(self, key: str) -> Iterator[list[float]]:
        self._nested.append(0.0)
        start = time.perf_counter()
        elapsed = [0.0]
        try:
            yield elapsed
        finally:
            elapsed[0] = time.perf_counter() - start
            children = self._nested.pop()
            self.timings[key] = round(self.timings.get(key, 0.0) + elapsed[0] - children, 4)
            if self._nested:
                self._nested[-1] += elapsed[0]

    @contextmanager
    def phase(self, phase: Phase, detail: str = "") -> Iterator[None]:
        self.emit(events.PhaseStarted(phase, detail))
        with self._measure(phase.value) as elapsed:
            yield
        self.emit(events.PhaseFinished(phase, round(elapsed[0], 4)))

    @contextmanager
    def loading(self) -> Iterator[None]:
        """Weights loaded inside another phase: counted under ``load``, without events of their own."""
        with self._measure(Phase.LOAD.value):
            yield


def _compile_blocks() -> bool:
    """GPUs run the transformer blocks through one shared mx.compile trace (see ``CompiledBlocks``). CPUs stay
    eager: MLX compiles CPU kernels with the system C++ compiler, which a user's machine may lack."""
    return "gpu" in str(mx.default_device())


def _dequantize_large_products() -> bool:
    """On CUDA, quantized layers multiply many rows through dequantized weights (models/quantized_linear.py:
    MLX's CUDA quantized matmul is ~4x slower than its bf16 GEMM at these sizes). Metal keeps its qmm kernels,
    which this was not measured against."""
    cuda = getattr(mx, "cuda", None)
    return cuda is not None and cuda.is_available() and "gpu" in str(mx.default_device())


def _free() -> None:
    """Return the memory of the models just dropped to the device. No garbage collection is needed (0.27 s per
    call on the GPU host, six per job): no reference cycle holds model weights, which tests/test_generate.py checks."""
    mx.clear_cache()


class Engine:
    """Generates videos with one LTX-2 checkpoint and one Gemma 3 text encoder."""

    def __init__(
        self,
        model: str | Path,
        text_encoder: str | Path | None = None,
        dtype: mx.Dtype | None = None,
        quantize: int | None = None,
    ) -> None:
        self.checkpoint = open_checkpoint(resolve_model(str(model)))
        bundled = self.checkpoint.root / "text_encoder"
        if text_encoder is None and bundled.is_dir():
            text_encoder = bundled
        self.text_encoder_root = resolve_model(str(text_encoder or DEFAULT_TEXT_ENCODER))
        # bf16 where there is a GPU; float32 on CPUs, where MLX's bf16 kernels are slower than float32 ones.
        self.dtype = dtype or (mx.bfloat16 if "gpu" in str(mx.default_device()) else mx.float32)
        self.quantize = quantize
        self.variant = checkpoint_variant(self.checkpoint)
        self.version = model_version(self.checkpoint)

    # --- the job ----------------------------------------------------------------------------------------------

    def generate(
        self, request: GenerationRequest, cancel: CancelToken | None = None, emit: Emit = events.ignore
    ) -> events.Result:
        cancel = cancel or CancelToken()
        request = validate(request)
        for warning in request.warnings:
            emit(events.Warning(warning))
        for warning in ignored_options(request, self.variant, self.quantize, self.checkpoint.quantization):
            emit(events.Warning(warning))
        # The planner picks resident or streamed transformer and the decode's tiling, or refuses the job before
        # loading anything, naming what would fit.
        choice = memory.choose(
            self.checkpoint, self.text_encoder_root, request, self.dtype, self.quantize, memory.available_memory()
        )
        emit(choice.event())
        request = replace(request, tiling=choice.tiling)
        if choice.streaming and self.quantize is not None and not self._prequantized:
            emit(events.Warning(f"--quantize {self.quantize} applies to resident weights: streamed blocks are "
                                "used as stored"))  # fmt: skip
        mx.reset_peak_memory()
        timer = Timer({}, emit)
        keys = iter(mx.random.split(mx.random.key(request.seed), 8))

        prompt, contexts, negative = self._encode_text(request, timer, emit, cancel)
        cancel.check()
        images = self._encode_images(request, timer)
        cancel.check()
        encoded, soundtrack = self._encode_media(request, images, timer)
        cancel.check()
        video_latent, audio_latent = self._denoise(
            request, encoded, contexts, negative, keys, timer, emit, cancel, choice.streaming
        )
        del encoded, images
        audio_path = self._decode(request, video_latent, audio_latent, next(keys), timer, cancel, emit, soundtrack)

        return events.Result(
            video_path=request.output_path,
            audio_path=audio_path,
            seed=request.seed,
            width=request.width,
            height=request.height,
            num_frames=request.num_frames,
            fps=request.fps,
            has_audio=request.audio,
            sampler=self.variant,
            steps=tuple(len(stage.sigmas) - 1 for stage in sp.stage_layout(request, self.variant, self.version)),
            prompt=prompt,
            timings=timer.timings,
            peak_memory_gb=round(mx.get_peak_memory() / 1e9, 3),
        )

    # --- phases -----------------------------------------------------------------------------------------------

    def _encode_text(self, request: GenerationRequest, timer: Timer, emit: Emit, cancel: CancelToken):
        prompt = request.prompt
        with timer.phase(Phase.TEXT_ENCODING):
            with timer.loading():
                encoder = TextEncoder(self.text_encoder_root, self.dtype)
            warn = lambda message: emit(events.Warning(message))  # noqa: E731
            if request.enhance_prompt:
                with timer.phase(Phase.PROMPT_ENHANCEMENT):
                    prompt = enhance_or_keep(encoder, prompt, warn, bool(request.keyframes), request.seed % 2**32)
                emit(events.EnhancedPrompt(prompt))
            encoded = [encoder.encode(prompt, check=cancel.check, warn=warn)]
            if self.variant == "dev":
                negative_prompt = request.negative_prompt or DEFAULT_NEGATIVE_PROMPT
                encoded.append(encoder.encode(negative_prompt, check=cancel.check, warn=warn))
            hidden_size, states = encoder.hidden_size, encoder.num_states
            encoder.release()
            with timer.loading():
                processor = load_text_processor(self.checkpoint, self.dtype, hidden_size, states)
            contexts = [processor(e.hidden_states.astype(self.dtype), e.attention_mask) for e in encoded]
            mx.eval(contexts)
            del processor, encoded
            _free()
        negative = contexts[1][:2] if len(contexts) > 1 else None
        return prompt, contexts[0][:2], negative

    def _encode_images(self, request: GenerationRequest, timer: Timer) -> dict[tuple[int, int], list[mx.array]]:
        """Every keyframe encoded at each stage's size: {(height, width): [latent per keyframe]}."""
        if not request.keyframes:
            return {}
        encoded: dict[tuple[int, int], list[mx.array]] = {}
        layout = sp.stage_layout(request, self.variant, self.version)
        sizes = dict.fromkeys((int(request.height * st.scale), int(request.width * st.scale)) for st in layout)
        with timer.phase(Phase.IMAGE_ENCODING):
            with timer.loading():
                encoder = load_video_encoder(self.checkpoint, self.dtype)
            for size in sizes:
                latents = []
                for keyframe in request.keyframes:
                    pixels = mx.array(conditioning_frame(keyframe.path, *size)).astype(self.dtype)
                    latents.append(encoder(pixels))
                mx.eval(latents)
                encoded[size] = latents
            del encoder
            _free()
        return encoded

    def _encode_media(self, request: GenerationRequest, images, timer: Timer):
        """a2v: the soundtrack read and encoded (the waveform is kept: the MP4 carries it); retake / extend: the source
        clip's frames and sound encoded. (stage_plan.Encoded, soundtrack or None)."""
        encoded = sp.Encoded(images)
        if request.mode not in ("a2v", *SOURCE_MODES):
            return encoded, None
        soundtrack = None
        with timer.phase(Phase.SOURCE_ENCODING, "soundtrack" if request.mode == "a2v" else "source clip"):
            with timer.loading():
                audio_encoder = load_audio_encoder(self.checkpoint) if request.audio else None
            if request.mode == "a2v":
                soundtrack = read_soundtrack(request.audio_input_path, request.audio_start, request.num_frames,
                                             request.fps)  # fmt: skip
                latent = encode_soundtrack(soundtrack, audio_encoder, request.num_frames, request.fps)
                mx.eval(latent)
                encoded = replace(encoded, soundtrack=latent)
            else:
                with timer.loading():
                    video_encoder = load_video_encoder(self.checkpoint, self.dtype)
                source = encode_source(request.source_path, video_encoder, audio_encoder, request.height,
                                       request.width, max_frames=request.source_frames)  # fmt: skip
                mx.eval(source.video_latent, *([] if source.audio_latent is None else [source.audio_latent]))
                if source.frames != request.source_frames:  # the file changed since it was validated
                    raise LtxError(ErrorCode.MEDIA_TOO_SHORT, f"{request.source_path} now has {source.frames} usable "
                                   f"frames, not {request.source_frames}", "Keep the source unchanged while the job "
                                   "runs.", path=request.source_path, field="source_path")  # fmt: skip
                encoded = replace(encoded, source=source)
                del video_encoder
            del audio_encoder
            _free()
        return encoded, soundtrack

    @property
    def _prequantized(self) -> bool:
        return bool(self.checkpoint.component("transformer").quantized_paths)

    def _load_transformer(self, streaming: bool):
        if streaming:  # LoRA hook: weights/lora.py passes block_transform= to fuse its deltas per block
            return load_streamed_transformer(self.checkpoint, self.dtype)
        return load_transformer(self.checkpoint, self.dtype, self.quantize)

    def _denoise(
        self, request, encoded: sp.Encoded, contexts, negative, keys, timer: Timer, emit: Emit, cancel: CancelToken,
        streaming=False,
    ):  # fmt: skip
        """Run the job's stages in order: each builds its states (from the previous stage's output, upsampled where
        it refines one), applies its conditioning, noises them and runs its loop with its denoiser."""
        dtype = self.dtype
        with timer.phase(Phase.LOAD, "transformer"):  # the compat shim keys its log line on this detail
            transformer = self._load_transformer(streaming)
            if _dequantize_large_products():
                dequantize_large_products(transformer)
        config = transformer.config
        audio_channels = config.audio_in_channels
        stg_block = min(STG_BLOCK[self.version], config.num_layers - 1)
        plans = sp.plan_stages(request, self.variant, self.version, stg_block, encoded, config.in_channels,
                               audio_channels, dtype)  # fmt: skip

        def step_events(stage: int) -> Callable[[int, int], None]:
            def on_step(step: int, total: int) -> None:
                emit(events.DenoiseStep(stage, step, total))
                cancel.check()

            return on_step

        def noised(state: s.LatentState, key: mx.array, scale: float = 1.0) -> s.LatentState:
            return s.add_noise(state, mx.random.normal(state.latent.shape, key=key), scale)

        video_latent = audio_latent = None
        for plan in plans:
            if plan.stage.upsample_before:
                video_latent = self._upsample(video_latent, timer)
            with timer.phase(STAGE_PHASES[plan.number]):
                video = plan.video_state(video_latent)
                for condition in plan.video_conditioning:
                    video = condition(video)
                video = noised(video, next(keys), plan.stage.noise_scale)
                audio_key = next(keys)  # drawn with or without audio: the same seed gives the same video
                audio = plan.audio_state(audio_latent)
                if audio is not None:
                    audio = noised(audio, audio_key, plan.stage.noise_scale)
                video_context, audio_context = contexts if audio is not None else (contexts[0], None)
                stage = s.StageInputs.build(transformer, video, audio, video_context, audio_context, dtype,
                                            compiled=_compile_blocks())  # fmt: skip
                denoise = self._denoiser(plan, stage, negative)
                loop = sp.LOOPS[plan.stage.stepper]
                video, audio = loop(plan.stage.sigmas, video, audio, denoise, step_events(plan.number), request.seed)
                del stage, denoise
            video_latent = s.tokens_to_video(video.output_latent, *plan.latent_size)
            audio_latent = None if audio is None else s.tokens_to_audio(audio.output_latent, audio_channels // 16)
        del transformer
        _free()
        return video_latent, audio_latent

    def _upsample(self, low_res: mx.array, timer: Timer) -> mx.array:
        """The x2 spatial upsample between the stages (in the latent space, with the decoder's channel statistics)."""
        with timer.phase(Phase.UPSAMPLE):
            with timer.loading():
                upsampler = load_upsampler(self.checkpoint, "spatial_x2", self.dtype)
                statistics = load_video_decoder(self.checkpoint, self.dtype).per_channel_statistics
            high_res = upsample_latent(low_res.astype(self.dtype), upsampler, statistics)
            mx.eval(high_res)
            del upsampler, statistics
            _free()
        return high_res

    def _denoiser(self, plan: sp.StagePlan, stage: s.StageInputs, negative) -> s.DenoiseFn:
        if plan.guidance is None:
            return s.simple_denoiser(stage)
        video_params, audio_params = plan.guidance
        negative_audio = negative[1] if plan.negative_audio else None  # a2v: the positive context in both passes
        return s.guided_denoiser(stage, negative[0], negative_audio, video_params, audio_params)

    def decode_tiling(self, request: GenerationRequest) -> str:
        """The tiling mode the video decode uses: the request's, except that ``auto`` decodes the whole video at
        once when that fits comfortably in the memory available now (else it tiles by size, as generate_av)."""
        tiles = request.tiling == "auto" and tiling_for("auto", request.height, request.width, request.num_frames)
        if tiles and memory.untiled_decode_fits(self.checkpoint, request, self.dtype, memory.available_memory()):
            return "none"
        return request.tiling

    def _decode(
        self, request, video_latent, audio_latent, noise_key, timer: Timer, cancel: CancelToken, emit: Emit,
        soundtrack: DecodedAudio | None = None,
    ):  # fmt: skip
        """Audio first (small), then video streamed into ffmpeg with the audio muxed in the same pass; both files
        are written in the job's temporary folder and committed together (media/outputs.py). a2v muxes the
        `soundtrack` it was given, as read (not a VAE re-decode, as ltx-pipelines writes it; not peak-normalised).

        Both phases announce the video's tiling mode (``tiling <mode>``): the compat shim prints it first."""
        audio_path = None
        mode = self.decode_tiling(request)  # every other model is freed by now
        detail = f"tiling {mode}"

        def on_tile(fraction: float) -> None:
            emit(events.DecodeProgress(round(fraction, 4)))
            cancel.check()

        with JobFolder(request.output_path) as folder:
            wav = None
            if soundtrack is not None:
                seconds = request.num_frames / request.fps
                wave = fit_to_duration(soundtrack.waveform, soundtrack.sample_rate, seconds)
                wav = write_wav(folder.path("a.wav"), wave, soundtrack.sample_rate, normalize=False)
            elif audio_latent is not None:
                with timer.phase(Phase.AUDIO_DECODE, detail):
                    with timer.loading():
                        decoder, vocoder = load_audio_decoder(self.checkpoint), load_vocoder(self.checkpoint)
                    wave, rate = decode_audio(audio_latent, decoder, vocoder)
                    wave = fit_to_duration(wave, rate, request.num_frames / request.fps)
                    del decoder, vocoder
                    _free()
                    wav = write_wav(folder.path("a.wav"), wave, rate)
            cancel.check()
            with timer.phase(Phase.VIDEO_DECODE, detail):
                with timer.loading():
                    decoder = load_video_decoder(self.checkpoint, self.dtype)
                tiling = tiling_for(mode, request.height, request.width, request.num_frames)
                latent = video_latent.astype(self.dtype).transpose(0, 2, 3, 4, 1)
                noise = None
                if decoder.config.timestep_conditioning:  # the decode noise comes from the job's seed
                    noise = mx.random.normal(latent.shape, key=noise_key).astype(self.dtype)
                video = folder.path("v.mp4")
                size = (request.width, request.height, request.fps)
                with VideoWriter(video, *size, wav, atomic=False, check=cancel.check) as writer:
                    for chunk in decode_tiled(decoder, latent, tiling, noise=noise, progress=on_tile):
                        cancel.check()
                        writer.write(to_uint8(chunk[0]))
                del decoder
                _free()
            outputs = {video: Path(request.output_path)}
            if wav is not None and request.audio_output_path:
                outputs[wav] = Path(request.audio_output_path)
                audio_path = str(Path(request.audio_output_path))
            cancel.check()
            folder.commit(outputs)  # both files or neither
        return audio_path


def generate(model: str | Path, request: GenerationRequest, **engine_options) -> events.Result:
    """Convenience: build an engine and run one request."""
    return Engine(model, **engine_options).generate(request)

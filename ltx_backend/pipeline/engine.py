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
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import mlx.core as mx

from ltx_backend import events
from ltx_backend.device import cuda_gpu
from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.events import Emit, Phase
from ltx_backend.media.audio import write_wav
from ltx_backend.media.audio_in import DecodedAudio
from ltx_backend.media.encoders import VideoQuality
from ltx_backend.media.image import conditioning_frame
from ltx_backend.media.outputs import JobFolder
from ltx_backend.media.video import AacTrack, VideoWriter, mux_audio, uint8_pieces
from ltx_backend.models.quantized_linear import dequantize_large_products
from ltx_backend.models.upsampler import upsample_latent
from ltx_backend.models.vae_tiling import decode_tiled, tiling_for
from ltx_backend.pipeline import loras as lora_stages
from ltx_backend.pipeline import ltx25_flow, memory
from ltx_backend.pipeline import resident as r
from ltx_backend.pipeline import sampler as s
from ltx_backend.pipeline import stage_plan as sp
from ltx_backend.pipeline.audio import decode_audio, fit_to_duration
from ltx_backend.pipeline.preview import Previewer, PreviewOptions
from ltx_backend.pipeline.prompt_cache import EncodedText, PromptCache
from ltx_backend.pipeline.request import (
    DEFAULT_NEGATIVE_PROMPT,
    SOURCE_MODES,
    GenerationRequest,
    ignored_options,
    validate,
)
from ltx_backend.pipeline.source import encode_soundtrack, encode_source, read_soundtrack
from ltx_backend.pipeline.text import enhance_or_keep
from ltx_backend.weights.audio import load_audio_decoder, load_audio_encoder, load_vocoder
from ltx_backend.weights.checkpoint import Checkpoint, Layout, open_checkpoint
from ltx_backend.weights.lora import LoraSpec, resident_key
from ltx_backend.weights.resolve import resolve_model
from ltx_backend.weights.streaming import load_streamed_transformer
from ltx_backend.weights.transformer import load_transformer
from ltx_backend.weights.video import load_upsampler, load_video_decoder, load_video_encoder

log = logging.getLogger(__name__)
DEFAULT_TEXT_ENCODER = "mlx-community/gemma-3-12b-it-bf16"
STG_BLOCK = {"2.0": 29, "2.3": 28, "2.5": 28}
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
    if ltx25_flow.is_ltx25(ckpt):
        return "2.5"
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
    def part(self, key: str) -> Iterator[None]:
        """Work inside a phase that is reported on its own (``preview``), without events."""
        with self._measure(key):
            yield

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
    return cuda_gpu()


def _at_longest(request: GenerationRequest) -> GenerationRequest:
    """The request as memory is planned for it: an LTX-2.5 job without num_frames at the longest length its
    duration head may choose."""
    return request if request.num_frames else replace(request, num_frames=ltx25_flow.longest_frames(request))


class Engine:
    """Generates videos with one LTX-2 checkpoint and its text encoder (Gemma 3; Gemma 4 for LTX-2.5)."""

    def __init__(
        self,
        model: str | Path,
        text_encoder: str | Path | None = None,
        dtype: mx.Dtype | None = None,
        quantize: int | None = None,
        residency: str = "none",  # a session of one job keeps nothing; `serve` and batches pass "auto"
        parallel: object | None = None,
        loras: Sequence[LoraSpec] = (),
        distilled_lora: LoraSpec | None = None,
    ) -> None:
        self.parallel = parallel  # a parallel.run.RankRole when this engine is one rank of several
        self.checkpoint = open_checkpoint(resolve_model(str(model)))
        self.text_encoder_root = self._text_encoder_root(text_encoder)
        # bf16 where there is a GPU; float32 on CPUs, where MLX's bf16 kernels are slower than float32 ones.
        self.dtype = dtype or (mx.bfloat16 if "gpu" in str(mx.default_device()) else mx.float32)
        self.quantize = quantize
        self.variant = checkpoint_variant(self.checkpoint)
        self.version = model_version(self.checkpoint)
        # Fused into the transformer's weights (stage 2 may carry another set: pipeline/loras.py); checked now, from
        # the headers, so a LoRA for another model is refused before anything is loaded. A 2.5 dev release brings
        # its own distilled LoRA.
        distilled_lora = distilled_lora or ltx25_flow.bundled_distilled_lora(self.checkpoint, self.variant)
        lora_stages.check_loras_fit(self.checkpoint, loras, distilled_lora)
        self.loras, self.distilled_lora = tuple(loras), distilled_lora
        # The session's state: loaded components (kept between jobs as the planner allows) and encoded prompts.
        self.models = r.ResidentSet(residency)
        self.prompts = PromptCache()
        self._previewer: Previewer | None = None  # the running job's, when it asked for previews

    def _text_encoder_root(self, text_encoder: str | Path | None) -> Path:
        """The text encoder asked for, else the checkpoint's own (a ``text_encoder/`` folder, or the file of an
        LTX-2.5 release), else the default Gemma 3; checked to belong to the model before anything loads."""
        bundled = self.checkpoint.root / "text_encoder"
        if text_encoder is None and bundled.is_dir():
            text_encoder = bundled
        text_encoder = text_encoder or ltx25_flow.bundled_text_encoder(self.checkpoint)
        root = resolve_model(str(text_encoder or DEFAULT_TEXT_ENCODER))
        ltx25_flow.check_pairing(self.checkpoint, root)
        return root

    def reconfigure(
        self,
        text_encoder: str | Path | None = None,
        quantize: int | None = None,
        loras: Sequence[LoraSpec] = (),
        distilled_lora: LoraSpec | None = None,
    ) -> None:
        """Another text encoder, transformer quantization or LoRAs for the same checkpoint: the resident components
        are keyed on these, so only the ones they change are loaded again (the others stay). Nothing changes when
        a LoRA does not fit."""
        distilled_lora = distilled_lora or ltx25_flow.bundled_distilled_lora(self.checkpoint, self.variant)
        lora_stages.check_loras_fit(self.checkpoint, loras, distilled_lora)
        self.text_encoder_root = self._text_encoder_root(text_encoder)
        self.quantize = quantize
        self.loras, self.distilled_lora = tuple(loras), distilled_lora

    # --- the resident set -------------------------------------------------------------------------------------

    def _borrow(self, name: str, extra: tuple = (), wait: bool = True):
        """A component from the session's resident set, loaded now if it is not resident (under its key)."""
        root, dtype = str(self.checkpoint.root), str(self.dtype)
        # the transformer's extra: (streaming, the streamed blocks held once read, the stage's LoRAs)
        streaming, kept, loras = False, 0, self.loras
        if name == r.TRANSFORMER:
            streaming, kept, loras = extra or (streaming, kept, loras)
            extra = (streaming, kept, resident_key(loras))  # LoRA files by identity, and strengths
        loaders = {
            r.TEXT_ENCODER: (
                lambda: ltx25_flow.text_encoder(self.checkpoint, self.text_encoder_root, self.dtype),
                (str(self.text_encoder_root),),
            ),
            # extra: ltx25_flow.processor_spec of the encoder whose states it reads
            r.TEXT_PROCESSOR: (lambda: ltx25_flow.text_processor(self.checkpoint, self.dtype, *extra), (root, *extra)),
            r.VIDEO_ENCODER: (lambda: load_video_encoder(self.checkpoint, self.dtype), (root,)),
            r.AUDIO_ENCODER: (lambda: load_audio_encoder(self.checkpoint), (root,)),
            # A streamed transformer is another component than a resident one; each set of LoRAs another too.
            r.TRANSFORMER: (lambda: self._load_transformer(streaming, loras, kept), (root, self.quantize, *extra)),
            r.UPSAMPLER: (lambda: load_upsampler(self.checkpoint, "spatial_x2", self.dtype), (root,)),
            r.VIDEO_DECODER: (lambda: load_video_decoder(self.checkpoint, self.dtype), (root,)),
            r.AUDIO_DECODER: (lambda: load_audio_decoder(self.checkpoint), (root,)),
            r.VOCODER: (lambda: load_vocoder(self.checkpoint), (root,)),
        }
        load, key = loaders[name]
        return self.models.borrow(name, (*key, dtype), load, wait)

    def _load_transformer(self, streaming: bool = False, loras: Sequence[LoraSpec] = (), kept_blocks: int = 0):
        if streaming:  # each block's LoRA deltas are fused as the block is read
            transformer = load_streamed_transformer(self.checkpoint, self.dtype, loras=loras, kept_blocks=kept_blocks)
        else:
            transformer = load_transformer(self.checkpoint, self.dtype, self.quantize, loras=loras)
        if _dequantize_large_products():
            dequantize_large_products(transformer)
        if self.parallel is not None:  # the resident transformer is this rank's shard
            transformer = self.parallel.prepare(transformer)
        return transformer

    def choose_memory(self, request: GenerationRequest) -> memory.MemoryChoice:
        """The planner's choice for `request` in the session's budget (free memory and what it holds), or the
        refusal naming what would fit."""
        memory.fit_mlx_limit()  # MLX releases its cache before the device refuses (CUDA)
        budget = memory.session_budget(self.models.nbytes)
        per_rank = None if self.parallel is None else (lambda plan: self.parallel.plan(plan, self.checkpoint))
        return memory.choose(
            self.checkpoint, self.text_encoder_root, request, self.dtype, self.quantize, budget, per_rank
        )

    def plan_residency(
        self, request: GenerationRequest, choice: memory.MemoryChoice | None = None
    ) -> memory.MemoryPlan:
        """Decide what stays resident after a job the planner accepted (`choice`, made now when not given)."""
        choice = choice or self.choose_memory(request)
        budget = memory.session_budget(self.models.nbytes)
        plan = choice.plan
        sizes = memory.component_bytes(self.checkpoint, self.text_encoder_root, self.dtype, self.quantize)
        used = memory.used_components(plan) | set(self.models.names())
        decoding = replace(request, tiling=self.decode_tiling(replace(request, tiling=choice.tiling)))
        if decoding.tiling != choice.tiling:  # what stays resident beside that decode
            streamed = (choice.streaming, choice.kept_blocks)
            plan = memory.estimate(
                self.checkpoint, self.text_encoder_root, decoding, self.dtype, self.quantize, *streamed
            )
        self.models.plan(memory.plan_residency(plan, sizes, budget, used))
        return plan

    def preload(self, request: GenerationRequest | None = None) -> list[str]:
        """Read now what the planner keeps resident for `request` (default: the default 768x512x121 job), so
        the first job does not pay for it. Returns the components loaded."""
        nominal = GenerationRequest(prompt="preload", output_path=str(Path(tempfile.gettempdir()) / "preload.mp4"))
        request = ltx25_flow.plan_frames(self.checkpoint, validate(request or nominal))
        self.plan_residency(_at_longest(request))
        shapes = {r.TEXT_PROCESSOR: ltx25_flow.processor_spec_of(self.checkpoint, Path(self.text_encoder_root))}
        loaded = []
        for name in sorted(self.models.keep - {r.VIDEO_ENCODER, r.AUDIO_ENCODER}):  # they serve some modes only
            # Each component's reads start before the next one is built: building overlaps reading.
            self._borrow(name, shapes.get(name, ()), wait=False)
            loaded.append(name)
        mx.eval([array for name in loaded for array in r.arrays(self._borrow(name, shapes.get(name, ())))])
        for name in loaded:
            self.models.give_back(name)
        return loaded

    def unload(self) -> None:
        """Free everything the session holds: the resident components and the cached prompts."""
        self.models.clear()
        self.prompts.clear()

    def prompt_key(self, request: GenerationRequest) -> tuple:
        """Everything the text phase's output depends on (enhancement samples with the job's seed)."""
        negative = (request.negative_prompt or DEFAULT_NEGATIVE_PROMPT) if self.variant == "dev" else None
        enhanced = (request.seed, bool(request.keyframes)) if request.enhance_prompt else None
        return (request.prompt, negative, enhanced, str(self.text_encoder_root), str(self.checkpoint.root),
                str(self.dtype))  # fmt: skip

    def _text(self, request: GenerationRequest, timer: Timer, emit: Emit, cancel: CancelToken):
        """The text phase, from the session's prompt cache when this prompt was encoded before."""
        key = self.prompt_key(request)
        cached = self.prompts.get(key)
        if cached is None:
            prompt, contexts, negative = self._encode_text(request, timer, emit, cancel)
            self.prompts.put(key, EncodedText(prompt, contexts, negative))
            return prompt, contexts, negative
        with timer.phase(Phase.TEXT_ENCODING, "cached"):
            if request.enhance_prompt:
                emit(events.EnhancedPrompt(cached.prompt))
        return cached.prompt, cached.contexts, cached.negative

    # --- the job ----------------------------------------------------------------------------------------------

    def generate(
        self,
        request: GenerationRequest,
        cancel: CancelToken | None = None,
        emit: Emit = events.ignore,
        preview: PreviewOptions | None = None,
    ) -> events.Result:
        cancel = cancel or CancelToken()
        timer = Timer({}, emit)
        # "plan": the request's checks and the memory plan, before any phase (reported: on a 50 GB checkpoint it is
        # part of what no phase covered; the checks read input files' headers).
        with timer.part("plan"):
            request = ltx25_flow.plan_frames(self.checkpoint, validate(request))
            for warning in request.warnings:
                emit(events.Warning(warning))
            for warning in ignored_options(request, self.variant, self.quantize, self.checkpoint.quantization):
                emit(events.Warning(warning))
            if self.distilled_lora is not None and self.variant != "dev":
                emit(events.Warning("distilled_lora is ignored: the checkpoint is distilled already"))
            factor = lora_stages.control_factor(request, self.loras)  # before any work, as the rest of the request
            self._check_encoders(request)
            # The planner picks resident or streamed transformer and the decode's tiling, or refuses the job before
            # loading anything, naming what would fit; then decides what stays resident after the job. LTX-2.5
            # without num_frames is planned at the longest length its duration head may choose.
            choice = self.choose_memory(_at_longest(request))
            log.info(
                "memory plan: %s; %s; measured: %s",
                choice.plan.to_dict(), choice.event().text(), memory.memory_report(self.models.nbytes),
            )  # fmt: skip
            emit(choice.event())
            request = replace(request, tiling=choice.tiling)
            if choice.streaming and self.quantize is not None and not self._prequantized:
                emit(events.Warning(f"--quantize {self.quantize} applies to resident weights: streamed blocks are "
                                    "used as stored"))  # fmt: skip
            self.plan_residency(_at_longest(request), choice)
        if preview is not None:
            preview = preview.validate()
        mx.reset_peak_memory()
        keys = iter(mx.random.split(mx.random.key(request.seed), 8))

        try:
            if preview is not None:
                self._previewer = Previewer(preview, lambda: self._borrow(r.VIDEO_DECODER), emit, self.dtype)
            if self.parallel is not None and not self.parallel.leader:  # rank 0 encodes the text for every rank
                prompt, (contexts, negative) = request.prompt, self.parallel.share_text(None)
            else:
                prompt, contexts, negative = self._text(request, timer, emit, cancel)
                if self.parallel is not None:
                    self.parallel.share_text((contexts, negative))
            request = ltx25_flow.resolve_frames(self.checkpoint, request, *contexts, emit)  # 2.5 without num_frames
            self._check(cancel)
            images = self._encode_images(request, timer)
            self._check(cancel)
            encoded, soundtrack = self._encode_media(request, images, timer)
            self._check(cancel)
            control = self._encode_control(request, factor, timer)
            self._check(cancel)
            streaming = (choice.streaming, choice.kept_blocks)
            video_latent, audio_latent = self._denoise(
                request, encoded, contexts, negative, keys, timer, emit, cancel, streaming, control
            )
            del encoded, images
            if self._previewer is not None:  # the last previews (of the last step) are written during the decode
                with timer.part("preview"):
                    self._previewer.flush()
            audio_path = self._decode(request, video_latent, audio_latent, next(keys), timer, cancel, emit, soundtrack)
            if self._previewer is not None:
                with timer.part("preview"):
                    self._previewer.close()
        finally:  # a failed or cancelled job leaves only what the plan keeps
            if self._previewer is not None:
                self._previewer.abandon()
            self._previewer = None
            with timer.part("settle"):
                self.models.settle()

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

    def _check(self, cancel: CancelToken) -> None:
        """Before and during denoising, ranks cancel together (at the same point), so none waits for the others."""
        if self.parallel is not None:
            self.parallel.check(cancel)
        else:
            cancel.check()

    # --- phases -----------------------------------------------------------------------------------------------

    def _encode_text(self, request: GenerationRequest, timer: Timer, emit: Emit, cancel: CancelToken):
        prompt = request.prompt
        with timer.phase(Phase.TEXT_ENCODING):
            with timer.loading():
                encoder = self._borrow(r.TEXT_ENCODER)
            warn = lambda message: emit(events.Warning(message))  # noqa: E731
            if request.enhance_prompt:
                with timer.phase(Phase.PROMPT_ENHANCEMENT):
                    prompt = enhance_or_keep(encoder, prompt, warn, bool(request.keyframes), request.seed % 2**32)
                emit(events.EnhancedPrompt(prompt))
            # Over several ranks the others wait for this encoding in a collective: a cancel takes effect at the
            # next check all ranks make together (self._check), not inside rank 0's text encoding.
            check = cancel.check if self.parallel is None else None
            encoded = [encoder.encode(prompt, check=check, warn=warn)]
            if self.variant == "dev":
                negative_prompt = request.negative_prompt or DEFAULT_NEGATIVE_PROMPT
                encoded.append(encoder.encode(negative_prompt, check=check, warn=warn))
            spec = ltx25_flow.processor_spec(encoder)  # what the text processor depends on
            del encoder
            self.models.give_back(r.TEXT_ENCODER)
            with timer.loading():
                processor = self._borrow(r.TEXT_PROCESSOR, spec)
            contexts = [processor(e.hidden_states.astype(self.dtype), e.attention_mask) for e in encoded]
            mx.eval(contexts)
            del processor, encoded
            self.models.give_back(r.TEXT_PROCESSOR)
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
                encoder = self._borrow(r.VIDEO_ENCODER)
            for size in sizes:
                latents = []
                for keyframe in request.keyframes:
                    crf = ltx25_flow.image_crf(self.checkpoint)
                    pixels = mx.array(conditioning_frame(keyframe.path, *size, crf=crf)).astype(self.dtype)
                    latents.append(encoder(pixels))
                mx.eval(latents)
                encoded[size] = latents
            del encoder
            self.models.give_back(r.VIDEO_ENCODER)
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
                audio_encoder = self._borrow(r.AUDIO_ENCODER) if request.audio else None
            if request.mode == "a2v":
                soundtrack = read_soundtrack(request.audio_input_path, request.audio_start, request.num_frames,
                                             request.fps)  # fmt: skip
                latent = encode_soundtrack(soundtrack, audio_encoder, request.num_frames, request.fps)
                mx.eval(latent)
                encoded = replace(encoded, soundtrack=latent)
            else:
                with timer.loading():
                    video_encoder = self._borrow(r.VIDEO_ENCODER)
                source = encode_source(request.source_path, video_encoder, audio_encoder, request.height,
                                       request.width, max_frames=request.source_frames)  # fmt: skip
                mx.eval(source.video_latent, *([] if source.audio_latent is None else [source.audio_latent]))
                if source.frames != request.source_frames:  # the file changed since it was validated
                    raise LtxError(ErrorCode.MEDIA_TOO_SHORT, f"{request.source_path} now has {source.frames} usable "
                                   f"frames, not {request.source_frames}", "Keep the source unchanged while the job "
                                   "runs.", path=request.source_path, field="source_path")  # fmt: skip
                encoded = replace(encoded, source=source)
                del video_encoder
                self.models.give_back(r.VIDEO_ENCODER)
            if audio_encoder is not None:
                del audio_encoder
                self.models.give_back(r.AUDIO_ENCODER)
        return encoded, soundtrack

    def _encode_control(self, request: GenerationRequest, factor: int, timer: Timer):
        """The IC-LoRA control videos encoded (`lora_stages.encode_controls`), with the factor (None without)."""
        if not request.controls:
            return None
        with timer.phase(Phase.IMAGE_ENCODING, "control video"):
            with timer.loading():
                encoder = self._borrow(r.VIDEO_ENCODER)
            encoded = lora_stages.encode_controls(encoder, request, factor, self.dtype)
            del encoder
            self.models.give_back(r.VIDEO_ENCODER)
        return encoded, factor

    def _check_encoders(self, request: GenerationRequest) -> None:
        """Before any work: a mode that encodes media needs the checkpoint's VAE encoders (some conversions ship the
        decoders only)."""
        from ltx_backend.models.audio_vae import sanitize_encoder_key as audio_key
        from ltx_backend.models.video_vae import sanitize_encoder_key as video_key

        needed = []
        if request.mode in SOURCE_MODES or request.keyframes:
            needed.append(("video VAE encoder", ("vae_encoder", "vae"), video_key))
        if request.mode in ("a2v", *SOURCE_MODES) and request.audio:
            needed.append(("audio VAE encoder", ("audio_vae",), audio_key))
        for what, names, sanitize in needed:
            components = [self.checkpoint.component(n) for n in names if self.checkpoint.has(n)]
            if not any(sanitize(key) for c in components for key in c.tensors):
                raise LtxError(ErrorCode.WEIGHTS_MISSING_KEY, f"{self.checkpoint.root} has no {what}, which "
                               f"{request.mode if request.mode != 't2v' else 'image conditioning'} needs",
                               "Use a checkpoint that ships its VAE encoders (the official files do).",
                               component=names[0])  # fmt: skip

    @property
    def _prequantized(self) -> bool:
        return bool(self.checkpoint.component("transformer").quantized_paths)

    def _denoise(
        self, request, encoded: sp.Encoded, contexts, negative, keys, timer: Timer, emit: Emit, cancel: CancelToken,
        streaming=(False, 0), control=None,
    ):  # fmt: skip
        """Run the job's stages in order: each builds its states (from the previous stage's output, upsampled where
        it refines one), applies its conditioning, noises them and runs its loop with its denoiser. A stage whose
        LoRAs differ from the previous one's (IC-LoRA stage 2, the dev flow's distilled LoRA) loads its own
        transformer (pipeline/loras.py). `streaming`: (blocks streamed, how many of them held once read)."""
        dtype = self.dtype
        stage_loras = lora_stages.stage_loras(self.loras, self.distilled_lora, self.variant, request)
        loaded_loras = stage_loras[0]
        with timer.phase(Phase.LOAD, "transformer"):  # the compat shim keys its log line on this detail
            transformer = self._borrow(r.TRANSFORMER, (*streaming, loaded_loras))
        config = transformer.config
        audio_channels = config.audio_in_channels
        stg_block = min(STG_BLOCK[self.version], config.num_layers - 1)
        plans = sp.plan_stages(request, self.variant, self.version, stg_block, encoded, config.in_channels,
                               audio_channels, dtype)  # fmt: skip
        sizes = {plan.number: plan.latent_size for plan in plans}

        def step_events(stage: int) -> Callable[[int, int], None]:
            def on_step(step: int, total: int) -> None:
                emit(events.DenoiseStep(stage, step, total))
                self._check(cancel)
                if self._previewer is not None:
                    f, h, w = sizes[stage]
                    with timer.part("preview"):
                        self._previewer.write(stage, step, total, f * h * w, (f, h, w))

            return on_step

        def noised(state: s.LatentState, key: mx.array, scale: float = 1.0) -> s.LatentState:
            return s.add_noise(state, mx.random.normal(state.latent.shape, key=key), scale)

        video_latent = audio_latent = None
        for plan in plans:
            if plan.stage.upsample_before:
                video_latent = self._upsample(video_latent, timer)
            wanted = stage_loras[min(plan.number, len(stage_loras)) - 1]
            if wanted != loaded_loras:  # e.g. no IC-LoRA in stage 2, or the distilled LoRA added: a fresh load
                del transformer
                self.models.give_back(r.TRANSFORMER)  # borrowing under another key replaces it
                with timer.loading():
                    transformer = self._borrow(r.TRANSFORMER, (*streaming, wanted))
                loaded_loras = wanted
            with timer.phase(STAGE_PHASES[plan.number]):
                video = plan.video_state(video_latent)
                for condition in plan.video_conditioning:
                    video = condition(video)
                if control is not None and plan.number == 1:  # IC-LoRA: the reference tokens follow the images
                    video = lora_stages.condition_on_controls(video, control[0], request, control[1])
                video = noised(video, next(keys), plan.stage.noise_scale)
                audio_key = next(keys)  # drawn with or without audio: the same seed gives the same video
                audio = plan.audio_state(audio_latent)
                if audio is not None:
                    audio = noised(audio, audio_key, plan.stage.noise_scale)
                video_context, audio_context = contexts if audio is not None else (contexts[0], None)
                stage = s.StageInputs.build(transformer, video, audio, video_context, audio_context, dtype,
                                            compiled=_compile_blocks())  # fmt: skip
                denoise = self._tap(self._denoiser(plan, stage, negative))
                loop = sp.LOOPS[plan.stage.stepper]
                if plan.number == 1 and plan.stage.stepper == "euler":  # LTX-2.5 distilled: Euler-ancestral
                    loop = ltx25_flow.stage1_loop(self.checkpoint, self.variant, request.seed, loop)
                video, audio = loop(plan.stage.sigmas, video, audio, denoise, step_events(plan.number), request.seed)
                del stage, denoise
            video_latent = s.tokens_to_video(video.output_latent, *plan.latent_size)
            audio_latent = None if audio is None else s.tokens_to_audio(audio.output_latent, audio_channels // 16)
        del transformer
        self.models.give_back(r.TRANSFORMER)
        return video_latent, audio_latent

    def _upsample(self, low_res: mx.array, timer: Timer) -> mx.array:
        """The x2 spatial upsample between the stages (in the latent space, with the decoder's channel statistics)."""
        with timer.phase(Phase.UPSAMPLE):
            with timer.loading():
                upsampler = self._borrow(r.UPSAMPLER)
                statistics = self._borrow(r.VIDEO_DECODER).per_channel_statistics
            high_res = upsample_latent(low_res.astype(self.dtype), upsampler, statistics)
            mx.eval(high_res)
            del upsampler, statistics
            self.models.give_back(r.UPSAMPLER)
            if self._previewer is None:  # previews decode with it during stage 2
                self.models.give_back(r.VIDEO_DECODER)
        return high_res

    def _denoiser(self, plan: sp.StagePlan, stage: s.StageInputs, negative) -> s.DenoiseFn:
        if plan.guidance is None:
            return s.simple_denoiser(stage)
        video_params, audio_params = plan.guidance
        negative_audio = negative[1] if plan.negative_audio else None  # a2v: the positive context in both passes
        runner = self.parallel.pass_runner() if self.parallel is not None else None
        return s.guided_denoiser(
            stage, negative[0], negative_audio, video_params, audio_params, runner or s.run_together
        )

    def _tap(self, denoise: s.DenoiseFn) -> s.DenoiseFn:
        return denoise if self._previewer is None else self._previewer.tap(denoise)

    def _free_after_refusal(self, error: RuntimeError, needed: Iterable[str], emit: Emit) -> bool:
        """The device refused an allocation (the plan's estimate was short of what the device really holds): free
        the resident models the phase does not use (`needed`), lower MLX's memory limit to what fit so later plans
        keep less resident, and say whether the phase may run again (False: not a refusal, or nothing to free)."""
        if not memory.is_out_of_memory(error):
            return False
        needed = set(needed)
        unused = [name for name in self.models.names() if name not in needed]
        limit = memory.lower_limit_to_what_fit()
        if not unused:
            return False
        for name in unused:
            self.models.drop(name)
        message = (
            f"The device ran out of memory beside the resident {', '.join(unused)}: freed them and ran the phase "
            f"again; this session now plans within {limit / 1e9:.1f} GB, so it keeps less resident."
        )
        log.warning("%s (%s)", message, error)
        emit(events.Warning(message))
        return True

    def decode_tiling(self, request: GenerationRequest) -> str:
        """The tiling the video decode uses: the request's, except that ``auto`` decodes the whole video at once
        when that fits comfortably in the memory available now, else in the tiling with the least decode work that
        fits (``memory.auto_tiling``)."""
        if request.tiling != "auto":
            return request.tiling
        # The session's memory, resident models included: the same choice whatever stays resident (same bytes).
        return memory.auto_tiling(self.checkpoint, request, self.dtype, memory.session_budget(self.models.nbytes))

    def _decode(
        self, request, video_latent, audio_latent, noise_key, timer: Timer, cancel: CancelToken, emit: Emit,
        soundtrack: DecodedAudio | None = None,
    ):  # fmt: skip
        """The video streamed into ffmpeg as it is decoded, then the audio decoded while ffmpeg encodes the last
        frames in its own process and encoded to AAC by another ffmpeg beside it, then both streams copied into
        the MP4. Both files are written in the job's temporary folder and committed together (media/outputs.py).
        a2v muxes the `soundtrack` it was given, as read (not a VAE re-decode, as ltx-pipelines writes it; not
        peak-normalised), in the encode pass.

        Both decode phases announce the video's tiling mode (``tiling <mode>``): the compat shim prints it first.
        Of several ranks, the first alone decodes and writes."""
        if self.parallel is not None and not self.parallel.leader:
            return None
        audio_path = None
        mode = self.decode_tiling(request)  # every other model is freed by now
        detail = f"tiling {mode}"
        seconds = request.num_frames / request.fps

        def on_tile(fraction: float) -> None:
            emit(events.DecodeProgress(round(fraction, 4)))
            cancel.check()

        with JobFolder(request.output_path) as folder:
            wav = None
            if soundtrack is not None:
                wave = fit_to_duration(soundtrack.waveform, soundtrack.sample_rate, seconds)
                wav = write_wav(folder.path("a.wav"), wave, soundtrack.sample_rate, normalize=False)
            decodes_audio = soundtrack is None and audio_latent is not None
            video = folder.path("v.mp4")
            encoded = folder.path("v.h264.mp4") if decodes_audio else video
            size = (request.width, request.height, request.fps)
            quality = VideoQuality(request.video_encoder, request.video_crf, request.video_preset)
            with ExitStack() as encoders:  # on a failure, x264 and an AAC encoder left running are killed
                with timer.phase(Phase.VIDEO_DECODE, detail):  # x264's start in it: the phases cover the job
                    writer = VideoWriter(encoded, *size, wav, quality, atomic=False, check=cancel.check)
                    encoders.enter_context(writer)
                    with timer.loading():
                        decoder = self._borrow(r.VIDEO_DECODER)
                    tiling = tiling_for(mode, request.height, request.width, request.num_frames)
                    latent = video_latent.astype(self.dtype).transpose(0, 2, 3, 4, 1)
                    noise = None
                    if decoder.config.timestep_conditioning:  # the decode noise comes from the job's seed
                        noise = mx.random.normal(latent.shape, key=noise_key).astype(self.dtype)
                    written = 0
                    for attempt in (1, 2):  # once more after a refusal that nothing was written before
                        try:
                            for chunk in decode_tiled(decoder, latent, tiling, noise=noise, progress=on_tile):
                                cancel.check()
                                for piece in uint8_pieces(chunk[0]):  # x264 starts on the first piece
                                    writer.write(piece)
                                written += 1
                            break
                        except RuntimeError as error:  # the same tiling and noise again: the same frames
                            retry = attempt == 1 and not written
                            if not (retry and self._free_after_refusal(error, r.VIDEO_DECODE_USES, emit)):
                                raise
                    del decoder, latent, noise
                    self.models.give_back(r.VIDEO_DECODER)
                if decodes_audio:  # on the device, while ffmpeg encodes on the CPU
                    with timer.phase(Phase.AUDIO_DECODE, detail):
                        with timer.loading():
                            decoder, vocoder = self._borrow(r.AUDIO_DECODER), self._borrow(r.VOCODER)
                        wave, rate = decode_audio(audio_latent, decoder, vocoder)
                        wave = fit_to_duration(wave, rate, seconds)
                        del decoder, vocoder
                        self.models.give_back(r.AUDIO_DECODER)
                        self.models.give_back(r.VOCODER)
                        wav = write_wav(folder.path("a.wav"), wave, rate)
                        # AAC-encoded beside x264 (a 2-core CPU: 0.15 s): the mux then only copies both streams
                        track = encoders.enter_context(AacTrack(wav, folder.path("a.m4a"), cancel.check))
                with timer.phase(Phase.MUX):
                    writer.finish()
                    if decodes_audio:
                        mux_audio(encoded, track, video, cancel.check)
            if quality.encoder not in ("auto", writer.encoder):
                emit(events.Warning(f"The {quality.encoder} encoder does not work here; used {writer.encoder}."))
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

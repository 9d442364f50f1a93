"""A generation over several ranks: the engine's hooks (``RankRole``) and rank 0's engine (``DistributedEngine``).

Every rank runs the same job through the same ``Engine`` code with the same request and seed (so noise, image
conditioning and scheduling agree without communication), except that rank 0 alone encodes the text and shares
the contexts (``RankRole.share_text``). Rank 0's LoRAs (and a dev checkpoint's distilled LoRA) go to every rank
with the engine's options: each fuses them into its whole transformer before taking its shard, and reads and
encodes the request's keyframes, source clip or IC-LoRA control video itself. The transformer work is split:

- ``tensor`` mode: every rank holds its shard of the blocks and every forward is computed together;
- ``guidance`` mode (dev checkpoints): every rank holds the whole model and a guided step's passes are split.

Rank 0 alone decodes and writes the outputs; the others stop after denoising. Rank 0 is the front end's process
(CLI or ``serve``): it validates the request, broadcasts it to the followers (one JSON line on their stdin, see
``launch.Followers`` and ``follower``) and runs its own share. Cancelling is agreed at every denoising step (an
all-reduce of rank 0's flag), so every rank stops at the same step. A rank that dies makes the next collective
fail on every other rank ("connection to a peer was lost"), which becomes ``distributed_failed`` naming the rank;
a failure on rank 0 while the followers still wait in a collective kills them. Either way the group is gone for
good (MLX cannot rebuild it inside a process): later jobs fail with ``distributed_failed`` and a hint to restart.
A failure on rank 0 after the followers finished their share (decoding, writing) is an ordinary job error.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path

import mlx.core as mx

from ltx_backend import events
from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.events import Emit
from ltx_backend.parallel.guidance import split_passes
from ltx_backend.parallel.launch import Followers, failed
from ltx_backend.parallel.tensor import shard_transformer
from ltx_backend.pipeline import memory
from ltx_backend.pipeline.engine import Cancelled, CancelToken, Engine
from ltx_backend.pipeline.request import ControlVideo, GenerationRequest, Keyframe, validate
from ltx_backend.pipeline.sampler import PassRunner
from ltx_backend.weights.lora import LoraSpec

log = logging.getLogger(__name__)
MODES = ("tensor", "guidance")
_DTYPES = [mx.float32, mx.bfloat16, mx.float16]
REPLY_TIMEOUT_S = 120.0  # followers answer when their share ends, before rank 0 has decoded
SETTLE_S = 10.0  # after rank 0 failed: followers in step with it have answered by then


@dataclasses.dataclass
class RankRole:
    """What an ``Engine`` does differently as one rank of a group (``Engine(parallel=...)``)."""

    group: mx.distributed.Group
    mode: str

    @property
    def leader(self) -> bool:
        return self.group.rank() == 0

    @property
    def ranks(self) -> int:
        return self.group.size()

    def prepare(self, transformer):
        return shard_transformer(transformer, self.group) if self.mode == "tensor" else transformer

    def pass_runner(self) -> PassRunner | None:
        return split_passes(self.group) if self.mode == "guidance" else None

    def check(self, cancel: CancelToken) -> None:
        """Cancel on every rank at the same point: rank 0's flag, all-reduced (the followers' tokens never fire)."""
        flag = mx.array([1.0 if cancel.cancelled and self.leader else 0.0])
        agreed = mx.distributed.all_sum(flag, group=self.group)
        mx.eval(agreed)
        if agreed.item() > 0:
            raise Cancelled()

    def share_text(self, encoded: tuple | None) -> tuple:
        """Rank 0's text encoding on every rank: ``((video, audio), negative (video, audio) or None)``.

        Rank 0 passes its encoding, the others None: they never load the text encoder (time, and ~24 GB of Gemma
        per GPU), and every rank conditions on the same contexts even where an enhanced prompt could differ. Two
        all-reduces with zeros from the followers (exact): the shapes, then the values."""
        slots = 4
        arrays: list[mx.array | None] = [None] * slots
        if encoded is not None:
            (video, audio), negative = encoded
            arrays = [video, audio, *(negative if negative is not None else (None, None))]
        shapes = mx.array([list(a.shape) if a is not None else [0, 0, 0] for a in arrays], dtype=mx.int32)
        shapes = mx.distributed.all_sum(shapes if self.leader else mx.zeros_like(shapes), group=self.group)
        dtype = next((a.dtype for a in arrays if a is not None), mx.float32)
        dtypes = mx.distributed.all_sum(mx.array([_DTYPES.index(dtype) if self.leader else 0]), group=self.group)
        dtype = _DTYPES[int(dtypes.item())]
        shared = []
        for array, shape in zip(arrays, shapes.tolist(), strict=True):
            if shape[0] == 0:
                shared.append(None)
                continue
            mine = array.astype(dtype) if self.leader else mx.zeros(shape, dtype)
            shared.append(mx.distributed.all_sum(mine, group=self.group))
        mx.eval([a for a in shared if a is not None])
        negative = None if shared[2] is None else (shared[2], shared[3])
        return (shared[0], shared[1]), negative

    def plan(self, plan: memory.MemoryPlan, checkpoint) -> memory.MemoryPlan:
        return memory.per_rank(plan, checkpoint, self.ranks, self.mode)


def request_to_json(request: GenerationRequest) -> dict:
    return dataclasses.asdict(request)


def request_from_json(data: dict) -> GenerationRequest:
    """The request rank 0 sent (``request_to_json``), nested dataclasses rebuilt: every rank reads and encodes the
    same keyframes and IC-LoRA control video itself (deterministic; no latents cross the wire)."""
    keyframes = tuple(Keyframe(**k) for k in data.pop("keyframes", ()))
    control = data.pop("control_video", None)
    if control is not None:  # one, or several (a list)
        control = ControlVideo(**control) if isinstance(control, dict) else tuple(ControlVideo(**c) for c in control)
    return GenerationRequest(
        **{**data, "warnings": tuple(data.get("warnings", ()))}, keyframes=keyframes, control_video=control
    )


def lora_to_json(spec: LoraSpec) -> list:
    """``[path, strength]``, the path absolute (followers may resolve relative paths elsewhere)."""
    return [str(Path(spec.path).expanduser().absolute()), spec.strength]


def engine_options_from_json(options: dict) -> dict:
    """The follower's ``Engine`` keyword arguments from rank 0's ``engine`` message."""
    options = dict(options)
    options["dtype"] = getattr(mx, options["dtype"])
    options["loras"] = [LoraSpec(Path(path), strength) for path, strength in options.get("loras", ())]
    distilled = options.get("distilled_lora")
    options["distilled_lora"] = None if distilled is None else LoraSpec(Path(distilled[0]), distilled[1])
    return options


def check_mode(engine: Engine, mode: str, ranks: int) -> None:
    if mode not in MODES:
        raise LtxError(ErrorCode.INVALID_PARAMS, f"unknown parallel mode {mode!r}", "Use tensor or guidance.")
    if ranks < 1:
        raise LtxError(ErrorCode.INVALID_PARAMS, f"--distributed must be at least 1, not {ranks}", "Use 2 or more.")
    if mode == "guidance" and engine.variant != "dev":
        raise LtxError(
            ErrorCode.INVALID_PARAMS,
            "guidance parallelism needs a dev checkpoint (a distilled one runs one pass per step)",
            "Use --parallel tensor with this checkpoint.",
            field="parallel",
        )


class RankGroup:
    """Rank 0's side of the group: the followers and the ``mx.distributed`` group, started once per process (MLX
    joins one global group per process), shared by every engine ``serve`` loads."""

    def __init__(self, ranks: int) -> None:
        if ranks < 2:
            raise LtxError(ErrorCode.INVALID_PARAMS, f"a rank group needs 2 ranks or more, not {ranks}", "Use 2+.")
        self._folder = tempfile.TemporaryDirectory(prefix="ltx-ranks-")
        self.followers, self.group = Followers.start(ranks, Path(self._folder.name))
        self.broken: str | None = None

    def engine(self, engine: Engine, mode: str = "tensor") -> DistributedEngine:
        return DistributedEngine(engine, self, mode)

    def expect_ok(self, what: str, timeout_s: float = REPLY_TIMEOUT_S) -> None:
        for rank, reply in enumerate(self.followers.replies(timeout_s), start=1):
            if "error" in reply:
                self.fail(f"rank {rank} failed {what}: {reply['error'].get('message')}")

    def fail(self, reason: str) -> None:
        """The group is gone: kill the followers and raise ``distributed_failed``."""
        self.broken = reason
        self.followers.kill()
        raise failed(reason, "The rank group is gone; start the command again (serve: restart it).")

    def send(self, message: dict) -> None:
        if self.broken:
            raise failed(f"an earlier job broke the rank group: {self.broken}", "Restart serve.")
        dead = self.followers.dead()
        if dead:
            self.fail(", ".join(f"rank {rank} exited with code {code}" for rank, code in dead))
        try:
            self.followers.send(message)
        except LtxError as error:
            self.fail(error.message)

    def close(self) -> None:
        if self.broken:
            self.followers.kill()
        else:
            self.followers.close()
        self._folder.cleanup()


class DistributedEngine:
    """Rank 0's engine: the ``Engine`` interface (``generate``, ``checkpoint``, ...) over a group of ranks."""

    def __init__(self, engine: Engine, ranks: RankGroup, mode: str = "tensor") -> None:
        check_mode(engine, mode, ranks.group.size())
        self.engine, self.ranks = engine, ranks
        self.role = RankRole(ranks.group, mode)
        engine.parallel = self.role
        options = {
            "model": str(engine.checkpoint.root),
            "text_encoder": str(engine.text_encoder_root),
            "quantize": engine.quantize,
            "dtype": str(engine.dtype).split(".")[-1],
            # Every rank fuses the same LoRAs into its whole transformer before sharding it (tensor mode).
            "loras": [lora_to_json(spec) for spec in engine.loras],
            "distilled_lora": None if engine.distilled_lora is None else lora_to_json(engine.distilled_lora),
        }
        ranks.send({"engine": options, "mode": mode})
        ranks.expect_ok("opening the model")

    def __getattr__(self, name: str):
        return getattr(self.engine, name)

    def generate(
        self,
        request: GenerationRequest,
        cancel: CancelToken | None = None,
        emit: Emit = events.ignore,
        preview: object | None = None,
    ) -> events.Result:
        request = validate(request)  # everything knowable is refused here, before any rank starts
        if request.num_frames:  # the per-rank plan (engine.parallel is set), or the refusal naming what fits
            self.engine.choose_memory(request)
        self.ranks.send({"request": request_to_json(request)})
        try:
            result = self.engine.generate(request, cancel, emit, preview)  # previews: rank 0 alone, outside collectives
        except Cancelled:
            self.ranks.expect_ok("to cancel")
            raise
        except KeyboardInterrupt:  # Ctrl-C reaches every rank of the terminal's process group
            self.ranks.broken = "interrupted"
            self.ranks.followers.kill()
            raise
        except Exception as error:
            self._settle(error)
            raise
        self.ranks.expect_ok("the job")
        return result

    def _settle(self, error: Exception) -> None:
        """After rank 0 failed: if every follower finished its share (rank 0 failed alone, e.g. writing the MP4), the
        ranks are still in step and `error` stands. Otherwise a rank died (a collective failed) or the followers
        wait in a collective rank 0 left: the group is gone, and the job fails with ``distributed_failed`` (or
        rank 0's own ``LtxError``, which names the cause better), every later job with ``distributed_failed``."""
        replies = self.ranks.followers.replies(SETTLE_S)
        if all("ok" in reply or "cancelled" in reply for reply in replies):
            return
        why = "; ".join(f"rank {r}: {a['error'].get('message')}" for r, a in enumerate(replies, 1) if "error" in a)
        reason = f"the job failed on rank 0 ({error}){'; ' + why if why else ''}"
        if isinstance(error, LtxError):
            self.ranks.broken = reason
            self.ranks.followers.kill()
            return
        self.ranks.fail(reason)


def start(engine: Engine, ranks: int, mode: str = "tensor") -> tuple[Engine | DistributedEngine, RankGroup | None]:
    """The engine to use for `ranks` ranks (1: `engine` itself) and the group to close afterwards."""
    if ranks == 1:
        return engine, None
    check_mode(engine, mode, ranks)  # before any rank is started
    group = RankGroup(ranks)
    try:
        return group.engine(engine, mode), group
    except BaseException:
        group.close()
        raise

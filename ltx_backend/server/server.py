"""`ltx-backend serve`: the long-lived NDJSON backend on stdin/stdout.

The reader (main thread) parses lines and answers `status`, `cancel`, `validate-env` at once; `load`, `unload`
and `generate` go to one worker thread through a FIFO queue, so one GPU job runs at a time and the reader stays
responsive. Every reply goes through `send`, which serialises whole lines under a lock.
"""

from __future__ import annotations

import itertools
import logging
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TextIO

import msgspec

from ltx_backend import __version__, events
from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.server import messages as m
from ltx_backend.server.environment import EnvironmentCache
from ltx_backend.server.progress import ProgressTracker

log = logging.getLogger(__name__)
CAPABILITIES = ["t2v", "i2v", "keyframes", "audio", "cancel", "queue", "dev-guidance", "quantize", "tiny-model",
                "residency", "prompt-cache", "batch", "preview", "warmup"]  # fmt: skip
EXIT_GRACE_S = 1.8  # EOF/SIGTERM: the process is gone within 2 s


class _Terminate(Exception):
    """Raised in the main thread by SIGTERM to leave the blocking read."""


@dataclass
class Job:
    job_id: str
    request: m.Load | m.Unload | m.Generate
    cancel: object = None  # a CancelToken for generate jobs
    generation: object = None  # the validated GenerationRequest
    warnings: list[str] = field(default_factory=list)
    preview: object = None  # the job's PreviewOptions, when it asked for previews
    batch_index: int | None = None

    @property
    def kind(self) -> str:
        return type(self.request).__struct_config__.tag


class Server:
    def __init__(self, output: BinaryIO, heartbeat_s: float = 5.0, progress_interval_s: float = 0.1) -> None:
        self._output = output
        self._lock = threading.Lock()
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(m.HostMessage)
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._pending: list[Job] = []  # queued, not started (guarded by _lock)
        self._running: Job | None = None
        self._tracker: ProgressTracker | None = None
        self._ids = itertools.count(1)
        self._engine = None
        self._engine_key: tuple | None = None
        self._environment = EnvironmentCache()
        self._heartbeat_s = heartbeat_s
        self._progress_interval_s = progress_interval_s
        self._last_sent = time.monotonic()
        self._stopping = threading.Event()
        self._worker = threading.Thread(target=self._work, name="ltx-worker", daemon=True)
        self._heartbeat = threading.Thread(target=self._beat, name="ltx-heartbeat", daemon=True)

    # --- output ---------------------------------------------------------------------------------------------

    def send(self, message: m.Reply) -> None:
        line = self._encoder.encode(message) + b"\n"
        with self._lock:
            try:
                self._output.write(line)
                self._output.flush()
            except (BrokenPipeError, ValueError, OSError):
                self._stopping.set()  # the host is gone
            self._last_sent = time.monotonic()

    # --- the loop -------------------------------------------------------------------------------------------

    def serve(self, lines: TextIO) -> int:
        import mlx.core as mx

        # Imported here, not first in the worker: an import there holds the lock the reader then waits on to answer
        # a `generate` (its `accepted` would come late).
        import ltx_backend.pipeline.engine
        import ltx_backend.server.batch  # noqa: F401

        previous = signal.signal(signal.SIGTERM, self._on_sigterm) if _main_thread() else None
        self._worker.start()
        self._heartbeat.start()
        self.send(m.Ready(m.PROTOCOL_VERSION, __version__, str(mx.default_device()), CAPABILITIES))
        try:
            for line in lines:
                if line.strip():
                    self.handle_line(line)
                if self._stopping.is_set():
                    break
        except _Terminate:
            log.info("SIGTERM: stopping")
        finally:
            self._stop()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        return 0

    def _on_sigterm(self, *_: object) -> None:
        raise _Terminate()

    def _stop(self) -> None:
        """Cancel everything, let the worker unwind (bounded), stop."""
        self._stopping.set()
        self._cancel_all()
        self._queue.put(None)
        self._worker.join(EXIT_GRACE_S)

    def _cancel_all(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
            running = self._running
        for job in pending:
            self.send(m.Cancelled(job.request.id, job.job_id))
        if running is not None and running.cancel is not None:
            running.cancel.cancel()

    def handle_line(self, line: str) -> None:
        try:
            request = self._decoder.decode(line)
        except msgspec.ValidationError as exc:
            code = ErrorCode.UNKNOWN_TYPE if "type" in str(exc) and "Invalid value" in str(exc) else None
            self._reject(line, code or ErrorCode.INVALID_PARAMS, f"{exc}")
            return
        except msgspec.DecodeError as exc:
            self._reject(line, ErrorCode.PARSE_ERROR, f"not a JSON object on one line: {exc}")
            return
        try:
            self._dispatch(request)
        except Exception as exc:  # a bug must not stop the server
            self.send(_error_reply(request.id, exc, None, f"handling {line[:200]!r}"))

    def _reject(self, line: str, code: ErrorCode, message: str) -> None:
        request_id = None
        try:  # echo the id when the line is JSON at all
            raw = msgspec.json.decode(line)
            if not isinstance(raw, dict):
                code, message = ErrorCode.PARSE_ERROR, f"a line must be one JSON object, not {type(raw).__name__}"
            else:
                request_id = raw["id"] if isinstance(raw.get("id"), str) else None
                if code is ErrorCode.UNKNOWN_TYPE or not isinstance(raw.get("type"), str) or raw["type"] not in _TYPES:
                    code, message = ErrorCode.UNKNOWN_TYPE, f"unknown or missing message type {raw.get('type')!r}"
        except msgspec.DecodeError:
            pass
        hints = {
            ErrorCode.PARSE_ERROR: "Send one JSON object per line, UTF-8, terminated by a newline.",
            ErrorCode.UNKNOWN_TYPE: "Use one of: " + ", ".join(_TYPES) + ".",
            ErrorCode.INVALID_PARAMS: "Check the field types against protocol/PROTOCOL.md.",
        }
        field_path = _field_path(message) if code is ErrorCode.INVALID_PARAMS else None
        self.send(m.Error(request_id, code.value, message, hints[code], None, field_path))

    def _dispatch(self, request: m.HostMessage) -> None:
        if isinstance(request, m.Status):
            self.send(self._status(request.id))
        elif isinstance(request, m.Cancel):
            self._cancel(request)
        elif isinstance(request, m.ValidateEnv):
            self.send(self._environment.report(request))
        elif isinstance(request, m.Shutdown):
            self._stop()  # the running job reports `cancelled` before `bye`
            self.send(m.Bye(request.id))
        elif isinstance(request, m.Generate):
            from ltx_backend.server.batch import expand

            jobs = [self._prepare_generation(one) for one in expand(request)]  # all valid before any is queued
            for index, job in enumerate(jobs):
                job.batch_index = index if len(jobs) > 1 or request.count > 1 or request.seeds else None
                self._enqueue(job)
        else:  # load, unload
            self._enqueue(Job(self._new_job_id(), request))

    def _new_job_id(self) -> str:
        return f"job-{next(self._ids)}"

    def _enqueue(self, job: Job) -> None:
        with self._lock:
            position = len(self._pending) + (self._running is not None)
            self._pending.append(job)
        self.send(m.Accepted(job.request.id, job.job_id, position, job.batch_index))
        self._queue.put(job)

    def _prepare_generation(self, request: m.Generate) -> Job:
        """Validate now, so a bad request is answered at once rather than after the queue."""
        from ltx_backend.pipeline.engine import CancelToken
        from ltx_backend.pipeline.request import GenerationRequest, Keyframe, validate
        from ltx_backend.server.batch import preview_options

        fields = msgspec.structs.asdict(request)
        for name in ("id", "count", "seeds", "preview"):
            fields.pop(name)
        keyframes = tuple(Keyframe(k.path, k.frame_idx, k.strength) for k in request.keyframes)
        fields["keyframes"] = keyframes
        if not request.output_path:
            raise LtxError(ErrorCode.INVALID_PARAMS, "output_path is required", "Give an absolute .mp4 path.",
                           field="output_path")  # fmt: skip
        try:
            generation = validate(GenerationRequest(**fields))
        except LtxError as error:  # report the protocol's field names
            if isinstance(error.details.get("field"), str):
                error.details["field"] = error.details["field"].replace(".frame_index", ".frame_idx")
            raise
        job = Job(self._new_job_id(), request, CancelToken(), generation, list(generation.warnings))
        job.preview = preview_options(request)
        return job

    def _cancel(self, request: m.Cancel) -> None:
        with self._lock:
            running = self._running
            target = request.job_id or (running.job_id if running else None)
            queued = next((job for job in self._pending if job.job_id == target), None)
            if queued is not None:
                self._pending.remove(queued)
        if queued is not None:
            self.send(m.Cancelled(queued.request.id, queued.job_id))
        elif running is not None and running.job_id == target and running.cancel is not None:
            running.cancel.cancel()  # the worker sends `cancelled` when the engine stops (within one step)
        else:
            what = f"no queued or running job {target!r}" if target else "no job is running or queued"
            self.send(m.Error(request.id, ErrorCode.JOB_NOT_FOUND.value, what,
                              "Jobs that already finished cannot be cancelled; see `status`.", target))  # fmt: skip

    def _status(self, request_id: str | None) -> m.StatusReport:
        import mlx.core as mx

        with self._lock:
            running = self._running
            pending = list(self._pending)
            tracker = self._tracker

        def brief(job: Job) -> m.QueuedJob:
            return m.QueuedJob(job.job_id, job.request.id, job.kind)

        return m.StatusReport(
            request_id,
            self._engine_key[0] if self._engine_key else None,
            str(mx.default_device()),
            round(mx.get_active_memory() / 1e9, 3),
            round(mx.get_peak_memory() / 1e9, 3),
            brief(running) if running else None,
            tracker.fraction if tracker and running else None,
            [brief(job) for job in pending],
            *self._residency(),
        )

    def _residency(self) -> tuple[str | None, list[m.ResidentComponent], int, float | None]:
        """(policy, resident components, their bytes, GB the session may still use) for `loaded` and `status`."""
        from ltx_backend.pipeline import memory

        engine = self._engine
        if engine is None:
            return None, [], 0, None
        resident = [m.ResidentComponent(info.name, info.bytes) for info in engine.models.report()]
        held = sum(component.bytes for component in resident)
        budget = memory.session_budget(held)
        return engine.models.policy, resident, held, round((budget - held) / 1e9, 3) if budget else None

    # --- the worker -----------------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                if job not in self._pending:
                    continue  # cancelled while queued
                self._pending.remove(job)
                self._running = job
            try:
                terminal = self._run(job)
            finally:
                with self._lock:  # no longer running before the host hears it ended (queue positions stay exact)
                    self._running = None
                    self._tracker = None
            self.send(terminal)

    def _run(self, job: Job) -> m.Reply:
        """Run one job; its terminal message (sent by the caller once the job no longer counts as running)."""
        from ltx_backend.pipeline.engine import Cancelled

        request = job.request
        try:
            if isinstance(request, m.Load):
                return self._load(job)
            if isinstance(request, m.Unload):
                self._unload()
                return m.Unloaded(request.id)
            return self._generate(job)
        except Cancelled:
            return m.Cancelled(request.id, job.job_id)
        except Exception as exc:
            return _error_reply(request.id, exc, job.job_id, f"job {job.job_id}")

    def _load(self, job: Job) -> m.Loaded:
        from ltx_backend.pipeline.engine import DEFAULT_TEXT_ENCODER, Engine
        from ltx_backend.pipeline.resident import check_policy
        from ltx_backend.pipeline.warmup import warmup
        from ltx_backend.weights.resolve import find_local

        request = job.request
        policy = check_policy(request.residency)
        key = (request.model, request.text_encoder, request.quantize)
        if self._engine is None or self._engine_key != key:  # idempotent; another model replaces the old one
            same_model = self._engine is not None and self._engine_key[0] == request.model
            if not same_model:
                self._unload()
            self._download_missing(job, request.model)
            model_dir = find_local(request.model)
            has_own_encoder = model_dir is not None and (model_dir / "text_encoder").is_dir()
            if request.text_encoder or not has_own_encoder:
                self._download_missing(job, request.text_encoder or DEFAULT_TEXT_ENCODER)
            if same_model:  # only the components the new text encoder or quantization changes reload
                self._engine.reconfigure(request.text_encoder, request.quantize)
            else:
                self._engine = Engine(request.model, request.text_encoder, quantize=request.quantize)
            self._engine_key = key
        engine = self._engine
        engine.models.policy = policy
        start = time.perf_counter()
        engine.preload()  # `load` really loads: what the planner keeps resident is read now
        load_s = round(time.perf_counter() - start, 3)
        warmup_s = round(warmup(engine), 3) if request.warmup else None
        return m.Loaded(
            request.id,
            request.model,
            str(engine.checkpoint.root),
            engine.checkpoint.layout.value,
            engine.version,
            engine.variant,
            engine.checkpoint.quantization,
            str(engine.text_encoder_root),
            *self._residency(),
            load_s,
            warmup_s,
        )

    def _download_missing(self, job: Job, model: str) -> None:
        """A repo id that is not in the local cache is downloaded now, with byte progress."""
        from ltx_backend.weights.download import download_model
        from ltx_backend.weights.resolve import REPO_ID, find_local

        if find_local(model) is not None or not REPO_ID.match(model):
            return  # cached, a path, or the tiny model (resolve_model reports anything else)
        tracker = ProgressTracker(None)
        with self._lock:
            self._tracker = tracker
        sink = self._progress_sink(job, tracker)
        sink(events.PhaseStarted(events.Phase.DOWNLOAD, model))
        download_model(model, emit=sink)

    def _unload(self) -> None:
        import gc

        import mlx.core as mx

        if self._engine is not None:
            self._engine.unload()
        self._engine, self._engine_key = None, None
        gc.collect()
        mx.clear_cache()

    def _generate(self, job: Job) -> m.Result:
        if self._engine is None:
            raise LtxError(ErrorCode.MODEL_NOT_LOADED, "no model is loaded", 'Send {"type":"load","model":...} first.')
        tracker = ProgressTracker(job.generation)
        with self._lock:
            self._tracker = tracker
        emit = self._progress_sink(job, tracker)
        for warning in job.warnings:
            emit(events.Warning(warning))
        result = self._engine.generate(job.generation, job.cancel, emit, job.preview)
        self.send(m.Progress(job.request.id, job.job_id, "done", 1.0, round(tracker.elapsed, 2), 0.0))
        fields = {**msgspec.structs.asdict(result), "steps": list(result.steps)}
        return m.Result(id=job.request.id, job_id=job.job_id, warnings=job.warnings, **fields)

    def _progress_sink(self, job: Job, tracker: ProgressTracker) -> Callable[[events.Event], None]:
        last = [0.0]

        def emit(event: events.Event) -> None:
            if isinstance(event, events.Preview):
                self.send(m.Preview(job.request.id, job.job_id, **msgspec.structs.asdict(event)))
                return
            update = tracker.update(event)
            if update is None:
                return
            if isinstance(event, events.Warning) and event.message not in job.warnings:
                job.warnings.append(event.message)
            now = time.monotonic()
            milestone = not isinstance(event, events.DenoiseStep) or event.step == event.total
            if milestone or now - last[0] >= self._progress_interval_s:
                last[0] = now
                self.send(m.Progress(job.request.id, job.job_id, **update))

        return emit

    def _beat(self) -> None:
        while not self._stopping.wait(self._heartbeat_s / 4):
            with self._lock:
                running, tracker, quiet = self._running, self._tracker, time.monotonic() - self._last_sent
            if running is not None and quiet >= self._heartbeat_s:
                phase = tracker.phase if tracker else running.kind
                elapsed = tracker.elapsed if tracker else 0.0
                self.send(m.Heartbeat(running.request.id, running.job_id, phase, round(elapsed, 2)))


def _error_reply(request_id: str | None, exc: Exception, job_id: str | None, what: str) -> m.Error:
    """An `LtxError` as the protocol's `error`; anything else is a bug: logged with its traceback, `internal`."""
    if isinstance(exc, LtxError):
        return m.Error(request_id, exc.code.value, exc.message, exc.hint, job_id, exc.details.get("field"))
    log.error("%s failed:\n%s", what, traceback.format_exc())
    return m.Error(request_id, ErrorCode.INTERNAL.value, f"{type(exc).__name__}: {exc}", _BUG_HINT, job_id)


def _field_path(message: str) -> str | None:
    """msgspec's "... - at `$.keyframes[0]`" (+ "missing required field `path`") -> "keyframes[0].path"."""
    path = message.split("at `$.", 1)[1].split("`", 1)[0] if "at `$." in message else None
    if "missing required field `" in message:
        missing = message.split("missing required field `", 1)[1].split("`", 1)[0]
        path = f"{path}.{missing}" if path else missing
    return path


_BUG_HINT = "This is a bug in ltx-backend: please report it with the log (serve --log-file)."
_TYPES = ("validate-env", "load", "unload", "generate", "cancel", "status", "shutdown")


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def run_stdio(log_file: str | None = None, heartbeat_s: float = 5.0) -> int:
    """Take over the process's stdio: protocol lines on the real stdout, everything else on stderr."""
    import os
    import sys

    protocol_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # even C libraries' prints go to stderr now
    sys.stdout = sys.stderr
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).expanduser().parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(Path(log_file).expanduser(), encoding="utf-8"))
    logging.basicConfig(level=logging.INFO, handlers=handlers, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stdin = open(sys.stdin.fileno(), encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
    from ltx_backend.pipeline.warmup import use_persistent_kernel_cache

    use_persistent_kernel_cache()  # before MLX compiles anything
    code = Server(protocol_out, heartbeat_s=heartbeat_s).serve(stdin)
    # Leave without interpreter teardown: a worker still inside an MLX kernel cannot be joined, and MLX's
    # thread-local state from the worker aborts ("terminate called") in static destructors at normal exit.
    logging.shutdown()
    sys.stderr.flush()
    os._exit(code)

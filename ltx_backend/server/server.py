"""`ltx-backend serve`: the long-lived NDJSON backend on stdin/stdout.

The reader (main thread) reads raw lines (server/lines.py bounds their size and nesting) and answers `status`,
`cancel`, `validate-env` at once; `load`, `unload` and `generate` go to one worker thread through a FIFO queue, so
one GPU job runs at a time and the reader stays responsive. Every line goes out through `send`/`_finish`, which
write whole lines under a lock and let each job have exactly one terminal message.

Stopping (`shutdown`, EOF, SIGTERM/SIGINT/SIGHUP, a broken stdout) only sets a flag and wakes the reader, so a
second signal can never interrupt a stop; the reader then cancels every job, waits a bounded grace period for the
running one and answers for it if it is still stuck, and the process exits within 2 s (PROTOCOL.md, "Shutdown").
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import msgspec

from ltx_backend import __version__, events
from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.pipeline.engine import Cancelled, CancelToken
from ltx_backend.server import loading, management
from ltx_backend.server import messages as m
from ltx_backend.server.environment import EnvironmentCache
from ltx_backend.server.job_lane import JobLane
from ltx_backend.server.joblog import JobLog
from ltx_backend.server.lines import MAX_DEPTH, MAX_LINE_BYTES, LineReader, Oversized, too_deep
from ltx_backend.server.progress import ProgressTracker

log = logging.getLogger(__name__)
CAPABILITIES = ["t2v", "i2v", "keyframes", "audio", "cancel", "queue", "dev-guidance", "quantize", "tiny-model",
                "models", "download", "delete", "inspect", "job-logs",
                "residency", "prompt-cache", "batch", "preview", "warmup", "lora", "ic_lora"]  # fmt: skip
MODE_CAPABILITIES = ["a2v", "retake", "extend", "interpolate", "one-stage", "two-stage", "hq"]  # generate's modes
CAPABILITIES += MODE_CAPABILITIES
STOP_GRACE_S = 1.5  # how long a stop waits for the running job to unwind: the process is gone within 2 s
STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP")


@dataclass
class Job:
    job_id: str
    request: m.Load | m.Unload | m.Generate | m.Inspect | m.Download
    cancel: CancelToken = field(default_factory=CancelToken)
    generation: object = None  # the validated GenerationRequest
    warnings: list[str] = field(default_factory=list)
    ended: bool = False  # its terminal message was sent (guarded by the server's lock): nothing more about it
    log: JobLog | None = None  # the job's own log file (`generate.log_file`, `serve --log-dir`)
    last_sent: float = field(default_factory=time.monotonic)  # its last line (downloads' heartbeats use it)
    started: float = field(default_factory=time.monotonic)
    preview: object = None  # the job's PreviewOptions, when it asked for previews
    batch_index: int | None = None

    @property
    def kind(self) -> str:
        return type(self.request).__struct_config__.tag


class Server:
    def __init__(
        self,
        output: BinaryIO,
        heartbeat_s: float = 5.0,
        progress_interval_s: float = 0.1,
        grace_s: float = STOP_GRACE_S,
        log_dir: str | None = None,
        wrap_engine: Callable | None = None,
    ) -> None:
        self._wrap_engine = wrap_engine or (lambda engine: engine)  # serve --distributed: over the rank group
        self._output = output
        self._lock = threading.Lock()
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(m.HostMessage)
        # The model worker's jobs; `running` until its terminal message is written (see `_finish`).
        self._jobs = JobLane(self._lock, self._finish)
        self._tracker: ProgressTracker | None = None
        self._ids = itertools.count(1)
        self._engine = None
        self._engine_key: tuple | None = None
        self._environment = EnvironmentCache()
        self._heartbeat_s = heartbeat_s
        self._progress_interval_s = progress_interval_s
        self._grace_s = grace_s
        self._last_sent = time.monotonic()
        self._closed = False  # nothing more is written (after the last line, or once stdout broke)
        self._stop_reason: str | None = None  # set once: why the server stops (read by the reader loop)
        self._stop_requested = threading.Event()
        self._wake_fd: int | None = None  # written to wake the reader when a stop is requested from elsewhere
        self._worker = threading.Thread(target=self._work, name="ltx-worker", daemon=True)
        self._heartbeat = threading.Thread(target=self._beat, name="ltx-heartbeat", daemon=True)
        self._log_dir = log_dir
        self._downloads = management.DownloadLane(self._run_download, self._finish)

    # --- output ---------------------------------------------------------------------------------------------

    def send(self, message: m.Reply, job: Job | None = None) -> None:
        """Write one line; an event about a `job` whose terminal message went out (see `_finish`) is dropped."""
        line = self._encoder.encode(message) + b"\n"
        with self._lock:
            if job is None or not job.ended:
                self._write_locked(line)
                if job is not None:
                    job.last_sent = self._last_sent

    def _write_locked(self, line: bytes) -> None:
        if self._closed:
            return
        try:
            self._output.write(line)
            self._output.flush()
        except (OSError, ValueError):  # BrokenPipeError, or a closed file: the host is gone
            self._closed = True
            self.request_stop("stdout closed")
        self._last_sent = time.monotonic()

    def _finish(self, job: Job, terminal: m.Reply) -> None:
        """A job's terminal message; it stops counting as running in the same step (queue positions stay exact)."""
        line = self._encoder.encode(terminal) + b"\n"
        with self._lock:
            if self._jobs.running is job:
                self._jobs.running, self._tracker = None, None
            if job.ended:
                return
            job.ended = True
            self._write_locked(line)
        if job.log is not None:  # every terminal message ends the job's log, a queued job's cancel too
            job.log.close(terminal)

    # --- the loop -------------------------------------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        """Ask the reader loop to stop (from any thread or a signal handler); the first reason wins."""
        if self._stop_reason is None:
            self._stop_reason = reason
        self._stop_requested.set()
        if self._wake_fd is not None:
            with contextlib.suppress(OSError):
                os.write(self._wake_fd, b"\0")

    def serve(self, stdin: BinaryIO) -> int:
        """Read lines until `shutdown`, EOF, a signal or a broken stdout; every accepted job ends first."""
        import mlx.core as mx

        # Imported here, not first in the worker: an import there holds the lock the reader then waits on to answer
        # a `generate` (its `accepted` would come late).
        import ltx_backend.pipeline.engine
        import ltx_backend.server.batch  # noqa: F401

        wake_read, self._wake_fd = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(self._wake_fd, False)
        restore = _install_signals(self._on_signal, self._wake_fd) if _main_thread() else None
        self._worker.start()
        self._heartbeat.start()
        self.send(m.Ready(m.PROTOCOL_VERSION, __version__, str(mx.default_device()), CAPABILITIES))
        bye: m.Bye | None = None
        try:
            reader = LineReader(stdin.fileno(), wake_read)
            for line in reader.lines(self._stop_requested.is_set):
                shutdown = self.handle_line(line)
                if shutdown is not None:
                    bye = m.Bye(shutdown.id)
                    self.request_stop("shutdown")
            self.request_stop("end of input")
            log.info("stopping: %s", self._stop_reason)
            self._stop(bye)
        finally:
            if restore is not None:
                restore()
            for fd in (wake_read, self._wake_fd):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._wake_fd = None
        return 0

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.request_stop(signal.Signals(signum).name)  # never raises: a second signal while stopping is harmless

    def _stop(self, bye: m.Bye | None = None) -> None:
        """Cancel everything; every accepted job gets its terminal message (the running one its own within the
        grace period, else `cancelled` sent here); then `bye` if asked; then nothing more is written."""
        deadline = time.monotonic() + self._grace_s
        self._stop_requested.set()
        self._jobs.stop()
        self._downloads.lane.stop()
        self._worker.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            running = self._jobs.running
        if running is not None:  # still inside a long kernel: answer for it, and drop what it sends later
            log.warning("job %s did not stop within %.1f s; reporting it cancelled", running.job_id, self._grace_s)
            self._finish(running, m.Cancelled(running.request.id, running.job_id))
        downloading = self._downloads.join(deadline)
        if downloading is not None:  # inside a blocking read: its partial file stays for the next download
            self._finish(downloading, m.Cancelled(downloading.request.id, downloading.job_id))
        if bye is not None:
            self.send(bye)
        with self._lock:
            self._closed = True

    def handle_line(self, line: bytes | str | Oversized) -> m.Shutdown | None:
        """Answer one line (never raises); a `shutdown` is returned for the caller to act on."""
        try:
            return self._handle(line)
        except Exception as exc:  # a bug must not stop the server
            self.send(_error_reply(None, exc, None, f"reading {str(line)[:200]!r}"))
            return None

    def _handle(self, line: bytes | str | Oversized) -> m.Shutdown | None:
        if isinstance(line, Oversized):
            self._reject(None, ErrorCode.PARSE_ERROR, f"line of {line.size} bytes is longer than the limit of "
                         f"{MAX_LINE_BYTES} bytes; it was skipped", _LIMITS_HINT)  # fmt: skip
            return None
        if isinstance(line, str):
            line = line.encode("utf-8", "surrogatepass")
        if not line.strip():
            return None  # blank lines are ignored
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            self._reject(None, ErrorCode.PARSE_ERROR, f"the line is not valid UTF-8 (byte {line[exc.start]:#04x} at "
                         f"offset {exc.start})", "Encode every line as UTF-8.")  # fmt: skip
            return None
        if too_deep(line):
            self._reject(None, ErrorCode.PARSE_ERROR, f"the line nests arrays/objects deeper than {MAX_DEPTH} levels",
                         _LIMITS_HINT)  # fmt: skip
            return None
        try:
            request = self._decoder.decode(line)
        except msgspec.ValidationError as exc:
            self._invalid(line, str(exc))
            return None
        except (msgspec.DecodeError, RecursionError) as exc:
            self._reject(None, ErrorCode.PARSE_ERROR, f"not a JSON object on one line: {exc}", _PARSE_HINT)
            return None
        if isinstance(request, m.Shutdown):
            return request
        try:
            self._dispatch(request)
        except LtxError as error:  # refused before it became a job
            self.send(_error_reply(request.id, error, None, ""))
        except Exception as exc:  # a bug must not stop the server
            self.send(_error_reply(request.id, exc, None, f"handling {line[:200]!r}"))
        return None

    def _invalid(self, line: bytes, message: str) -> None:
        """A JSON line the message structs refused: not an object, an unknown `type`, or a field's type or range.

        Only the top level is decoded again, its values kept raw: a value msgspec cannot hold (a number beyond
        64-bit or double range) must not fail this second look."""
        try:
            top = msgspec.json.decode(line, type=dict[str, msgspec.Raw])
        except msgspec.ValidationError:
            what = _JSON_KINDS.get(line.lstrip()[:1], "a number")
            self._reject(None, ErrorCode.INVALID_PARAMS, f"a line must be one JSON object, not {what}",
                         "Send one JSON object per line, tagged by `type`.")  # fmt: skip
            return
        request_id, kind = _plain(top.get("id")), _plain(top.get("type"))
        request_id = request_id if isinstance(request_id, str) else None
        if not isinstance(kind, str) or kind not in _TYPES:
            shown = "missing" if "type" not in top else repr(kind if isinstance(kind, str) else bytes(top["type"]))
            self._reject(request_id, ErrorCode.UNKNOWN_TYPE, f"unknown message type: {shown:.200}",
                         "Use one of: " + ", ".join(_TYPES) + ".")  # fmt: skip
            return
        self._reject(request_id, ErrorCode.INVALID_PARAMS, message, _PARAMS_HINT, _field_path(message))

    def _reject(self, request_id: str | None, code: ErrorCode, message: str, hint: str, field_path=None) -> None:
        self.send(m.Error(request_id, code.value, message, hint, None, field_path))

    def _dispatch(self, request: m.HostMessage) -> None:
        if isinstance(request, m.Status):
            self.send(self._status(request.id))
        elif isinstance(request, m.Cancel):
            self._cancel(request)
        elif isinstance(request, m.ValidateEnv):
            self.send(self._environment.report(request))
        elif isinstance(request, m.Generate):
            from ltx_backend.server.batch import expand

            jobs = [self._prepare_generation(one) for one in expand(request)]  # all valid before any is queued
            for index, job in enumerate(jobs):
                job.batch_index = index if len(jobs) > 1 or request.count > 1 or request.seeds else None
                self._enqueue(job)
        elif isinstance(request, m.Load):
            from ltx_backend.pipeline.resident import check_policy

            loading.check_quantize(request.quantize)
            check_policy(request.residency)
            self._enqueue(Job(self._new_job_id(), request))
        elif isinstance(request, m.Models):
            self.send(management.models_report(request))
        elif isinstance(request, m.Delete):
            self.send(management.delete(request, self._paths_in_use))
        elif isinstance(request, m.Download):
            management.check_download(request)
            job = Job(self._new_job_id(), request)
            self.send(m.Accepted(request.id, job.job_id, self._downloads.enqueue(job)))
            self._downloads.lane.release(job)
        else:  # unload, inspect
            if isinstance(request, m.Inspect):
                management.check_inspect(request)
            self._enqueue(Job(self._new_job_id(), request))

    def _new_job_id(self) -> str:
        return f"job-{next(self._ids)}"

    def _enqueue(self, job: Job) -> None:
        position = self._jobs.add(job)
        self.send(m.Accepted(job.request.id, job.job_id, position, job.batch_index))
        self._jobs.release(job)

    def _prepare_generation(self, request: m.Generate) -> Job:
        """Validate now, so a bad request is answered at once rather than after the queue."""
        from ltx_backend.pipeline.request import ControlVideo, GenerationRequest, Keyframe, validate
        from ltx_backend.server.batch import preview_options

        fields = msgspec.structs.asdict(request)
        for name in ("id", "count", "seeds", "preview"):
            fields.pop(name)
        log_file = fields.pop("log_file")
        keyframes = tuple(Keyframe(k.path, k.frame_idx, k.strength) for k in request.keyframes)
        fields["keyframes"] = keyframes
        if request.control_video is not None:
            specs = request.control_video if isinstance(request.control_video, list) else [request.control_video]
            fields["control_video"] = tuple(ControlVideo(**msgspec.structs.asdict(spec)) for spec in specs)
        window = request.retake_window
        if window is not None and len(window) != 2:
            raise LtxError(ErrorCode.INVALID_PARAMS, f"retake_window has {len(window)} values", "Give [start, end].",
                           field="retake_window")  # fmt: skip
        fields["retake_window"] = None if window is None else (float(window[0]), float(window[1]))
        if not request.output_path:
            raise LtxError(ErrorCode.INVALID_PARAMS, "output_path is required", "Give an absolute .mp4 path.",
                           field="output_path")  # fmt: skip
        try:
            generation = validate(GenerationRequest(**fields))
        except LtxError as error:  # report the protocol's field names
            if isinstance(error.details.get("field"), str):
                error.details["field"] = error.details["field"].replace(".frame_index", ".frame_idx")
            raise
        job_id = self._new_job_id()
        job_log = JobLog.for_job(job_id, request, log_file, self._log_dir)  # an unwritable log refuses the job now
        job = Job(job_id, request, generation=generation, warnings=list(generation.warnings), log=job_log)
        job.preview = preview_options(request)
        return job

    def _cancel(self, request: m.Cancel) -> None:
        """A queued job is answered `cancelled` now; a running one when it stops. No job id: the running one."""
        target = request.job_id
        if target is not None and self._downloads.lane.cancel(target):
            return
        if not self._jobs.cancel(target):
            what = f"no queued or running job {target!r:.200}" if target else "no job is running or queued"
            self.send(m.Error(request.id, ErrorCode.JOB_NOT_FOUND.value, what,
                              "Jobs that already finished cannot be cancelled; see `status`.", target))  # fmt: skip

    def _status(self, request_id: str | None) -> m.StatusReport:
        import mlx.core as mx

        with self._lock:
            running = self._jobs.running
            pending = list(self._jobs.pending)
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
        while (job := self._jobs.next(refuse=self._stop_requested.is_set)) is not None:
            if job.log is not None:
                job.log.start()
            terminal = self._run(job)
            if job.log is not None and isinstance(terminal, (m.Result, m.Error)):
                terminal.log_path = str(job.log.path)
            self._finish(job, terminal)

    def _run(self, job: Job) -> m.Reply:
        """Run one job; its terminal message (sent by the caller, which ends the job's `running` state with it)."""
        request = job.request
        try:
            if isinstance(request, m.Load):
                return self._load(job)
            if isinstance(request, m.Unload):
                self._unload()
                return m.Unloaded(request.id, job.job_id)
            if isinstance(request, m.Inspect):
                return management.inspect(request, job.job_id)
            return self._generate(job)
        except Cancelled:
            return m.Cancelled(request.id, job.job_id)
        except Exception as exc:
            if job.log is not None:
                job.log.failure()
            if job.cancel.cancelled and not isinstance(exc, LtxError):
                return m.Cancelled(request.id, job.job_id)  # a cancel that surfaced as another exception
            return _error_reply(request.id, exc, job.job_id, f"job {job.job_id}")

    def _load(self, job: Job) -> m.Loaded:
        """Find the model (downloading a missing repo id), check its layout, then the text encoder; the loaded
        model is replaced only once the new one opened, so a failed or cancelled load keeps it."""
        from ltx_backend.pipeline import ltx25_flow
        from ltx_backend.pipeline.engine import DEFAULT_TEXT_ENCODER, Engine
        from ltx_backend.pipeline.resident import check_policy
        from ltx_backend.pipeline.warmup import warmup
        from ltx_backend.weights.checkpoint import open_checkpoint

        request = job.request
        policy = check_policy(request.residency)
        loras, distilled = loading.lora_specs(request)
        key = (request.model, request.text_encoder, request.quantize, loading.loras_key(loras, distilled))
        if self._engine is None or self._engine_key != key:  # idempotent; another model replaces the old one
            tracker = ProgressTracker(None)
            with self._lock:
                self._tracker = tracker
            emit = self._progress_sink(job, tracker)
            model_dir = loading.locate(request.model, "model", job.cancel, emit)
            checkpoint = open_checkpoint(model_dir)  # layout errors come before anything about the text encoder
            job.cancel.check()
            encoder = request.text_encoder
            if encoder is None:
                bundled = checkpoint.root / "text_encoder"
                official = ltx25_flow.bundled_text_encoder(checkpoint)  # LTX-2.5: text_encoders/<file>
                encoder = str(bundled) if bundled.is_dir() else str(official or DEFAULT_TEXT_ENCODER)
            encoder_dir = loading.locate(encoder, "text_encoder", job.cancel, emit)
            job.cancel.check()
            stored = loading.prequantized(checkpoint)
            if request.quantize is not None and stored is not None:
                emit(events.Warning(f"quantize {request.quantize} has no effect: {request.model} is stored "
                                    f"{stored['bits']}-bit quantized and loads as stored"))  # fmt: skip
            if isinstance(self._engine, Engine) and self._engine_key[0] == request.model:
                # Same model (one process): only the components the new text encoder, quantization or LoRAs change
                # reload.
                self._engine.reconfigure(encoder_dir, request.quantize, loras, distilled)
            else:
                engine = Engine(model_dir, encoder_dir, quantize=request.quantize, loras=loras,
                                distilled_lora=distilled)  # fmt: skip
                engine = self._wrap_engine(engine)
                job.cancel.check()
                self._unload()
                self._engine = engine
            self._engine_key = key
        engine = self._engine
        engine.models.policy = policy
        start = time.perf_counter()
        engine.preload()  # `load` really loads: what the planner keeps resident is read now
        load_s = round(time.perf_counter() - start, 3)
        warmup_s = round(warmup(engine), 3) if request.warmup else None
        _, resident, held, left = self._residency()
        return m.Loaded(
            id=request.id,
            job_id=job.job_id,
            model=request.model,
            path=str(engine.checkpoint.root),
            layout=engine.checkpoint.layout.value,
            model_version=engine.version,
            variant=engine.variant,
            quantization=loading.applied_quantization(engine.checkpoint, engine.quantize),
            text_encoder=str(engine.text_encoder_root),
            residency=policy,
            resident=resident,
            resident_bytes=held,
            memory_left_gb=left,
            load_s=load_s,
            warmup_s=warmup_s,
            loras=[m.LoraRef(str(spec.path), spec.strength) for spec in engine.loras],
            distilled_lora=None if engine.distilled_lora is None else m.LoraRef(
                str(engine.distilled_lora.path), engine.distilled_lora.strength),
        )  # fmt: skip

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
        self.send(m.Progress(job.request.id, job.job_id, "done", 1.0, round(tracker.elapsed, 2), 0.0), job)
        fields = {**msgspec.structs.asdict(result), "steps": list(result.steps)}
        return m.Result(id=job.request.id, job_id=job.job_id, warnings=job.warnings, **fields)

    def _progress_sink(self, job: Job, tracker: ProgressTracker) -> Callable[[events.Event], None]:
        last = [0.0]

        def emit(event: events.Event) -> None:
            if job.log is not None:
                job.log.event(event)
            if isinstance(event, events.Preview):
                self.send(m.Preview(job.request.id, job.job_id, **msgspec.structs.asdict(event)), job)
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
                self.send(m.Progress(job.request.id, job.job_id, **update), job)

        return emit

    def _run_download(self, job: Job) -> m.Reply:
        """A download job (on the download lane's thread); its terminal message."""
        emit = self._progress_sink(job, ProgressTracker(None))
        try:
            return management.run_download(job.request, job.job_id, job.cancel.check, emit)
        except Cancelled:
            return m.Cancelled(job.request.id, job.job_id)
        except Exception as exc:
            if job.cancel.cancelled and not isinstance(exc, LtxError):
                return m.Cancelled(job.request.id, job.job_id)
            return _error_reply(job.request.id, exc, job.job_id, f"job {job.job_id}")

    def _paths_in_use(self) -> dict[Path, str]:
        """Model folders that `delete` must not remove: the loaded ones, and those of queued or running jobs."""
        from ltx_backend.tiny import tiny_model_dir
        from ltx_backend.weights.resolve import TINY_MODELS, find_local, hub_cache_dir

        used: dict[Path, str] = {}
        engine = self._engine
        if engine is not None:
            used[Path(engine.checkpoint.root).absolute()] = "loaded"
            used[Path(engine.text_encoder_root).absolute()] = "loaded (its text encoder)"
        for job in self._jobs.jobs() + self._downloads.lane.jobs():
            request = job.request
            if isinstance(request, m.Download):
                repo_dir = hub_cache_dir() / ("models--" + request.repo.replace("/", "--"))
                used[repo_dir] = f"being downloaded by job {job.job_id}"
                continue
            for name in (getattr(request, "model", None), getattr(request, "text_encoder", None)):
                if not name:
                    continue
                if name in TINY_MODELS:
                    path = tiny_model_dir("2.0" if name == "tiny" else name.removeprefix("tiny-"))
                else:
                    path = find_local(name)
                if path is not None:
                    used[Path(path).absolute()] = f"used by the queued {job.kind} job {job.job_id}"
        return used

    def _beat(self) -> None:
        while not self._stop_requested.wait(self._heartbeat_s / 4):
            with self._lock:
                running, tracker, quiet = self._jobs.running, self._tracker, time.monotonic() - self._last_sent
            if running is not None and quiet >= self._heartbeat_s:
                phase = tracker.phase if tracker else running.kind
                elapsed = tracker.elapsed if tracker else 0.0
                self.send(m.Heartbeat(running.request.id, running.job_id, phase, round(elapsed, 2)), running)
            download = self._downloads.running
            if download is not None and time.monotonic() - download.last_sent >= self._heartbeat_s:
                # A stalled download says so: no bytes came for a while, but the job is alive (and cancellable).
                elapsed = time.monotonic() - download.started
                self.send(m.Heartbeat(download.request.id, download.job_id, "download", round(elapsed, 2)), download)


def _error_reply(request_id: str | None, exc: Exception, job_id: str | None, what: str) -> m.Error:
    """An `LtxError` as the protocol's `error`; anything else is a bug: logged with its traceback, `internal`."""
    if isinstance(exc, LtxError):
        return m.Error(request_id, exc.code.value, exc.message, exc.hint, job_id, exc.details.get("field"))
    log.error("%s failed:\n%s", what, traceback.format_exc())
    return m.Error(request_id, ErrorCode.INTERNAL.value, f"{type(exc).__name__}: {exc}", _BUG_HINT, job_id)


def _plain(raw: msgspec.Raw | None) -> object:
    """A raw top-level value as a str when it is one, else None (other values are never needed)."""
    try:
        return None if raw is None else msgspec.json.decode(raw, type=str)
    except msgspec.MsgspecError:
        return None


def _field_path(message: str) -> str | None:
    """msgspec's "... - at `$.keyframes[0]`" (+ "missing required field `path`") -> "keyframes[0].path"."""
    path = message.split("at `$.", 1)[1].split("`", 1)[0] if "at `$." in message else None
    if "missing required field `" in message:
        missing = message.split("missing required field `", 1)[1].split("`", 1)[0]
        path = f"{path}.{missing}" if path else missing
    return path


_BUG_HINT = "This is a bug in ltx-backend: please report it with the log (serve --log-file)."
_PARSE_HINT = "Send one JSON object per line, UTF-8, terminated by a newline."
_PARAMS_HINT = "Check the field types against protocol/PROTOCOL.md."
_LIMITS_HINT = f"A line may hold at most {MAX_LINE_BYTES} bytes and nest at most {MAX_DEPTH} levels."
_JSON_KINDS = {b"[": "an array", b'"': "a string", b"t": "a boolean", b"f": "a boolean", b"n": "null"}
_TYPES = ("validate-env", "load", "unload", "generate", "cancel", "status", "shutdown", "models", "download", "delete",
          "inspect")  # fmt: skip


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _install_signals(handler: Callable, wake_fd: int) -> Callable[[], None]:
    """SIGTERM, SIGINT and SIGHUP call `handler` (which only sets a flag), and wake the reader through `wake_fd`
    even when the signal lands on another thread; returns what puts the previous handlers back."""
    previous_wake = signal.set_wakeup_fd(wake_fd, warn_on_full_buffer=False)
    previous = {}
    for name in STOP_SIGNALS:
        number = getattr(signal, name, None)
        if number is not None:
            previous[number] = signal.signal(number, handler)

    def restore() -> None:
        for number, old in previous.items():
            signal.signal(number, old)
        signal.set_wakeup_fd(previous_wake)

    return restore


def open_log(log_file: str | None) -> list[logging.Handler]:
    """The log handlers: stderr, and `log_file` (its folder created); `output_write_failed` when it cannot be."""
    import sys

    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        path = Path(log_file).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handlers.append(logging.FileHandler(path, encoding="utf-8"))
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise LtxError(ErrorCode.OUTPUT_WRITE_FAILED, f"cannot write the log file {log_file}: {reason}",
                           "Pass a --log-file path in a writable folder, or leave the option out.",
                           field="--log-file", path=log_file) from exc  # fmt: skip
    return handlers


def _check_log_dir(log_dir: str | None) -> None:
    """`serve --log-dir`: created now, so an unusable folder stops the server before `ready`."""
    if not log_dir:
        return
    try:
        Path(log_dir).expanduser().mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as exc:
        raise LtxError(ErrorCode.OUTPUT_WRITE_FAILED, f"cannot create the job log folder {log_dir}: {exc}",
                       "Pass a --log-dir in a writable place, or leave the option out.", field="--log-dir",
                       path=log_dir) from exc  # fmt: skip


def run_stdio(
    log_file: str | None = None,
    heartbeat_s: float = 5.0,
    log_dir: str | None = None,
    distributed: int = 1,
    parallel: str = "tensor",
) -> int:
    """Take over the process's stdio: protocol lines on the real stdout, everything else on stderr.

    A log file that cannot be opened is reported before `ready`: one `error` line, and exit status 2."""
    import sys

    protocol_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # even C libraries' prints go to stderr now
    sys.stdout = sys.stderr
    try:
        handlers = open_log(log_file)
        _check_log_dir(log_dir)
    except LtxError as error:
        sys.stderr.write(f"error [{error.code.value}]: {error.message}\n  hint: {error.hint}\n")
        with contextlib.suppress(OSError):
            protocol_out.write(msgspec.json.encode(_error_reply(None, error, None, "")) + b"\n")
        return 2
    logging.basicConfig(level=logging.INFO, handlers=handlers, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    wrap, ranks = None, None
    if distributed > 1:  # the followers start before `ready`; a failure to start is reported like the log file's
        from ltx_backend.parallel.run import RankGroup

        try:
            ranks = RankGroup(distributed)
        except LtxError as error:
            sys.stderr.write(f"error [{error.code.value}]: {error.message}\n  hint: {error.hint}\n")
            with contextlib.suppress(OSError):
                protocol_out.write(msgspec.json.encode(_error_reply(None, error, None, "")) + b"\n")
            return 2
        wrap = lambda engine: ranks.engine(engine, parallel)  # noqa: E731
    stdin = os.fdopen(os.dup(sys.stdin.fileno()), "rb", buffering=0)
    from ltx_backend.pipeline.warmup import use_persistent_kernel_cache

    use_persistent_kernel_cache()  # before MLX compiles anything
    code = Server(protocol_out, heartbeat_s=heartbeat_s, log_dir=log_dir, wrap_engine=wrap).serve(stdin)
    if ranks is not None:
        ranks.close()
    # Leave without interpreter teardown: a worker still inside an MLX kernel cannot be joined, and MLX's
    # thread-local state from the worker aborts ("terminate called") in static destructors at normal exit.
    logging.shutdown()
    sys.stderr.flush()
    os._exit(code)

"""Download a model repo into the local Hugging Face hub cache: only the files a job needs, resumable, with byte
progress, speed and ETA, a disk-space check first, and stable error codes.

huggingface_hub finds the repo (``repo_info`` for the commit, ``list_repo_tree`` for every file's size and content
hash) and builds the URLs, headers and errors; the bytes are fetched here, one file at a time, into the hub cache's
own layout (``blobs/<etag>``, ``snapshots/<commit>/<path>`` symlinks, ``refs/<revision>``), so every reader of the
cache (huggingface_hub, `resolve.py`, `cache.py`) sees the result. A file in flight lives in
``blobs/<etag>.incomplete`` and is kept when the download stops (cancel, lost network, a killed process): the next
download of the same file asks for the rest with an HTTP ``Range`` request, as huggingface_hub 1.x did (2.x restarts
an interrupted file). A job needs one copy of each weight file (`select_files`).

Nothing is downloaded implicitly anywhere else in the backend: this is the one place that touches the network.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import shutil
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import msgspec

from ltx_backend import events
from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.weights.cache import describe_model
from ltx_backend.weights.resolve import REPO_ID, hub_cache_dir, hub_endpoint

PROGRESS_INTERVAL_S = 0.1  # at most ten progress events a second (plus the last one)
SPEED_WINDOW_S = 5.0  # the speed (and so the ETA) is the average over this many seconds
DISK_MARGIN = 64 << 20  # left free after a download: the OS and the snapshot links need a little room
_RESUME_HINT = "Run the same command again: the files already downloaded are kept and the rest resumes."
_NETWORK_CLASS_NAMES = {
    "ConnectionError", "ConnectError", "ConnectTimeout", "TimeoutException", "Timeout", "ReadTimeout",
    "TransportError", "NetworkError", "ProxyError", "RemoteProtocolError", "ChunkedEncodingError",
}  # fmt: skip
# What no job loads: pictures and videos of the model card, weights in formats other than safetensors (when the
# repo has safetensors), and safetensors variants the loader refuses (FP8/FP4) or that are add-ons (LoRAs).
MEDIA_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".mp4", ".mov", ".webm")
OTHER_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".onnx", ".gguf", ".msgpack", ".h5", ".tflite", ".ot")
UNLOADABLE_WORDS = ("fp8", "fp4", "lora")


@dataclass(frozen=True)
class RemoteFile:
    """One file of a repo at a commit: its path, size and etag (the LFS sha256, else the git blob id)."""

    path: str
    size: int
    etag: str


@dataclass
class DownloadPlan:
    """What a download of `repo` at `revision` (commit `commit`) fetches, and what the cache already holds."""

    repo: str
    revision: str
    commit: str
    files: list[RemoteFile]
    skipped: dict[str, str] = field(default_factory=dict)  # path -> why it is not downloaded
    repo_dir: Path = Path()

    def blob(self, file: RemoteFile) -> Path:
        return self.repo_dir / "blobs" / file.etag

    def partial(self, file: RemoteFile) -> Path:
        return self.repo_dir / "blobs" / f"{file.etag}.incomplete"

    def on_disk(self, file: RemoteFile) -> int:
        """Bytes of `file` already in the cache: all of them, a partial download's, or none."""
        if self.blob(file).is_file():
            return file.size
        try:
            return min(self.partial(file).stat().st_size, file.size)
        except OSError:
            return 0

    @property
    def total_bytes(self) -> int:
        return sum(file.size for file in self.files)

    @property
    def cached_bytes(self) -> int:
        return sum(self.on_disk(file) for file in self.files)

    @property
    def needed_bytes(self) -> int:
        return self.total_bytes - self.cached_bytes

    @property
    def snapshot(self) -> Path:
        return self.repo_dir / "snapshots" / self.commit


VARIANTS = ("distilled", "dev")


def select_files(
    files: list[RemoteFile], patterns: list[str] | None = None, variant: str = "distilled"
) -> tuple[list[RemoteFile], dict]:
    """The files a job needs, and why each other file is left out.

    `patterns` (fnmatch, as huggingface_hub's ``allow_patterns``) picks files by hand. Otherwise: no media, no
    pickled/ONNX/GGUF weights beside safetensors, no FP8/FP4/LoRA files, one file per content (a repo that
    stores the same weights twice is fetched once), and of an official repo's several full checkpoints (at its
    root, or transformers in an LTX-2.5 release's ``diffusion_models/``) only one: for `variant` ``distilled``
    the one `open_checkpoint` would load (the distilled one, newest name first); for ``dev`` the dev one and the
    distilled LoRA its two-stage flow fuses in stage 2."""
    if variant not in VARIANTS:
        raise LtxError(ErrorCode.INVALID_PARAMS, f"variant {variant!r} is not one of {', '.join(VARIANTS)}",
                       "Use distilled (the default) or dev.", field="variant")  # fmt: skip
    kept: list[RemoteFile] = []
    skipped: dict[str, str] = {}
    has_safetensors = any(file.path.endswith(".safetensors") for file in files)
    seen: dict[str, str] = {}
    for file in sorted(files, key=lambda f: (f.path.count("/"), f.path)):  # root copies win over nested ones
        name = PurePosixPath(file.path).name.lower()
        if patterns is not None:
            if not any(fnmatch.fnmatch(file.path, pattern) for pattern in patterns):
                skipped[file.path] = "not asked for"
                continue
        elif name.endswith(MEDIA_SUFFIXES):
            skipped[file.path] = "media"
            continue
        elif has_safetensors and name.endswith(OTHER_WEIGHT_SUFFIXES):
            skipped[file.path] = "not safetensors"
            continue
        elif (
            name.endswith(".safetensors")
            and any(word in name for word in UNLOADABLE_WORDS)
            and not (variant == "dev" and _is_distilled_lora(name))
        ):
            skipped[file.path] = "FP8/FP4 or LoRA weights"
            continue
        if file.etag in seen:
            skipped[file.path] = f"same content as {seen[file.etag]}"
            continue
        seen[file.etag] = file.path
        kept.append(file)
    if patterns is None:
        for path in _other_official_checkpoints([file.path for file in kept], variant):
            skipped[path] = "another variant of the checkpoint"
        kept = [file for file in kept if file.path not in skipped]
    return sorted(kept, key=lambda f: f.path), skipped


def _is_distilled_lora(name: str) -> bool:
    return "distilled-lora" in name and not any(word in name for word in ("fp8", "fp4"))


def _other_official_checkpoints(paths: list[str], variant: str = "distilled") -> list[str]:
    """Of several official full checkpoints at the repo root (or transformers in a release's
    ``diffusion_models/``), all but the `variant` one (``distilled``: the one `open_checkpoint` picks)."""
    from ltx_backend.weights.checkpoint import OFFICIAL_FILE_EXCLUDES, OFFICIAL_TREE

    root = {path for path in paths if "/" not in path}
    if "split_model.json" in root or "model.safetensors" in root or "transformer.safetensors" in root:
        return []
    others: list[str] = []
    for folder in ("", f"{OFFICIAL_TREE}/"):
        names = [p.removeprefix(folder) for p in paths if p.startswith(folder)]
        candidates = sorted(
            (folder + n for n in names if "/" not in n and n.endswith(".safetensors")
             and not any(word in n for word in OFFICIAL_FILE_EXCLUDES)),
            key=lambda p: p.removesuffix(".safetensors"),
            reverse=True,  # newest version first: ...-distilled-1.1 before ...-distilled
        )  # fmt: skip
        if len(candidates) < 2:
            continue
        wanted = [p for p in candidates if ("distilled" in p) == (variant == "distilled")]
        chosen = wanted[0] if wanted else candidates[0]
        others += [p for p in candidates if p != chosen]
    return others


class _Meter:
    """Bytes on disk for one download, with a speed over the last `SPEED_WINDOW_S` and throttled events."""

    def __init__(self, repo: str, done: int, total: int, emit: events.Emit, interval: float, check) -> None:
        self.repo, self.done, self.total = repo, done, total
        self.emit, self.interval, self.check = emit, interval, check
        self.samples: deque[tuple[float, int]] = deque([(time.monotonic(), done)])
        self.last_time = float("-inf")
        self.last_sent: tuple[int, int] | None = None

    def add(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        self.samples.append((now, self.done))
        while len(self.samples) > 2 and now - self.samples[0][0] > SPEED_WINDOW_S:
            self.samples.popleft()
        if now - self.last_time >= self.interval:
            self.report(now)
        self.check()  # a cancel stops here, between two chunks: the partial file keeps what was written

    def report(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.last_time = now
        if self.last_sent == (self.done, self.total):
            return
        self.last_sent = (self.done, self.total)
        (start, first), (_, last) = self.samples[0], self.samples[-1]
        speed = (last - first) / (now - start) if now - start >= 0.2 and last > first else None
        eta = (self.total - self.done) / speed if speed else None
        self.emit(
            events.DownloadProgress(
                self.repo,
                self.done,
                self.total,
                None if speed is None else round(speed, 1),
                None if eta is None else round(eta, 1),
            )
        )


class DownloadResult(msgspec.Struct, tag="download_result"):
    """The last line of ``ltx-backend download --json``: where the model is and what it is."""

    repo: str
    revision: str
    path: str
    kind: str  # "ltx", "text_encoder" or "other"
    size_bytes: int
    layout: str | None = None
    model_version: str | None = None
    quantization: dict | None = None
    text_encoder: str | None = None


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _network_error(exc: BaseException) -> BaseException | None:
    """The deepest connection/timeout error in `exc`'s chain (or `exc` itself if it is one), else None."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    found = None
    for item in _chain(exc):
        if isinstance(item, (ConnectionError, TimeoutError, LocalEntryNotFoundError)) or any(
            cls.__name__ in _NETWORK_CLASS_NAMES for cls in type(item).__mro__
        ):
            found = item  # LocalEntryNotFoundError: the Hub could not be reached and nothing was cached
    return found


def map_download_error(exc: Exception, repo_id: str, revision: str) -> LtxError:
    """A huggingface_hub / OS error -> an `LtxError` with a stable code and a hint."""
    from huggingface_hub import errors as hf

    details = {"repo": repo_id, "revision": revision, "cause": f"{type(exc).__name__}: {exc}"}
    page = f"https://huggingface.co/{repo_id}"
    if isinstance(exc, LtxError):
        return exc
    if isinstance(exc, hf.GatedRepoError):
        return LtxError(
            ErrorCode.MODEL_ACCESS_DENIED,
            f"{repo_id} is a gated repo and this machine has no access to it",
            f"Accept the model's terms at {page}, then log in (`hf auth login`) or set HF_TOKEN.",
            **details,
        )
    if isinstance(exc, hf.RevisionNotFoundError):
        return LtxError(
            ErrorCode.MODEL_NOT_FOUND,
            f"{repo_id} has no revision {revision!r}",
            f"Check the branch, tag or commit at {page}/tree/main, or leave --revision out (main).",
            **details,
        )
    if isinstance(exc, hf.RepositoryNotFoundError):
        return LtxError(
            ErrorCode.MODEL_NOT_FOUND,
            f"{repo_id} was not found on the Hugging Face Hub",
            "Check the repo id (org/name); if the repo is private, log in (`hf auth login`) or set HF_TOKEN.",
            **details,
        )
    if isinstance(exc, hf.DisabledRepoError):
        return LtxError(
            ErrorCode.MODEL_ACCESS_DENIED, f"{repo_id} has been disabled on the Hub", "Pick another repo.", **details
        )
    if any(isinstance(item, hf.OfflineModeIsEnabled) for item in _chain(exc)):
        return LtxError(
            ErrorCode.NETWORK_UNAVAILABLE,
            f"cannot download {repo_id}: offline mode is on (HF_HUB_OFFLINE) and it is not in the cache",
            "Unset HF_HUB_OFFLINE (or set it to 0) to allow downloads.",
            **details,
        )
    if (network := _network_error(exc)) is not None:
        return LtxError(
            ErrorCode.NETWORK_UNAVAILABLE,
            f"cannot reach the Hugging Face Hub to download {repo_id} ({type(network).__name__}: {network})",
            "Check the internet connection and any proxy (HTTPS_PROXY); HF_ENDPOINT moves to a mirror. " + _RESUME_HINT,
            **details,
        )
    if isinstance(exc, hf.HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            return LtxError(
                ErrorCode.MODEL_ACCESS_DENIED,
                f"the Hub refused access to {repo_id} (HTTP {status})",
                f"Log in (`hf auth login`) or set HF_TOKEN to a token that can read {page}.",
                **details,
            )
        if status == 404:
            return LtxError(
                ErrorCode.MODEL_NOT_FOUND,
                f"{repo_id}: not found on the Hub (HTTP 404)",
                "Check the repo id.",
                **details,
            )
        busy = "the Hub is rate-limiting this machine" if status == 429 else f"the Hub answered HTTP {status}"
        return LtxError(ErrorCode.DOWNLOAD_FAILED, f"downloading {repo_id} failed: {busy}", _RESUME_HINT, **details)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return LtxError(
            ErrorCode.DISK_FULL,
            f"the disk is full: downloading {repo_id} into {hub_cache_dir()} stopped",
            "Free some space (`ltx-backend models` lists what the cache holds) or point HF_HUB_CACHE at a bigger "
            "disk, then run the command again to resume.",
            **details,
        )
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return LtxError(
            ErrorCode.OUTPUT_WRITE_FAILED,
            f"cannot write to the model cache {hub_cache_dir()}: {exc.strerror}",
            "Fix the folder's permissions or set HF_HUB_CACHE (or HF_HOME) to a writable folder.",
            **details,
        )
    return LtxError(
        ErrorCode.DOWNLOAD_FAILED, f"downloading {repo_id} failed: {type(exc).__name__}: {exc}", _RESUME_HINT, **details
    )


def validate_download(path: Path, repo_id: str) -> None:
    """Open what was downloaded the way loading it would: a damaged download fails here, not at generate time."""
    describe_model(path, repo_id, strict=True)  # other kinds of repo are only checked for missing blobs


def _check_repo_id(repo_id: str) -> None:
    if not REPO_ID.match(repo_id):
        raise LtxError(
            ErrorCode.INVALID_PARAMS,
            f"{repo_id!r} is not a Hugging Face repo id",
            "Use org/name, e.g. notapalindrome/ltx2-mlx-av.",
            repo=repo_id,
            field="repo",
        )


def plan_download(
    repo_id: str, revision: str = "main", patterns: list[str] | None = None, variant: str = "distilled"
) -> DownloadPlan:
    """Ask the Hub for the commit of `revision` and its files; choose the ones to fetch (`select_files`)."""
    from huggingface_hub import HfApi
    from huggingface_hub.file_download import repo_folder_name
    from huggingface_hub.hf_api import RepoFile

    _check_repo_id(repo_id)
    try:
        api = HfApi(endpoint=hub_endpoint())
        commit = api.repo_info(repo_id, revision=revision).sha
        listing = [
            RemoteFile(item.path, int(item.size), item.lfs.sha256 if item.lfs is not None else item.blob_id)
            for item in api.list_repo_tree(repo_id, recursive=True, revision=commit)
            if isinstance(item, RepoFile)
        ]
    except Exception as exc:
        raise map_download_error(exc, repo_id, revision) from exc
    files, skipped = select_files(listing, patterns, variant)
    if patterns is not None and not files:
        raise LtxError(
            ErrorCode.INVALID_PARAMS,
            f"no file of {repo_id} matches {', '.join(patterns)}",
            "Check the file names (glob patterns such as *.safetensors), or leave `files` out.",
            field="files",
        )
    repo_dir = hub_cache_dir() / repo_folder_name(repo_id=repo_id, repo_type="model")
    return DownloadPlan(repo_id, revision, str(commit), files, skipped, repo_dir)


def free_bytes(folder: Path) -> int:
    """Free bytes on the disk that holds `folder` (or its nearest existing parent)."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def check_disk_space(plan: DownloadPlan) -> None:
    """`disk_full` before anything is written when the files still to fetch do not fit on the cache's disk."""
    needed = plan.needed_bytes
    if needed == 0:
        return
    free = free_bytes(plan.repo_dir)
    if needed + DISK_MARGIN > free:
        raise LtxError(
            ErrorCode.DISK_FULL,
            f"downloading {plan.repo} needs {needed} bytes ({needed / 1e9:.2f} GB) more on the disk of "
            f"{hub_cache_dir()}, but only {free} bytes ({free / 1e9:.2f} GB) are free",
            f"Free at least {(needed + DISK_MARGIN - free) / 1e9:.2f} GB (the `models` list shows what the cache "
            "holds; `delete` removes a model), or set HF_HUB_CACHE to a folder on a bigger disk.",
            needed_bytes=needed,
            free_bytes=free,
            cache=str(hub_cache_dir()),
        )


def _fetch_file(plan: DownloadPlan, file: RemoteFile, meter: _Meter) -> None:
    """Fetch one file into its blob, resuming its partial file; the partial file is kept if this stops early."""
    from huggingface_hub import constants, hf_hub_url
    from huggingface_hub.utils import WeakFileLock, build_hf_headers, hf_raise_for_status, http_stream_backoff

    blob, partial = plan.blob(file), plan.partial(file)
    blob.parent.mkdir(parents=True, exist_ok=True)
    with WeakFileLock(str(blob) + ".lock"):
        if blob.is_file():
            return
        start = partial.stat().st_size if partial.is_file() else 0
        if start > file.size:  # not a prefix of this file: start over
            partial.unlink()
            meter.add(-start)
            start = 0
        headers = build_hf_headers()
        headers["Accept-Encoding"] = "identity"  # byte ranges of the stored file, never of a compressed stream
        if start:
            headers["Range"] = f"bytes={start}-"
        url = hf_hub_url(plan.repo, file.path, revision=plan.commit, endpoint=hub_endpoint())
        if start < file.size:
            with http_stream_backoff("GET", url, headers=headers, timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT,
                                     retry_on_exceptions=(), retry_on_status_codes=(408, 429)) as response:  # fmt: skip
                hf_raise_for_status(response)
                mode = "ab"
                if start and response.status_code != 206:  # the server ignored the range: the whole file comes
                    meter.add(-start)
                    mode = "wb"
                with partial.open(mode, buffering=0) as out:  # unbuffered: a killed process keeps every byte read
                    for chunk in response.iter_bytes():  # as they arrive: a cancel is seen within one read
                        view = memoryview(chunk)
                        while view:  # a raw write may be short
                            view = view[out.write(view) :]
                        meter.add(len(chunk))
        elif not partial.exists():  # an empty file: nothing to fetch
            partial.touch()
        size = partial.stat().st_size
        if size != file.size:
            raise LtxError(
                ErrorCode.DOWNLOAD_FAILED,
                f"{plan.repo}: {file.path} arrived with {size} bytes, expected {file.size}",
                _RESUME_HINT,
                repo=plan.repo,
                file=file.path,
            )
        os.replace(partial, blob)


def _link(plan: DownloadPlan, file: RemoteFile) -> None:
    """The snapshot's symlink to the blob, relative as huggingface_hub makes them."""
    link = plan.snapshot / file.path
    link.parent.mkdir(parents=True, exist_ok=True)
    target = os.path.relpath(plan.blob(file), link.parent)
    if link.is_symlink() and os.readlink(link) == target:
        return
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(target, link)


def fetch(plan: DownloadPlan, emit: events.Emit = events.ignore, check: Callable[[], None] = lambda: None,
          progress_interval: float = PROGRESS_INTERVAL_S) -> Path:  # fmt: skip
    """Fetch every file of `plan` that the cache lacks, then link the snapshot and its ref; returns the snapshot.

    `check` is called after every chunk (it raises to stop: the partial file keeps what was written)."""
    meter = _Meter(plan.repo, plan.cached_bytes, plan.total_bytes, emit, progress_interval, check)
    meter.report()
    for file in plan.files:
        if not plan.blob(file).is_file():
            try:
                _fetch_file(plan, file, meter)
            except LtxError:
                raise
            except OSError as exc:
                raise map_download_error(exc, plan.repo, plan.revision) from exc
            except Exception as exc:
                if type(exc).__module__.startswith(("huggingface_hub", "httpx")):
                    raise map_download_error(exc, plan.repo, plan.revision) from exc
                raise  # a cancel from `check`, or a bug
        _link(plan, file)
    if plan.revision != plan.commit:
        ref = plan.repo_dir / "refs" / plan.revision
        ref.parent.mkdir(parents=True, exist_ok=True)
        if not ref.is_file() or ref.read_text().strip() != plan.commit:
            ref.write_text(plan.commit)
    meter.report()
    return plan.snapshot


def download_model(
    repo_id: str,
    revision: str = "main",
    emit: events.Emit = events.ignore,
    *,
    progress_interval: float | None = None,
    check: Callable[[], None] = lambda: None,
    patterns: list[str] | None = None,
    variant: str = "distilled",
) -> Path:
    """Download what a job needs of `repo_id` at `revision` into the hub cache; returns its snapshot directory.

    Emits `events.DownloadProgress` (bytes on disk so far, of the files chosen; speed and ETA once measured) at
    most every `progress_interval` seconds (default `PROGRESS_INTERVAL_S`), the first and last always. The disk
    space is checked first (``disk_full``). An LTX checkpoint or a Gemma text encoder is opened afterwards
    (headers and configs only) to check that it is complete and readable. Every failure is an `LtxError`
    (``model_not_found``, ``model_access_denied``, ``network_unavailable``, ``disk_full``,
    ``output_write_failed``, ``download_failed``, or the checkpoint's own code); `check` may raise anything.
    """
    plan = plan_download(repo_id, revision, patterns, variant)
    check_disk_space(plan)
    interval = PROGRESS_INTERVAL_S if progress_interval is None else progress_interval
    path = fetch(plan, emit, check, interval)
    validate_download(path, repo_id)
    return path

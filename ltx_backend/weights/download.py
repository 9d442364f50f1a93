"""Download a model repo into the local Hugging Face hub cache, with byte progress and stable error codes.

``huggingface_hub.snapshot_download`` does the work (parallel files, resume of interrupted downloads, the
cache layout `resolve.py` reads back). Progress comes from the ``tqdm_class`` it accepts: huggingface_hub
2.x builds every bar of a snapshot download from that class (a file counter, a bytes-on-disk bar and a
bytes-from-network bar that all per-file downloads feed), so a bar class that only counts is enough to
aggregate the bytes of every file and report them as `events.DownloadProgress`. Older huggingface_hub
versions use the class for the file counter only; there the final event (the snapshot's size) is the only one.

Nothing is downloaded implicitly anywhere else in the backend: this is the one place that touches the network.
"""

from __future__ import annotations

import errno
import threading
import time
from pathlib import Path

import msgspec

from ltx_backend import events
from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.weights.cache import describe_model, disk_size
from ltx_backend.weights.resolve import REPO_ID, hub_cache_dir

PROGRESS_INTERVAL_S = 0.1  # at most ten progress events a second (plus the last one)
_RESUME_HINT = "Run the same command again: the files already downloaded are kept and the rest resumes."
_NETWORK_CLASS_NAMES = {
    "ConnectionError", "ConnectError", "ConnectTimeout", "TimeoutException", "Timeout", "ReadTimeout",
    "TransportError", "NetworkError", "ProxyError", "RemoteProtocolError", "ChunkedEncodingError",
}  # fmt: skip


class _Aggregator:
    """Sums the bars huggingface_hub opens during one snapshot download and emits throttled progress."""

    def __init__(self, repo: str, emit: events.Emit, interval: float) -> None:
        self.repo = repo
        self.emit = emit
        self.interval = interval
        self.lock = threading.Lock()
        self.bars: list[_Bar] = []
        self.last_time = float("-inf")
        self.last_sent: tuple[int, int | None] | None = None

    def bar_class(self) -> type:
        return type("LtxDownloadBar", (_Bar,), {"aggregator": self})

    def totals(self) -> tuple[int, int | None] | None:
        """(bytes, total) over the bytes-on-disk bars; None while no bar counts bytes."""
        byte_bars = [bar for bar in self.bars if bar.unit == "B"]
        if not byte_bars:
            return None
        # The network-transfer bar double-counts plain HTTP downloads and undercounts deduplicated xet ones.
        disk_bars = [bar for bar in byte_bars if not bar.is_transfer] or byte_bars
        done = max(0, sum(int(bar.n) for bar in disk_bars))
        total = sum(int(bar.total or 0) for bar in disk_bars)
        return done, (max(total, done) if total else None)

    def report(self) -> None:
        with self.lock:
            totals = self.totals()
            if totals is None or totals == self.last_sent:
                return
            now = time.monotonic()
            if now - self.last_time < self.interval:
                return
            self.last_time, self.last_sent = now, totals
            self.emit(events.DownloadProgress(self.repo, totals[0], totals[1]))


class _Bar:
    """The part of tqdm's interface huggingface_hub uses: counts, never draws."""

    aggregator: _Aggregator

    def __init__(self, iterable=None, *args, **kwargs) -> None:
        self.iterable = iterable
        self.desc = str(kwargs.get("desc") or "")
        self.unit = kwargs.get("unit", "it")
        self.total = kwargs.get("total")
        self.n = kwargs.get("initial", 0) or 0
        self.is_transfer = str(kwargs.get("name", "")).endswith(".transfer") or self.desc.startswith(
            "Downloading bytes"
        )
        self.format_dict = {"rate": None}
        with self.aggregator.lock:
            self.aggregator.bars.append(self)

    def __iter__(self):
        for item in self.iterable or ():
            yield item
            self.update(1)

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: float | None = 1) -> None:
        self.n += n or 0
        self.aggregator.report()

    def refresh(self, *args, **kwargs) -> None:
        self.aggregator.report()

    def reset(self, total=None) -> None:
        self.n, self.total = 0, total

    def close(self) -> None:
        pass

    def clear(self, *args, **kwargs) -> None:
        pass

    def set_description(self, desc=None, refresh=True) -> None:
        self.desc = str(desc or "")

    set_description_str = set_description

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def set_postfix_str(self, *args, **kwargs) -> None:
        pass


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


def _validate(path: Path, repo_id: str) -> None:
    """Open what was downloaded the way loading it would: a damaged download fails here, not at generate time."""
    describe_model(path, repo_id, strict=True)  # other kinds of repo are only checked for missing blobs


def download_model(
    repo_id: str,
    revision: str = "main",
    emit: events.Emit = events.ignore,
    *,
    progress_interval: float | None = None,
) -> Path:
    """Download `repo_id` at `revision` into the hub cache and return its snapshot directory.

    Emits `events.DownloadProgress` (bytes written so far, total known so far) from the download threads, at
    most every `progress_interval` seconds (default `PROGRESS_INTERVAL_S`), and a last one at 100% (the
    snapshot's size on disk when everything was cached already). An LTX checkpoint or a Gemma text encoder
    is opened afterwards (headers and configs only) to check that it is complete and readable.
    Every failure is an `LtxError` (``model_not_found``, ``model_access_denied``, ``network_unavailable``,
    ``output_write_failed``, ``download_failed``, or the checkpoint's own code).
    """
    from huggingface_hub import snapshot_download

    if not REPO_ID.match(repo_id):
        raise LtxError(
            ErrorCode.INVALID_PARAMS,
            f"{repo_id!r} is not a Hugging Face repo id",
            "Use org/name, e.g. notapalindrome/ltx2-mlx-av.",
            repo=repo_id,
        )
    interval = PROGRESS_INTERVAL_S if progress_interval is None else progress_interval
    aggregator = _Aggregator(repo_id, emit, interval)
    try:
        path = Path(
            snapshot_download(repo_id, revision=revision, cache_dir=hub_cache_dir(), tqdm_class=aggregator.bar_class())
        )
    except Exception as exc:
        raise map_download_error(exc, repo_id, revision) from exc
    totals = aggregator.totals()
    size = totals[1] if totals and totals[1] else disk_size(path)
    if aggregator.last_sent != (size, size):
        emit(events.DownloadProgress(repo_id, size, size))
    _validate(path, repo_id)
    return path

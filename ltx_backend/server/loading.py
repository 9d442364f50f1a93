"""The `load` job's checks and downloads: the model is found (and its layout read) before the text encoder is
looked at, a local path that is not a model is `model_not_found` naming it, and only a Hugging Face repo id that
is not cached is downloaded, on a thread the job's cancel token can abandon at once.
"""

from __future__ import annotations

import threading
from pathlib import Path

from ltx_backend import events
from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.pipeline.engine import CancelToken
from ltx_backend.weights import resolve
from ltx_backend.weights.cache import record_use

QUANTIZE_BITS = (4, 8)
_POLL_S = 0.05


def check_quantize(quantize: object) -> None:
    """`invalid_params` (field `quantize`) unless it is null, 4 or 8; checked before the job is queued."""
    if quantize is not None and quantize not in QUANTIZE_BITS:
        raise LtxError(ErrorCode.INVALID_PARAMS, f"quantize must be null, 4 or 8, not {quantize}",
                       "Use 4 or 8 bits, or null to load the weights as stored.", field="quantize")  # fmt: skip


def locate(name: str, what: str, cancel: CancelToken, emit: events.Emit) -> Path:
    """The local directory (or file) of a model or text encoder; downloads an uncached repo id (with progress).

    `what` is the request field (`model` or `text_encoder`), named in errors."""
    if name in resolve.TINY_MODELS and not Path(name).exists():
        found = resolve.resolve_model(name)
        record_use(found)
        return found
    if not name.strip():
        raise _not_found(what, name, f"{what} is empty", "Give a Hugging Face repo id, a local directory or `tiny`.")
    path = Path(name).expanduser()
    try:
        exists = path.exists()
        kind = "dir" if path.is_dir() else "file" if path.is_file() else "other"
    except (OSError, ValueError) as exc:  # a name too long for the OS, a NUL byte
        raise _not_found(what, name, f"{what} {name[:200]!r} is not a usable path: {exc}", _PATH_HINT) from exc
    if exists:
        if kind == "other":
            raise _not_found(what, name, f"{what} {name!r} is not a file or directory (a FIFO, socket or device?)",
                             _PATH_HINT)  # fmt: skip
        if kind == "dir" and what == "model" and not _holds_checkpoint(path):
            raise _not_found(what, name, f"no checkpoint in {path.absolute()} (no .safetensors files)", _PATH_HINT)
        record_use(path.absolute())
        return path.absolute()
    if not resolve.REPO_ID.match(name):
        hint = _PATH_HINT
        if name.lower() in resolve.TINY_MODELS:
            hint = f"Model names are case-sensitive: did you mean {name.lower()!r}?"
        raise _not_found(what, name, f"{what} {name!r}: no such file or directory, and not a repo id (org/name)", hint)
    cached = resolve.find_local(name)
    found = cached if cached is not None else download(name, cancel, emit)
    record_use(found)
    return found


def download(repo: str, cancel: CancelToken, emit: events.Emit) -> Path:
    """`download_model` on its own thread: a cancel returns at once (the thread stops at its next chunk)."""
    from ltx_backend.weights import download as downloads

    outcome: dict[str, object] = {}

    def run() -> None:
        try:  # a cancel stops the fetch at its next chunk; the partial file stays for the next download
            outcome["path"] = downloads.download_model(repo, emit=emit, check=cancel.check)
        except BaseException as exc:  # handed to the job's thread
            outcome["error"] = exc

    emit(events.PhaseStarted(events.Phase.DOWNLOAD, repo))
    thread = threading.Thread(target=run, name=f"ltx-download-{repo}", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(_POLL_S)
        cancel.check()
    cancel.check()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return Path(outcome["path"])  # type: ignore[arg-type]


def prequantized(checkpoint) -> dict | None:
    """The quantization a checkpoint is stored with (None: floating point); load-time `quantize` does not apply."""
    from ltx_backend.weights.transformer import GROUP_SIZE

    if checkpoint.quantization is not None:
        return checkpoint.quantization
    if checkpoint.component("transformer").quantized_paths:
        return {"bits": 4, "group_size": GROUP_SIZE}  # no declared setting: what the loader assumes
    return None


def applied_quantization(checkpoint, quantize: int | None) -> dict | None:
    """What the loader will use: the checkpoint's own quantization, else `quantize` bits at load time."""
    from ltx_backend.weights.transformer import GROUP_SIZE

    stored = prequantized(checkpoint)
    if stored is not None or quantize is None:
        return stored
    return {"bits": quantize, "group_size": GROUP_SIZE}


def _holds_checkpoint(folder: Path) -> bool:
    try:
        return (folder / "split_model.json").is_file() or any(folder.glob("*.safetensors"))
    except OSError:
        return False


def _not_found(what: str, name: str, message: str, hint: str) -> LtxError:
    return LtxError(ErrorCode.MODEL_NOT_FOUND, message, hint, field=what, model=name)


_PATH_HINT = "Check the path (a checkpoint directory or .safetensors file), give a repo id (org/name), or `tiny`."

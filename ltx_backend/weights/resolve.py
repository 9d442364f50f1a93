"""Find a model on disk: a local path, or a Hugging Face repo in the local hub cache.

The cache location follows huggingface_hub's rules (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
``~/.cache/huggingface/hub``), read at call time so a host can change them between requests.
Resolving never downloads.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ltx_backend.errors import ErrorCode, LtxError

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")
TINY_MODELS = ("tiny", "tiny-2.3")  # the built-in random-weight models, written on demand


def hub_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    hf_home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(hf_home).expanduser() / "hub"


def hub_endpoint() -> str:
    """The Hub's URL: ``HF_ENDPOINT`` (a mirror, or a test's local server) read now, else huggingface.co."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def cached_snapshot(repo_id: str, revision: str = "main") -> Path | None:
    """The local snapshot directory of `repo_id` in the hub cache, or None if it was never downloaded.

    Read the way huggingface_hub reads its cache offline (``refs/<revision>`` names the commit, unless `revision`
    is one), without its tree-listing check: a download that chose only the files a job needs is complete."""
    repo_dir = hub_cache_dir() / ("models--" + repo_id.replace("/", "--"))
    commit = revision
    if not COMMIT.match(revision):
        try:
            commit = (repo_dir / "refs" / revision).read_text().strip()
        except (OSError, ValueError):
            return None
    snapshot = repo_dir / "snapshots" / commit
    return snapshot if commit and snapshot.is_dir() else None


def resolve_model(model: str, revision: str = "main") -> Path:
    """A local directory or file for `model` (a path, a cached repo id, ``tiny``/``tiny-2.3``); never downloads."""
    if model in TINY_MODELS and not Path(model).exists():
        from ltx_backend.tiny import ensure_tiny_model

        return ensure_tiny_model(model.removeprefix("tiny-") if "-" in model else "2.0")
    path = Path(model).expanduser()
    if path.exists():
        return path.absolute()
    if not REPO_ID.match(model):
        raise LtxError(
            ErrorCode.MODEL_NOT_FOUND,
            f"{model!r} is neither an existing path nor a Hugging Face repo id (org/name)",
            "Check the spelling, or pass the directory that holds the checkpoint.",
            model=model,
        )
    snapshot = cached_snapshot(model, revision)
    if snapshot is None:
        raise LtxError(
            ErrorCode.MODEL_NOT_FOUND,
            f"{model} is not in the local model cache ({hub_cache_dir()})",
            f"Download it first (`ltx-backend download {model}`), or set HF_HOME/HF_HUB_CACHE to the cache "
            "that holds it.",
            model=model,
            cache=str(hub_cache_dir()),
        )
    return snapshot


def find_local(model: str) -> Path | None:
    """What `resolve_model` gives, or None where it would raise: the model would have to be downloaded first."""
    try:
        return resolve_model(model)
    except LtxError:
        return None

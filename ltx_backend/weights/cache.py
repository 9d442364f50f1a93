"""What is on disk: the models in the local Hugging Face hub cache, plus the built-in tiny model.

The hub cache keeps one folder per repo (``models--org--name``) with content-addressed ``blobs/``, one
``snapshots/<commit>/`` tree of symlinks into them per downloaded revision, and ``refs/<branch>`` files naming
the commit of each branch. Sizes follow the symlinks and count each blob once, so two snapshots that share
files are not counted twice. Nothing here reads tensor data: an LTX checkpoint is opened for its layout,
config and safetensors headers only, and a Gemma text encoder for its ``config.json``. A damaged entry is
listed with the error code that loading it would give instead of stopping the listing.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ltx_backend.errors import ErrorCode, LtxError

KIND_LTX = "ltx"
KIND_TEXT_ENCODER = "text_encoder"
KIND_OTHER = "other"
GEMMA_MODEL_TYPES = ("gemma3", "gemma3_text")


@dataclass
class ModelEntry:
    """One snapshot of a cached repo (or the tiny model), as ``ltx-backend models`` lists it."""

    name: str  # the repo id, or "tiny"
    path: str  # the snapshot directory
    kind: str  # "ltx", "text_encoder" or "other"
    size_bytes: int = 0
    repo: str | None = None
    revision: str | None = None  # the snapshot's commit hash
    refs: list[str] = field(default_factory=list)  # branches/tags that point at it ("main", ...)
    layout: str | None = None  # LTX: unified / split / official
    model_version: str | None = None  # LTX: "2.0" or "2.3"
    quantization: dict | None = None  # {"bits": b, "group_size": g}
    components: list[str] = field(default_factory=list)  # LTX components
    text_encoder: str | None = None  # LTX: a bundled Gemma 3 text encoder folder, relative to `path`
    error: dict | None = None  # {"code", "message", "hint"} when the entry is damaged or unreadable
    last_used: float | None = None  # unix time a job last loaded it (`record_use`); None: never

    @property
    def complete(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        return {**asdict(self), "complete": self.complete}


def repo_id_from_folder(name: str) -> str | None:
    """``models--org--name`` -> ``org/name`` (None for datasets, spaces and stray folders)."""
    parts = name.split("--")
    if len(parts) < 3 or parts[0] != "models":
        return None
    return "/".join(parts[1:])


def _read_config(path: Path) -> dict | None:
    try:
        value = json.loads((path / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _is_gemma(path: Path) -> bool:
    config = _read_config(path)
    return config is not None and str(config.get("model_type", "")).lower() in GEMMA_MODEL_TYPES


def classify(path: Path) -> str:
    """What a directory looks like from its file names and ``config.json``, without opening any weights."""
    if not path.is_dir():
        return KIND_LTX if path.suffix == ".safetensors" else KIND_OTHER
    config = _read_config(path)
    model_type = str((config or {}).get("model_type", "")).lower()
    if model_type in GEMMA_MODEL_TYPES:
        return KIND_TEXT_ENCODER
    if (path / "split_model.json").exists() or (path / "embedded_config.json").exists():
        return KIND_LTX
    if model_type and not any(word in model_type for word in ("video", "ltx")):
        return KIND_OTHER  # some other model family that also ships a model.safetensors
    if (path / "model.safetensors").exists() or any(path.glob("transformer*.safetensors")):
        return KIND_LTX
    if any(p.name.lower().startswith("ltx") for p in path.glob("*.safetensors")):
        return KIND_LTX
    return KIND_OTHER


def _files(root: Path) -> list[Path]:
    if root.is_file() or root.is_symlink():
        return [root]
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]  # .cache/ of local_dir downloads
        found.extend(Path(folder) / name for name in names)
    return found


def disk_size(root: Path, seen: set[tuple[int, int]] | None = None) -> int:
    """Bytes under `root`, following symlinks and counting each file (blob) once; `seen` spans several calls."""
    seen = set() if seen is None else seen
    total = 0
    for path in _files(root):
        try:
            stat = path.stat()
        except OSError:  # a dangling symlink: its blob is missing
            continue
        key = (stat.st_dev, stat.st_ino)
        if key not in seen:
            seen.add(key)
            total += stat.st_size
    return total


def _missing_blobs(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in _files(root) if path.is_symlink() and not path.exists())


def _ltx_version(ckpt) -> str:
    # The same rule as pipeline.engine.model_version (kept here so weights/ does not import the pipeline).
    declared = str(ckpt.model_info.get("model_version") or ckpt.split_manifest.get("model_version") or "")
    if declared.startswith("2.3") or ckpt.section("transformer").get("cross_attention_adaln"):
        return "2.3"
    return "2.0"


def _describe_ltx(entry: ModelEntry, path: Path) -> None:
    from ltx_backend.weights.checkpoint import open_checkpoint

    ckpt = open_checkpoint(path)
    entry.layout = ckpt.layout.value
    entry.model_version = _ltx_version(ckpt)
    entry.quantization = ckpt.quantization
    entry.components = ckpt.components
    bundled = ckpt.root / "text_encoder"
    if bundled.is_dir() and _is_gemma(bundled):
        entry.text_encoder = "text_encoder"


def _describe_text_encoder(entry: ModelEntry, path: Path) -> None:
    from ltx_backend.weights.gemma import read_gemma_config, tokenizer_dir

    raw, _ = read_gemma_config(path)
    tokenizer_dir(path)
    if not any(path.glob("*.safetensors")):
        raise LtxError(
            ErrorCode.TEXT_ENCODER_INVALID,
            f"text encoder at {path}: no .safetensors weights",
            "Download the text encoder again.",
            path=str(path),
        )
    quantization = raw.get("quantization")
    if isinstance(quantization, dict) and "bits" in quantization:
        entry.quantization = {"bits": int(quantization["bits"]), "group_size": int(quantization.get("group_size", 64))}


def _inspect(entry: ModelEntry, path: Path) -> None:
    missing = _missing_blobs(path) if path.is_dir() else []
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise LtxError(
            ErrorCode.CHECKPOINT_CORRUPT,
            f"{path} is incomplete: {shown} {'has' if len(missing) == 1 else 'have'} no data in the cache",
            f"The download was interrupted or the cache was pruned: run `ltx-backend download {entry.name}`.",
            missing=missing,
        )
    if entry.kind == KIND_LTX:
        _describe_ltx(entry, path)
    elif entry.kind == KIND_TEXT_ENCODER:
        _describe_text_encoder(entry, path)


def describe_model(
    path: str | Path,
    name: str | None = None,
    *,
    strict: bool = False,
) -> ModelEntry:
    """Describe one model directory. Damage is recorded in ``entry.error``, or raised as `LtxError` if `strict`."""
    path = Path(path)
    entry = ModelEntry(name=name or str(path), path=str(path), kind=classify(path))
    entry.size_bytes = disk_size(path)
    try:
        _inspect(entry, path)
    except LtxError as error:
        if strict:
            raise
        entry.error = {"code": error.code.value, "message": error.message, "hint": error.hint}
    except OSError as exc:  # permissions, I/O errors: the entry is unreadable, the listing goes on
        if strict:
            raise
        entry.error = {
            "code": ErrorCode.CHECKPOINT_CORRUPT.value,
            "message": f"{path} cannot be read: {exc}",
            "hint": "Check the file permissions, or delete the entry and download it again.",
        }
    return entry


def _refs(repo_dir: Path) -> dict[str, list[str]]:
    """commit hash -> the refs (branches, tags, ``pr/N``) that point at it."""
    refs: dict[str, list[str]] = {}
    refs_dir = repo_dir / "refs"
    for path in sorted(_files(refs_dir)) if refs_dir.is_dir() else []:
        try:
            commit = path.read_text().strip()
        except OSError:
            continue
        refs.setdefault(commit, []).append(str(path.relative_to(refs_dir)))
    return refs


def scan_hub_cache(cache: Path | None = None) -> list[ModelEntry]:
    """Every snapshot of every model repo in the hub cache, sorted by repo id (a size counts its own blobs)."""
    from ltx_backend.weights.resolve import hub_cache_dir

    cache = hub_cache_dir() if cache is None else cache
    if not cache.is_dir():
        return []
    entries = []
    for repo_dir in sorted(cache.iterdir()):
        repo = repo_id_from_folder(repo_dir.name)
        if repo is None or not repo_dir.is_dir():
            continue
        refs = _refs(repo_dir)
        snapshots_dir = repo_dir / "snapshots"
        snapshots = sorted(p for p in snapshots_dir.iterdir() if p.is_dir()) if snapshots_dir.is_dir() else []
        if not snapshots:
            entry = ModelEntry(name=repo, path=str(repo_dir), kind=KIND_OTHER, repo=repo)
            entry.size_bytes = disk_size(repo_dir / "blobs") if (repo_dir / "blobs").is_dir() else 0
            entry.error = {
                "code": ErrorCode.MODEL_NOT_FOUND.value,
                "message": f"{repo} has no downloaded snapshot in {repo_dir} (an interrupted download?)",
                "hint": f"Run `ltx-backend download {repo}` to finish it, or delete {repo_dir}.",
            }
            entries.append(entry)
            continue
        for snapshot in snapshots:
            entry = describe_model(snapshot, repo)
            entry.repo = repo
            entry.revision = snapshot.name
            entry.refs = refs.get(snapshot.name, [])
            entries.append(entry)
    return entries


def _usage_file() -> Path:
    from ltx_backend.tiny import tiny_model_dir

    return tiny_model_dir().parent / "usage.json"


def _read_usage() -> dict[str, float]:
    try:
        value = json.loads(_usage_file().read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return (
        {str(k): float(v) for k, v in value.items() if isinstance(v, (int, float))} if isinstance(value, dict) else {}
    )


def record_use(path: str | Path) -> None:
    """Note that a job loaded the model at `path` now (for the `last_used` of `models`); best effort."""
    import time

    usage = _read_usage()
    usage[str(Path(path).absolute())] = round(time.time(), 3)
    target = _usage_file()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{os.getpid()}")
        temporary.write_text(json.dumps(usage, indent=1, sort_keys=True))
        os.replace(temporary, target)
    except OSError:
        pass  # a read-only home must not fail a job


def tiny_entries() -> list[ModelEntry]:
    """The built-in tiny models that were written (``tiny``, ``tiny-2.3``)."""
    from ltx_backend.tiny import NAME, VERSIONS, tiny_model_dir

    entries = []
    for version in VERSIONS:
        folder = tiny_model_dir(version)
        if (folder / "config.json").exists():
            entries.append(describe_model(folder, NAME if version == "2.0" else f"{NAME}-{version}"))
    return entries


def list_models() -> dict:
    """The ``ltx-backend models`` report: the hub cache's models and the tiny models that were written."""
    from ltx_backend.weights.resolve import hub_cache_dir

    cache = hub_cache_dir()
    entries = scan_hub_cache(cache) + tiny_entries()
    usage = _read_usage()
    for entry in entries:
        entry.last_used = usage.get(str(Path(entry.path).absolute()))
    seen: set[tuple[int, int]] = set()  # snapshots of one repo share blobs: the total counts each blob once
    total = sum(disk_size(Path(entry.path), seen) for entry in entries)
    return {"cache": str(cache), "models": [entry.to_dict() for entry in entries], "total_bytes": total}


@dataclass
class Deletion:
    """What `delete_model` would remove (or removed): folders and files, and the bytes that frees."""

    name: str
    revision: str | None
    paths: list[Path]
    freed_bytes: int
    snapshots: list[Path]  # the snapshot folders (or tiny model folder) that stop existing: jobs must not use them


def plan_deletion(name: str, revision: str | None = None) -> Deletion:
    """What deleting `name` (a cached repo id, or a tiny model) at `revision` (None: every revision) removes.

    A snapshot's blobs that another snapshot of the repo still links to are kept (and not counted as freed)."""
    from ltx_backend.tiny import NAME, tiny_model_dir
    from ltx_backend.weights.resolve import COMMIT, REPO_ID, TINY_MODELS, hub_cache_dir

    if name in TINY_MODELS:
        folder = tiny_model_dir("2.0" if name == NAME else name.removeprefix(f"{NAME}-"))
        if not folder.is_dir():
            raise _not_cached(name, "it was never written (it is written on first use)")
        return Deletion(name, None, [folder], disk_size(folder), [folder])
    if not REPO_ID.match(name):
        raise LtxError(
            ErrorCode.INVALID_PARAMS,
            f"{name!r} is not a cached model name: only repo ids (org/name) in the model cache and the tiny models "
            "can be deleted",
            "Give the repo id `models` lists; folders outside the cache are yours to remove.",
            field="model",
        )
    repo_dir = hub_cache_dir() / ("models--" + name.replace("/", "--"))
    if not repo_dir.is_dir():
        raise _not_cached(name, f"it is not in the model cache {hub_cache_dir()}")
    snapshots_dir = repo_dir / "snapshots"
    every = sorted(p for p in snapshots_dir.iterdir() if p.is_dir()) if snapshots_dir.is_dir() else []
    if revision is None:
        return Deletion(name, None, [repo_dir], disk_size(repo_dir), every)
    commit = revision if COMMIT.match(revision) else None
    if commit is None:
        try:
            commit = (repo_dir / "refs" / revision).read_text().strip()
        except OSError:
            raise _not_cached(name, f"it has no revision {revision!r} in the cache") from None
    doomed = snapshots_dir / commit
    if not doomed.is_dir():
        raise _not_cached(name, f"it has no snapshot {commit} in the cache")
    kept: set[tuple[int, int]] = set()
    for other in every:
        if other != doomed:
            disk_size(other, kept)  # marks the blobs the other snapshots use
    blobs = []
    for link in _files(doomed):
        try:
            target, stat = link.resolve(), link.stat()
        except OSError:
            continue
        if (stat.st_dev, stat.st_ino) not in kept:
            kept.add((stat.st_dev, stat.st_ino))
            blobs.append((target, stat.st_size))
    refs = [path for path in _files(repo_dir / "refs") if path.read_text().strip() == commit]
    paths = [doomed, *[target for target, _ in blobs], *refs]
    return Deletion(name, revision, paths, sum(size for _, size in blobs), [doomed])


def delete_model(deletion: Deletion) -> int:
    """Remove what `plan_deletion` found; the bytes freed."""
    import shutil

    for path in deletion.paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return deletion.freed_bytes


def _not_cached(name: str, why: str) -> LtxError:
    return LtxError(ErrorCode.MODEL_NOT_FOUND, f"cannot delete {name}: {why}", "See `models` for what is cached.",
                    field="model", model=name)  # fmt: skip

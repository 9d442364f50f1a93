"""Output paths: checked before any work, written in one temporary folder per job, committed together or not at all.

A job writes every temporary file into one folder beside its video output, ``.ltx-<pid>-<random>``. The folder
is removed on every exit path the process controls; a folder whose owner was killed (SIGKILL, power loss) is
recognised by its dead pid and swept by the next job that writes into the same place. The final files appear
at their paths only by ``rename`` out of that folder, so nothing half-written is ever seen at an output path.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
from pathlib import Path
from types import TracebackType

from ltx_backend.errors import ErrorCode, LtxError

JOB_FOLDER_PREFIX = ".ltx-"
_JOB_FOLDER = re.compile(r"^\.ltx-(?:probe-)?(\d+)-[0-9a-f]{8}$")  # a job folder, or a writability probe
PSEUDO_FILESYSTEMS = ("/proc", "/sys", "/dev")  # kernel interfaces: never a place for a video
FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
WRITE_HINT = "Choose an output path in a folder you can write to."
TEMP_NAME_ROOM = 40  # "/.ltx-<pid>-<8 hex>/v.mp4" and the probe's name, beside the output


def write_error(exc: OSError, path: str | Path, what: str = "Cannot write") -> LtxError:
    """An OS error met while writing `path`: `disk_full` for a full disk or quota, else `output_write_failed`."""
    reason = exc.strerror or str(exc)
    if exc.errno in FULL_ERRNOS:
        return LtxError(
            ErrorCode.DISK_FULL,
            f"{what} {path}: {reason}",
            f"Free disk space on the drive that holds {Path(path).parent} (or choose another output folder).",
            path=str(path),
        )
    return LtxError(ErrorCode.OUTPUT_WRITE_FAILED, f"{what} {path}: {reason}", WRITE_HINT, path=str(path))


def _refuse(path: str, reason: str, hint: str, field: str) -> LtxError:
    return LtxError(ErrorCode.OUTPUT_WRITE_FAILED, f"{field} {path!r}: {reason}", hint, path=path, field=field)


def _limit(folder: Path, name: str, default: int) -> int:
    try:
        return os.pathconf(folder, name)
    except (OSError, ValueError):
        return default


def _existing_ancestor(path: Path) -> Path:
    for parent in path.parents:
        if os.path.exists(parent):  # never raises (a name too long is "not there")
            return parent
    return Path("/")


def check_output_path(path: str, field: str) -> Path:
    """The absolute output path, or `output_write_failed` naming `field` for a path that cannot be written.

    Creates the missing folders and proves the place writable by creating (and removing) a short-named file, so a
    read-only folder, a full disk or a permission problem is found now, not after the job's work."""
    if "\0" in path:
        shown = path.replace("\0", "\\0")
        raise _refuse(shown, "contains a NUL byte", "Remove the NUL character from the path.", field)
    target = Path(path).expanduser().absolute()
    text = str(target)
    if any(text == root or text.startswith(root + "/") for root in PSEUDO_FILESYSTEMS):
        raise _refuse(text, "is inside a kernel pseudo-filesystem", WRITE_HINT, field)
    if os.path.isdir(target):
        raise _refuse(text, "is an existing directory", "Give a file name, e.g. <folder>/video.mp4.", field)
    anchor = _existing_ancestor(target)
    name_max = _limit(anchor, "PC_NAME_MAX", 255)
    too_long = [part for part in target.parts if len(os.fsencode(part)) > name_max]
    if too_long:
        raise _refuse(
            text, f"the name {too_long[0][:40]}... is longer than the {name_max} bytes the filesystem allows",
            "Use a shorter file name.", field,
        )  # fmt: skip
    path_max = _limit(anchor, "PC_PATH_MAX", 4096)
    if len(os.fsencode(str(target.parent))) + TEMP_NAME_ROOM >= path_max or len(os.fsencode(text)) >= path_max:
        raise _refuse(text, f"the path is longer than the {path_max} bytes the OS allows", "Use a shorter path.", field)
    if not os.path.isdir(anchor):
        raise _refuse(text, f"{anchor} is a file, not a folder", "Choose an output path in a folder.", field)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        probe = target.parent / f"{JOB_FOLDER_PREFIX}probe-{os.getpid()}-{secrets.token_hex(4)}"
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as exc:
        error = write_error(exc, target, f"{field}: cannot write")
        error.details["field"] = field
        raise error from exc
    return target


def check_distinct(video: Path, audio: Path | None) -> None:
    if audio is not None and os.path.realpath(video) == os.path.realpath(audio):
        raise LtxError(
            ErrorCode.INVALID_PARAMS,
            f"audio_output_path is the same file as output_path ({video})",
            "Give the WAV its own path, e.g. the video's name with .wav.",
            field="audio_output_path",
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def sweep_stale_job_folders(folder: Path) -> list[Path]:
    """Remove job folders in `folder` whose owning process is gone (left by a killed run). Returns them."""
    swept = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return swept
    for entry in entries:
        match = _JOB_FOLDER.match(entry.name)
        if match and int(match.group(1)) != os.getpid() and not _pid_alive(int(match.group(1))):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                Path(entry.path).unlink(missing_ok=True)
            swept.append(Path(entry.path))
    return swept


class JobFolder:
    """The job's temporary folder beside its video output; `commit` moves the finished files into place together.

    Use as a context manager: on exit (success, error, cancel, KeyboardInterrupt) the folder is removed."""

    def __init__(self, video_target: str | Path) -> None:
        self.video_target = Path(video_target)
        self.root: Path | None = None
        self._extra: list[Path] = []  # staging folders beside targets in other folders

    def _make(self, beside: Path) -> Path:
        sweep_stale_job_folders(beside)
        folder = beside / f"{JOB_FOLDER_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        try:
            beside.mkdir(parents=True, exist_ok=True)
            folder.mkdir()
        except OSError as exc:
            raise write_error(exc, folder, "Cannot create the temporary folder") from exc
        return folder

    def __enter__(self) -> JobFolder:
        self.root = self._make(self.video_target.parent)
        return self

    def path(self, name: str) -> Path:
        """A short temporary file name in the job folder (short: a legal long output name still fits)."""
        assert self.root is not None, "use JobFolder as a context manager"
        return self.root / name

    def _staged(self, source: Path, target: Path) -> Path:
        """`source` where a rename onto `target` is atomic: as is if beside the job folder, else copied over."""
        if target.parent == self.root.parent:
            return source
        folder = self._make(target.parent)
        self._extra.append(folder)
        staged = folder / source.name
        try:
            shutil.copyfile(source, staged)
        except OSError as exc:
            raise write_error(exc, target) from exc
        return staged

    def commit(self, files: dict[Path, Path]) -> None:
        """Rename each temporary file onto its target, all or none: a failure undoes the renames already done
        (restoring any file they replaced)."""
        staged = {self._staged(source, target): target for source, target in files.items()}
        done: list[tuple[Path, Path | None]] = []  # (target, backup of what it replaced)
        try:
            for source, target in staged.items():
                backup = None
                if os.path.isfile(target):
                    backup = source.with_name(source.name + ".previous")
                    try:
                        os.link(target, backup)
                    except OSError:
                        backup = None  # e.g. a filesystem without hard links: the old file cannot be restored
                try:
                    os.replace(source, target)
                except OSError as exc:
                    raise write_error(exc, target) from exc
                done.append((target, backup))
        except BaseException:
            for target, backup in reversed(done):
                if backup is not None:
                    os.replace(backup, target)
                else:
                    target.unlink(missing_ok=True)
            raise

    def __exit__(self, kind: type | None, error: BaseException | None, trace: TracebackType | None) -> None:
        for folder in [self.root, *self._extra]:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)

"""Write outputs so that a reader never sees a half-written file at the target path."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ltx_backend.media.outputs import write_error


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _unwritable(target: Path, exc: OSError):
    return write_error(exc, target)


@contextmanager
def atomic_output(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success rename it into place, on failure delete it.

    The temporary name keeps the target's extension so tools that infer the format from it (ffmpeg,
    soundfile) behave, and it lives in the same directory so the final rename is atomic. It is short, so a
    target whose name is as long as the filesystem allows still has a temporary name that fits.
    """
    target = Path(target).expanduser().absolute()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".ltx-tmp-", suffix=target.suffix[:16], dir=target.parent)
    except OSError as exc:
        raise _unwritable(target, exc) from exc
    os.close(fd)
    temporary = Path(name)
    temporary.chmod(0o666 & ~_umask())  # mkstemp makes it private; the output gets the usual permissions
    try:
        yield temporary
        try:
            os.replace(temporary, target)
        except OSError as exc:
            raise _unwritable(target, exc) from exc
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory beside `target`; on success it replaces `target`, on failure it goes."""
    target = Path(target).expanduser().absolute()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = Path(tempfile.mkdtemp(prefix=".ltx-tmp-", dir=target.parent))
    except OSError as exc:
        raise _unwritable(target, exc) from exc
    temporary.chmod(0o755)  # mkdtemp makes it private; a model folder is not a secret
    try:
        yield temporary
        if target.exists():
            shutil.rmtree(target)
        os.replace(temporary, target)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise

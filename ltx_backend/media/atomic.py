"""Write outputs so that a reader never sees a half-written file at the target path."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ltx_backend.errors import ErrorCode, LtxError


@contextmanager
def atomic_output(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success rename it into place, on failure delete it.

    The temporary name keeps the target's extension so tools that infer the format from it (ffmpeg,
    soundfile) behave, and it lives in the same directory so the final rename is atomic.
    """
    target = Path(target).expanduser().absolute()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".partial{target.suffix}", dir=target.parent)
    except OSError as exc:
        raise LtxError(
            ErrorCode.OUTPUT_WRITE_FAILED,
            f"Cannot write to {target.parent}: {exc.strerror}",
            "Choose an output path in a writable directory with free space.",
            path=str(target),
        ) from exc
    os.close(fd)
    temporary = Path(name)
    try:
        yield temporary
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise

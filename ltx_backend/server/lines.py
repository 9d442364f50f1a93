"""Reading the host's lines: raw bytes from a file descriptor, split on ``\\n``, with bounded cost per line.

Bytes, not text: a line that is not UTF-8 must be refused (``parse_error``), never silently repaired into a
different file name. A line longer than `MAX_LINE_BYTES` is dropped as it streams in (memory stays bounded) and
reported once; nesting deeper than `MAX_DEPTH` is refused before the JSON decoder recurses into it.
"""

from __future__ import annotations

import os
import re
import select
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

MAX_LINE_BYTES = 1 << 20  # 1 MiB: a request is a few hundred bytes; prompts and paths fit many times over
MAX_DEPTH = 32  # the protocol's deepest message nests 3 levels (generate -> keyframes -> keyframe)
READ_SIZE = 1 << 16
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_OPEN = np.frombuffer(b"[{", dtype=np.uint8)
_CLOSE = np.frombuffer(b"]}", dtype=np.uint8)


@dataclass(frozen=True)
class Oversized:
    """A line that exceeded `MAX_LINE_BYTES`: its bytes were dropped; `size` is how many were seen."""

    size: int


class LineReader:
    """Lines from `fd` as bytes (without the ``\\n``), or `Oversized`; stops at EOF or when `stop()` is true.

    `wake_fd` (optional) is a pipe that another thread or a signal writes to, so a blocked read returns at once.
    """

    def __init__(self, fd: int, wake_fd: int | None = None, max_line: int = MAX_LINE_BYTES) -> None:
        self.fd = fd
        self.wake_fd = wake_fd
        self.max_line = max_line

    def lines(self, stop: Callable[[], bool]) -> Iterator[bytes | Oversized]:
        buffer = bytearray()
        dropped = 0  # > 0 while skipping the rest of an oversized line
        while not stop():
            chunk = self._read(stop)
            if chunk is None:
                return  # stop() became true
            if not chunk:  # EOF: a last line without "\n" still counts
                if dropped:
                    yield Oversized(dropped + len(buffer))
                elif buffer:
                    yield bytes(buffer)
                return
            start = 0
            while (end := chunk.find(b"\n", start)) >= 0:
                if dropped:
                    yield Oversized(dropped + end - start)
                    dropped = 0
                elif len(buffer) + end - start > self.max_line:
                    yield Oversized(len(buffer) + end - start)
                    buffer.clear()
                else:
                    buffer += chunk[start:end]
                    yield bytes(buffer)
                    buffer.clear()
                start = end + 1
                if stop():
                    return
            rest = len(chunk) - start
            if dropped:
                dropped += rest
            elif len(buffer) + rest > self.max_line:
                dropped = len(buffer) + rest
                buffer.clear()
            else:
                buffer += chunk[start:]

    def _read(self, stop: Callable[[], bool]) -> bytes | None:
        """The next chunk (b"" at EOF), or None when `stop()` turned true while waiting."""
        watched = [self.fd] if self.wake_fd is None else [self.fd, self.wake_fd]
        while True:
            try:
                readable, _, _ = select.select(watched, [], [], 0.5)
            except (OSError, ValueError):  # stdin was closed under us (EBADF): as good as EOF
                return b""
            if self.wake_fd in readable:
                _drain(self.wake_fd)
            if stop():
                return None
            if self.fd in readable:
                try:
                    return os.read(self.fd, READ_SIZE)
                except BlockingIOError:
                    continue
                except OSError:  # a stdin that cannot be read is as good as closed
                    return b""


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except (BlockingIOError, OSError):
        pass


def too_deep(line: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether arrays/objects in `line` nest deeper than `limit` (brackets inside strings do not count).

    Counting brackets bounds the depth from above, so a flat line costs two `count` calls."""
    if line.count(b"[") + line.count(b"{") <= limit:
        return False
    bare = np.frombuffer(_STRING.sub(b'""', line), dtype=np.uint8)
    steps = np.isin(bare, _OPEN).astype(np.int32) - np.isin(bare, _CLOSE).astype(np.int32)
    return int(np.cumsum(steps).max(initial=0)) > limit

"""The session's prompt-embedding cache: the text connectors' outputs for a prompt, so a repeated prompt (a new
seed, a batch) skips the text encoder entirely.

Keyed on everything the outputs depend on: the prompt, the negative prompt (dev checkpoints encode it too), the
enhancement (with its seed, since enhancement samples) and the encoder key (text encoder, checkpoint, dtype).
Bounded by bytes, least recently used first out.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import mlx.core as mx

DEFAULT_BYTES = 512 * 1024 * 1024  # ~40 prompts of LTX-2 (1024 tokens x (4096 + 2048) bf16 each, x2 with a negative)


@dataclass(frozen=True)
class EncodedText:
    """What the text phase hands to denoising."""

    prompt: str  # after enhancement
    contexts: tuple[mx.array, mx.array | None]  # (video, audio) context of the prompt
    negative: tuple[mx.array, mx.array | None] | None  # of the negative prompt (dev checkpoints)

    @property
    def nbytes(self) -> int:
        arrays = [*self.contexts, *(self.negative or ())]
        return sum(a.nbytes for a in arrays if a is not None)


class PromptCache:
    def __init__(self, max_bytes: int = DEFAULT_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, EncodedText] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: tuple) -> EncodedText | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry

    def put(self, key: tuple, entry: EncodedText) -> None:
        if entry.nbytes > self.max_bytes:
            return
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while sum(e.nbytes for e in self._entries.values()) > self.max_bytes:
                self._entries.popitem(last=False)

    def forget(self, key: tuple) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(e.nbytes for e in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

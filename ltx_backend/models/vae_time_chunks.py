"""A video decode in chunks of time that gives the frames of one decode of the whole latent.

ltx-core bounds a long decode's memory with overlapping temporal tiles blended together: each overlap is decoded
twice (and each tile after the first one latent frame more), and the blend only approximates the whole decode. Here
the decoder runs over the time axis chunk by chunk instead, each convolution keeping the last frames of its input
(`video_vae.TimeChunks`): nothing is decoded twice and the frames are those of the untiled decode.

A convolution gives its output one frame late, so within a run of layers the delay adds up (LTX-2.0's 21 latent
frames from conv_in to the output: more than most videos). The decoder's layers are therefore run in segments
(`VideoDecoder.time_segments`: each starts at an upsampler), each over the whole video before the next, keeping the
segment's output whole between them: that output is small (LTX-2.0: 4 bytes per output voxel before the last
segment), and no segment's last chunk carries more than its own layers' delay.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator

import mlx.core as mx

from ltx_backend.models.video_vae import Pipeline, TimeChunks, VideoDecoder


def chunk_sizes(total: int, size: int, last_most: int) -> list[int]:
    """Chunks of at most `size` frames along `total`, the last of at most `last_most` (the call that also gives the
    frames the segment delayed: it then processes no more frames than the others)."""
    last = min(max(1, last_most), total)
    front = total - last
    return [size] * (front // size) + ([front % size] if front % size else []) + [last]


def _chunks(pieces: list[mx.array], sizes: list[int]) -> Iterator[tuple[mx.array, bool]]:
    """(chunk, is the last) of `sizes` frames, cut from `pieces` (B, t, ...) in order; the pieces are let go as they
    are used."""
    queue = deque(piece for piece in pieces if piece.shape[1])
    pieces.clear()
    for number, size in enumerate(sizes, 1):
        parts, need = [], size
        while queue and need:
            piece = queue[0]
            if piece.shape[1] <= need:
                parts.append(queue.popleft())
                need -= piece.shape[1]
            else:
                parts.append(piece[:, :need])
                queue[0] = piece[:, need:]
                need = 0
        yield (parts[0] if len(parts) == 1 else mx.concatenate(parts, axis=1)), number == len(sizes)


def _frames_after(decoder: VideoDecoder, segment: range, frames: int) -> int:
    """Frames a segment gives for `frames` input frames (each time upsampler: twice, less the first)."""
    scale = decoder.scale_before(segment.stop)[0] // decoder.scale_before(segment.start)[0]
    return frames if scale == 1 else scale * (frames - 1) + 1


class TimeChunkedDecode:
    """One decode of `latent` (B, F', H', W', C) in chunks of `chunk_latent_frames` latent frames (at each segment's
    time scale; the first segments, narrower, in longer ones: `_plan`): `frames()` first runs every segment but the
    last over the whole video, then gives the decoded frames (B, t, H, W, 3), chunk by chunk in order, lazily (each
    chunk is submitted; empty ones are not given). Several decodes (the spatial tiles of one video) may give their
    frames in step.

    `on_call()` runs after each decoder call is submitted (progress and cancel checks; it may raise); the calls run
    through `pipeline`, each traced while the one before runs."""

    def __init__(
        self,
        decoder: VideoDecoder,
        latent: mx.array,
        chunk_latent_frames: int,
        timestep: float | mx.array | None = None,
        noise: mx.array | None = None,
        pipeline: Pipeline | None = None,
        on_call: Callable[[], None] | None = None,
    ) -> None:
        segments = decoder.time_segments()
        if segments is None:
            raise ValueError("this decoder mixes the whole time axis (group norms): decode it without time chunks")
        if chunk_latent_frames < 1:
            raise ValueError("a time chunk is at least one latent frame")
        self.decoder = decoder
        self.segments = segments
        self.chunk = chunk_latent_frames
        self.pipeline = pipeline or Pipeline()
        self.on_call = on_call or (lambda: None)
        x, self.timestep = decoder.prepare(latent, timestep, noise)
        self._pieces = [x]
        self._frames = latent.shape[1]
        self._segment = 0
        self._sizes = self._plan()

    def _plan(self) -> list[list[int]]:
        """Each segment's chunk sizes in its input frames. A segment's chunks hold as many latent frames as its widest
        activation allows beside the last segment's (LTX-2.0's heads: 4x and more); the last segment's last chunk
        leaves room for the frames it delayed."""
        shapes = [self.decoder.segment_shape(segment) for segment in self.segments]
        widest, lag = shapes[-1]
        plan, frames = [], self._frames
        for segment, (width, _) in zip(self.segments, shapes, strict=True):
            scale = self.decoder.scale_before(segment.start)[0]
            size = self.chunk * max(1, widest // width) * scale
            last_most = size
            if segment is self.segments[-1]:  # the delay in input frames, rounded up
                out_scale = self.decoder.scale_before(segment.stop)[0] // scale
                last_most = size - -(-lag // out_scale)
            plan.append(chunk_sizes(frames, size, last_most))
            frames = _frames_after(self.decoder, segment, frames)
        return plan

    def calls(self) -> int:
        """Decoder calls in all (head and frames)."""
        return sum(len(sizes) for sizes in self._sizes)

    def _run(self, number: int) -> Iterator[mx.array]:
        segment = self.segments[number]
        time = TimeChunks()
        for x, last in _chunks(self._pieces, self._sizes[number]):
            time.last = last
            for index in segment:
                x = self.decoder.layer(index, x, self.timestep, self.pipeline, time)  # large: a block a submission
            self.pipeline.submit(x, *time.kept())
            self.on_call()
            out = [x]
            del x  # suspended, the generator keeps no chunk alive: the caller lets it go when done with it
            yield out.pop()

    def _run_head(self) -> None:
        """Every segment but the last, over the whole video (the last one's input is kept whole)."""
        while self._segment < len(self.segments) - 1:
            self._pieces = list(self._run(self._segment))
            self._segment += 1

    def frames(self) -> Iterator[mx.array]:
        self._run_head()
        chunks = self._run(len(self.segments) - 1)
        while (frames := next(chunks, None)) is not None:
            if frames.shape[1]:
                out = [frames]
                del frames  # as in `_run`
                yield out.pop()

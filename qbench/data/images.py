"""Image decoding and input building, kept off the model's critical path: a thread pool decodes
the next batches while the model works on the current one (PIL releases the GIL while it
decodes), and a worker thread runs the model's `prepare` (its CPU-side input building) for the
next batch while the current one is predicted.

Every image reaches a model as 8-bit RGB: high-bit-depth greyscale is scaled down, not clipped
(PIL's own conversion turns a 16-bit gradient white). An image larger than `max_pixels` is an
ImageError naming its size, found from the header before any pixel is decoded, so one huge file
costs one counted sample and never the machine's memory.
"""
from __future__ import annotations

import os
import stat
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from PIL import Image

from qbench.core.records import Prediction, Sample

# qbench enforces its own limit (below) before decoding; PIL's bomb check would refuse a
# deliberately raised --max-pixels at open time.
Image.MAX_IMAGE_PIXELS = None

# The default batch (8) with prefetching keeps about four batches decoded at once: 32 RGB images
# of 40 MP are ~3.8 GB, well inside a workstation's memory; KonIQ's images are 0.8 MP.
DEFAULT_MAX_PIXELS = 40_000_000
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


class ImageError(Exception):
    """An image that is missing, too large or cannot be decoded; one line with the path."""


def to_rgb8(image: Image.Image) -> Image.Image:
    """8-bit RGB (an RGB image is returned as it is, not copied). 16-bit greyscale ("I;16*",
    and "I" holding 16-bit values) is scaled by 1/257 so that 65535 maps to 255; 32-bit
    integers by their full range; float images in [0, 1] by 255 (other floats are taken as
    0-255 values)."""
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT or image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if image.mode == "F":
            scale = 255.0 if values.size and 0.0 <= values.min() and values.max() <= 1.0 else 1.0
        elif image.mode == "I" and values.size and values.max() > 65535:
            scale = 255.0 / 4294967295.0
        else:
            scale = 1.0 / 257.0
        image = Image.fromarray(np.clip(np.rint(values * scale), 0, 255).astype(np.uint8), "L")
    return image.convert("RGB")


def downscale_short_side(image: Image.Image, short_side: int) -> Image.Image:
    """Bicubic downscaling so that the shorter side is `short_side` (never upscales)."""
    width, height = image.size
    if min(width, height) <= short_side:
        return image
    ratio = short_side / min(width, height)
    size = (max(1, round(width * ratio)), max(1, round(height * ratio)))
    return image.resize(size, Image.Resampling.BICUBIC)


_FILE_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))


def file_kind(mode: int) -> str:
    return next((kind for test, kind in _FILE_KINDS if test(mode)), "not a regular file")


def open_regular_file(path: str) -> BinaryIO:
    """`path` (after symbolic links) opened for reading when it is a regular file, else an
    ImageError saying what it is. The open does not block, so a FIFO that nothing writes to
    costs an error, not a hang; the check is on the opened file, so nothing can be swapped in
    between."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ImageError(f"image not found: {path}") from None
    except OSError as exc:   # no permission; a socket cannot be opened at all
        try:
            mode = os.stat(path).st_mode
        except OSError:
            mode = stat.S_IFREG
        what = exc.strerror if stat.S_ISREG(mode) else f"it is {file_kind(mode)}"
        raise ImageError(f"cannot open {path}: {what}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise ImageError(f"not an image file: {path} is {file_kind(mode)}")
    return os.fdopen(fd, "rb")


def load_image(path: str, *, max_pixels: int = DEFAULT_MAX_PIXELS,
               short_side: int | None = None) -> Image.Image:
    """Decode an image fully into 8-bit RGB (downscaled when the task's protocol says so), or
    raise ImageError naming the path and the cause."""
    with open_regular_file(path) as file:
        try:
            # not `with`: closing an image frees its pixels; the file is closed above
            im = Image.open(file)
            width, height = im.size
            if width * height > max_pixels:
                raise ImageError(f"image too large: {path} is {width}x{height} = "
                                 f"{width * height / 1e6:.1f} MP, over the limit of "
                                 f"{max_pixels / 1e6:g} MP (--max-pixels)")
            im.load()
            image = to_rgb8(im)
        except (OSError, ValueError, SyntaxError, TypeError, Image.DecompressionBombError) as exc:
            raise ImageError(f"cannot decode {path}: {exc}") from None
    return downscale_short_side(image, short_side) if short_side else image


def load_sample_images(sample: Sample, max_pixels: int = DEFAULT_MAX_PIXELS) -> list[Image.Image]:
    """A sample's images in order, as the model must see them."""
    return [load_image(p, max_pixels=max_pixels, short_side=sample.resize_short_side)
            for p in sample.images]


Finish = Callable[[], list[Prediction]]   # what Model.prepare returns: the rest of predict
Prepare = Callable[[list[Sample], list[list[Image.Image]]], Finish]


@dataclass
class LoadedBatch:
    samples: list[Sample]
    images: list[list[Image.Image]]   # per sample, in the order of sample.images
    errors: dict[str, str]            # sample id -> why its images could not be loaded
    # the model's prepare of `samples`, run ahead on a worker thread (prefetch_batches'
    # `prepare`); its exception, if any, is raised by .result(), where predictions are made
    prepared: Future[Finish] | None = None


def _load_sample(sample: Sample, max_pixels: int) -> list[Image.Image] | str:
    try:
        return load_sample_images(sample, max_pixels)
    except ImageError as exc:
        return str(exc)


def _load_batch(pool: ThreadPoolExecutor | None, batch: list[Sample],
                max_pixels: int) -> LoadedBatch:
    results = (list(pool.map(_load_sample, batch, [max_pixels] * len(batch))) if pool
               else [_load_sample(s, max_pixels) for s in batch])
    good, images, errors = [], [], {}
    for sample, result in zip(batch, results, strict=True):
        if isinstance(result, str):
            errors[sample.id] = result
        else:
            good.append(sample)
            images.append(result)
    return LoadedBatch(good, images, errors)


@contextmanager
def pillow_block_cache(blocks: int) -> Iterator[None]:
    """Let PIL keep up to `blocks` freed pixel blocks for reuse while batches are decoded.

    A batch keeps its images alive together; when it is freed the allocator hands the memory
    back to the system, and the next batch faults every page in again. On 384x384 JPEGs in
    batches of 32 that cost about 0.4 ms per image, a third more than decoding itself
    (benchmarks/harness_overhead.py). Reused blocks never exceed what the batches in flight
    held at once; the previous setting, and with it the memory, is restored afterwards."""
    previous = Image.core.get_blocks_max()
    Image.core.set_blocks_max(max(previous, blocks))
    try:
        yield
    finally:
        Image.core.set_blocks_max(previous)


def prefetch_batches(samples: Sequence[Sample], batch_size: int, *, decode: bool = True,
                     workers: int = 4, ahead: int = 2, max_pixels: int = DEFAULT_MAX_PIXELS,
                     prepare: Prepare | None = None) -> Iterator[LoadedBatch]:
    """Yield decoded batches in order, decoding up to `ahead` batches in advance; with
    `prepare` (a model's) and workers, each batch comes with `prepare` of its good samples
    under way, started while the batch before it was being predicted (`prepare_ahead`)."""
    loaded = _decoded(samples, batch_size, decode, workers, ahead, max_pixels)
    if prepare is None or workers <= 0:
        yield from loaded
    else:
        yield from prepare_ahead(loaded, prepare)


def prepare_ahead(batches: Iterable[LoadedBatch], prepare: Prepare) -> Iterator[LoadedBatch]:
    """The batches in order, each with `prepared` set: `prepare` of batch k+1 runs on a worker
    thread while the caller predicts batch k. Never more than two batches' inputs exist at
    once (the one predicted, the one prepared): a batch of large images holds several times
    its pixels as float tensors."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="qbench-prepare") as worker:
        held: LoadedBatch | None = None
        for batch in batches:
            if batch.samples:
                batch.prepared = worker.submit(prepare, batch.samples, batch.images)
            if held is not None:
                yield held
            held = batch
        if held is not None:
            yield held


def _decoded(samples: Sequence[Sample], batch_size: int, decode: bool, workers: int,
             ahead: int, max_pixels: int) -> Iterator[LoadedBatch]:
    batches = [list(samples[i:i + batch_size]) for i in range(0, len(samples), batch_size)]
    if not decode:
        for batch in batches:
            yield LoadedBatch(batch, [[] for _ in batch], {})
        return
    images_per_sample = max((len(s.images) for s in samples), default=1)
    # blocks alive at once: the batch the caller holds, the one being decoded and those decoded
    # ahead (a PIL block holds one image up to 16 MB; a larger image takes several, which only
    # makes the cache cover fewer images)
    batches_alive = ahead + 3 if workers > 0 else 2
    in_flight = batches_alive * batch_size * images_per_sample
    with pillow_block_cache(in_flight):
        if workers > 0:
            yield from _prefetched(batches, workers, ahead, max_pixels)
        else:
            for batch in batches:
                yield _load_batch(None, batch, max_pixels)


def _prefetched(batches: list[list[Sample]], workers: int, ahead: int,
                max_pixels: int) -> Iterator[LoadedBatch]:
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            ThreadPoolExecutor(max_workers=1) as scheduler:
        pending: deque[Future[LoadedBatch]] = deque()
        next_index = 0
        while next_index < len(batches) or pending:
            while next_index < len(batches) and len(pending) <= ahead:
                pending.append(scheduler.submit(_load_batch, pool, batches[next_index],
                                                max_pixels))
                next_index += 1
            yield pending.popleft().result()

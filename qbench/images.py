"""Image decoding, kept off the model's critical path: a thread pool decodes the next batches
while the model works on the current one (PIL releases the GIL while it decodes)."""
from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from PIL import Image

from .records import Sample


class ImageError(Exception):
    """An image that is missing or cannot be decoded; one line with the path."""


def load_image(path: str) -> Image.Image:
    """Decode an image fully into RGB, or raise ImageError naming the path and the cause."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except FileNotFoundError:
        raise ImageError(f"image not found: {path}") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageError(f"cannot decode {path}: {exc}") from None


@dataclass
class LoadedBatch:
    samples: list[Sample]
    images: list[list[Image.Image]]   # per sample, in the order of sample.images
    errors: dict[str, str]            # sample id -> why its images could not be loaded


def _load_sample(sample: Sample) -> list[Image.Image] | str:
    try:
        return [load_image(p) for p in sample.images]
    except ImageError as exc:
        return str(exc)


def _load_batch(pool: ThreadPoolExecutor | None, batch: list[Sample], decode: bool) -> LoadedBatch:
    if not decode:
        return LoadedBatch(batch, [[] for _ in batch], {})
    results = list(pool.map(_load_sample, batch)) if pool else [_load_sample(s) for s in batch]
    good, images, errors = [], [], {}
    for sample, result in zip(batch, results):
        if isinstance(result, str):
            errors[sample.id] = result
        else:
            good.append(sample)
            images.append(result)
    return LoadedBatch(good, images, errors)


def prefetch_batches(samples: Sequence[Sample], batch_size: int, *, decode: bool = True,
                     workers: int = 4, ahead: int = 2) -> Iterator[LoadedBatch]:
    """Yield decoded batches in order, decoding up to `ahead` batches in advance."""
    batches = [list(samples[i:i + batch_size]) for i in range(0, len(samples), batch_size)]
    if not decode or workers <= 0:
        for batch in batches:
            yield _load_batch(None, batch, decode)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            ThreadPoolExecutor(max_workers=1) as scheduler:
        pending: deque[Future[LoadedBatch]] = deque()
        next_index = 0
        while next_index < len(batches) or pending:
            while next_index < len(batches) and len(pending) <= ahead:
                pending.append(scheduler.submit(_load_batch, pool, batches[next_index], True))
                next_index += 1
            yield pending.popleft().result()

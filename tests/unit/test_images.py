"""Decoding: every image reaches a model as 8-bit RGB with its brightness kept (16-bit and float
images scaled, not clipped), oversized images are counted failures named with their size, and a
task's resizing protocol is applied and recorded."""
from __future__ import annotations

import json
import os
import time

import numpy as np
import openpyxl
import pytest
from PIL import Image

from qbench.core.records import Sample
from qbench.core.registry import get_task
from qbench.data.images import (
    ImageError,
    downscale_short_side,
    load_image,
    prefetch_batches,
    to_rgb8,
)
from qbench.run.runner import RunConfig, run

GRADIENT = np.linspace(0, 65535, 64 * 256).reshape(64, 256).astype(np.uint16)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_sixteen_bit_gradient_is_scaled_not_clipped(tmp_path, suffix):
    path = tmp_path / f"gradient{suffix}"
    Image.fromarray(GRADIENT).save(path)
    assert Image.open(path).mode.startswith("I;16")
    pixels = np.asarray(load_image(str(path)))
    assert pixels.shape == (64, 256, 3) and pixels.dtype == np.uint8
    expected = np.rint(GRADIENT / 257.0)
    assert np.abs(pixels[..., 0].astype(float) - expected).max() <= 1
    assert 120 < pixels.mean() < 135   # PIL's own convert("RGB") gives ~254.5: nearly white
    assert np.asarray(Image.open(path).convert("RGB")).mean() > 250   # the defect, as found


def test_other_wide_modes_keep_their_range():
    floats = Image.fromarray(np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10), "F")
    assert np.asarray(to_rgb8(floats)).max() == 255 and np.asarray(to_rgb8(floats)).min() == 0
    ints = Image.fromarray(GRADIENT.astype(np.int32), "I")
    assert abs(np.asarray(to_rgb8(ints)).mean() - GRADIENT.mean() / 257) < 1
    eight = Image.new("RGB", (4, 4), (10, 200, 30))
    assert np.array_equal(np.asarray(to_rgb8(eight)), np.asarray(eight))


def test_an_image_over_the_pixel_limit_is_an_error_naming_its_size(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (400, 300)).save(path)
    with pytest.raises(ImageError, match=r"image too large: .*big\.png is 400x300 = 0\.1 MP, over the "
                                         r"limit of 0\.1 MP \(--max-pixels\)"):
        load_image(str(path), max_pixels=100_000)
    assert load_image(str(path), max_pixels=120_000).size == (400, 300)


def test_downscaling_keeps_the_aspect_and_never_upscales():
    image = Image.new("RGB", (4000, 3000))
    assert downscale_short_side(image, 512).size == (683, 512)
    assert downscale_short_side(Image.new("RGB", (300, 200)), 512).size == (300, 200)


def build_spaq(root, sizes):
    base = root / "spaq"
    book = openpyxl.Workbook()
    book.active.append(["Image name", "MOS", "Brightness", "Colorfulness", "Contrast", "Noisiness",
                        "Sharpness"])
    for i, size in enumerate(sizes):
        book.active.append([f"{i:05d}.jpg", 10.0 + 20 * i, 1, 1, 1, 1, 1])
        (base / "TestImage").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (20 * i, 30, 40)).save(base / "TestImage" / f"{i:05d}.jpg")
    (base / "Annotations").mkdir(parents=True)
    book.save(base / "Annotations" / "MOS and Image attribute scores.xlsx")


def test_spaq_protocol_resize_is_the_default_recorded_and_can_be_turned_off(tmp_path):
    build_spaq(tmp_path, [(1200, 900), (900, 1600), (300, 200)])
    task = get_task("spaq")
    data = task.load(tmp_path / "spaq", "all")
    assert {s.resize_short_side for s in data.samples} == {512} and data.options == {"resize_short_side": 512}
    from qbench.data.images import load_sample_images
    assert [load_sample_images(s)[0].size for s in data.samples] == [(683, 512), (512, 910), (300, 200)]
    off = get_task("spaq", {"resize_short_side": None}).load(tmp_path / "spaq", "all")
    assert {s.resize_short_side for s in off.samples} == {None}
    with pytest.raises(Exception, match=r"spaq: unknown --task-arg size; accepted: resize_short_side"):
        get_task("spaq", {"size": 3})


def test_a_run_counts_oversized_images_and_records_the_task_options(tmp_path):
    build_spaq(tmp_path, [(1200, 900), (90, 60), (80, 70), (60, 50)])
    result = run(RunConfig(model="stats", tasks=["spaq"], data_root=tmp_path, split="all",
                           output_dir=tmp_path / "out", progress=False, max_pixels=500_000,
                           task_options={"spaq": {"resize_short_side": 64}}))
    metrics = result.outcomes[0].metrics
    assert metrics["failure_counts"] == {"image_error": 1}
    (failed,) = metrics["failures"]["image_error"]
    assert failed == "TestImage/00000.jpg"
    rows = [json.loads(line) for line in (result.run_dir / "predictions.jsonl").read_text().splitlines()]
    error = next(r["error"] for r in rows if r["sample_id"] == failed)
    assert "is 1200x900 = 1.1 MP, over the limit of 0.5 MP" in error
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["tasks"]["spaq"]["options"] == {"resize_short_side": 64}
    assert manifest["config"]["task_options"] == {"spaq": {"resize_short_side": 64}}


@pytest.mark.parametrize("workers", [0, 2])
def test_decoding_reuses_pixel_memory_only_while_batches_are_in_flight(tmp_path, workers):
    """PIL keeps freed blocks for the next batch while decoding runs, sized by the batches
    alive at once, and the setting (with the memory it holds) goes back afterwards."""
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (8, 8), (i, 0, 0)).save(paths[-1])
    samples = [Sample(id=str(i), task="t", kind="score", images=(str(p),))
               for i, p in enumerate(paths)]
    before = Image.core.get_blocks_max()
    during, seen = [], []
    for batch in prefetch_batches(samples, 2, workers=workers, ahead=1):
        during.append(Image.core.get_blocks_max())
        seen += [int(np.asarray(im[0])[0, 0, 0]) for im in batch.images]
    assert seen == [0, 1, 2, 3, 4]
    assert min(during) >= (2 if workers == 0 else 4) * 2 > before
    assert Image.core.get_blocks_max() == before


def _finishes(call, seconds: float = 30.0):
    """call() run on a daemon thread: its result, or a failure if it has not returned in
    `seconds` (a blocking open would hang the test, not fail it)."""
    import threading
    out: dict = {}

    def target():
        try:
            out["value"] = call()
        except BaseException as exc:   # handed to the test
            out["error"] = exc
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "blocked: the call did not return"
    if "error" in out:
        raise out["error"]
    return out["value"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_or_a_device_under_an_image_name_is_an_error_not_a_hang(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)   # nothing ever writes to it: a plain open() would wait forever
    with pytest.raises(ImageError, match=r"not an image file: .*pipe\.png is a FIFO"):
        _finishes(lambda: load_image(str(fifo)))
    with pytest.raises(ImageError, match="is a character device"):
        load_image(os.devnull)
    with pytest.raises(ImageError, match="is a folder"):
        load_image(str(tmp_path))
    good = tmp_path / "good.png"
    Image.new("RGB", (8, 8), (9, 0, 0)).save(good)
    link = tmp_path / "link.png"
    link.symlink_to(fifo)   # the check is on the file opened, after links
    samples = [Sample(id=name, task="t", kind="score", images=(str(path),))
               for name, path in (("fifo", fifo), ("good", good), ("link", link))]
    batches = _finishes(lambda: list(prefetch_batches(samples, 3, workers=2)))
    assert [s.id for s in batches[0].samples] == ["good"]
    assert sorted(batches[0].errors) == ["fifo", "link"]
    assert all("is a FIFO" in error for error in batches[0].errors.values())


def test_prepare_runs_one_batch_ahead_on_a_worker_thread_and_keeps_its_errors(tmp_path):
    """Each batch arrives with the model's prepare under way: batch k+1's was started before
    batch k was handed over, on another thread, never more than one batch ahead; a prepare
    that raises hands its exception to whoever takes the result."""
    import threading
    paths = []
    for i in range(7):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (8, 8), (i, 0, 0)).save(paths[-1])
    samples = [Sample(id=str(i), task="t", kind="score", images=(str(p),))
               for i, p in enumerate(paths)]
    events: list[tuple[str, int]] = []
    threads = set()

    def prepare(batch, images):
        first = int(batch[0].id)
        threads.add(threading.get_ident())
        events.append(("prepared", first))
        if first == 4:
            raise ValueError("cannot build inputs")
        return lambda: [int(np.asarray(im[0])[0, 0, 0]) for im in images]

    seen = []
    for batch in prefetch_batches(samples, 2, workers=2, prepare=prepare):
        first = int(batch.samples[0].id)
        assert batch.prepared is not None
        if first == 4:
            with pytest.raises(ValueError, match="cannot build inputs"):
                batch.prepared.result()
        else:
            seen += batch.prepared.result()()
        if first + 2 < 7:   # the next batch's prepare was started before this one came
            deadline = time.time() + 30
            while ("prepared", first + 2) not in events:
                assert time.time() < deadline, "the next batch was not prepared ahead"
                time.sleep(0.01)
        assert ("prepared", first + 4) not in events   # and only the next one
        events.append(("predicted", first))
    assert seen == [0, 1, 2, 3, 6]
    assert threading.get_ident() not in threads
    # without workers, nothing runs ahead: the caller prepares in line
    assert all(b.prepared is None for b in prefetch_batches(samples, 2, workers=0,
                                                             prepare=prepare))


def test_a_socket_or_an_unreadable_file_is_an_error_saying_which(tmp_path, monkeypatch):
    import socket
    where = tmp_path / "sock.png"
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(where))
        with pytest.raises(ImageError, match=r"cannot open .*sock\.png: it is a socket"):
            load_image(str(where))
    finally:
        server.close()
    locked = tmp_path / "locked.png"
    Image.new("RGB", (4, 4)).save(locked)

    def refused(path, flags):   # as open(2) answers a file without read permission (not root)
        raise PermissionError(13, "Permission denied", path)
    monkeypatch.setattr("qbench.data.images.os.open", refused)
    with pytest.raises(ImageError, match=r"cannot open .*locked\.png: Permission denied$"):
        load_image(str(locked))

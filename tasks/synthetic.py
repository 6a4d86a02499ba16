"""DQ-495K-style synthetic degradations: noise, blur, JPEG, darken at five levels (slight …
catastrophic) plus undistorted images, written with per-image meta records in the DQ-495K format.

Source photographs are the ones that ship inside scikit-image and matplotlib, so a test set can
be built on any machine offline; `generate(out, photos=...)` takes anyone's own photographs too.
Deterministic for a given seed.
"""
from __future__ import annotations

import io
import json
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from qbench.core.protocol import DISTORTIONS, LEVELS

# Severity parameters per level 1..5 (slight … catastrophic).
NOISE_SIGMA = (6.0, 12.0, 22.0, 36.0, 56.0)       # Gaussian noise std on 0..255
BLUR_SIGMA = (0.9, 1.6, 2.6, 4.0, 6.0)            # Gaussian blur radius in pixels
JPEG_QUALITY = (40, 24, 14, 8, 3)                  # JPEG quality factor
DARKEN_GAIN = (0.7, 0.52, 0.38, 0.26, 0.16)        # brightness multiplier (with gamma 1.2)
DISTORTION_NAMES = {"noise": "gaussian_noise", "blur": "gaussian_blur", "jpeg": "jpeg_compression",
                    "darken": "darken"}

# Photographs bundled with installed packages: (package, relative path).
TEST_PHOTOS = (("skimage", "astronaut.png"), ("skimage", "chelsea.png"), ("skimage", "coffee.png"),
               ("skimage", "rocket.jpg"), ("skimage", "motorcycle_left.png"),
               ("skimage", "camera.png"), ("skimage", "coins.png"), ("skimage", "brick.png"),
               ("skimage", "grass.png"), ("matplotlib", "grace_hopper.jpg"))
# Disjoint photographs for fitting baselines (never in the test set).
FIT_PHOTOS = (("skimage", "hubble_deep_field.jpg"), ("skimage", "moon.png"),
              ("skimage", "gravel.png"), ("skimage", "page.png"), ("skimage", "retina.jpg"),
              ("skimage", "ihc.png"), ("skimage", "text.png"), ("skimage", "cell.png"),
              ("skimage", "clock_motion.png"), ("skimage", "color.png"))
CROP = 256
CROPS_PER_PHOTO = 2


def bundled_photo(package: str, name: str) -> Path:
    if package == "skimage":
        import skimage.data
        return Path(skimage.data.__file__).parent / name
    import matplotlib
    return Path(matplotlib.get_data_path()) / "sample_data" / name


def distort(image: np.ndarray, distortion: str, level: int, rng: np.random.Generator) -> np.ndarray:
    """Apply one distortion at level 1..5 to an RGB uint8 array."""
    i = level - 1
    if distortion == "noise":
        noisy = image.astype(np.float32) + rng.normal(0, NOISE_SIGMA[i], image.shape)
        return np.clip(noisy + 0.5, 0, 255).astype(np.uint8)
    if distortion == "blur":
        return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(BLUR_SIGMA[i])))
    if distortion == "jpeg":
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=JPEG_QUALITY[i])
        return np.asarray(Image.open(buffer).convert("RGB"))
    if distortion == "darken":
        dark = 255.0 * (image / 255.0) ** 1.2 * DARKEN_GAIN[i]
        return np.clip(dark + 0.5, 0, 255).astype(np.uint8)
    raise ValueError(f"unknown distortion {distortion!r}")


def crops(photo: Path, count: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    with Image.open(photo) as im:
        image = np.asarray(im.convert("RGB"))
    h, w = image.shape[:2]
    if h < size or w < size:
        scale = size / min(h, w)
        image = np.asarray(Image.fromarray(image).resize((max(size, round(w * scale)),
                                                          max(size, round(h * scale)))))
        h, w = image.shape[:2]
    out = []
    for _ in range(count):
        y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        out.append(np.ascontiguousarray(image[y:y + size, x:x + size]))
    return out


@dataclass(frozen=True)
class Variant:
    ref_name: str
    distortion: str      # a protocol class, or "null"
    severity: int        # 1..5, 0 for null
    image: np.ndarray


def variants(photos: Sequence[Path], seed: int, crops_per_photo: int = CROPS_PER_PHOTO,
             size: int = CROP) -> Iterator[Variant]:
    """Every reference crop once undistorted and once per distortion × level."""
    rng = np.random.default_rng(seed)
    for photo in photos:
        for k, ref in enumerate(crops(photo, crops_per_photo, size, rng)):
            name = f"{photo.stem}_{k}"
            yield Variant(name, "null", 0, ref)
            for distortion in DISTORTIONS:
                for level in range(1, len(LEVELS) + 1):
                    yield Variant(name, distortion, level, distort(ref, distortion, level, rng))


def meta_record(v: Variant, image_path: str, ref_path: str) -> dict:
    """One DQ-495K meta record (REFERENCE §2)."""
    return {"img_ref": ref_path, "img_lq": image_path, "distortion_class": v.distortion,
            "distortion_name": DISTORTION_NAMES.get(v.distortion, "none"), "severity": v.severity}


def generate(out: Path, photos: Sequence[Path] | None = None, seed: int = 0,
             meta_name: str = "test.json", crops_per_photo: int = CROPS_PER_PHOTO) -> Path:
    """Write a DQ-style test set to `out` (images/, refs/, and a JSON list of meta records).
    Built in a temporary folder and moved into place, so a crash never leaves half a set."""
    photos = list(photos) if photos is not None else [bundled_photo(*p) for p in TEST_PHOTOS]
    missing = [str(p) for p in photos if not p.exists()]
    if missing:
        raise FileNotFoundError(f"photographs not found: {', '.join(missing)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=out.parent))
    (tmp / "images").mkdir()
    (tmp / "refs").mkdir()
    records = []
    for v in variants(photos, seed, crops_per_photo):
        ref_path = f"refs/{v.ref_name}.png"
        if v.distortion == "null":
            Image.fromarray(v.image).save(tmp / ref_path)
        name = f"images/{v.ref_name}_{v.distortion}_{v.severity}.png"
        Image.fromarray(v.image).save(tmp / name, compress_level=1)
        records.append(meta_record(v, name, ref_path))
    (tmp / meta_name).write_text(json.dumps(records, indent=1))
    if out.exists():
        shutil.rmtree(out)
    tmp.replace(out)
    return out

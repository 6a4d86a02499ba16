"""Small releases in each benchmark's native format (and DeQA-Score's meta format), written
by the tests that read them: each builder lays a release out under `root` and returns the
ground truth a test split should yield."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import openpyxl
import scipy.io
from PIL import Image

from qbench.tasks._formats import read_name_list
from realdata import AGIQA_LINES, KONIQ_QALIGN_EXCLUDED, KONIQ_SETS_HEADER, KONIQ_SETS_LINES

RNG_SEED = 7


def write_image(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (value % 256, value // 256 % 256, 90)).save(path)


def scores(n: int, low: float, high: float, seed: int = RNG_SEED) -> list[float]:
    return [round(float(v), 4) for v in np.random.default_rng(seed).uniform(low, high, n)]


# ------------------------------------------------------------------- native fixtures
# Each builder writes the release layout under `root/<folder>` and returns the ground truth a
# test split should yield: {image path relative to the task folder: raw score}, plus all rows.

def build_koniq(root: Path, n: int = 30, folder: str = "koniq") -> dict:
    """koniq10k_distributions_sets.csv as the authors publish it (real header, MOS on 0-100,
    LF line ends): the real excerpt lines, then rows of the same form. Test rows are named
    after images of Q-Align's list, plus the two excluded test images of the excerpt."""
    base = root / folder
    listed = [name for name in read_name_list("qalign_koniq_test.txt")
              if name not in {line.split(",")[0] for line in KONIQ_SETS_LINES}]
    mos = scores(n, 3.9, 88.4)
    sets = ["training"] * 18 + ["validation"] * 4 + ["test"] * (n - 22)
    names = [listed[i] if s == "test" else f"{1000 + i}.jpg" for i, s in enumerate(sets)]
    lines = [KONIQ_SETS_HEADER] + KONIQ_SETS_LINES
    for name, m, s in zip(names, mos, sets):
        lines.append(f"{name},0.0,0.1,0.3,0.5,0.1,100,{m},0.55,{s}")
    lines.append("bad_nan.jpg,0.0,0.1,0.3,0.5,0.1,100,,0.55,test")         # no MOS: dropped
    lines.append("bad_range.jpg,0.0,0.1,0.3,0.5,0.1,100,150.0,0.55,test")  # outside 0..100: dropped
    (base / "1024x768").mkdir(parents=True, exist_ok=True)
    (base / "koniq10k_distributions_sets.csv").write_text("\n".join(lines) + "\n")
    rows = [(line.split(",")[0], float(line.split(",")[7]), line.split(",")[-1])
            for line in KONIQ_SETS_LINES] + list(zip(names, mos, sets))
    for i, (name, _, _) in enumerate(rows):
        write_image(base / "1024x768" / name, i * 8)
    split_of = {"training": "train", "validation": "validation", "test": "test"}
    out: dict[str, dict[str, float]] = {"all": {}, "train": {}, "validation": {}, "test": {},
                                        "qalign-test": {}}
    for name, m, s in rows:
        key = f"1024x768/{name}"
        out["all"][key] = m
        out[split_of[s]][key] = m
        if s == "test" and name not in KONIQ_QALIGN_EXCLUDED:
            out["qalign-test"][key] = m
    return out


def build_spaq(root: Path, n: int = 20) -> dict:
    base = root / "spaq"
    mos = scores(n, 0.0, 100.0)
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["Image name", "MOS", "Brightness", "Colorfulness", "Contrast", "Noisiness", "Sharpness"])
    listed = read_name_list("qalign_spaq_test.txt")
    names = [listed[i] if i % 2 else f"9{i:04d}.jpg" for i in range(n)]   # every other one listed
    for i, (name, m) in enumerate(zip(names, mos)):
        sheet.append([name, m, 50, 50, 50, 50, 50])
        write_image(base / "TestImage" / name, i * 9)
    (base / "Annotations").mkdir(parents=True)
    book.save(base / "Annotations" / "MOS and Image attribute scores.xlsx")
    return {"all": {f"TestImage/{name}": m for name, m in zip(names, mos)},
            "test": {f"TestImage/{name}": m for name, m in zip(names, mos) if name in listed}}


def build_kadid(root: Path, n: int = 25) -> dict:
    base = root / "kadid10k"   # the archive's own folder name
    mos = scores(n, 1.0, 4.93)
    lines = ["dist_img,ref_img,dmos,var"]
    listed = set(read_name_list("qalign_kadid_test.txt"))
    names = [f"I{64 + i // 5:02d}_{i % 5 + 1:02d}_01.png" for i in range(n)]   # I64..I68; test: I66-I81
    for i, (name, m) in enumerate(zip(names, mos)):
        lines.append(f"{name},{name[:3]}.png,{m},0.3")
        write_image(base / "images" / name, i * 7)
    (base / "dmos.csv").write_text("\n".join(lines) + "\n")
    return {"all": {f"images/{name}": m for name, m in zip(names, mos)},
            "test": {f"images/{name}": m for name, m in zip(names, mos) if name in listed}}


CSIQ_TYPES = (("noise", "awgn", "AWGN"), ("jpeg", "jpeg", "JPEG"), ("jpeg 2000", "jpeg2000", "jpeg2000"),
              ("blur", "blur", "BLUR"))


def build_csiq(root: Path, header_row: int = 4, sheet_name: str = "all_by_image") -> dict:
    base = root / "csiq"
    book = openpyxl.Workbook()
    book.active.title = "notes"
    sheet = book.create_sheet(sheet_name)
    for _ in range(header_row - 1):
        sheet.append(["CSIQ DMOS, all images"])
    sheet.append(["image", "dst_idx", "dst_type", "dst_lev", "dmos_std", "dmos"])
    dmos = scores(20, 0.0, 1.0)
    truth = {}
    for k, value in enumerate(dmos):
        image, (word, folder, spelled) = 1600 + k // 4, CSIQ_TYPES[k % 4]
        level = k % 5 + 1
        sheet.append([image, k % 4 + 1, word, level, 0.05, value])
        name = f"{image}.{spelled}.{level}.png"
        write_image(base / "dst_imgs" / folder / name, k * 11)
        truth[f"dst_imgs/{folder}/{name}"] = value
    base.mkdir(parents=True, exist_ok=True)
    book.save(base / "csiq.DMOS.xlsx")
    return {"test": truth}


def build_pipal(root: Path) -> dict:
    base = root / "PIPAL"
    truth = {}
    elo = iter(scores(24, 917.0, 1836.0))
    for ref in ("A0001", "A0002", "A0003"):
        lines = []
        for d in range(8):
            name, value = f"{ref}_{d // 4:02d}_{d % 4:02d}.bmp", next(elo)
            lines.append(f"{name},{value}")
            folder = f"Distortion_{d // 4 + 1}"
            write_image(base / folder / name, d * 13 + len(truth))
            truth[f"{folder}/{name}"] = value
        (base / "Train_Label").mkdir(parents=True, exist_ok=True)
        (base / "Train_Label" / f"{ref}.txt").write_text("\n".join(lines) + "\n")
    return {"all": truth}


def build_livew(root: Path, n: int = 20) -> dict:
    base = root / "livew"
    names = [f"{i}.bmp" for i in range(1, n + 1)]
    mos = scores(n, 3.0, 92.0)
    cells = np.empty((n, 1), dtype=object)
    for i, name in enumerate(names):
        cells[i, 0] = np.array([name])
        folder = "Images/trainingImages" if i < 7 else "Images"
        write_image(base / folder / name, i * 12)
    (base / "Data").mkdir(parents=True)
    scipy.io.savemat(base / "Data" / "AllImages_release.mat", {"AllImages_release": cells})
    scipy.io.savemat(base / "Data" / "AllMOS_release.mat", {"AllMOS_release": np.array([mos])})
    path = lambda i: f"Images/trainingImages/{names[i]}" if i < 7 else f"Images/{names[i]}"  # noqa: E731
    return {"test": {path(i): m for i, m in enumerate(mos)},
            "without-training-images": {path(i): m for i, m in enumerate(mos) if i >= 7}}


def build_agiqa(root: Path, n: int = 20) -> dict:
    base = root / "AGIQA-3K"
    mos = scores(n, 0.0, 5.0)
    lines = list(AGIQA_LINES)   # the real header and first rows, CRLF as released
    truth = {line.split(",")[0]: float(line.split(",")[5]) for line in AGIQA_LINES[1:]}
    for i, m in enumerate(mos):
        lines.append(f"model_{i:03d}.jpg,a cat,,,realistic,{m},0.4,3.0,0.3")
        truth[f"model_{i:03d}.jpg"] = m
    for i, name in enumerate(truth):
        write_image(base / name, i * 10)
    (base / "data.csv").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return {"test": truth}


def build_deqa(root: Path, dataset: str, meta: str, n: int = 20, lower_better: bool = False,
               flipped_raw: bool = False) -> dict:
    """`root/<dataset>/metas/<meta>` with image paths relative to root. `lower_better` writes
    raw DMOS (gt_score falls as gt_score_norm rises); `flipped_raw` writes it already flipped."""
    raw = scores(n, 0.0, 1.0 if lower_better else 100.0, seed=RNG_SEED + 1)
    low, high = min(raw), max(raw)
    records, truth = [], {}
    for i, value in enumerate(raw):
        norm = 4 * (value - low) / (high - low) + 1
        if lower_better:
            norm = 6 - norm
        gt = -value if flipped_raw else value
        image = f"{dataset}/images/{i:04d}.png"
        write_image(root / image, i * 9)
        records.append({"id": f"{i:04d}", "image": image, "gt_score": gt, "gt_score_norm": norm,
                        "std": 0.1, "std_norm": 0.1})
        truth[image] = (gt, norm)
    (root / dataset / "metas").mkdir(parents=True, exist_ok=True)
    (root / dataset / "metas" / meta).write_text(json.dumps(records))
    return truth

"""Render a `qbench report` of the offline demo run in headless Chromium and take a screenshot.

    OMP_NUM_THREADS=1 python benchmarks/report_screenshot.py --out report_screenshot.png

Checks, each printed, exit status 1 if one fails:
  1. every <img> of report.html is an embedded base64 PNG that decodes;
  2. Chromium loads the page and every image has a natural width > 0 (no broken image), read
     back from a copy of the page with a one-line probe script (the report itself has no script);
  3. the page opens with the paper table as Chromium lays it out: its first table's header
     holds the Table 1 datasets' PLCC/SRCC pairs, and it has measured and published rows;
  4. the screenshot is written and is not blank.
Needs Debian's `chromium` (apt-get install -y chromium); never touches the network.
"""
from __future__ import annotations

import argparse
import base64
import io
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
from PIL import Image

from qbench.cli.main import main as qbench
from qbench.run.runner import RunConfig, run

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--hide-scrollbars"]
PROBE = ("<script>window.addEventListener('load', () => { const i = [...document.images];"
         " const t = document.querySelector('table'); const rows = [...t.tBodies[0].rows];"
         " document.title = 'images loaded ' + i.filter(x => x.complete && x.naturalWidth > 0)"
         ".length + ' of ' + i.length + '; first table: ' + t.tHead.rows[0].cells.length"
         " + ' columns, header ' + [...t.tHead.rows[0].cells].slice(2, 4).map(c => c.textContent)"
         ".join('/') + ', ' + rows.filter(r => r.cells[1].textContent === 'measured').length"
         " + ' measured, ' + rows.filter(r => r.cells[1].textContent.startsWith('published'))"
         ".length + ' published rows'; });</script>")


class ImageSources(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.sources.append(dict(attrs).get("src") or "")


def embedded_pngs(page: str) -> list[tuple[int, int]]:
    """Sizes of the page's images; ValueError if one is not an embedded PNG."""
    parser = ImageSources()
    parser.feed(page)
    sizes = []
    for src in parser.sources:
        if not src.startswith("data:image/png;base64,"):
            raise ValueError(f"image not embedded as a PNG: {src[:60]!r}")
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        image.load()
        sizes.append(image.size)
    return sizes


def chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          check=False, capture_output=True, text=True, timeout=180)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("report_screenshot.png"))
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=2600)
    args = parser.parse_args()
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        print("chromium not found: apt-get install -y chromium", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        result = run(RunConfig(output_dir=work / "results", progress=False))   # the demo
        report_dir = work / "report"
        if qbench(["report", str(result.run_dir), "--output", str(report_dir)]) != 0:
            return 1
        page = (report_dir / "report.html").read_text(encoding="utf-8")
        sizes = embedded_pngs(page)
        print(f"report.html: {len(page) / 1024:.0f} KiB, {len(sizes)} embedded PNGs {sizes}")

        probe = report_dir / "probe.html"
        probe.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
        dom = chromium(binary, work / "profile", "--virtual-time-budget=10000", "--dump-dom",
                       probe.as_uri())
        title = re.search(r"<title>(images loaded (\d+) of (\d+); first table: (\d+) columns, "
                          r"header ([^,]*), (\d+) measured, (\d+) published rows)</title>", dom.stdout)
        outcome = title.group(1) if title else "no result: " + dom.stderr[-300:]
        print(f"chromium page check: {outcome}")
        loaded_ok = bool(title) and title.group(2) == title.group(3) == str(len(sizes))
        # Table 1's seven datasets and the demo's score task, PLCC/SRCC each, and the mean
        table_ok = bool(title) and title.group(4) == str(2 + 2 * 9) \
            and title.group(5) == "KonIQ PLCC/KonIQ SRCC" and int(title.group(6)) >= 1 \
            and int(title.group(7)) >= 10
        print(f"paper table laid out: {'yes' if table_ok else 'NO'}")

        args.out.parent.mkdir(parents=True, exist_ok=True)
        shot = chromium(binary, work / "profile", f"--window-size={args.width},{args.height}",
                        f"--screenshot={args.out.resolve()}", (report_dir / "report.html").as_uri())
    if not args.out.is_file():
        print(f"no screenshot written: {shot.stderr[-300:]}", file=sys.stderr)
        return 1
    pixels = np.asarray(Image.open(args.out).convert("L"))
    inked = float((pixels < 240).mean())
    print(f"screenshot: {args.out} {pixels.shape[1]}x{pixels.shape[0]}, "
          f"{inked:.1%} of pixels non-white")
    ok = loaded_ok and table_ok and inked > 0.02
    print("all checks passed" if ok else "a check failed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

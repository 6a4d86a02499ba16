"""The built-in offline demo: DQ-style synthetic degradations of the photographs bundled with
scikit-image and matplotlib, generated once into a cache folder ($QBENCH_CACHE, default
~/.cache/qbench).

demo-degradation  class + level of each image (the DQ-495K protocol)
demo-score        the same images scored; ground truth is 5 − severity (undistorted = 5). A
                  proxy for MOS that only orders severity, not a human opinion score.
"""
from __future__ import annotations

from pathlib import Path

from qbench import Sample, Task, TaskData, register_task
from qbench.core.protocol import LEVELS
from qbench.core.settings import cache_root
from qbench.tasks.dq495k import read_dq_meta
from qbench.tasks.synthetic import generate

DEMO_VERSION = 1  # bump when the generator changes, so caches are rebuilt


def demo_folder() -> Path:
    cache = cache_root()
    return cache / f"demo-v{DEMO_VERSION}"


class _Demo(Task):
    in_all = False
    expected_count = {"test": 420}

    def locate(self, data_root: Path | None, override: Path | None = None) -> Path:
        return override or demo_folder()  # always available: generated on first use

    def load_degradation(self, folder: Path) -> TaskData:
        if not (folder / "test.json").exists():
            generate(folder)
        return read_dq_meta(folder, folder / "test.json", self.name)


@register_task
class DemoDegradation(_Demo):
    name = "demo-degradation"
    kind = "degradation"
    description = "synthetic DQ-style distortions of bundled photographs (offline demo)"

    def load(self, folder: Path, split: str) -> TaskData:
        return self.load_degradation(folder)


@register_task
class DemoScore(_Demo):
    name = "demo-score"
    kind = "score"
    description = "the demo images scored; ground truth 5 - severity (a proxy, not MOS)"

    def load(self, folder: Path, split: str) -> TaskData:
        data = self.load_degradation(folder)
        samples = []
        for s in data.samples:
            severity = 0 if s.severity == "null" else LEVELS.index(s.severity) + 1
            quality = 5.0 - severity
            samples.append(Sample(id=s.id, task=self.name, kind="score", images=s.images,
                                  mos=quality, mos_norm=4.0 * quality / 5.0 + 1.0, meta=s.meta))
        return TaskData(samples, data.notes, data.source)

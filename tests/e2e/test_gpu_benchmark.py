"""benchmarks/gpu_throughput.py --dry-run: the GPU benchmark's code end to end on the tiny model on
the CPU, in a process where datasets, TRL, pyiqa and vLLM cannot be imported (the GPU machine it
is written for has none of them)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_throughput.py"
ABSENT_ON_THE_GPU_MACHINE = ("datasets", "trl", "pyiqa", "vllm")

pytestmark = pytest.mark.slow   # a subprocess building a model


def test_dry_run_measures_every_configuration_without_optional_packages():
    code = ("import runpy, sys\n"
            f"for name in {ABSENT_ON_THE_GPU_MACHINE!r}:\n"
            "    sys.modules[name] = None  # `import name` raises ImportError\n"
            f"sys.argv = [{str(SCRIPT)!r}, '--dry-run']\n"
            f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "vLLM: skipped (not importable here)" in out
    rows = re.findall(r"^(transformers, batch \d+|level tokens, batch \d+)\s+(\d+)\s+([\d.]+)"
                      r"\s+([\d.]+)", out, flags=re.M)
    assert [r[0] for r in rows] == ["transformers, batch 1", "transformers, batch 2",
                                    "transformers, batch 4", "level tokens, batch 1",
                                    "level tokens, batch 4"]
    assert all(int(images) > 0 and float(rate) > 0 for _, images, _, rate in rows)
    ratios = [line for line in out.splitlines() if line.startswith("ratio ")]
    assert len(ratios) == 3 and all(re.search(r": \d+\.\d\d \(images/s\)$", r) for r in ratios)
    assert "KonIQ 2010 images" in out
    # the efficiency measurement: both adapter paths give the same scores, and the ratio is
    # the adapter's rate over the bare forward's, as printed
    assert "scores of both adapter paths equal: yes" in out
    bare = float(re.search(r"bare forward on prebuilt inputs\s+([\d.]+) samples/s", out)[1])
    ahead = float(re.search(r"inputs built ahead \(runner\)\s+([\d.]+) samples/s", out)[1])
    ratio = float(re.search(r"^level-token efficiency ratio: (\d+\.\d{3})$", out, re.M)[1])
    assert ratio == pytest.approx(ahead / bare, abs=2e-3)

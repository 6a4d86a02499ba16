"""The wheel carries the engine and the top-level tasks/, baselines/, trainer/ packages: built
here and installed into a fresh virtualenv, `qbench list` runs from it."""
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow   # builds a wheel and a virtualenv


def test_wheel_installs_into_a_fresh_venv_and_lists(tmp_path):
    # built from a clean copy: a stale build/ folder in the checkout must not leak into the wheel
    source = tmp_path / "src"
    anywhere = shutil.ignore_patterns("*.egg-info", "__pycache__", ".*cache")
    top_level = {".git", ".venv", ".whl", "build", "dist", "results"}   # qbench/results stays

    def ignore(folder: str, names: list[str]) -> set[str]:
        return set(anywhere(folder, names)) | (top_level & set(names)
                                                if Path(folder) == ROOT else set())
    shutil.copytree(ROOT, source, ignore=ignore)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path / "dist"), str(source)], check=True,
                   capture_output=True, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("qbench-*.whl")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    # dependencies come from this environment's site-packages (a plain path entry: its own .pth
    # files, such as an editable qbench, are not executed), qbench itself only from the wheel
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True)
    out = subprocess.run([str(env_dir / "bin" / "qbench"), "list"], capture_output=True, text=True,
                         cwd=tmp_path, env=os.environ | {"QBENCH_DATA_ROOT": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert "demo-degradation" in out.stdout and "stats" in out.stdout and "precomputed" in out.stdout
    where = subprocess.run([str(py), "-c", "import qbench.tasks.synthetic as m, qbench.baselines, "
                            "qbench.trainer; print(m.__file__)"], capture_output=True, text=True,
                           cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    assert str(env_dir) in where.stdout  # imported from the wheel, not from this checkout

"""What a new user meets first: paths that are not there, the version, a listing that fits the
terminal and says who downloads what, messages that stay whole when piped."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from qbench.cli.main import main


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("qbench ")


@pytest.mark.parametrize("verb", [["run", "--no-fetch"], ["list"], ["data", "check"]])
def test_a_data_root_that_is_not_there_is_one_line(tmp_path, capsys, verb):
    assert main([*verb, "--data-root", str(tmp_path / "typo")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"qbench: error: --data-root {tmp_path / 'typo'}: no such file or folder"


def test_a_model_path_that_is_not_there_is_one_line(tmp_path, capsys):
    assert main(["run", "--model", "qinsight", "--model-path", str(tmp_path / "weights"),
                 "--tasks", "demo-score", "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"qbench: error: --model-path {tmp_path / 'weights'}: no such file or folder"


def test_list_fits_100_columns_and_says_pyiqa_downloads_its_weights(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 100
    pyiqa = next(line for line in out.splitlines() if line.startswith("pyiqa:<name>"))
    assert "pyiqa downloads" in pyiqa


@pytest.mark.slow
def test_piped_messages_are_whole_lines(tmp_path):
    """stderr to a pipe (rich's 80 columns): the folder path stays on its line."""
    deep = tmp_path / ("a-rather-long-folder-name-" * 4) / "results"
    done = subprocess.run([sys.executable, "-m", "qbench", "run", "--tasks", "demo-score",
                           "--limit", "5", "--output", str(deep), "--no-progress"],
                          capture_output=True, text=True, timeout=300,
                          env=os.environ | {"COLUMNS": "80"})
    assert done.returncode == 3, done.stderr   # --limit: a marked subset
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("run folder: ")]
    assert line.startswith(f"run folder: {deep}/stats-")

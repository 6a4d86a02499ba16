"""`qbench leaderboard --layout paper|degradation|sriqa`: the tables of the papers from a fixed set
of run folders plus the published figures, in text, markdown, LaTeX and CSV."""
from __future__ import annotations

import io

import pandas as pd
import pytest

from helpers import fake_run_folder
from qbench.cli.main import main

MEASURED = {  # run id -> task -> metrics
    "mine-a1": {"koniq": {"plcc": 0.9011, "plcc_logistic": 0.9123, "srcc": 0.8899},
                "csiq": {"plcc": 0.7011, "plcc_logistic": 0.7555, "srcc": 0.6899, "deviates": True}},
    "other-b2": {"koniq": {"plcc": 0.8011, "plcc_logistic": 0.8123, "srcc": 0.7999}},
}


def write_runs(results) -> None:
    for run_id, tasks in MEASURED.items():
        fake_run_folder(results, run_id, run_id.split("-")[0], {
            task: {**{k: v for k, v in m.items() if k != "deviates"},
                   "problems": ["12 samples in split 'test', expected 866"] if m.get("deviates")
                   else []} for task, m in tasks.items()})


@pytest.fixture
def results(tmp_path):
    write_runs(tmp_path)
    return tmp_path


def test_latex_table_has_one_row_per_model_and_a_column_pair_per_dataset(results, capsys):
    out = results / "table.tex"
    assert main(["leaderboard", "--output", str(results), "--layout", "paper", "--format", "latex",
                 "--save", str(out)]) == 0
    latex = out.read_text()
    assert latex == capsys.readouterr().out
    assert latex.count(r"\toprule") == latex.count(r"\bottomrule") == 1
    body = latex[latex.index(r"\midrule"):latex.index(r"\bottomrule")]
    rows = [line for line in body.splitlines() if line.rstrip().endswith(r"\\")]
    models = [tuple(cell.strip() for cell in row.split("&")[:2]) for row in rows]
    assert ("mine", "measured") in models and ("other", "measured") in models
    assert ("Q-Insight", r"published$^{a}$") in models
    assert len(models) == len(set(models))                    # one row per model and source
    assert all(row.count("&") == 1 + 1 + 2 * 8 - 1 for row in rows)  # model, source, 7 datasets + mean
    header = latex[:latex.index(r"\midrule")]
    for label in ("KonIQ", "SPAQ", "KADID", "PIPAL", "LIVE-W", "AGIQA", "CSIQ", "Mean"):
        assert f"\\multicolumn{{2}}{{c}}{{{label}}}" in header, label
    mine = next(row for row in rows if row.startswith("mine"))
    assert r"\textbf{0.901}" in mine                          # the best measured raw KonIQ PLCC
    assert r"0.701}$^{*}$" in mine                            # CSIQ deviates: marked


def test_text_and_markdown_mark_conventions_and_the_logistic_choice(results, capsys):
    assert main(["leaderboard", "--output", str(results), "--layout", "paper"]) == 0
    text = capsys.readouterr().out
    qalign = next(line for line in text.splitlines() if line.startswith("Q-Align "))
    assert "0.941‡" in qalign            # a logistic figure under the raw heading, marked
    assert "‡ logistic-fitted PLCC, under a raw PLCC heading" in text
    assert main(["leaderboard", "--output", str(results), "--layout", "paper", "--plcc",
                 "logistic", "--format", "markdown"]) == 0
    markdown = capsys.readouterr().out
    mine = next(line for line in markdown.splitlines() if line.startswith("| mine"))
    assert "0.912" in mine and "0.901" not in mine       # the logistic PLCC column now
    qalign = next(line for line in markdown.splitlines() if line.startswith("| Q-Align |"))
    assert "0.941" in qalign and "‡" not in qalign.split("|")[3]


def test_csv_and_chosen_datasets(results, capsys):
    assert main(["leaderboard", "--output", str(results), "--layout", "paper", "--format", "csv",
                 "--tasks", "koniq,csiq", "--no-published"]) == 0
    table = capsys.readouterr().out.split("\n\n")[0]   # the footnotes follow a blank line
    frame = pd.read_csv(io.StringIO(table))
    assert list(frame["model"]) == ["mine", "other"]
    assert [c for c in frame.columns if "." in c] == ["koniq.plcc", "koniq.srcc", "csiq.plcc",
                                                       "csiq.srcc", "mean.plcc", "mean.srcc"]


def test_degradation_and_sriqa_layouts_print_the_published_tables(results, capsys):
    assert main(["leaderboard", "--output", str(results), "--layout", "degradation"]) == 0
    text = capsys.readouterr().out
    assert "Q-Insight" in text and "0.9277" in text and "AgenticIR" in text
    assert main(["leaderboard", "--output", str(results), "--layout", "sriqa"]) == 0
    text = capsys.readouterr().out
    assert "A-FINE" in text and "82.80" in text

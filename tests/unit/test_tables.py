"""Paper-style tables (qbench.results.tables) on a fixed set of measured leaderboard rows and published
figures: layout, PLCC convention marks, the mean column, deviation marks, and the text, markdown,
LaTeX and CSV forms (LaTeX checked structurally)."""
from __future__ import annotations

import csv
import io
import re

import pandas as pd
import pytest

from qbench.results.published import PublishedFigure, load_published
from qbench.results.tables import (
    Cell,
    default_tasks,
    degradation_table,
    latex_escape,
    paper_table,
    render,
    score_table,
    sriqa_table,
)

LABELS = ["KonIQ", "SPAQ", "KADID", "PIPAL", "LIVE-W", "AGIQA", "CSIQ"]


def measured_rows() -> pd.DataFrame:
    """Two runs of score tasks (one covering two of the seven sets, one deviating on CSIQ), a
    degradation run and a comparison run, in the leaderboard's shape with extra columns."""
    return pd.DataFrame([
        {"source": "measured", "run_id": "mine-1", "model": "my_model", "task": "koniq",
         "split": "test", "n": 2010, "plcc": 0.9123, "plcc_logistic": 0.9345, "srcc": 0.9012,
         "krcc": 0.7, "updated": "2025-01-01 00:00"},
        {"source": "measured", "run_id": "mine-1", "model": "my_model", "task": "csiq",
         "split": "test", "n": 866, "plcc": 0.8011, "plcc_logistic": 0.8456, "srcc": 0.8111},
        {"source": "measured", "run_id": "other-2", "model": "other", "task": "koniq",
         "split": "test", "n": 2010, "plcc": 0.5, "plcc_logistic": 0.55, "srcc": 0.45,
         "deviates": True},
        {"source": "measured", "run_id": "stats-3", "model": "stats", "task": "dq495k",
         "class_acc.noise": 1.0, "class_acc.blur": 0.5, "class_acc.jpeg": 0.75,
         "class_acc.darken": 0.25, "class_acc.null": 0.5, "class_acc_mean": 0.6,
         "level_acc.noise": 0.7, "level_acc.blur": 0.1, "level_acc.jpeg": 0.2,
         "level_acc.darken": 0.3, "level_acc_mean": 0.325},
        {"source": "measured", "run_id": "cmp-4", "model": "cmp", "task": "sriqa-compare",
         "acc": 0.9, "reg_acc": 0.8, "gen_acc": 0.7},
        # a published row as with_published() appends them: the table takes published figures
        # from `published` only, never from here
        {"source": "published", "model": "Q-Insight", "task": "koniq", "srcc": 0.1},
    ])


def figure(method, dataset, metric, value, convention="", reference="Paper P, Table 1",
           training="koniq") -> PublishedFigure:
    return PublishedFigure(method, dataset, metric, value, training, convention, reference)


def published() -> list[PublishedFigure]:
    """A raw, a logistic and an unstated PLCC row over all seven sets, with a printed mean that
    is not the mean of the row; Table 2 and Table 6 figures."""
    out = []
    for method, convention, base in (("RawNet", "raw", 0.80), ("LogiNet", "logistic", 0.70),
                                     ("Unsaid", "unstated", 0.95)):
        for i, dataset in enumerate(default_tasks("score")):
            out.append(figure(method, dataset, "plcc", round(base - 0.01 * i, 3), convention))
            out.append(figure(method, dataset, "srcc", round(base - 0.02 * i, 3)))
    out.append(figure("LogiNet", "mean", "plcc", 0.5, "logistic"))   # printed AVG, off the row
    out.append(figure("LogiNet", "mean", "srcc", 0.64))              # = the row's mean
    out.append(figure("Q-Insight", "dq495k", "class_acc.noise", 0.9, reference="Paper P, Table 2"))
    out.append(figure("Q-Insight", "dq495k", "class_acc_mean", 0.9277, reference="Paper P, Table 2"))
    out.append(figure("Q-Insight", "sriqa", "acc", 0.828, reference="Paper P, Table 6"))
    out.append(figure("Q-Insight", "sriqa", "plcc", 0.7627, "unstated", "Paper P, Table 6"))
    out.append(figure("Q-Insight", "sriqa", "srcc", 0.7614, reference="Paper P, Table 6"))
    return out


def row(table, model):
    (found,) = [r for r in table.rows if r.model == model]
    return dict(zip([c.key for c in table.columns], found.cells))


# ------------------------------------------------------------------------------ building

def test_score_table_has_the_seven_table1_sets_in_order_and_one_row_per_model():
    table = score_table(measured_rows(), published())
    assert [c.group for c in table.columns][::2] == LABELS + ["Mean"]
    assert [c.label for c in table.columns] == ["PLCC", "SRCC"] * 8
    assert [r.model for r in table.rows] == ["RawNet", "LogiNet", "Unsaid", "my_model", "other"]
    assert [r.source for r in table.rows] == ["published"] * 3 + ["measured"] * 2
    mine = row(table, "my_model")
    assert mine["koniq.plcc"].value == 0.9123 and mine["csiq.srcc"].value == 0.8111
    assert mine["spaq.plcc"] == Cell()          # a set the run does not cover stays empty


def test_measured_plcc_follows_the_chosen_convention():
    raw = row(score_table(measured_rows(), published(), plcc="raw"), "my_model")
    logistic = row(score_table(measured_rows(), published(), plcc="logistic"), "my_model")
    assert raw["koniq.plcc"].value == 0.9123 and logistic["koniq.plcc"].value == 0.9345
    assert raw["koniq.srcc"].value == logistic["koniq.srcc"].value == 0.9012
    assert not raw["koniq.plcc"].marks and not logistic["koniq.plcc"].marks


def test_published_plcc_of_another_or_unstated_convention_is_marked_both_ways():
    for heading, own, other in (("raw", "RawNet", "LogiNet"), ("logistic", "LogiNet", "RawNet")):
        table = score_table(measured_rows(), published(), plcc=heading)
        for dataset in default_tasks("score"):
            assert row(table, own)[f"{dataset}.plcc"].marks == frozenset()
            assert row(table, other)[f"{dataset}.plcc"].marks == {"other"}
            assert row(table, "Unsaid")[f"{dataset}.plcc"].marks == {"unstated"}
            assert row(table, other)[f"{dataset}.srcc"].marks == frozenset()   # SRCC has none
        text = render(table, "text")
        assert f"‡ {'logistic-fitted' if heading == 'raw' else 'raw'} PLCC, under a" in text
        assert "† PLCC whose paper does not state" in text


def test_mean_column_covers_the_sets_present_and_marks_partial_rows():
    table = score_table(measured_rows(), published())
    mine = row(table, "my_model")
    assert mine["mean.plcc"].value == pytest.approx((0.9123 + 0.8011) / 2)
    assert mine["mean.srcc"].value == pytest.approx((0.9012 + 0.8111) / 2)
    assert mine["mean.plcc"].marks == {"fewer"} and not mine["mean.plcc"].bold
    rawnet = row(table, "RawNet")
    assert rawnet["mean.plcc"].value == pytest.approx(sum(0.80 - 0.01 * i for i in range(7)) / 7)
    assert rawnet["mean.plcc"].marks == frozenset() and rawnet["mean.plcc"].bold
    assert row(table, "Unsaid")["mean.plcc"].marks == {"unstated"}   # marks carry to the mean
    # a printed mean that differs from the mean of the printed cells is footnoted, once
    assert table.notes == [("LogiNet (Paper P, Table 1): the paper prints a mean PLCC of 0.500; "
                            "the mean of its cells is 0.670")]


def test_other_datasets_are_chosen_by_argument():
    table = score_table(measured_rows(), published(), datasets=["csiq", "koniq"])
    assert [c.key for c in table.columns] == ["csiq.plcc", "csiq.srcc", "koniq.plcc", "koniq.srcc",
                                              "mean.plcc", "mean.srcc"]
    assert row(table, "my_model")["mean.plcc"].marks == frozenset()
    assert table.notes == []   # the printed mean was over other sets


def test_deviating_rows_are_marked_also_when_read_back_from_csv(tmp_path):
    frame = measured_rows()
    frame.to_csv(tmp_path / "leaderboard.csv", index=False)
    for rows in (frame, pd.read_csv(tmp_path / "leaderboard.csv")):
        table = score_table(rows, published())
        other = row(table, "other")
        assert other["koniq.plcc"].marks == other["koniq.srcc"].marks == {"deviates"}
        assert row(table, "my_model")["koniq.plcc"].marks == frozenset()
    assert "* measured on a sample set that deviates" in render(table, "text")


def test_best_value_per_column_is_bold_among_comparable_figures():
    table = score_table(measured_rows(), published())
    bold = {c.key: [r.model for r in table.rows if r.cells[j].bold]
            for j, c in enumerate(table.columns)}
    assert bold["koniq.plcc"] == ["my_model"]    # 0.9123 beats RawNet .80; Unsaid's .95 is marked
    assert bold["spaq.plcc"] == ["RawNet"]
    assert bold["koniq.srcc"] == ["Unsaid"]      # SRCC carries no convention: .95 is best
    assert bold["mean.plcc"] == ["RawNet"]       # my_model's partial mean does not compete


def test_runs_of_one_model_are_told_apart():
    frame = pd.concat([measured_rows(), pd.DataFrame([
        {"source": "measured", "run_id": "mine-9", "model": "my_model", "task": "koniq",
         "plcc": 0.1, "srcc": 0.1}])])
    models = [r.model for r in score_table(frame, []).rows]
    assert models == ["my_model (mine-1)", "other", "my_model (mine-9)"]


def test_degradation_layout():
    table = degradation_table(measured_rows(), published())
    assert [c.label for c in table.columns] == ["noise", "blur", "JPEG", "darken", "null", "mean",
                                                "noise", "blur", "JPEG", "darken", "mean"]
    assert [c.group for c in table.columns] == ["Class accuracy"] * 6 + ["Level accuracy"] * 5
    assert [r.model for r in table.rows] == ["Q-Insight", "stats"]
    stats = row(table, "stats")
    assert stats["class_acc.jpeg"].value == 0.75 and stats["level_acc_mean"].value == 0.325
    assert row(table, "Q-Insight")["class_acc.noise"].value == 0.9
    assert stats["class_acc.noise"].bold and not row(table, "Q-Insight")["class_acc.noise"].bold
    assert degradation_table(measured_rows(), published(), task="demo-degradation").rows == []


def test_sriqa_layout_in_percent_with_correlations_where_printed():
    table = sriqa_table(measured_rows(), published())
    assert [c.label for c in table.columns] == ["Reg-Acc", "Gen-Acc", "Acc", "PLCC", "SRCC"]
    assert [r.model for r in table.rows] == ["Q-Insight", "cmp"]
    assert row(table, "Q-Insight")["plcc"].marks == {"unstated"}
    lines = render(table, "text").splitlines()
    assert next(line for line in lines if line.startswith("cmp")).split() == [
        "cmp", "measured", "80.00", "70.00", "90.00"]
    without = sriqa_table(measured_rows(), [f for f in published() if f.metric != "plcc"
                                            and f.metric != "srcc"])
    assert [c.label for c in without.columns] == ["Reg-Acc", "Gen-Acc", "Acc"]


@pytest.mark.parametrize("call, message", [
    (lambda: score_table(measured_rows(), plcc="fitted"), "unknown PLCC convention 'fitted'"),
    (lambda: paper_table("table9", measured_rows()), "unknown table layout 'table9'"),
    (lambda: render(score_table(measured_rows()), "html"), "unknown table format 'html'"),
    (lambda: score_table(measured_rows().drop(columns="task")), "need the column.*task"),
    (lambda: score_table(pd.concat([measured_rows()] * 2)), "run mine-1 has task koniq twice"),
    (lambda: score_table(measured_rows().assign(srcc="high")), "'high', not a number"),
])
def test_bad_arguments_are_one_line_errors(call, message):
    with pytest.raises(ValueError, match=message) as info:
        call()
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------ rendering

def test_text_form():
    lines = render(score_table(measured_rows(), published()), "text").splitlines()
    assert lines[0] == "PLCC (raw) / SRCC per dataset"
    assert lines[1].split() == ["Model", "Source", *LABELS, "Mean"]
    assert lines[2].split() == ["PLCC", "SRCC"] * 8
    mine = next(line for line in lines if line.startswith("my_model"))
    assert mine.split() == ["my_model", "measured", "0.912", "0.901", "0.801", "0.811",
                            "0.857§", "0.856§"]
    assert next(line for line in lines if line.startswith("Unsaid")).split()[3] == "0.950†"
    assert "[a] Paper P, Table 1; training set koniq" in lines


def test_markdown_form():
    text = render(score_table(measured_rows(), published()), "markdown")
    table = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header == ["Model", "Source", *[f"{label} {m}" for label in LABELS + ["Mean"]
                                           for m in ("PLCC", "SRCC")]]
    assert len(table) == 2 + 5 and all(line.count("|") == len(header) + 1 for line in table)
    mine = [c.strip() for c in table[5].strip("|").split("|")]
    assert mine[:4] == [r"my\_model", "measured", "**0.912**", "0.901"]
    assert mine[-2:] == ["0.857§", "0.856§"]
    other = [c.strip() for c in table[6].strip("|").split("|")]
    assert other[2] == r"0.500\*"   # escaped: a bare * would start emphasis


LATEX_CELL = re.compile(r"(?<!\\)&")


def test_latex_form_is_booktabs_with_one_row_per_model_and_a_column_pair_per_dataset():
    table = score_table(measured_rows(), published())
    text = render(table, "latex")
    lines = text.splitlines()
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert rule in lines
    assert r"\begin{tabular}{ll" + "c" * 16 + "}" in lines
    groups = re.findall(r"\\multicolumn\{(\d)\}\{c\}\{([^}]*)\}", text)
    assert groups == [("2", label) for label in LABELS + ["Mean"]]
    assert re.findall(r"\\cmidrule\(lr\)\{(\d+)-(\d+)\}", text) == [
        (str(3 + 2 * i), str(4 + 2 * i)) for i in range(8)]
    start, end = lines.index(r"\midrule"), lines.index(r"\bottomrule")
    body = [line for line in lines[start + 1:end] if line != r"\midrule"]
    assert len(body) == len(table.rows) == 5
    cells = [[c.strip() for c in LATEX_CELL.split(line.removesuffix(r" \\"))] for line in body]
    assert all(len(r) == 2 + 2 * 8 for r in cells)
    assert [r[0] for r in cells] == ["RawNet", "LogiNet", "Unsaid", r"my\_model", "other"]
    assert [r[1] for r in cells] == [r"published$^{a}$"] * 3 + ["measured"] * 2
    # bold: exactly the best comparable value of each column
    bold = {(i, j) for i, r in enumerate(cells) for j, c in enumerate(r) if c.startswith(r"\textbf")}
    expected = {(i, j + 2) for i, r in enumerate(table.rows) for j, c in enumerate(r.cells) if c.bold}
    assert bold == expected and len({j for _, j in bold}) == 16
    assert cells[3][2] == r"\textbf{0.912}" and cells[4][2] == r"0.500$^{*}$"
    assert cells[2][2] == r"0.950$^{\dagger}$" and cells[1][2] == r"0.700$^{\ddagger}$"
    assert r"$^{\S}$" in cells[3][-1]
    assert lines[-1] == r"\end{table}" and text.count("{") == text.count("}")


def test_latex_escapes_special_characters():
    assert latex_escape(r"a_b & c% $d #e {f} ~g ^h \i") == (
        r"a\_b \& c\% \$d \#e \{f\} \textasciitilde{}g \textasciicircum{}h \textbackslash{}i")
    frame = pd.DataFrame([{"run_id": "r", "model": "50% & more_", "task": "koniq", "plcc": 0.5,
                           "srcc": 0.5}])
    text = render(score_table(frame), "latex")
    assert r"50\% \& more\_ & measured" in text


def test_csv_form():
    text = render(score_table(measured_rows(), published()), "csv")
    table, _, notes = text.partition("\n\n")
    rows = list(csv.reader(io.StringIO(table)))
    assert rows[0] == ["model", "source", "reference",
                       *[f"{d}.{m}" for d in (*default_tasks("score"), "mean") for m in ("plcc", "srcc")]]
    assert len(rows) == 1 + 5 and all(len(r) == len(rows[0]) for r in rows)
    mine = dict(zip(rows[0], rows[4]))
    assert mine["reference"] == "mine-1" and mine["koniq.plcc"] == "0.912" and mine["spaq.plcc"] == ""
    assert dict(zip(rows[0], rows[1]))["reference"] == "Paper P, Table 1; training set koniq"
    assert notes.splitlines()[0].startswith("* measured on a sample set")


def test_the_real_published_table1_in_the_default_table():
    table = score_table(pd.DataFrame(), load_published())
    models = [r.model for r in table.rows if r.reference == "Q-Insight paper, Table 1"]
    assert models == ["NIQE", "BRISQUE", "NIMA", "HyperIQA", "DBCNN", "MUSIQ", "CLIP-IQA+",
                      "ManIQA", "C2Score", "Qwen-SFT", "Q-Align", "DeQA-Score", "Q-Insight"]
    (qalign_row,) = [r for r in table.rows
                     if r.model == "Q-Align" and r.reference == "Q-Insight paper, Table 1"]
    qalign = dict(zip([c.key for c in table.columns], qalign_row.cells))
    assert qalign["koniq.plcc"].marks == {"other"}   # logistic-fitted, under the raw heading
    assert any(note.startswith("Q-Align (Q-Insight paper, Table 1): the paper prints a mean "
                               "PLCC of 0.705") for note in table.notes)
    assert all(not c.bold for r in table.rows for c in r.cells[::2])   # no raw PLCC published

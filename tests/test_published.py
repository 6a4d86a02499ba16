"""The published-figures table (baselines/published.csv) and its place in the leaderboard."""
import pytest

from qbench import DataError
from qbench.baselines.published import COLUMNS, leaderboard_rows, load_published
from qbench.cli import main
from qbench.results import update_leaderboard

SCORE_SETS = ["koniq", "spaq", "kadid", "pipal", "livew", "agiqa3k", "csiq"]

# REFERENCE §5, transcribed here independently of the CSV: method -> PLCC/SRCC per SCORE_SETS.
TABLE1_KONIQ = {
    "NIQE": ".533/.530 .679/.664 .468/.405 .195/.161 .493/.449 .560/.533 .718/.628",
    "BRISQUE": ".225/.226 .490/.406 .429/.356 .267/.232 .361/.313 .541/.497 .740/.556",
    "Q-Align": ".941/.940 .886/.887 .674/.684 .403/.419 .853/.860 .772/.735 .785/.737",
    "DeQA-Score": ".953/.941 .895/.896 .694/.687 .472/.478 .892/.879 .809/.729 .787/.744",
    "Q-Insight": ".933/.916 .907/.905 .742/.736 .486/.474 .893/.865 .811/.764 .870/.824",
    "VisualQuality-R1": ".923/.908 .891/.892 .712/.711 .441/.438 .874/.849 .822/.767 .712/.662",
}
MIX3 = {
    "Q-Align": ".945/.938 .933/.931 .935/.934 .409/.420 .887/.883 .788/.733 .876/.845",
    "DeQA-Score": ".957/.944 .938/.934 .955/.953 .495/.496 .900/.887 .808/.745 .900/.857",
}
DQ495K = {  # Q-Insight Table 2
    ("Q-Insight", "class_acc.noise"): 1.0, ("Q-Insight", "class_acc.blur"): .9756,
    ("Q-Insight", "class_acc.jpeg"): 1.0, ("Q-Insight", "class_acc.darken"): .9027,
    ("Q-Insight", "class_acc.null"): .7603, ("Q-Insight", "class_acc_mean"): .9277,
    ("Q-Insight", "level_acc.noise"): .5973, ("Q-Insight", "level_acc.blur"): .4438,
    ("Q-Insight", "level_acc.jpeg"): .5541, ("Q-Insight", "level_acc.darken"): .323,
    ("Q-Insight", "level_acc_mean"): .4796,
    ("AgenticIR", "class_acc_mean"): .5998, ("AgenticIR", "level_acc_mean"): .1922,
}
SRIQA_PERCENT = {  # Q-Insight Table 6: Reg-Acc / Gen-Acc / Acc
    "A-FINE": (83.30, 78.90, 82.40), "LPIPS": (82.00, 63.90, 65.80),
    "DepictQA": (73.00, 61.64, 62.96), "Q-Insight (zero-shot)": (78.67, 68.64, 75.51),
    "Q-Insight": (85.67, 77.78, 82.80),
}


def reference_figures() -> set[tuple[str, str, str, float, str]]:
    """(method, dataset, metric, value, training set) of every figure in REFERENCE §5."""
    out = set()
    for table, training in ((TABLE1_KONIQ, "koniq"), (MIX3, "koniq+spaq+kadid")):
        for method, cells in table.items():
            for dataset, cell in zip(SCORE_SETS, cells.split()):
                plcc, srcc = (float(v) for v in cell.split("/"))
                train = "none" if method == "NIQE" else training  # opinion-unaware
                out |= {(method, dataset, "plcc", plcc, train), (method, dataset, "srcc", srcc, train)}
    out.add(("Q-Align", "csiq", "plcc", .671, "koniq"))   # as Q-Insight's Table 1 prints it
    for (method, metric), value in DQ495K.items():
        out.add((method, "dq495k", metric, value, "dq495k" if method == "Q-Insight" else "unstated"))
    for method, values in SRIQA_PERCENT.items():
        for metric, value in zip(("reg_acc", "gen_acc", "acc"), values):
            train = {"Q-Insight": "diffiqa", "Q-Insight (zero-shot)": "koniq+dq495k"}.get(method, "unstated")
            out.add((method, "sriqa", metric, round(value / 100, 4), train))
    return out


def test_every_reference_figure_is_in_the_table_and_nothing_else():
    figures = load_published()
    table = {(f.method, f.dataset, f.metric, round(f.value, 4), f.training_set) for f in figures}
    expected = reference_figures()
    assert expected - table == set(), "figures of REFERENCE §5 missing from published.csv"
    assert table - expected == set(), "figures in published.csv that REFERENCE §5 does not give"
    assert len(figures) == len(expected)


def test_protocol_columns_are_filled():
    figures = load_published()
    by_key = {(f.method, f.dataset, f.metric, f.reference): f for f in figures}
    mix3 = by_key[("DeQA-Score", "koniq", "plcc", "DeQA-Score paper, Mix3 table")]
    assert mix3.plcc_convention == "logistic" and mix3.training_set == "koniq+spaq+kadid"
    table1 = by_key[("Q-Insight", "koniq", "plcc", "Q-Insight paper, Table 1")]
    assert table1.plcc_convention == "unstated"
    assert all(f.plcc_convention == "" for f in figures if f.metric != "plcc")
    assert {f.dataset for f in figures} == set(SCORE_SETS) | {"dq495k", "sriqa"}


def test_leaderboard_rows_put_logistic_plcc_in_its_own_column():
    rows = leaderboard_rows(load_published(), {"csiq"})
    assert set(rows["task"]) == {"csiq"} and set(rows["source"]) == {"published"}
    qalign = rows[rows["model"] == "Q-Align"].set_index("reference")
    assert qalign.loc["DeQA-Score paper, KonIQ-trained table", "plcc_logistic"] == pytest.approx(.785)
    assert qalign.loc["Q-Insight paper, Table 1", "plcc"] == pytest.approx(.671)
    assert qalign.loc["Q-Insight paper, Table 1", "srcc"] == pytest.approx(.737)


def write_csv(path, header, *lines):
    path.write_text("\n".join([",".join(header), *lines]) + "\n")
    return path


@pytest.mark.parametrize("line, message", [
    ("M,koniq,plcc,abc,koniq,raw,paper,", "is not a number"),
    ("M,koniq,plcc,1.5,koniq,raw,paper,", "outside"),
    ("M,koniq,plcc,0.5,koniq,,paper,", "plcc_convention"),
    ("M,koniq,srcc,0.5,koniq,raw,paper,", "plcc_convention is set"),
    (",koniq,srcc,0.5,koniq,,paper,", "empty method"),
])
def test_malformed_rows_are_one_line_errors_naming_the_line(tmp_path, line, message):
    path = write_csv(tmp_path / "p.csv", COLUMNS, "M,spaq,srcc,0.5,koniq,,paper,", line)
    with pytest.raises(DataError, match=message) as info:
        load_published(path)
    assert "line 3" in str(info.value) and "\n" not in str(info.value)


def test_missing_file_missing_column_and_duplicates_are_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_published(tmp_path / "absent.csv")
    with pytest.raises(DataError, match="missing column.*reference"):
        load_published(write_csv(tmp_path / "a.csv", COLUMNS[:6], "M,koniq,srcc,0.5,koniq,"))
    row = "M,koniq,srcc,0.5,koniq,,paper,"
    with pytest.raises(DataError, match="appears twice"):
        load_published(write_csv(tmp_path / "b.csv", COLUMNS, row, row))


def measured_koniq(results):
    update_leaderboard(results / "leaderboard.csv", "mine-1234", "mine", [
        {"task": "koniq", "kind": "score", "split": "test", "n": 2010, "n_ok": 2000,
         "parsed_fraction": 2000 / 2010, "plcc": 0.91234, "srcc": 0.90123}])


def test_leaderboard_sets_published_rows_beside_measured_ones(tmp_path, capsys):
    measured_koniq(tmp_path)
    markdown = tmp_path / "board.md"
    assert main(["leaderboard", "--output", str(tmp_path), "--markdown", str(markdown),
                 "--csv", str(tmp_path / "board.csv")]) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    mine = next(line for line in lines if line.split()[:2] == ["measured", "mine"])
    assert "2010" in mine.split() and "0.9123" in mine      # counts stay integers
    assert any(line.split()[:2] == ["published", "Q-Insight"] and "0.933" in line for line in lines)
    assert "training_set" in lines[0] and "reference" in lines[0]
    assert {line.split()[2] for line in lines[2:]} == {"koniq"}   # only the measured task
    assert "DeQA-Score paper, Mix3 table" in markdown.read_text()
    exported = (tmp_path / "board.csv").read_text()
    assert "published" in exported and "plcc_convention" in exported

    assert main(["leaderboard", "--output", str(tmp_path), "--no-published"]) == 0
    printed = capsys.readouterr().out
    assert "Q-Insight" not in printed and "mine" in printed


def test_leaderboard_tasks_filter_shows_published_rows_without_measured_ones(tmp_path, capsys):
    measured_koniq(tmp_path)
    assert main(["leaderboard", "--output", str(tmp_path), "--tasks", "sriqa"]) == 0
    printed = capsys.readouterr().out
    assert "A-FINE" in printed and "mine" not in printed

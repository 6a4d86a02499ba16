"""The published-figures table (baselines/published.csv) and its place in the leaderboard."""
import pandas as pd
import pytest

from helpers import fake_run_folder
from qbench import DataError
from qbench.cli.main import main
from qbench.results.leaderboard import rebuild_leaderboard
from qbench.results.published import (
    COLUMNS,
    PLCC_COLUMN,
    PublishedFigure,
    leaderboard_rows,
    load_published,
)

SCORE_SETS = ["koniq", "spaq", "kadid", "pipal", "livew", "agiqa3k", "csiq"]
T1 = "Q-Insight paper, Table 1"

# REFERENCE §5, transcribed here independently of the CSV: method -> PLCC/SRCC per SCORE_SETS,
# then the paper's AVG.
TABLE1 = {
    "NIQE": ".533/.530 .679/.664 .468/.405 .195/.161 .493/.449 .560/.533 .718/.628 .521/.481",
    "BRISQUE": ".225/.226 .490/.406 .429/.356 .267/.232 .361/.313 .541/.497 .740/.556 .436/.369",
    "NIMA": ".896/.859 .838/.856 .532/.535 .390/.399 .814/.771 .715/.654 .695/.649 .697/.675",
    "HyperIQA": ".917/.906 .791/.788 .506/.468 .410/.403 .772/.749 .702/.640 .752/.717 .693/.667",
    "DBCNN": ".884/.875 .812/.806 .497/.484 .384/.381 .773/.755 .730/.641 .586/.572 .667/.645",
    "MUSIQ": ".924/.929 .868/.863 .575/.556 .431/.431 .789/.830 .722/.630 .771/.710 .726/.707",
    "CLIP-IQA+": ".909/.895 .866/.864 .653/.654 .427/.419 .832/.805 .736/.685 .772/.719 .742/.720",
    "ManIQA": ".849/.834 .768/.758 .499/.465 .457/.452 .849/.832 .723/.636 .623/.627 .681/.658",
    "C2Score": ".923/.910 .867/.860 .500/.453 .354/.342 .786/.772 .777/.671 .735/.705 .706/.673",
    "Qwen-SFT": ".889/.866 .874/.875 .668/.663 .473/.442 .734/.728 .813/.739 .674/.650 .732/.709",
    "Q-Align": ".941/.940 .886/.887 .674/.684 .403/.419 .853/.860 .772/.735 .671/.737 .705/.752",
    "DeQA-Score": ".953/.941 .895/.896 .694/.687 .472/.478 .892/.879 .809/.729 .787/.744 .786/.765",
    "Q-Insight": ".933/.916 .907/.905 .742/.736 .486/.474 .893/.865 .811/.764 .870/.824 .806/.783",
}
TABLE1_LOGISTIC = {"Q-Align", "DeQA-Score"}   # rows taken from DeQA-Score's KonIQ-trained table
SCORE_ONLY = ".918/.895 .903/.899 .702/.702 .458/.435 .870/.839 .816/.766 .685/.640 .765/.739"
VISUALQUALITY_R1 = ".923/.908 .891/.892 .712/.711 .441/.438 .874/.849 .822/.767 .712/.662"
RALI = "RALI (arXiv 2510.11369), Table 2"
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
SRIQA = {  # Q-Insight Table 6: training set, Reg-Acc / Gen-Acc / Acc in percent, PLCC/SRCC
    "PSNR": ("none", (80.07, 41.70, 34.70), None),
    "SSIM": ("none", (83.00, 45.30, 37.40), None),
    "LPIPS": ("unstated", (82.00, 63.90, 65.80), None),
    "A-FINE": ("unstated", (83.30, 78.90, 82.40), None),
    "DepictQA": ("unstated", (73.00, 61.64, 62.96), (.3457, .3412)),
    "Q-Insight (zero-shot)": ("koniq+dq495k", (78.67, 68.64, 75.51), (.6385, .6297)),
    "Q-Insight": ("diffiqa", (85.67, 77.78, 82.80), (.7627, .7614)),
}

Figure = tuple[str, str, str, float, str, str, str]   # method, dataset, metric, value, training,
                                                       # PLCC convention, reference


def score_row(method: str, cells: str, training: str, convention: str, reference: str,
              datasets=(*SCORE_SETS, "mean")) -> set[Figure]:
    out = set()
    for dataset, cell in zip(datasets, cells.split(), strict=True):
        plcc, srcc = (float(v) for v in cell.split("/"))
        out |= {(method, dataset, "plcc", plcc, training, convention, reference),
                (method, dataset, "srcc", srcc, training, "", reference)}
    return out


def reference_figures() -> set[Figure]:
    """Every figure of REFERENCE §5 with the protocol it was published under."""
    out: set[Figure] = set()
    for method, cells in TABLE1.items():
        out |= score_row(method, cells, "none" if method == "NIQE" else "koniq",   # NIQE: opinion-unaware
                         "logistic" if method in TABLE1_LOGISTIC else "unstated", T1)
    out |= score_row("Q-Insight (score-only)", SCORE_ONLY, "koniq", "unstated", "Q-Insight paper, Table 3")
    out |= score_row("VisualQuality-R1", VISUALQUALITY_R1, "koniq", "unstated", RALI, SCORE_SETS)
    out.add(("Q-Align", "csiq", "plcc", .785, "koniq", "logistic", "DeQA-Score paper, KonIQ-trained table"))
    for method, cells in MIX3.items():
        out |= score_row(method, cells, "koniq+spaq+kadid", "logistic", "DeQA-Score paper, Mix3 table",
                         SCORE_SETS)
    for (method, metric), value in DQ495K.items():
        out.add((method, "dq495k", metric, value, "dq495k" if method == "Q-Insight" else "unstated",
                 "", "Q-Insight paper, Table 2"))
    for method, (training, percents, correlations) in SRIQA.items():
        for metric, value in zip(("reg_acc", "gen_acc", "acc"), percents):
            out.add((method, "sriqa", metric, round(value / 100, 4), training, "", "Q-Insight paper, Table 6"))
        if correlations:
            out.add((method, "sriqa", "plcc", correlations[0], training, "unstated", "Q-Insight paper, Table 6"))
            out.add((method, "sriqa", "srcc", correlations[1], training, "", "Q-Insight paper, Table 6"))
    return out


def test_every_reference_figure_is_in_the_table_and_nothing_else():
    figures = load_published()
    table = {(f.method, f.dataset, f.metric, round(f.value, 4), f.training_set, f.plcc_convention,
              f.reference) for f in figures}
    expected = reference_figures()
    assert expected - table == set(), "figures of REFERENCE §5 missing from published.csv"
    assert table - expected == set(), "figures in published.csv that REFERENCE §5 does not give"
    assert len(figures) == len(expected)


def test_table1_invariants():
    """Each Table 1 method: 7 datasets x PLCC/SRCC plus the AVG; one convention per row; the AVG
    is the mean of the row to rounding, except Q-Align's PLCC (.705 printed, .743 the mean)."""
    rows: dict[str, dict[tuple[str, str], object]] = {}
    for f in load_published():
        if f.reference == T1:
            rows.setdefault(f.method, {})[(f.dataset, f.metric)] = f
    assert set(rows) == set(TABLE1)
    for method, cells in rows.items():
        assert set(cells) == {(d, m) for d in (*SCORE_SETS, "mean") for m in ("plcc", "srcc")}, method
        conventions = {cells[(d, "plcc")].plcc_convention for d in (*SCORE_SETS, "mean")}
        assert conventions == {"logistic" if method in TABLE1_LOGISTIC else "unstated"}, method
        for metric in ("plcc", "srcc"):
            row_mean = sum(cells[(d, metric)].value for d in SCORE_SETS) / len(SCORE_SETS)
            off = abs(row_mean - cells[("mean", metric)].value)
            if (method, metric) == ("Q-Align", "plcc"):
                assert off > 0.03 and "not the mean" in cells[("mean", metric)].note
            else:
                assert off <= 0.0005, (method, metric, row_mean)


def test_visualquality_r1_is_never_attributed_to_q_insight():
    references = {f.reference for f in load_published() if f.method == "VisualQuality-R1"}
    assert references == {RALI}
    assert all("third-party" in f.note for f in load_published() if f.reference == RALI)


def test_protocol_columns_are_filled():
    figures = load_published()
    by_key = {(f.method, f.dataset, f.metric, f.reference): f for f in figures}
    mix3 = by_key[("DeQA-Score", "koniq", "plcc", "DeQA-Score paper, Mix3 table")]
    assert mix3.plcc_convention == "logistic" and mix3.training_set == "koniq+spaq+kadid"
    assert by_key[("Q-Insight", "koniq", "plcc", T1)].plcc_convention == "unstated"
    assert by_key[("Q-Align", "koniq", "plcc", T1)].plcc_convention == "logistic"
    assert {f.plcc_convention for f in figures if f.metric == "plcc"} <= {"raw", "logistic", "unstated"}
    assert all(f.plcc_convention == "" for f in figures if f.metric != "plcc")
    assert {f.dataset for f in figures} == set(SCORE_SETS) | {"mean", "dq495k", "sriqa"}


def test_leaderboard_rows_put_each_plcc_under_its_convention_only():
    """Both directions: `plcc` holds raw figures only (no logistic or unstated one), and raw
    figures appear under no other heading; checked on made-up figures of all three conventions
    and on every PLCC of published.csv."""
    made_up = [PublishedFigure(f"M-{c}", "koniq", "plcc", value, "koniq", c, "Paper X, Table 1")
               for c, value in (("raw", .81), ("logistic", .82), ("unstated", .83))]
    for figures in (made_up, load_published()):
        rows = leaderboard_rows(figures)
        plccs = [f for f in figures if f.metric == "plcc"]
        for figure in plccs:
            row = rows[(rows["model"] == figure.method) & (rows["task"] == figure.dataset)
                       & (rows["reference"] == figure.reference)
                       & (rows["training_set"] == figure.training_set)]
            assert len(row) == 1
            shown = {column: row[column].item() for column in PLCC_COLUMN.values()
                     if column in row and pd.notna(row[column].item())}
            assert shown == {PLCC_COLUMN[figure.plcc_convention]: figure.value}, figure
            assert row["plcc_convention"].item() == figure.plcc_convention
        raw_values = sorted(f.value for f in plccs if f.plcc_convention == "raw")
        assert sorted(rows["plcc"].dropna()) == raw_values if "plcc" in rows else not raw_values
    table1 = leaderboard_rows(load_published(), {"csiq"})
    qalign = table1[table1["model"] == "Q-Align"].set_index("reference")
    assert qalign.loc["DeQA-Score paper, KonIQ-trained table", "plcc_logistic"] == pytest.approx(.785)
    assert qalign.loc[T1, "plcc_logistic"] == pytest.approx(.671)
    assert qalign.loc[T1, "srcc"] == pytest.approx(.737)
    assert "plcc" not in table1   # nothing in the file is a raw PLCC


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
    """A run folder with one scored task, and the leaderboard derived from it."""
    fake_run_folder(results, "mine-1234", "mine", {"koniq": {
        "n": 2010, "n_ok": 2000, "parsed_fraction": 2000 / 2010, "plcc": 0.91234,
        "srcc": 0.90123}})
    rebuild_leaderboard(results)


def test_leaderboard_sets_published_rows_beside_measured_ones(tmp_path, capsys):
    measured_koniq(tmp_path)
    markdown = tmp_path / "board.md"
    assert main(["leaderboard", "--output", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert main(["leaderboard", "--output", str(tmp_path), "--save", str(markdown)]) == 0
    assert markdown.read_text() == capsys.readouterr().out   # as printed, in markdown
    assert main(["leaderboard", "--output", str(tmp_path), "--save",
                 str(tmp_path / "board.csv")]) == 0
    capsys.readouterr()
    lines = printed.splitlines()
    mine = next(line for line in lines if line.split()[:2] == ["measured", "mine"])
    assert "2010" in mine.split() and "0.9123" in mine      # counts stay integers
    assert any(line.split()[:2] == ["published", "Q-Insight"] and "0.933" in line for line in lines)
    assert "training_set" in lines[0] and "reference" in lines[0]
    assert "plcc_unstated" in lines[0]
    assert "DeQA-Score paper, Mix3 table" in markdown.read_text()
    exported = pd.read_csv(tmp_path / "board.csv")
    assert set(exported["task"]) == {"koniq"}   # only the measured task
    assert "published" in set(exported["source"]) and "plcc_convention" in exported
    unstated = exported[exported["plcc_convention"] == "unstated"]
    assert len(unstated) and unstated["plcc"].isna().all() and unstated["plcc_unstated"].notna().all()

    assert main(["leaderboard", "--output", str(tmp_path), "--no-published"]) == 0
    printed = capsys.readouterr().out
    assert "Q-Insight" not in printed and "mine" in printed


def test_leaderboard_tasks_filter_shows_published_rows_without_measured_ones(tmp_path, capsys):
    measured_koniq(tmp_path)
    assert main(["leaderboard", "--output", str(tmp_path), "--tasks", "sriqa"]) == 0
    printed = capsys.readouterr().out
    assert "A-FINE" in printed and "mine" not in printed

"""Paper-style tables: models down, datasets across, the way IQA papers print them.

Three layouts, after the Q-Insight paper:
  score        Table 1: PLCC/SRCC per dataset (default: its seven, in its order) and the mean
               over the datasets shown
  degradation  Table 2: per-class accuracy of the distortion class and of class + level
  sriqa        Table 6: Reg-Acc / Gen-Acc / Acc on SRIQA-Bench (+ PLCC/SRCC where present)

Rows are measured runs (leaderboard rows, one table row per run) and published figures
(baselines/published.csv, one table row per method × training set × paper table), each marked.
A PLCC column holds one convention, raw or logistic-fitted (`plcc=`): a published PLCC of the
other convention, or of a convention its paper does not state, keeps a footnote mark saying so,
and so does a measured figure whose sample set deviated from the published protocol
(`deviates` column) or that was measured on a part of the split chosen on purpose (`subset`:
--limit, an unmerged shard). Output as text, markdown, LaTeX (booktabs, best per column in bold)
or CSV.
"""
from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import pandas as pd

from qbench.core.protocol import CLASS_DISPLAY, CLASSES, DISTORTIONS
from qbench.core.registry import TASKS, load_plugins
from qbench.results.published import PAPER_MEAN, PublishedFigure

LAYOUTS = ("score", "degradation", "sriqa")
# The tasks a layout shows when none are asked for, in the order of the paper table it mirrors:
# declared by the plugin that knows that paper (`set_default_tasks`), so that qbench names no
# dataset. Column headings come from each task's `label`.
DEFAULT_TASKS: dict[str, tuple[str, ...]] = dict.fromkeys(LAYOUTS, ())
FORMATS = ("text", "markdown", "latex", "csv")
PLCC_HEADINGS = ("raw", "logistic")   # what a PLCC column can hold
MEASURED_PLCC = {"raw": "plcc", "logistic": "plcc_logistic"}   # leaderboard column per convention
PAPER_MEAN_TOLERANCE = 0.001   # a printed mean of 3-decimal cells differs from ours by rounding

# Footnote marks, in the order footnotes are listed: text form, LaTeX form.
MARKS = {"deviates": ("*", r"$^{*}$"), "unstated": ("†", r"$^{\dagger}$"),
         "other": ("‡", r"$^{\ddagger}$"), "fewer": ("§", r"$^{\S}$"),
         "subset": ("¶", r"$^{\P}$")}
# Marks that make a figure incomparable with its column: never bold.
NOT_COMPARABLE = frozenset({"unstated", "other", "fewer", "subset"})


@dataclass(frozen=True)
class Column:
    group: str            # spanning header: a dataset, "Class accuracy", ...
    label: str            # "PLCC", "noise", "Acc"
    key: str              # machine name (CSV header): koniq.plcc, class_acc.noise, ...
    digits: int = 3
    percent: bool = False  # shown ×100, as Table 6 prints accuracies

    def shown(self, value: float) -> float:
        return round(value * 100 if self.percent else value, self.digits)


@dataclass(frozen=True)
class Cell:
    value: float | None = None
    marks: frozenset[str] = frozenset()
    bold: bool = False


@dataclass
class TableRow:
    model: str
    source: str            # "measured" or "published"
    reference: str         # published: paper and table; measured: the run id
    training_set: str = ""
    cells: list[Cell] = field(default_factory=list)


@dataclass
class PaperTable:
    title: str
    columns: list[Column]
    rows: list[TableRow]
    plcc: str | None = None           # the PLCC convention of the headings, if any
    notes: list[str] = field(default_factory=list)   # footnotes beyond the marks

    def marks_used(self) -> list[str]:
        used = {m for row in self.rows for cell in row.cells for m in cell.marks}
        return [m for m in MARKS if m in used]

    def references(self) -> dict[str, str]:
        """Published references in order of appearance -> footnote letter."""
        refs: dict[str, str] = {}
        for row in self.rows:
            if row.source == "published" and row.reference not in refs:
                refs[row.reference] = _letter(len(refs))
        return refs


# ------------------------------------------------------------------------------ building

@dataclass
class _Line:
    """One table row before its cells are laid out: figures keyed by (task, metric)."""
    model: str
    source: str
    reference: str
    training_set: str = ""
    task: str = ""
    figures: dict[tuple[str, str], Cell] = field(default_factory=dict)


def set_default_tasks(layout: str, tasks: Sequence[str]) -> None:
    """The tasks `layout` shows by default (a plugin's declaration: the paper it mirrors)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown table layout {layout!r} (choose from {', '.join(LAYOUTS)})")
    DEFAULT_TASKS[layout] = tuple(tasks)


def default_tasks(layout: str) -> tuple[str, ...]:
    load_plugins()
    return DEFAULT_TASKS[layout]


def label_of(task: str) -> str:
    """A task's column heading: its declared label, else its name."""
    load_plugins()
    cls = TASKS.get(task)
    return (cls.label if cls is not None else "") or task


def score_table(measured: pd.DataFrame, published: Iterable[PublishedFigure] = (), *,
                datasets: Sequence[str] | None = None, plcc: str = "raw",
                digits: int = 3) -> PaperTable:
    """Table 1: per dataset a PLCC/SRCC pair, then the mean over the datasets shown.

    `measured`: leaderboard rows (columns model, task, run_id, plcc, plcc_logistic, srcc, and
    optionally source and a boolean deviates; other columns are ignored). `published`: figures
    of baselines/published.py. Each row's mean covers the datasets it has; one that lacks some is
    marked and never bold."""
    _check_convention(plcc)
    datasets = list(dict.fromkeys(default_tasks("score") if datasets is None else datasets))
    if not datasets:
        raise ValueError("score table: no datasets")
    lines = _measured_lines(measured, datasets, {"plcc": MEASURED_PLCC[plcc], "srcc": "srcc"},
                            by_task=False)
    figures = list(published)
    lines = _published_lines(figures, datasets, plcc, by_task=False) + lines
    columns = [Column(label_of(d), label, f"{d}.{metric}", digits)
               for d in datasets for label, metric in (("PLCC", "plcc"), ("SRCC", "srcc"))]
    columns += [Column("Mean", "PLCC", "mean.plcc", digits),
                Column("Mean", "SRCC", "mean.srcc", digits)]
    rows = _rows(lines, lambda line: (
        [line.figures.get((d, m), Cell()) for d in datasets for m in ("plcc", "srcc")]
        + [_mean([line.figures.get((d, m), Cell()) for d in datasets]) for m in ("plcc", "srcc")]))
    heading = "logistic-fitted" if plcc == "logistic" else "raw"
    return PaperTable(f"PLCC ({heading}) / SRCC per dataset", columns, _bold_best(columns, rows),
                      plcc, _paper_mean_notes(figures, rows, datasets))


def degradation_table(measured: pd.DataFrame, published: Iterable[PublishedFigure] = (), *,
                      task: str | None = None, digits: int = 4) -> PaperTable:
    """Table 2: accuracy of the distortion class per class and its mean, then of class + level
    per distortion and its mean, for one task (published figures of the same dataset only;
    default: the layout's first default task)."""
    if task is None:
        if not default_tasks("degradation"):
            raise ValueError("degradation table: no task given and none declared by default")
        task = default_tasks("degradation")[0]
    metrics = [(f"class_acc.{c}", "Class accuracy", CLASS_DISPLAY[c]) for c in CLASSES]
    metrics += [("class_acc_mean", "Class accuracy", "mean")]
    metrics += [(f"level_acc.{c}", "Level accuracy", CLASS_DISPLAY[c]) for c in DISTORTIONS]
    metrics += [("level_acc_mean", "Level accuracy", "mean")]
    columns = [Column(group, label, key, digits) for key, group, label in metrics]
    keys = [key for key, _, _ in metrics]
    lines = _published_lines(list(published), [task], None, by_task=True) + \
        _measured_lines(measured, [task], {k: k for k in keys}, by_task=True)
    rows = _rows(lines, lambda line: [line.figures.get(("", k), Cell()) for k in keys])
    return PaperTable(f"Degradation perception on {task}: class and level accuracy", columns,
                      _bold_best(columns, rows))


def sriqa_table(measured: pd.DataFrame, published: Iterable[PublishedFigure] = (), *,
                tasks: Sequence[str] | None = None, plcc: str = "raw") -> PaperTable:
    """Table 6: Reg-Acc / Gen-Acc / Acc in percent, then PLCC/SRCC when any row has them.
    Measured rows come from the score task (`sriqa`) and the comparison task (`sriqa-compare`)."""
    _check_convention(plcc)
    accuracy = [Column("Accuracy (%)", label, key, 2, percent=True)
                for label, key in (("Reg-Acc", "reg_acc"), ("Gen-Acc", "gen_acc"), ("Acc", "acc"))]
    correlation = [Column("Correlation", "PLCC", "plcc", 4),
                   Column("Correlation", "SRCC", "srcc", 4)]
    wanted = {c.key: c.key for c in accuracy} | {"plcc": MEASURED_PLCC[plcc], "srcc": "srcc"}
    lines = _published_lines(list(published), ["sriqa"], plcc, by_task=True) + \
        _measured_lines(measured, list(default_tasks("sriqa") if tasks is None else tasks),
                        wanted, by_task=True)
    keys = [c.key for c in accuracy + correlation]
    rows = _rows(lines, lambda line: [line.figures.get(("", k), Cell()) for k in keys])
    if all(cell.value is None for row in rows for cell in row.cells[3:]):
        columns, rows = accuracy, [TableRow(r.model, r.source, r.reference, r.training_set,
                                            r.cells[:3]) for r in rows]
    else:
        columns = accuracy + correlation
    return PaperTable("SRIQA-Bench: pairwise accuracy within groups", columns,
                      _bold_best(columns, rows), plcc if len(columns) > 3 else None)


def paper_table(layout: str, measured: pd.DataFrame, published: Iterable[PublishedFigure] = (),
                **options) -> PaperTable:
    """The table of one layout (LAYOUTS); options go to score_table, degradation_table or
    sriqa_table."""
    builders: dict[str, Callable[..., PaperTable]] = {
        "score": score_table, "degradation": degradation_table, "sriqa": sriqa_table}
    if layout not in builders:
        raise ValueError(f"unknown table layout {layout!r} (choose from {', '.join(LAYOUTS)})")
    return builders[layout](measured, published, **options)


def _check_convention(plcc: str) -> None:
    if plcc not in PLCC_HEADINGS:
        raise ValueError(f"unknown PLCC convention {plcc!r} (choose from raw, logistic)")


def _rows(lines: list[_Line], cells_of: Callable[[_Line], list[Cell]]) -> list[TableRow]:
    """The lines with at least one value, as rows of the cells `cells_of` lays out."""
    rows = []
    for line in lines:
        cells = cells_of(line)
        if any(c.value is not None for c in cells):
            rows.append(TableRow(line.model, line.source, line.reference, line.training_set, cells))
    return rows


def _measured_lines(frame: pd.DataFrame, tasks: list[str], wanted: dict[str, str],
                    *, by_task: bool) -> list[_Line]:
    """Measured leaderboard rows of `tasks`. `wanted` maps a table metric to the leaderboard
    column it is read from. by_task=False: one line per run over all tasks (figures keyed by
    (task, metric)); True: one line per run × task (figures keyed by ("", metric))."""
    if frame is None or frame.empty:
        return []
    missing = [c for c in ("model", "task") if c not in frame.columns]
    if missing:
        raise ValueError(f"measured rows need the column(s) {', '.join(missing)}")
    if "source" in frame.columns:
        frame = frame[frame["source"].fillna("measured") == "measured"]
    frame = frame[frame["task"].isin(tasks)]
    lines: dict[tuple[str, str], _Line] = {}
    for record in frame.to_dict("records"):
        run = str(record.get("run_id") or record["model"])
        task = str(record["task"])
        line = lines.setdefault((run, task if by_task else ""), _Line(
            str(record["model"]), "measured", run, task=task if by_task else ""))
        marks = frozenset({"deviates"} if _flag(record.get("deviates")) else set()) | (
            frozenset({"subset"}) if _entry_text(record.get("subset")) else frozenset())
        for metric, column in wanted.items():
            key = ("" if by_task else task, metric)
            if key in line.figures:
                raise ValueError(f"measured rows: run {run} has task {task} twice")
            value = _number(record.get(column), f"run {run} task {task} column {column}")
            line.figures[key] = Cell(value, marks if value is not None else frozenset())
    out = list(lines.values())
    _disambiguate(out)
    return out


def _published_lines(figures: list[PublishedFigure], datasets: list[str], plcc: str | None,
                     *, by_task: bool) -> list[_Line]:
    """One line per method × training set × reference, in the order of the file."""
    lines: dict[tuple[str, str, str], _Line] = {}
    for figure in figures:
        if figure.dataset not in datasets:
            continue
        line = lines.setdefault((figure.method, figure.training_set, figure.reference), _Line(
            figure.method, "published", figure.reference, figure.training_set))
        line.figures[("" if by_task else figure.dataset, figure.metric)] = Cell(
            figure.value, _convention_marks(figure, plcc))
    return list(lines.values())


def _convention_marks(figure: PublishedFigure, plcc: str | None) -> frozenset[str]:
    if figure.metric != "plcc" or figure.plcc_convention == plcc:
        return frozenset()
    return frozenset({"unstated" if figure.plcc_convention == "unstated" else "other"})


def _disambiguate(lines: list[_Line]) -> None:
    """Measured lines that share a model name get the shortest qualifier that tells them apart:
    the task, the run id, or both."""
    groups: dict[str, list[_Line]] = {}
    for line in lines:
        groups.setdefault(line.model, []).append(line)
    qualifiers = (lambda line: line.task, lambda line: line.reference,
                  lambda line: ", ".join(filter(None, (line.reference, line.task))))
    for model, group in groups.items():
        if len(group) < 2:
            continue
        for qualify in qualifiers:
            labels = [qualify(line) for line in group]
            if all(labels) and len(set(labels)) == len(labels):
                break
        for line, label in zip(group, labels, strict=True):
            line.model = f"{model} ({label})"


def _flag(value: object) -> bool:
    """A `deviates` entry as read from a DataFrame or CSV: True, 1, "true", "yes"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def _entry_text(value: object) -> str:
    """A text entry as read from a DataFrame or CSV (an empty cell reads as NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def _number(value: str | float | None, where: str) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"measured rows: {where} holds {value!r}, not a number") from None
    return number if math.isfinite(number) else None


def _mean(cells: list[Cell]) -> Cell:
    """Mean over the cells with a value; it inherits their marks, and is marked `fewer` when
    some are missing."""
    values = [c.value for c in cells if c.value is not None]
    if not values:
        return Cell()
    marks = frozenset().union(*(c.marks for c in cells if c.value is not None))
    if len(values) < len(cells):
        marks |= {"fewer"}
    return Cell(sum(values) / len(values), marks)


def _bold_best(columns: list[Column], rows: list[TableRow]) -> list[TableRow]:
    """Bold the best (highest, as shown) value of each column among comparable figures: the
    heading's convention, full means."""
    for j, column in enumerate(columns):
        comparable = [column.shown(value) for r in rows
                      if (value := r.cells[j].value) is not None
                      and not r.cells[j].marks & NOT_COMPARABLE]
        if not comparable:
            continue
        best = max(comparable)
        for row in rows:
            cell = row.cells[j]
            if cell.value is not None and not cell.marks & NOT_COMPARABLE \
                    and column.shown(cell.value) == best:
                row.cells[j] = Cell(cell.value, cell.marks, bold=True)
    return rows


def _paper_mean_notes(figures: list[PublishedFigure], rows: list[TableRow],
                      datasets: list[str]) -> list[str]:
    """Where a paper prints its own mean over exactly these datasets and it differs from the
    mean of its printed cells, say so (Q-Align's AVG PLCC in Q-Insight Table 1)."""
    if set(datasets) != set(default_tasks("score")):
        return []
    printed = {(f.method, f.training_set, f.reference, f.metric): f.value
               for f in figures if f.dataset == PAPER_MEAN}
    notes = []
    for row in rows:
        for metric, cell in zip(("plcc", "srcc"), row.cells[-2:], strict=True):
            value = printed.get((row.model, row.training_set, row.reference, metric))
            if value is not None and cell.value is not None and "fewer" not in cell.marks \
                    and abs(value - cell.value) > PAPER_MEAN_TOLERANCE:
                notes.append(f"{row.model} ({row.reference}): the paper prints a mean "
                             f"{metric.upper()} of {value:.3f}; the mean of its cells is "
                             f"{cell.value:.3f}")
    return notes


def _letter(index: int) -> str:
    return "abcdefghijklmnopqrstuvwxyz"[index] if index < 26 else f"r{index + 1}"


# ------------------------------------------------------------------------------ rendering

def render(table: PaperTable, fmt: str) -> str:
    """The table as text, markdown, LaTeX or CSV (FORMATS)."""
    renderers = {"text": _text, "markdown": _markdown, "latex": _latex, "csv": _csv}
    if fmt not in renderers:
        raise ValueError(f"unknown table format {fmt!r} (choose from {', '.join(FORMATS)})")
    return renderers[fmt](table)


def _value(column: Column, cell: Cell) -> str:
    return "" if cell.value is None else f"{column.shown(cell.value):.{column.digits}f}"


def _symbols(cell: Cell, latex: bool = False) -> str:
    return "".join(MARKS[m][1 if latex else 0] for m in MARKS if m in cell.marks)


@dataclass(frozen=True)
class Footnote:
    kind: str    # "mark" (key: a MARKS name), "note" or "reference" (key: its letter)
    key: str
    text: str


def _footnotes(table: PaperTable) -> list[Footnote]:
    """Every mark used, then the table's notes, then the published references."""
    heading = "logistic-fitted" if table.plcc == "logistic" else "raw"
    other = "raw" if table.plcc == "logistic" else "logistic-fitted"
    texts = {
        "deviates": "measured on a sample set that deviates from the published protocol",
        "unstated": "PLCC whose paper does not state whether it is raw or logistic-fitted",
        "other": f"{other} PLCC, under a {heading} PLCC heading",
        "fewer": "mean over the datasets this row has, fewer than the table shows",
        "subset": "measured on a part of the split chosen on purpose (--limit, or one shard "
                  "not merged)",
    }
    out = [Footnote("mark", m, texts[m]) for m in table.marks_used()]
    out += [Footnote("note", "", note) for note in table.notes]
    rows_by_ref: dict[str, list[TableRow]] = {}
    for row in table.rows:
        rows_by_ref.setdefault(row.reference, []).append(row)
    out += [Footnote("reference", letter, _reference_text(ref, rows_by_ref[ref]))
            for ref, letter in table.references().items()]
    return out


def _plain_footnote(note: Footnote) -> str:
    """A footnote with its text-form mark: "† PLCC ...", "[a] Q-Insight paper, Table 1; ..."."""
    mark = {"mark": MARKS.get(note.key, ("",))[0], "reference": f"[{note.key}]"}.get(note.kind, "")
    return f"{mark} {note.text}".strip()


BOLD_NOTE = "Bold: the best value of each column among figures of its heading's convention."


def _reference_text(reference: str, rows: list[TableRow]) -> str:
    """The reference with its training set; methods trained otherwise are named."""
    by_set: dict[str, list[str]] = {}
    for row in rows:
        by_set.setdefault(row.training_set, []).append(row.model)
    usual = max(by_set, key=lambda s: len(by_set[s]))
    others = [f"{', '.join(models)}: {s}" for s, models in by_set.items() if s != usual]
    return f"{reference}; training set {usual}" + (f" ({'; '.join(others)})" if others else "")


def _source(table: PaperTable, row: TableRow) -> str:
    return f"published [{table.references()[row.reference]}]" if row.source == "published" \
        else "measured"


def _row_values(table: PaperTable, row: TableRow) -> list[str]:
    """A row's cells as plain text: value, then its marks."""
    return [_value(c, cell) + _symbols(cell)
            for c, cell in zip(table.columns, row.cells, strict=True)]


def _text(table: PaperTable) -> str:
    from tabulate import tabulate
    groups = [c.group if i == 0 or c.group != table.columns[i - 1].group else ""
              for i, c in enumerate(table.columns)]   # a spanning header once, over its first
    headers = ["Model", "Source"] + [f"{g}\n{c.label}"
                                     for g, c in zip(groups, table.columns, strict=True)]
    body = [[row.model, _source(table, row)] + _row_values(table, row) for row in table.rows]
    out = [table.title, tabulate(body, headers=headers, tablefmt="simple", disable_numparse=True,
                                 colalign=["left", "left"] + ["right"] * len(table.columns))]
    out += [_plain_footnote(note) for note in _footnotes(table)]
    return "\n".join(out)


def _markdown_escape(text: str) -> str:
    for char in "\\|*_`":
        text = text.replace(char, "\\" + char)
    return text


def _markdown(table: PaperTable) -> str:
    def cell_text(column: Column, cell: Cell) -> str:
        value = _value(column, cell)
        if value and cell.bold:
            value = f"**{value}**"
        return value + _markdown_escape(_symbols(cell))

    headers = ["Model", "Source"] + [f"{c.group} {c.label}" for c in table.columns]
    lines = [f"**{_markdown_escape(table.title)}**", "",
             "| " + " | ".join(_markdown_escape(h) for h in headers) + " |",
             "|" + "|".join([":---"] * 2 + ["---:"] * len(table.columns)) + "|"]
    for row in table.rows:
        cells = [_markdown_escape(row.model), _markdown_escape(_source(table, row))]
        cells += [cell_text(c, cell) for c, cell in zip(table.columns, row.cells, strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += [_markdown_escape(_plain_footnote(note)) + "  " for note in _footnotes(table)]
    lines.append(BOLD_NOTE)
    return "\n".join(lines)


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                 "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                 "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(char, char) for char in text)


def _spans(columns: list[Column]) -> list[tuple[str, int]]:
    """Consecutive columns of one group as (group, width)."""
    spans: list[tuple[str, int]] = []
    for column in columns:
        if spans and spans[-1][0] == column.group:
            spans[-1] = (column.group, spans[-1][1] + 1)
        else:
            spans.append((column.group, 1))
    return spans


def _latex(table: PaperTable) -> str:
    def cell_text(column: Column, cell: Cell) -> str:
        value = _value(column, cell)
        if value and cell.bold:
            value = rf"\textbf{{{value}}}"
        return value + _symbols(cell, latex=True)

    spans = _spans(table.columns)
    group_cells, rules, first = ["", ""], [], 3
    for group, width in spans:
        group_cells.append(rf"\multicolumn{{{width}}}{{c}}{{{latex_escape(group)}}}")
        rules.append(rf"\cmidrule(lr){{{first}-{first + width - 1}}}")
        first += width
    refs = table.references()
    lines = [r"% requires \usepackage{booktabs}", r"\begin{table}[t]", r"\centering", r"\small",
             rf"\caption{{{latex_escape(table.title)}}}",
             rf"\begin{{tabular}}{{ll{'c' * len(table.columns)}}}", r"\toprule",
             " & ".join(group_cells) + r" \\", "".join(rules),
             " & ".join(["Model", "Source"] + [latex_escape(c.label) for c in table.columns])
             + r" \\",
             r"\midrule"]
    for i, row in enumerate(table.rows):
        if i and row.source != table.rows[i - 1].source:
            lines.append(r"\midrule")
        source = rf"published$^{{{refs[row.reference]}}}$" if row.source == "published" \
            else "measured"
        cells = [latex_escape(row.model), source]
        cells += [cell_text(c, cell) for c, cell in zip(table.columns, row.cells, strict=True)]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    notes = _footnotes(table)
    if notes:
        lines.append(r"\par\smallskip{\footnotesize\raggedright")
        for note in notes:
            mark = {"mark": MARKS.get(note.key, ("", ""))[1] + "~",
                    "reference": f"$^{{{note.key}}}$~"}.get(note.kind, "")
            lines.append(f"{mark}{latex_escape(note.text)}\\par")
        lines.append(BOLD_NOTE + r"\par}")
    lines.append(r"\end{table}")
    return "\n".join(lines)


def _csv(table: PaperTable) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", "source", "reference"] + [c.key for c in table.columns])
    for row in table.rows:
        reference = f"{row.reference}; training set {row.training_set}" \
            if row.source == "published" else row.reference
        writer.writerow([row.model, row.source, reference] + _row_values(table, row))
    footnotes = [note for note in _footnotes(table) if note.kind != "reference"]  # in the rows
    if footnotes:
        writer.writerow([])
        for note in footnotes:
            writer.writerow([_plain_footnote(note)])
    return buffer.getvalue()


def plain(table: PaperTable) -> tuple[list[str], list[list[str]], list[str]]:
    """The table as plain strings (headers, rows, footnotes) for other renderers (the report's
    HTML): values with their marks, the source column, the footnote texts."""
    headers = ["Model", "Source"] + [f"{c.group} {c.label}" for c in table.columns]
    rows = [[row.model, _source(table, row)] + _row_values(table, row) for row in table.rows]
    return headers, rows, [_plain_footnote(note) for note in _footnotes(table)]

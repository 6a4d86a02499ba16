"""`qbench report RUN...`: one self-contained HTML page (plots embedded as base64 PNG) and a
markdown twin (plots as PNG files beside it) for one or more run folders:

- paper tables first, as Q-Insight prints them (models down, datasets across; measured runs
  beside the published figures, each marked; qbench.results.tables);
- the measured results: every run × task with bootstrap confidence intervals;
- parse-failure rates per run and task;
- per task and run: prediction vs MOS with the fitted 4-parameter logistic (score tasks), or the
  confusion matrix (degradation and comparison tasks);
- a few transcripts per task and run: the best and worst answered sample and a failed parse.
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from qbench.core.kinds import Kind
from qbench.core.records import Prediction, Sample
from qbench.results.folder import RunView
from qbench.results.leaderboard import flatten, leaderboard_row, metric_order
from qbench.scoring import formulas as metrics
from qbench.scoring.bootstrap import DEFAULT_LEVEL, DEFAULT_RESAMPLES, Interval
from qbench.scoring.metrics import Scored, intervals

TEXT_LIMIT = 1500   # characters of a transcript shown; the rest is summarised
# A CI is shown only where its estimate is the metric the task reported. Fitted metrics (the
# logistic PLCC) are refitted by the bootstrap from the full fit's parameters and agree with the
# reported value to the optimiser's tolerance, not to the last bit.
CI_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Plot:
    name: str      # file name of the PNG (markdown) and a stable id
    png: bytes
    caption: str


@dataclass(frozen=True)
class Transcript:
    label: str     # "best", "worst", "failed parse"
    sample_id: str
    truth: str
    answer: str
    text: str | None
    error: str | None = None


@dataclass
class Section:
    """One task of one run."""

    task: str
    run: str
    plot: Plot | None
    transcripts: list[Transcript]


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    published: list[bool] = field(default_factory=list)   # row is a published figure
    title: str = ""
    footnotes: list[str] = field(default_factory=list)
    markdown: str = ""   # the table's own markdown, where it has one (paper tables)


@dataclass
class Report:
    title: str
    runs: list[str]
    paper: list[Table]
    leaderboard: Table
    failures: Table
    sections: list[Section]
    notes: list[str]
    settings: str


# ------------------------------------------------------------------------ numbers and tables

def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def with_interval(value: float, interval: Interval | None) -> str:
    if interval is None or not math.isfinite(interval.low):
        return _fmt(value)
    # a no-break space keeps the interval whole when a narrow table cell wraps
    return f"{value:.4f} [{interval.low:.3f},\u00a0{interval.high:.3f}]"


def run_intervals(run: RunView, scored: Scored, *, resamples: int, level: float, seed: int,
                  notes: list[str]) -> dict[str, Interval]:
    """Bootstrap intervals of the task's headline metrics, kept only where the bootstrap's own
    estimate is the value the run reported (a number that does not follow from the stored
    predictions is not given an interval, and the report says so)."""
    reported = run.metrics.get(scored.task, {})
    kept = {}
    for name, interval in intervals(scored, resamples=resamples, level=level, seed=seed).items():
        value = reported.get(name)
        if isinstance(value, (int, float)) and abs(value - interval.estimate) <= CI_TOLERANCE:
            kept[name] = interval
        elif value is not None:
            notes.append(f"{run.run_id} {scored.task}: no CI for {name} (the task reports "
                         f"{value:.6g}, the bootstrap estimate is {interval.estimate:.6g})")
    return kept


def leaderboard_table(runs: Sequence[RunView], intervals: dict[tuple[str, str], dict[str, Interval]]
                      ) -> Table:
    """Every run x task with its intervals; only the metric columns that have a value
    somewhere. A task whose measured split differs from the published one says so."""
    records: list[tuple[dict[str, Any], dict[str, Interval]]] = []
    for run in runs:
        for task in run.tasks():
            flat = flatten(run.metrics[task])
            records.append(({"model": run.model, "run": run.run_id, "task": task,
                             "n": flat.get("n"), "parsed": flat.get("parsed_fraction"),
                             "status": flat.get("status"), **flat},
                            intervals.get((run.run_id, task), {})))
    metric_columns = [m for m in metric_order()
                      if any(isinstance(r.get(m), (int, float)) and not _missing(r.get(m))
                             for r, _ in records)]
    columns = ["model", "run", "task", "n", "parsed", "status"] + metric_columns
    rows = [[with_interval(r[c], cis.get(c)) if c in metric_columns and not _missing(r.get(c))
             else _fmt(r.get(c)) for c in columns] for r, cis in records]
    return Table(columns, rows, title="Measured results")


def paper_tables(runs: Sequence[RunView], published: Sequence[Any], plcc: str) -> list[Table]:
    """The paper layouts these runs fill: Table 1 (the seven datasets, and any other score task
    measured), Table 2 for each degradation task, Table 6 for SRIQA-Bench."""
    from qbench.results.tables import default_tasks, paper_table, plain, render
    sriqa = default_tasks("sriqa")
    measured = pd.DataFrame([leaderboard_row(run.run_id, run.model, run.metrics[task], None)
                             for run in runs for task in run.tasks()
                             if run.metrics[task].get("status") != "failed"])
    tasks = {t: run.kind(t) for run in runs for t in run.tasks()}
    score = [t for t, kind in tasks.items() if kind == "score" and t not in sriqa]
    layouts = [("score", {"datasets": list(dict.fromkeys([*default_tasks("score"), *score])),
                          "plcc": plcc})]
    layouts += [("degradation", {"task": t}) for t, kind in tasks.items() if kind == "degradation"]
    if any(t in sriqa for t in tasks):
        layouts.append(("sriqa", {"plcc": plcc}))
    out = []
    for layout, options in layouts:
        table = paper_table(layout, measured, published, **options)
        if table.rows:
            headers, rows, footnotes = plain(table)
            out.append(Table(headers, rows, [r.source == "published" for r in table.rows],
                             table.title, footnotes, render(table, "markdown")))
    return out


def failures_table(runs: Sequence[RunView]) -> Table:
    statuses = sorted({s for run in runs for t in run.tasks()
                       for s in (run.metrics[t].get("failure_counts") or {})})
    columns = ["model", "run", "task", "n", "answered", "parse-failure rate", *statuses]
    rows = []
    for run in runs:
        for task in run.tasks():
            m = run.metrics[task]
            counts = m.get("failure_counts") or {}
            unparsed = counts.get("unparsed", 0)
            rows.append([run.model, run.run_id, task, _fmt(m.get("n")), _fmt(m.get("n_ok")),
                         f"{unparsed / m['n']:.2%}" if m.get("n") else "",
                         *[str(counts.get(s, 0)) for s in statuses]])
    return Table(columns, rows)


# ------------------------------------------------------------------------ plots

def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def _new_figure(width: float, height: float) -> tuple[Any, Any]:
    """A matplotlib figure outside pyplot: no global state, no display backend to pick."""
    from matplotlib.figure import Figure
    figure = Figure(figsize=(width, height))
    return figure, figure.subplots()


def _plot_name(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "--".join(parts)) + ".png"


def scatter_plot(run: RunView, scored: Scored) -> Plot | None:
    """Model score against MOS, both as published, with the logistic the metrics fit (fitted on
    oriented values, drawn back in the plotted units)."""
    samples = scored.scored
    if len(samples) < 3:
        return None
    x = np.array([scored.predictions[s.id].score for s in samples], float)
    y = np.array([s.mos for s in samples], float)
    conventions = scored.conventions
    sign_x = -1.0 if conventions.model_lower_better else 1.0
    sign_y = -1.0 if conventions.truth_lower_better else 1.0
    fig, ax = _new_figure(5.2, 3.9)
    ax.scatter(x, y, s=10, alpha=0.5, color="#3b6ea8", edgecolors="none", label="samples")
    params = metrics.fit_logistic(scored.pred, scored.gt)
    if params is not None:
        grid = np.linspace(x.min(), x.max(), 200)
        ax.plot(grid, sign_y * metrics.logistic4(sign_x * grid, *params), color="#c0392b",
                linewidth=2, label="4-parameter logistic fit")
    ax.set_xlabel(f"{run.model} score"
                  + (" (lower is better)" if conventions.model_lower_better else ""))
    ax.set_ylabel("MOS" + (" (lower is better)" if conventions.truth_lower_better else ""))
    ax.set_title(f"{scored.task}: SRCC {_fmt(metrics.srcc(scored.pred, scored.gt), 3)}, "
                 f"n = {len(samples)}", fontsize=10)
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    caption = (f"{scored.task} / {run.label}: prediction vs MOS, {len(samples)} scored samples"
               + ("" if params is not None else " (the logistic fit did not converge)"))
    return Plot(_plot_name(scored.task, run.run_id, "scatter"), _png(fig), caption)


def confusion_plot(run: RunView, scored: Scored) -> Plot | None:
    """Counts of true (rows) against answered (columns) labels; a failure is its own column."""
    kind: Kind = scored.kind
    if not scored.samples:
        return None
    labels, names = list(kind.labels), list(kind.label_names)
    truth = [kind.truth_label(s) for s in scored.samples]
    said = [kind.answer_label(p) if (p := scored.answer(s)) else "failed" for s in scored.samples]
    matrix = np.array(metrics.confusion(truth, said, labels + ["failed"]))[:len(labels)]
    fig, ax = _new_figure(5.2, 4.2)
    totals = np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    ax.imshow(matrix / totals, cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=9,
                color="white" if count / totals[i, 0] > 0.6 else "black")
    ax.set_xticks(range(len(names) + 1), names + ["failed"], rotation=30)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{scored.task}: {len(scored.samples)} samples", fontsize=10)
    caption = f"{scored.task} / {run.label}: confusion matrix (colour: share of the true row)"
    return Plot(_plot_name(scored.task, run.run_id, "confusion"), _png(fig), caption)


def plot(run: RunView, scored: Scored) -> Plot | None:
    return confusion_plot(run, scored) if scored.kind.classifies else scatter_plot(run, scored)


# ------------------------------------------------------------------------ transcripts

def _transcript(label: str, s: Sample, p: Prediction, kind: Kind) -> Transcript:
    answer = kind.answer_text(p) if p.ok else f"({p.status})"
    return Transcript(label, s.id, kind.truth_text(s), answer, p.text, p.error)


def _with_text_first(candidates: list[Sample], answers: dict[str, Prediction]) -> list[Sample]:
    """Samples whose answer carries model text first (a transcript is the point)."""
    return sorted(candidates, key=lambda s: not answers[s.id].text)


def pick_transcripts(scored: Scored) -> list[Transcript]:
    """Best and worst answered sample, and one failed answer (unparsed first). Scores rank by
    how far a sample's prediction rank is from its MOS rank; classifications by right/wrong."""
    samples, answers, kind = scored.samples, scored.predictions, scored.kind
    chosen: list[tuple[str, Sample]] = []
    if kind.classifies:
        ok = [s for s in samples if answers[s.id].ok]
        good = _with_text_first([s for s in ok if kind.right(s, answers[s.id])], answers)
        bad = _with_text_first([s for s in ok if not kind.right(s, answers[s.id])], answers)
        chosen += [("best", good[0])] if good else []
        chosen += [("worst", bad[0])] if bad else []
    elif len(scored.scored) >= 2:
        gap = np.abs(stats.rankdata(scored.pred) - stats.rankdata(scored.gt))
        chosen += [("best", scored.scored[int(np.argmin(gap))]),
                   ("worst", scored.scored[int(np.argmax(gap))])]
    failed = sorted((s for s in samples if not answers[s.id].ok),
                    key=lambda s: (answers[s.id].status != "unparsed", not answers[s.id].text))
    if failed:
        chosen.append(("failed parse" if answers[failed[0].id].status == "unparsed"
                       else f"failed ({answers[failed[0].id].status})", failed[0]))
    return [_transcript(label, s, answers[s.id], kind) for label, s in chosen]


# ------------------------------------------------------------------------ assembling

def build_report(runs: Sequence[RunView], *, published: Sequence[Any] = (), plcc: str = "raw",
                 resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL,
                 seed: int = 0) -> Report:
    """Everything the report shows, computed once; renderers only format it."""
    notes = [n for run in runs for n in run.notes]
    found: dict[tuple[str, str], dict[str, Interval]] = {}
    sections = []
    task_order = list(dict.fromkeys(t for run in runs for t in run.tasks()))
    for name in task_order:
        for run in runs:
            if name not in run.tasks():
                continue
            scored = run.scored(name)
            found[(run.run_id, name)] = run_intervals(run, scored, resamples=resamples,
                                                      level=level, seed=seed, notes=notes)
            sections.append(Section(name, run.label, plot(run, scored), pick_transcripts(scored)))
    return Report(
        title="qbench report", runs=[run.label for run in runs],
        paper=paper_tables(runs, published, plcc), leaderboard=leaderboard_table(runs, found),
        failures=failures_table(runs), sections=sections, notes=notes,
        settings=f"{level:.0%} percentile bootstrap intervals, {resamples} resamples, seed {seed}")


# ------------------------------------------------------------------------ HTML

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left}
.wide{overflow-x:auto}
th{background:#eef2f7}
tr.published td{font-style:italic;color:#555;background:#fafafa}
.figures{display:flex;flex-wrap:wrap;gap:1em}
figure{margin:0;border:1px solid #ddd;padding:.5em}
figcaption{font-size:12px;color:#555;max-width:520px}
pre{white-space:pre-wrap;background:#f6f6f6;padding:.6em;font-size:12px;max-height:24em;overflow:auto}
details{margin:.4em 0}
.note{color:#8a5a00}
.footnotes{font-size:12px;color:#555}
"""


def html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = []
    for i, row in enumerate(table.rows):
        css = ' class="published"' if i < len(table.published) and table.published[i] else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>")
    return (f'<div class="wide"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _clip(text: str) -> str:
    if len(text) <= TEXT_LIMIT:
        return text
    return f"{text[:TEXT_LIMIT]}\n… ({len(text) - TEXT_LIMIT} more characters)"


def _transcript_body(t: Transcript) -> str:
    return _clip(t.text) if t.text else "(the model returned no text: it answers without reasoning)"


def render_html(report: Report) -> str:
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>{html.escape(report.title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(report.title)}</h1>",
             f"<p>Runs: {html.escape('; '.join(report.runs))}. Generated "
             f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC. "
             f"{html.escape(report.settings)}.</p>"]
    for table in report.paper:
        parts += [f"<h2>{html.escape(table.title)}</h2>", html_table(table),
                  "<p class=\"footnotes\">" + "<br>".join(html.escape(n) for n in table.footnotes)
                  + "</p>"]
    parts += [f"<h2>{html.escape(report.leaderboard.title)}</h2>", html_table(report.leaderboard),
              "<h2>Parse failures</h2>", html_table(report.failures)]
    if report.notes:
        parts.append("<ul>" + "".join(f'<li class="note">{html.escape(n)}</li>'
                                      for n in report.notes) + "</ul>")
    parts.append("<h2>Tasks</h2>")
    for task in dict.fromkeys(s.task for s in report.sections):
        parts.append(f"<h3>{html.escape(task)}</h3><div class=\"figures\">")
        mine = [s for s in report.sections if s.task == task]
        for section in mine:
            if section.plot is not None:
                data = base64.b64encode(section.plot.png).decode("ascii")
                parts.append(f'<figure><img src="data:image/png;base64,{data}" '
                             f'alt="{html.escape(section.plot.caption)}">'
                             f"<figcaption>{html.escape(section.plot.caption)}</figcaption></figure>")
        parts.append("</div>")
        for section in mine:
            if not section.transcripts:
                continue
            parts.append(f"<h4>Transcripts: {html.escape(section.run)}</h4>")
            for t in section.transcripts:
                error = f"; error: {html.escape(t.error)}" if t.error else ""
                parts.append(f"<details open><summary><b>{html.escape(t.label)}</b> "
                             f"{html.escape(t.sample_id)}: truth {html.escape(t.truth)}, answer "
                             f"{html.escape(t.answer)}{error}</summary>"
                             f"<pre>{html.escape(_transcript_body(t))}</pre></details>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


# ------------------------------------------------------------------------ markdown

def markdown_table(table: Table) -> str:
    from tabulate import tabulate
    rows = [[f"*{v}*" if v and i < len(table.published) and table.published[i] else v
             for v in row] for i, row in enumerate(table.rows)]
    return tabulate(rows, headers=table.columns, tablefmt="github", disable_numparse=True)


def _fence(text: str) -> str:
    """A code fence longer than any backtick run in the text."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def render_markdown(report: Report, figure_dir: str) -> str:
    lines = [f"# {report.title}", "", f"Runs: {'; '.join(report.runs)}.", "",
             f"{report.settings}.", ""]
    for table in report.paper:
        lines += [table.markdown, ""]
    lines += [f"## {report.leaderboard.title}", "", markdown_table(report.leaderboard), "",
              "## Parse failures", "", markdown_table(report.failures), ""]
    lines += [f"- {n}" for n in report.notes] + ([""] if report.notes else [])
    lines += ["## Tasks", ""]
    for task in dict.fromkeys(s.task for s in report.sections):
        lines += [f"### {task}", ""]
        for section in (s for s in report.sections if s.task == task):
            if section.plot is not None:
                lines += [f"![{section.plot.caption}]({figure_dir}/{section.plot.name})", ""]
            for t in section.transcripts:
                body = _transcript_body(t)
                fence = _fence(body)
                error = f"; error: {t.error}" if t.error else ""
                lines += [f"**{t.label}** ({section.run}) `{t.sample_id}`: truth {t.truth}, "
                          f"answer {t.answer}{error}", "", fence, body, fence, ""]
    return "\n".join(lines)


def write_report(report: Report, output: Path) -> tuple[Path, Path]:
    """report.html (self-contained) and report.md with its PNGs in figures/."""
    figures = output / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    for section in report.sections:
        if section.plot is not None:
            (figures / section.plot.name).write_bytes(section.plot.png)
    html_path, md_path = output / "report.html", output / "report.md"
    html_path.write_text(render_html(report), encoding="utf-8")
    md_path.write_text(render_markdown(report, figures.name), encoding="utf-8")
    return html_path, md_path


# ------------------------------------------------------------------------ command




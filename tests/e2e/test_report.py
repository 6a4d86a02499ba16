"""`qbench report` and `qbench compare` on run folders the runner writes in the test."""
import base64
import io
import json
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qbench import DataError, Model, Sample, Task, TaskData, register_model, register_task
from qbench.cli.main import main
from qbench.core.model import predictions_from_texts
from qbench.core.protocol import CLASSES, LEVELS
from qbench.results.compare import compare_runs
from qbench.results.folder import RunView, records_digest, sealed
from qbench.results.published import PublishedFigure
from qbench.results.report import build_report, render_html, render_markdown
from qbench.run.runner import RunConfig, run

N = 60


@register_task
class ReportScoreTask(Task):
    """DMOS-like ground truth (lower is better), as CSIQ: the report must orient it."""
    name, kind, lower_better, in_all = "report-score", "score", True, False

    def locate(self, data_root, override=None):
        return Path(".")

    def load(self, folder, split):
        rng = np.random.default_rng(0)
        return TaskData([Sample(id=f"s{i:02d}", task=self.name, kind="score", images=(),
                                mos=float(rng.uniform(0, 1))) for i in range(N)])


@register_task
class ReportDegradationTask(Task):
    name, kind, in_all = "report-degradation", "degradation", False

    def locate(self, data_root, override=None):
        return Path(".")

    def load(self, folder, split):
        samples = []
        for i in range(N):
            cls = CLASSES[i % len(CLASSES)]
            samples.append(Sample(id=f"d{i:02d}", task=self.name, kind="degradation", images=(),
                                  distortion_class=cls,
                                  severity="null" if cls == "null" else LEVELS[i % len(LEVELS)]))
        return TaskData(samples)


@dataclass(frozen=True)
class ScriptedOptions:
    noise: float = 0.3


@register_model("report-scripted")
class ScriptedModel(Model):
    """Answers in the Q-Insight format from the ground truth plus noise (`noise` option);
    every tenth answer is unreadable."""

    name = "report-scripted"
    kinds = frozenset({"score", "degradation"})
    needs_images = False
    Options = ScriptedOptions

    def predict(self, samples, images):
        noise = self.options.noise
        texts = []
        for s in samples:
            index = int(s.id[1:])
            rng = np.random.default_rng([index, int(noise * 1000)])
            if index % 10 == 7:
                texts.append("<think>I cannot tell.</think><answer>maybe good</answer>")
            elif s.kind == "score":
                rating = float(np.clip(5 - 4 * s.mos + rng.normal(0, 4 * noise), 1, 5))
                texts.append(f"<think>Edges look {'crisp' if rating > 3 else 'soft'} & "
                             f"<clean>.</think><answer>{{\"rating\": {rating:.2f}}}</answer>")
            else:
                cls = s.distortion_class if rng.random() > noise else "noise"
                level = s.severity if rng.random() > noise else "slight"
                texts.append(f"<think>Looking for {cls}.</think><answer>{{\"distortion_class\": "
                             f"\"{cls}\", \"severity\": \"{level}\"}}</answer>")
        return predictions_from_texts(samples, texts, 0.0)


def scripted_run(tmp_path: Path, noise: float) -> Path:
    config = RunConfig(model="report-scripted", tasks=["report-score", "report-degradation"],
                       model_options={"noise": noise}, output_dir=tmp_path / "results",
                       progress=False)
    return run(config).run_dir


@pytest.fixture
def good_run(tmp_path):
    return scripted_run(tmp_path, 0.1)


class ImageCollector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.links = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        for name in ("href", "src"):
            if name in attrs and tag != "img":
                self.links.append(attrs[name])


@pytest.mark.slow
def test_report_html_is_self_contained_with_valid_embedded_pngs(good_run, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", str(good_run), "--output", str(out), "--resamples", "200"]) == 0
    page = (out / "report.html").read_text()
    collector = ImageCollector()
    collector.feed(page)
    assert len(collector.images) == 2                    # one scatter, one confusion matrix
    for src in collector.images:
        assert src.startswith("data:image/png;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        image.verify()
        assert image.format == "PNG" and image.size[0] > 200
    assert collector.links == []                         # nothing fetched from elsewhere
    # the paper tables (Table 1 with published rows, Table 2 for the degradation task), the
    # measured results, the parse failures
    assert page.count("<table>") == page.count("</table>") == 4
    assert page.index("PLCC (raw) / SRCC per dataset") < page.index("Measured results")
    # the markdown twin points at PNG files that exist
    markdown = (out / "report.md").read_text()
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert len(pictures) == 2 and all((out / p).is_file() for p in pictures)


@pytest.mark.slow
def test_report_leaderboard_has_intervals_failures_and_transcripts(good_run, tmp_path):
    out = tmp_path / "report"
    assert main(["report", str(good_run), "--output", str(out), "--resamples", "200"]) == 0
    markdown = (out / "report.md").read_text()
    metrics = json.loads((good_run / "metrics.json").read_text())
    srcc = metrics["report-score"]["srcc"]
    assert srcc > 0.8                                    # the DMOS ground truth was oriented
    assert re.search(rf"{srcc:.4f} \[0\.\d+,\s0\.\d+\]", markdown)   # value with its interval
    assert re.search(rf"{metrics['report-degradation']['class_acc_mean']:.4f} \[", markdown)
    failures = next(line for line in markdown.splitlines() if line.startswith("| report-scripted")
                    and "report-score" in line and "%" in line)
    assert "10.00%" in failures                          # every tenth answer was unreadable
    for label in ("**best**", "**worst**", "**failed parse**"):
        assert markdown.count(label) == 2                # per task
    assert "maybe good" in markdown and "rating" in markdown
    page = (out / "report.html").read_text()
    assert "&lt;clean&gt;" in page and "<clean>" not in page   # model text is escaped


def test_an_edited_metrics_entry_is_left_out_of_the_report_with_a_note(good_run):
    """An edited metrics.json: the figure is not what the predictions give, so the report does
    not show it; it says which folder, task and why, and shows the other tasks."""
    path = good_run / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["report-score"]["srcc"] += 1e-3
    path.write_text(json.dumps(metrics))
    view = RunView.load(good_run)
    report = build_report([view], resamples=100)
    (note,) = [n for n in report.notes if "report-score" in n]
    assert note == (f"left out {good_run}: metrics.json report-score: changed after qbench "
                    "wrote it (its digest does not match its content)")
    assert {r[2] for r in report.leaderboard.rows} == {"report-degradation"}


@pytest.mark.slow
def test_report_opens_with_the_paper_table_runs_beside_published_figures(good_run):
    figures = [PublishedFigure("Paper-Model", "report-score", metric, value, "koniq", convention,
                               "Some paper, Table 9")
               for metric, value, convention in (("plcc", 0.8766, "logistic"), ("srcc", 0.8123, ""))]
    run = RunView.load(good_run)
    metrics = run.metrics["report-score"]
    for plcc, mark in (("logistic", ""), ("raw", "‡")):   # a logistic figure under a raw heading
        report = build_report([run], published=figures, plcc=plcc, resamples=200)
        table = report.paper[0]
        column = table.columns.index("report-score PLCC")
        mine = next(r for r in table.rows if r[0] == "report-scripted")
        theirs = next(r for r in table.rows if r[0] == "Paper-Model")
        measured = metrics["plcc_logistic" if plcc == "logistic" else "plcc"]
        assert mine[column] == f"{measured:.3f}" and mine[1] == "measured"
        assert theirs[column] == f"0.877{mark}" and theirs[1].startswith("published")
        assert theirs[column + 1] == "0.812"
    markdown = render_markdown(report, "figures")
    assert markdown.startswith("# qbench report")
    assert "**PLCC (raw) / SRCC per dataset**" in markdown
    assert markdown.index("Paper-Model") < markdown.index("## Measured results")
    assert 'class="published"' in render_html(report)


@pytest.mark.slow
def test_compare_finds_the_better_run_and_not_itself(tmp_path):
    good = scripted_run(tmp_path / "a", 0.1)
    poor = scripted_run(tmp_path / "b", 0.6)
    results = {(c.task, c.difference.metric): c for c in compare_runs(RunView.load(good), RunView.load(poor),
                                                           resamples=400)}
    assert results[("report-score", "srcc")].difference.verdict == "A better"
    assert results[("report-degradation", "class_acc_mean")].difference.verdict == "A better"
    # both runs fail on the same samples: those are left out of the score pairing, and said so
    assert results[("report-score", "srcc")].dropped == {"no score from A": 6}
    same = compare_runs(RunView.load(good), RunView.load(good), resamples=200)
    assert all(c.difference.result.difference == 0
               and c.difference.verdict == "no significant difference"
               for c in same)


@pytest.mark.slow
def test_compare_command_prints_table_and_writes_csv(tmp_path, capsys):
    good = scripted_run(tmp_path / "a", 0.1)
    poor = scripted_run(tmp_path / "b", 0.6)
    csv = tmp_path / "cmp.csv"
    assert main(["compare", str(good), str(poor), "--resamples", "200", "--csv", str(csv)]) == 0
    printed = capsys.readouterr().out
    assert "A better" in printed and "report-degradation" in printed
    assert csv.read_text().splitlines()[0].startswith("task,metric,n,A,B,A-B")


@pytest.mark.slow
def test_bad_run_folders_are_one_line_errors(tmp_path, good_run, capsys):
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "run folder not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["compare", str(tmp_path / "empty"), str(good_run)]) == 2
    assert "not a run folder (no manifest.json)" in capsys.readouterr().err

    assert main(["compare", str(good_run), str(good_run), "--tasks", "koniq"]) == 2
    assert "task(s) koniq not in both runs" in capsys.readouterr().err

    lines = (good_run / "predictions.jsonl").read_text().splitlines(keepends=True)
    (good_run / "predictions.jsonl").write_text("".join(lines[:3] + ["{not json\n"] + lines[3:]))
    assert main(["report", str(good_run)]) == 0   # the same rule as every reader: counted, skipped
    err = " ".join(capsys.readouterr().err.split())
    assert "1 line(s) that are not prediction records skipped (first: line 4); every other " \
           "record kept" in err and "Traceback" not in err


def test_torn_last_line_is_skipped_and_reported_not_truncated(good_run, tmp_path):
    path = good_run / "predictions.jsonl"
    path.write_text(path.read_text() + '{"task": "report-score", "sample_id": "s9')
    size = path.stat().st_size
    record = RunView.load(good_run)
    assert record.notes and f"line {len(path.read_text().splitlines())}" in record.notes[0]
    assert path.stat().st_size == size                   # read-only
    assert len(record.rows.of("report-score")) == N


def test_runs_on_different_data_cannot_be_compared(tmp_path, good_run):
    other = tmp_path / "other"
    other.mkdir()
    for name in ("manifest.json", "metrics.json"):
        (other / name).write_text((good_run / name).read_text())
    rows = [json.loads(line) for line in (good_run / "predictions.jsonl").read_text().splitlines()]
    for row in rows:
        if row["task"] == "report-score":
            row["truth"]["mos"] = 1 - row["truth"]["mos"]
    (other / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # edited predictions: not what the figures were computed from, so not shown as measured
    with pytest.raises(DataError, match=r"report-score not in both runs \(shared: "
                                        r"report-degradation; left out .*other: metrics.json "
                                        r"report-score: its figures were not computed from the "
                                        r"predictions"):
        compare_runs(RunView.load(good_run), RunView.load(other), ["report-score"])
    # a run of other data, folder consistent (as a run on a relabelled copy would write it)
    metrics = json.loads((other / "metrics.json").read_text())
    metrics["report-score"]["records_sha256"] = records_digest(
        r for r in rows if r["task"] == "report-score")
    (other / "metrics.json").write_text(json.dumps({k: sealed(v) for k, v in metrics.items()}))
    with pytest.raises(DataError, match="disagree on the ground truth"):
        compare_runs(RunView.load(good_run), RunView.load(other), ["report-score"])

"""`featx report`: one self-contained HTML file (checked structurally, and rendered in headless Chromium); one ranking
rule and one recommended model everywhere; output that fits a terminal; no CLI traps (abbreviations, --cache)."""

from __future__ import annotations

import base64
import io
import re
import shlex
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import cli

ROOT = Path(__file__).resolve().parent.parent
VOID = {"meta", "img", "br", "hr", "link", "input", "source", "wbr", "col", "area", "base", "embed", "param", "track"}


class _Checker(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.problems, self.images, self.tags = [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if value and re.match(r"\s*(https?:)?//", value):
                self.problems.append(f"<{tag} {name}={value[:60]}> points to the network")
        if tag == "img":
            self.images.append(dict(attrs).get("src", ""))
        if tag not in VOID:
            self.stack.append((tag, self.getpos()))

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1][0] != tag:
            self.problems.append(f"</{tag}> at {self.getpos()} closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()


def check_self_contained(text: str) -> list[str]:
    """Balanced tags, every image an inline PNG that decodes, no script, no external resource; returns the srcs."""
    checker = _Checker()
    checker.feed(text)
    checker.close()
    assert not checker.problems, checker.problems
    assert not checker.stack, f"unclosed tags: {checker.stack}"
    assert text.startswith("<!DOCTYPE html>") and {"html", "head", "body", "title", "style"} <= set(checker.tags)
    assert not {"script", "link", "iframe", "object"} & set(checker.tags)
    style = re.search(r"<style>(.*?)</style>", text, re.S).group(1)
    assert "url(" not in style and "@import" not in style
    for src in checker.images:
        assert src.startswith("data:image/png;base64,"), src[:60]
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert image.format == "PNG" and min(image.size) > 50
    return checker.images


def test_rendered_page_is_self_contained_and_escaped(tmp_path):
    from featx.cache.store import Cache
    from featx.figures.plots import plot_confusion
    from featx.report import Page, render

    matrix = pd.DataFrame([[5, 1], [2, 7]], index=["a<b", "c"], columns=["a<b", "c"])
    png = plot_confusion(matrix, tmp_path / "confusion.png", "a <b>title</b>")
    page = Page(
        "report <script>alert(1)</script>",
        Cache(tmp_path / "cache"),
        figures=[("Figures & more", "caption <i>", png)],
        tables=[("a table", matrix.reset_index())],
        commands=["featx compare --layer-sets 'a b' <x>"],
    )
    text = render(page)
    images = check_self_contained(text)
    assert len(images) == 1
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "featx compare --layer-sets &#x27;a b&#x27; &lt;x&gt;" in text  # the command, verbatim once unescaped
    assert "recommended: none" in text  # an empty log recommends nothing, and says so


def test_fit_command_gives_back_the_logged_fit():
    from featx.cli import build_parser
    from featx.cli.options import classifier_params as _classifier_params
    from featx.cli.options import transforms as _transforms
    from featx.runs.record import fit_command
    from featx.selection.spec import FitSpec

    spec = FitSpec(
        classifier="rf",
        params={"min_samples_leaf": 2, "max_features": "sqrt", "n_estimators": 50},
        transforms={"standardize": True, "discretize": "fne", "fne_low": -0.5, "pca": 20},
        seed=3,
    )
    row = {
        "cache_entry": "efficientnet_lite0-abc",
        "layers": "blocks,top_activation",
        "classifier": spec.classifier,
        "params": spec.params_json(),
        "transforms": spec.transforms_label(),
        "views": "id",
        "tta": 0,
        "seed": 3,
    }
    words = shlex.split(fit_command(row))
    assert words[:3] == ["featx", "fit", "efficientnet_lite0-abc"]
    args = build_parser().parse_args(words[1:])
    again = FitSpec(classifier=args.clf, params=_classifier_params(args), transforms=_transforms(args), seed=args.seed)
    assert again.describe() == spec.describe() and args.layers == row["layers"]


def test_short_run_ids_find_their_run(tmp_path):
    from featx.runs.store import COLUMNS, append_run, find_run

    for run_id in ("20261202-090000-abc123", "20261202-090001-def456"):
        append_run(tmp_path, {c: None for c in COLUMNS} | {"run_id": run_id, "model_path": "", "model_sha256": ""})
    assert find_run("def456", tmp_path)["run_id"] == "20261202-090001-def456"
    assert find_run("20261202-090000", tmp_path)["run_id"] == "20261202-090000-abc123"


def test_rank_groups_protocols_marks_baselines_and_recommends_from_the_cv_group():
    from featx.runs.ranking import format_ranked, rank, recommendation_line, recommended

    rows = pd.DataFrame(
        {
            "run_id": [f"2026-{n:06d}" for n in range(5)],
            "classifier": ["rf", "logreg", "majority", "svm", "logreg"],
            "layers": ["a", "b", "a", "c", "d"],
            "params": "{}",
            "transforms": "none",
            "n_features": 10,
            "cv": [None, "cv3x1", "cv3x1", None, "cv3x1"],
            "cv_balanced_accuracy_mean": [np.nan, 0.6, 0.25, np.nan, 0.7],
            "cv_balanced_accuracy_ci95": [np.nan, 0.1, 0.0, np.nan, 0.05],
            "val_balanced_accuracy": [0.9, 0.5, 0.25, 0.8, 0.6],
            "val_accuracy": 0.5,
            "test_balanced_accuracy": [0.1, 0.2, 0.25, 0.3, 0.55],
            "fit_seconds": 1.0,
            "backbone": "b",
            "cache_key": "k",
            "cache_entry": "e",
        }
    )
    ranked = rank(rows, "balanced_accuracy")
    # the val-only rf scores 0.9, higher than any CV mean, yet is not ranked above them: another protocol
    assert ranked.table["run_id"].tolist() == [
        "2026-000004",
        "2026-000001",
        "2026-000002",
        "2026-000000",
        "2026-000003",
    ]
    assert ranked.table["baseline"].tolist() == [False, False, True, False, False]
    assert recommended(ranked)["run_id"] == "2026-000004"
    line = recommendation_line(ranked)
    assert line.startswith("recommended: logreg on d (run 000004)") and "0.700 ± 0.050" in line and "test 0.550" in line
    text = format_ranked(ranked)
    assert "majority (baseline)" in text and "not comparable" in text and max(map(len, text.splitlines())) <= 120


def _usage_error(*args) -> tuple[int, str]:
    """(exit code, stderr) of a command line argparse refuses (it exits)."""
    import contextlib

    import featx.cli

    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exited:
        featx.cli.main([str(a) for a in args])
    return exited.value.code, err.getvalue()


def test_no_abbreviated_flags_and_a_cache_folder_hint(tmp_path):
    rc, err = _usage_error("ls", "--cache-d", tmp_path)  # argparse used to expand this to --cache-dir
    assert rc == 2 and "unrecognized arguments: --cache-d" in err
    rc, err = _usage_error("extract", "--cache", tmp_path)  # used to mean --cache-dir silently
    assert rc == 2 and f"has no --cache option: pass a cache folder as --cache-dir {tmp_path}" in err
    (tmp_path / "runs").mkdir()  # a cache folder (its runs log lives there)
    rc, out, err = cli("fit", "--cache", tmp_path, "--cache-dir", tmp_path / "other")
    assert rc == 2 and err == (
        f"error: '{tmp_path}' is a cache folder, not a cache entry: pass it as --cache-dir "
        f"{tmp_path} (and name an entry from `featx ls --cache-dir {tmp_path}`, or none for "
        "the most recent)\n"
    )


def test_progress_writes_no_bar_into_a_log(tmp_path, capsys, monkeypatch):
    from featx.progress import LineProgress, progress_bar
    from featx.sources.fingerprint import fingerprint_files

    paths = []
    for n in range(40):
        (tmp_path / f"{n}.txt").write_text(str(n))
        paths.append(str(tmp_path / f"{n}.txt"))
    assert len(fingerprint_files(paths, progress=True)) == 40
    assert capsys.readouterr().err == ""  # not a terminal, done in under LOG_INTERVAL_S: not a byte (no stale 0% bar)
    log = io.StringIO()
    bar = progress_bar(total=4, desc="extract x", unit="img", stream=log)
    assert isinstance(bar, LineProgress)
    bar.interval = 0.0
    for _ in range(4):
        bar.update(1)
    lines = log.getvalue().splitlines()
    assert len(lines) == 4 and lines[-1].startswith("extract x: 4/4 img (100%), ") and "\r" not in log.getvalue()
    bar.close()
    assert len(log.getvalue().splitlines()) == 4  # the 100% line is out already: no repeat
    log = io.StringIO()
    bar = progress_bar(total=4, desc="extract y", unit="img", stream=log)
    bar.interval = 0.0
    bar.update(1)  # a line at 1/4, then no more lines until the end
    bar.interval = 3600.0
    bar.update(3)
    bar.close()  # finished work that printed a line ends with its final state
    assert [line.split(",")[0] for line in log.getvalue().splitlines()] == [
        "extract y: 1/4 img (25%)",
        "extract y: 4/4 img (100%)",
    ]
    for value, interval in (("2.5", 2.5), ("0", 10.0), ("soon", 10.0)):  # $FEATX_PROGRESS_INTERVAL, if usable
        monkeypatch.setenv("FEATX_PROGRESS_INTERVAL", value)
        assert progress_bar(total=1, desc="z", unit="img", stream=io.StringIO()).interval == interval


# --- on a real cache: compare, tune and a dense fit, then their report


@pytest.fixture(scope="module")
def experiments(elpv_cache, tmp_path_factory):
    runs_dir = tmp_path_factory.mktemp("report_runs")
    where = ["--cache-dir", elpv_cache, "--runs-dir", runs_dir]
    rc, out, err = cli(
        "compare",
        "--layer-sets",
        "top_activation",
        "block6d_add",
        "--clf",
        "logreg",
        "--standardize",
        "--cv",
        "3",
        *where,
    )
    assert rc == 0, err
    rc, dense, err = cli(
        "fit", "--clf", "dense", "--hidden", "16", "--epochs", "3", "--layers", "top_activation", *where
    )
    assert rc == 0, err
    rc, tuned, err = cli("tune", "--clf", "logreg", "--layers", "top_activation", "--standardize", *where)
    assert rc == 0, err
    reports = runs_dir / "reports"
    [compare_folder] = reports.glob("compare-*")
    [tune_folder] = reports.glob("tune-*")
    dense_id = re.search(r"run (\S+): dense", dense).group(1)
    return where, compare_folder, tune_folder, dense_id, out


def test_report_of_compare_tune_and_runs(experiments, tmp_path):
    from featx.runs.reports import read_compare_report as read_report

    where, compare_folder, tune_folder, dense_id, compare_out = experiments
    rc, out, err = cli("report", *where)  # no source: the most recent report, the tune
    assert rc == 0 and out.strip() == str(tune_folder / "report.html"), err
    assert "Tune search curve" in (tune_folder / "report.html").read_text()

    target = tmp_path / "all.html"
    rc, out, err = cli("report", compare_folder.name, tune_folder, dense_id[-6:], "-o", target, *where)
    assert rc == 0 and out.strip() == str(target), err
    text = target.read_text()
    images = check_self_contained(text)
    # layer comparison, tune curve, confusion val + test of the recommended model, the dense head's learning curves
    assert len(images) >= 5
    for heading in (
        "Layer comparison",
        "Tune search curve",
        "Confusion matrices of the recommended model",
        "Learning curves (dense heads)",
        "Reproduce",
    ):
        assert f"<h2>{heading}</h2>" in text
    compared = read_report(compare_folder)
    assert (
        compared.command
        == "featx compare --layer-sets top_activation block6d_add --clf logreg --standardize --cv 3 "
        + " ".join(map(str, where))
    )
    assert compared.command in text.replace("&#x27;", "'")
    assert text.count('<span class="tag">baseline</span>') == 2 and text.count('class="baseline"') == 2
    assert "data</b>: built-in elpv" in text and text.count("data</b>:") == 1  # data and backbone said once
    # the recommended model is compare's best non-baseline row (ranked by CV, the most reliable protocol here)
    best = compared.table[~compared.table["classifier"].isin(["majority", "stratified"])].iloc[0]
    assert f"(run {best['run_id'][-6:]})" in re.search(r"recommended: [^<]*", text).group(0)
    assert "ranked by balanced_accuracy within each protocol" in text  # CV rows and the val-only runs: apart


def test_report_renders_in_headless_chromium(experiments, tmp_path):
    # never skipped: without Chromium this fails in one line (.ci/run installs the Debian package)
    assert shutil.which("chromium"), "Chromium is not installed: apt-get install chromium (as .ci/run does)"
    where, compare_folder, *_ = experiments
    page = tmp_path / "page.html"
    assert cli("report", compare_folder, "-o", page, *where)[0] == 0
    shot = tmp_path / "shot.png"
    command = [
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        f"--screenshot={shot}",
        "--window-size=1200,2000",
        "--enable-logging=stderr",
        "--v=0",
        page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    console = [
        line for line in done.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line or "net::ERR" in line
    ]
    assert not console, console
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (2000, 1200) and pixels.std() > 20  # text, tables and figures, not a blank page
    assert (pixels < 128).mean() > 0.01  # dark ink somewhere: the page rendered content
    dom = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dom.returncode == 0 and "Layer comparison" in dom.stdout and dom.stdout.count("<img") >= 3


@pytest.mark.slow
def test_quickstart_names_one_best_model_fits_the_terminal_and_ends_with_its_report(tmp_path):
    from featx.experiments.pipelines import run_pipeline
    from featx.report import pipeline_page
    from featx.runs.ranking import recommended
    from featx.runs.reports import read_compare_report as read_report

    text = (ROOT / "pipelines" / "quickstart.toml").read_text()
    assert "limit = 1000" in text
    small = tmp_path / "quickstart.toml"
    small.write_text(text.replace("limit = 1000", "limit = 120\ninput_size = 96"))
    lines = []
    result = run_pipeline(
        small, cache=tmp_path / "cache", log=lambda *a: lines.extend(" ".join(map(str, a)).splitlines())
    )
    report = pipeline_page(result.folder, cache=tmp_path / "cache")  # the page `featx run` writes after the verb
    lines.append(f"report: {report}")
    too_wide = [line for line in lines if len(line) > 120 and "/" not in line]  # a path is as long as it is
    assert not too_wide, too_wide
    assert sum(line.startswith("ranking by ") for line in lines) == 1  # the metric, chosen and said once
    best = recommended(result.ranking)
    [compare_folder] = (tmp_path / "cache" / "reports").glob("compare-*")
    compared = read_report(compare_folder)
    rows = compared.table[~compared.table["classifier"].isin(["majority", "stratified"])]
    assert best["run_id"] == rows["run_id"].iloc[0]  # compare's best row is the pipeline's recommendation
    assert compared.best_line.startswith(f"best: {best['classifier']} on {best['layers']} ")
    assert lines[-3].startswith("recommended: ") and f"(run {best['run_id'][-6:]})" in lines[-3]
    assert lines[-1] == f"report: {report}" and report.name == "report.html"
    html = report.read_text()
    check_self_contained(html)
    assert f"(run {best['run_id'][-6:]})" in re.search(r"recommended: [^<]*", html).group(0)
    assert f"featx run {small} --cache-dir {tmp_path / 'cache'}" in html
    # the same ranking in `featx runs`, and the pipeline's report folder renders again from its own record
    rc, out, err = cli("runs", "--cache-dir", tmp_path / "cache")
    assert rc == 0 and max(map(len, out.splitlines())) <= 120 and out.count("ranking by ") == 1, err
    assert best["run_id"][-6:] in out.split("scored by 3-fold CV mean")[1].splitlines()[2]  # first row of the CV block
    rc, out, err = cli("report", report.parent.name, "--cache-dir", tmp_path / "cache")
    assert rc == 0 and out.strip() == str(report), err
    again = report.read_text()
    assert re.search(r"recommended: [^<]*", again).group(0) == re.search(r"recommended: [^<]*", html).group(0)
    assert "<h2>Layer comparison</h2>" in again and "<h2>t-SNE</h2>" in again


def test_runs_table_says_data_once_ranks_per_protocol_and_fits_120_columns(tmp_path):
    from featx.runs.store import COLUMNS, SELECTION_COLUMNS, append_run

    long_layers = ",".join(f"block{n}a_project_bn" for n in range(1, 8))
    rows = [
        ("090000-aaaaaa", "logreg", long_layers, "cv3x1", 0.7, 0.6),
        ("090001-bbbbbb", "majority", long_layers, "cv3x1", 0.5, 0.5),
        ("090002-cccccc", "rf", "top_activation", None, np.nan, 0.95),
        ("090003-dddddd", "svm", "top_activation", "cv3x1", 0.8, 0.4),
    ]
    for run_id, clf, layers, cv, cv_mean, val in rows:
        append_run(
            tmp_path,
            {c: None for c in (*COLUMNS, *SELECTION_COLUMNS)}
            | {
                "run_id": f"20261202-{run_id}",
                "classifier": clf,
                "layers": layers,
                "layer_names": layers,
                "params": '{"C": 0.001, "class_weight": "balanced", "max_iter": 10000}',
                "transforms": "standardize",
                "n_features": 1808,
                "cache_key": "k" * 64,
                "cache_entry": "efficientnet_lite0-kkkk",
                "backbone": "efficientnet_lite0",
                "val_accuracy": val,
                "val_f1_macro": val,
                "cv": cv,
                "cv_accuracy_mean": cv_mean,
                "cv_accuracy_ci95": 0.05,
                "fit_seconds": 1.25,
                "model_path": "",
                "model_sha256": "",
                "views": "id",
                "tta": 0,
            },
        )
    rc, out, err = cli("runs", "--cache-dir", tmp_path)
    assert rc == 0, err
    lines = out.splitlines()
    assert max(map(len, lines)) <= 120 and out.count("data: ") == 1 and "backbone: efficientnet_lite0" in out
    cv_block = out[out.index("scored by 3-fold CV mean (3 run(s))") : out.index("scored by one val split (1 run(s))")]
    # within CV: svm 0.8, logreg 0.7, then the baseline; the val-only rf (0.95) is not ranked among them
    assert [cv_block.index(s) for s in ("dddddd", "aaaaaa", "bbbbbb")] == sorted(
        cv_block.index(s) for s in ("dddddd", "aaaaaa", "bbbbbb")
    )
    assert "majority (baseline)" in cv_block and "0.800 ± 0.050" in cv_block and "20261202-" not in out
    assert "not comparable" in lines[-1]
    rc, wide, _ = cli("runs", "--cache-dir", tmp_path, "--wide")
    assert "20261202-090003-dddddd" in wide and long_layers in wide
    rc, last, _ = cli("runs", "--cache-dir", tmp_path, "--last", "1")
    assert "dddddd" in last and "aaaaaa" not in last
    assert "no runs match" in cli("runs", "--cache-dir", tmp_path, "--data", "flowers")[1]
    assert (
        "ranking by balanced_accuracy (--metric)"
        in cli("runs", "--cache-dir", tmp_path, "--metric", "balanced_accuracy")[1]
    )

"""Pipelines (`featx run FILE`): a pipeline run again reuses the fits already logged (no duplicates), --refit fits
them again; `featx run FILE --data SRC --cache-dir DIR` runs one recipe on another data source than the file names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import featx
from featx.cache.store import Cache
from featx.cli import main
from featx.errors import FeatxError
from featx.experiments.pipelines import read_pipeline, run_pipeline
from featx.report import pipeline_page
from featx.runs.store import read_log

from helpers import cli

PIPELINE = """
data = "elpv"
backbone = "mobilenet_v2"
weights = "none"
layers = ["blocks", "final"]
[extract]
limit = 48
input_size = 96
[[steps]]
kind = "fit"
clf = "logreg"
layers = "final"
standardize = true
[[steps]]
kind = "compare"
layer_sets = ["final", "blocks"]
classifiers = ["rf", "knn"]
params = { n_estimators = 10 }
[[steps]]
kind = "tsne"
layers = "final"
max_points = 40
"""


@pytest.mark.slow
def test_warm_pipeline_reuses_logged_fits_and_refit_fits_again(tmp_path, capsys):
    (tmp_path / "p.toml").write_text(PIPELINE)
    command = ["run", str(tmp_path / "p.toml"), "--cache-dir", str(tmp_path / "cache")]
    assert main(command) == 0
    first = read_log(tmp_path / "cache")
    assert len(first) == 5 + 2  # the compare step's baseline rows too
    capsys.readouterr()

    assert main(command) == 0
    out = capsys.readouterr().out
    assert len(read_log(tmp_path / "cache")) == 5 + 2  # nothing appended
    assert "reused 1 logged run(s)" in out and "reused 6 logged run(s)" in out
    assert "-final-max40.png (`featx run --refit` draws it again)" in out
    assert all(run_id[-6:] in out for run_id in first["run_id"])  # the summary table lists the reused runs (short ids)

    (tmp_path / "p.toml").write_text(PIPELINE.replace("n_estimators = 10", "n_estimators = 11"))
    assert main(command) == 0
    out = capsys.readouterr().out
    # the fit step is reused; the compare step has one changed fit, so it runs whole (4 + 2 baseline rows)
    assert len(read_log(tmp_path / "cache")) == 13 and "reused 1 logged run(s)" in out and "reused 6" not in out

    assert main([*command, "--refit"]) == 0
    assert len(read_log(tmp_path / "cache")) == 13 + 1 + 6


RECIPE = """
name = "tiny"
data = "elpv"
backbone = "efficientnet_lite0"
weights = "none"
layers = "top_activation"
[extract]
input_size = 64
[[steps]]
kind = "fit"
clf = "logreg"
"""


@pytest.mark.slow  # extracts the ELPV folder through EfficientNet-Lite0
def test_run_on_another_data_source(tmp_path, elpv_folder):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(RECIPE)
    rc, out, err = cli("run", recipe, "--data", elpv_folder, "--cache-dir", tmp_path / "cache")
    assert rc == 0, err
    (entry,) = featx.Cache(tmp_path / "cache").entries()  # the file's elpv (2,624 images) was never touched
    assert entry.attrs["root"] == str(elpv_folder) and len(entry.labels) == 18
    assert re.search(r"^=== tiny: 1 run\(s\), ranked by \w+$", out, re.M), out
    runs = featx.list_runs(tmp_path / "cache")
    assert list(runs["cache_entry"]) == [entry.name] and list(runs["classifier"]) == ["logreg"]


def test_a_recipe_without_data_needs_data(tmp_path):
    recipe = tmp_path / "nodata.toml"
    recipe.write_text(RECIPE.replace('data = "elpv"\n', ""))
    rc, _, err = cli("run", recipe, "--cache-dir", tmp_path / "cache")
    assert rc == 2 and err == f"error: pipeline '{recipe}' names no data; add data = \"...\" to it or pass --data\n", (
        err
    )


def test_pipeline_file_reuses_the_cache_and_rejects_unknown_keys(elpv_cache, tmp_path):
    entry = Cache(elpv_cache).open(None)
    head = f'data = "elpv"\nlayers = ["blocks", "top_activation"]\n[extract]\nlimit = {len(entry.labels)}\n'
    good = tmp_path / "small.toml"
    good.write_text(
        head + '[[steps]]\nkind = "fit"\nclf = "knn"\nlayers = "top_activation"\n'
        '[[steps]]\nkind = "compare"\nlayer_sets = ["block6d_add", "blocks"]\nclassifiers = ["logreg"]\n'
        'standardize = true\n[[steps]]\nkind = "tsne"\nlayers = "top_activation"\n'
    )
    lines = []
    result = run_pipeline(good, cache=elpv_cache, log=lines.append)
    report = pipeline_page(result.folder, cache=elpv_cache)  # the page `featx run` writes (the report is above it)
    lines.append(f"report: {report}")
    assert any("nothing to do" in line for line in lines)  # extraction was a cache hit
    assert result.entry.path == entry.path and len(result.table) == 5  # fit, 2 compare rows, 2 baselines
    assert (result.table["selected_by"] == "val").all()  # no CV: one protocol, ranked by its val score
    assert result.table["selection_score"].is_monotonic_decreasing
    assert result.table["selection_score"].tolist() == result.table[f"val_{result.ranking.metric}"].tolist()
    assert [p.suffix for p in result.plots] == [".png"] * len(result.plots) and all(p.is_file() for p in result.plots)
    assert "plots:" in lines[-3] and "tsne-" in lines[-3] and lines[-2].startswith("recommended: ")
    assert lines[-1] == f"report: {report}" and report.is_file()

    bad = tmp_path / "bad.toml"
    bad.write_text(head + '[[steps]]\nkind = "fit"\nclff = "rf"\n')
    with pytest.raises(FeatxError, match=r"unknown key 'clff' in step 1 \(fit\) of '.*bad.toml'"):
        run_pipeline(bad, cache=elpv_cache, log=lambda *a: None)
    bad.write_text('datta = "elpv"\n' + head)
    with pytest.raises(FeatxError, match="unknown key 'datta' in pipeline"):
        read_pipeline(bad)


@pytest.mark.slow
def test_elpv_best_recipe_runs_with_views_and_tta(tmp_path):
    """The shipped best recipe as it is, on a 120-image subset at 96 px: D4 views extracted, TTA fit logged."""
    text = (Path(__file__).parents[1] / "pipelines" / "elpv_best.toml").read_text()
    assert "[extract]\n" in text
    small = tmp_path / "elpv_best.toml"
    text = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("input_size ="))
    small.write_text(text.replace("[extract]\n", "[extract]\nlimit = 120\ninput_size = 96\n"))  # its own size out
    result = run_pipeline(small, cache=tmp_path / "cache", log=lambda *a: None)
    assert result.entry.views == ["id", "rot90", "rot180", "rot270", "hflip", "vflip", "transpose", "transverse"]
    [row] = result.table.to_dict("records")
    assert row["views"].startswith("id,rot90") and row["tta"] == 1 and 0 <= row["test_accuracy"] <= 1

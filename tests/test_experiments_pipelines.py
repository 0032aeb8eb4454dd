"""Pipelines (`featx run FILE`): a pipeline run again reuses the fits already logged (no duplicates), --refit fits
them again; `featx run FILE --data SRC --cache-dir DIR` runs one recipe on another data source than the file names."""

from __future__ import annotations

import re

import pytest

import featx
from featx.cli import main
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

"""A pipeline run again reuses the fits already logged (no duplicates); --refit fits them again."""

from __future__ import annotations

import pytest

from featx.cli import main
from featx.experiments.runs import read_log

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

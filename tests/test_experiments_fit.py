"""Smaller newcomer items: fit without --layers says what it uses; log=None is silent; metrics.json keeps
class order; results.csv holds no redundant columns."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

import featx
from featx.cli import main


@pytest.fixture(scope="module")
def small_cache(tiny_cache, tmp_path_factory):
    """A private copy (the tests log their runs into it)."""
    copy = tmp_path_factory.mktemp("fit") / "cache"
    shutil.copytree(tiny_cache("elpv", "final,block_15_add", limit=48), copy)
    return copy


@pytest.mark.slow
def test_fit_without_layers_says_it_uses_every_cached_layer(small_cache, capsys):
    assert main(["fit", "--clf", "knn", "--cache-dir", str(small_cache)]) == 0
    out = capsys.readouterr().out
    assert "no layers given: fitting on every cached layer" in out and "(2, 1440 features)" in out


@pytest.mark.slow
def test_log_none_prints_nothing_and_metrics_keep_class_order(small_cache, capsys):
    result = featx.fit(None, "final", featx.fit_spec("knn"), cache=small_cache, log=None)
    compared = featx.compare(None, ["final"], featx.compare_specs("knn,logreg"), cache=small_cache, log=None)
    assert capsys.readouterr().out == ""
    metrics = json.loads((result.folder / "metrics.json").read_text())
    classes = featx.Cache(small_cache).open().class_names
    assert list(metrics["val"]["report"])[: len(classes)] == classes  # label order, not alphabetical
    assert sorted(classes) != classes  # ELPV's label order is not alphabetical: sorting would show
    table = pd.read_csv(compared.csv)
    assert "model" not in table.columns and {"layers", "classifier", "params", "run_id"} <= set(table.columns)

"""featx.runs.ranking: runs are ordered by the selection score (CV, else val), never by test, on real ELPV
features (the session's elpv_cache)."""

from __future__ import annotations

import pytest

import featx
import featx.experiments.tune
from featx.cache.store import Cache
from featx.runs.listing import format_runs, runs_table

QUIET = {"log": lambda *a: None}


@pytest.mark.slow
def test_runs_are_ordered_by_the_selection_score_never_by_test(elpv_cache, tmp_path):
    where = {"cache": featx.Cache(elpv_cache, runs_dir=tmp_path), "log": lambda *a: None}
    with_cv = featx.fit(
        None,
        "top_activation",
        featx.fit_spec("logreg", class_weight="balanced", standardize=True),
        featx.Evaluation(cv=3),
        **where,
    )
    plain = [
        featx.fit(
            None,
            "top_activation",
            featx.fit_spec("rf", params={"min_samples_leaf": leaf, "n_estimators": 20}, standardize=True),
            **where,
        )
        for leaf in (1, 20)
    ]
    listed = runs_table(Cache(None, runs_dir=tmp_path), metric="balanced_accuracy")
    table = listed.table
    assert table["selection_score"].is_monotonic_decreasing
    by_id = table.set_index("run_id")
    assert by_id.loc[with_cv.run_id, "selected_by"] == "cv3x1"
    assert by_id.loc[with_cv.run_id, "selection_score"] == with_cv.row["cv_balanced_accuracy_mean"]
    assert json_params(by_id.loc[with_cv.run_id, "params"]) == {"class_weight": "balanced"}
    for run in plain:
        assert by_id.loc[run.run_id, "selected_by"] == "val"
        assert by_id.loc[run.run_id, "selection_score"] == run.row["val_balanced_accuracy"]
    assert "CV mean for the 1 run(s)" in listed.order and "never test" in listed.order
    assert format_runs(listed).splitlines()[-1] == listed.order
    assert "a test score" in runs_table(Cache(None, runs_dir=tmp_path), sort="test_accuracy").order


def json_params(text: str) -> dict:
    import json

    return json.loads(text)

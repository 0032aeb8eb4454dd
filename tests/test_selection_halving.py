"""Budgeted search (featx/selection/halving.py): successive halving with training epochs as the budget.

The schedule and the halving loop are tested with a scorer whose ranking is known (no TensorFlow); one slow test
runs `tune --search halving` on the dense head for real and checks its choice against the exact grid of the same
configurations at the full budget.
"""

from __future__ import annotations

import numpy as np
import pytest

from featx.errors import FeatxError
from featx.selection.halving import contenders, epochs_spent, halve_epochs, ladder, schedule
from featx.selection.spaces import BudgetSearch, budget_search

from helpers import assert_one_line_error, cli


def test_schedule_keeps_the_best_third_and_triples_the_epochs():
    search = BudgetSearch({"a": tuple(range(36))}, max_epochs=27, min_epochs=1)
    assert search.rungs(36) == [(36, 1), (12, 3), (4, 9), (2, 27)]
    # no rung below min_epochs: fewer rungs, each still keeps a third
    assert BudgetSearch({"a": (1,)}, max_epochs=27, min_epochs=5).rungs(36) == [(36, 9), (12, 27)]
    # few configurations: no rung that keeps everyone
    assert search.rungs(4) == [(4, 9), (2, 27)]
    assert search.rungs(2) == [(2, 27)] and search.rungs(1) == [(1, 27)]


def test_the_same_halving_spends_folds_cumulatively_as_compare_does():
    """Folds are a cumulative budget: every step of the ladder 1, 3, 9, ... K is a rung, the last ones keeping two."""
    assert ladder(1, 5, from_top=False) == [1, 3, 5] and ladder(1, 27, from_top=True) == [1, 3, 9, 27]
    assert schedule(10, ladder(1, 5, from_top=False), cumulative=True) == [(10, 1), (4, 3), (2, 5)]
    assert schedule(3, ladder(1, 10, from_top=False), cumulative=True) == [(3, 1), (2, 3), (2, 9), (2, 10)]
    assert schedule(2, [1], cumulative=True) == [(2, 1)]


def test_a_grid_cannot_list_the_budget_and_the_epochs_must_make_sense():
    with pytest.raises(FeatxError, match="epochs are its budget"):
        BudgetSearch({"epochs": (1, 2)})
    with pytest.raises(FeatxError, match="min_epochs <= max_epochs"):
        BudgetSearch({"a": (1,)}, max_epochs=3, min_epochs=9)


def _scorer(quality, calls):
    """evaluate(stage, points) as tune's runner: 2 splits per point; a configuration's score grows with its epochs
    towards its quality, so cheap rungs rank as the full budget does."""

    def evaluate(stage, points):
        calls.append([dict(p) for p in points])
        return [
            {"stage": stage, "split": s, "point": p, "accuracy": quality[p["a"]] * (1 - 1 / (1 + p["epochs"]))}
            for s in range(2)
            for p in points
        ]

    return evaluate


def test_halving_trains_only_the_contenders_for_the_full_budget_and_they_include_the_best():
    quality = dict(enumerate(np.random.default_rng(0).uniform(0.5, 1.0, 30)))
    search = BudgetSearch({"a": tuple(range(30))}, max_epochs=27, min_epochs=1)
    calls = []
    tried = halve_epochs(_scorer(quality, calls), search, "accuracy")
    assert [len(c) for c in calls] == [n for n, _ in search.rungs(30)] == [30, 10, 4, 2]
    assert [{p["epochs"] for p in c} for c in calls] == [{1}, {3}, {9}, {27}]
    full = contenders(tried)
    assert {r["point"]["a"] for r in full} == set(sorted(quality, key=quality.get)[-2:])  # the best two survive
    assert epochs_spent(tried) == 2 * (30 * 1 + 10 * 3 + 4 * 9 + 2 * 27)  # 2 splits per point
    assert epochs_spent(tried) < 2 * search.exact_epochs() / 4  # the exact grid: 30 x 27 epochs per split
    stopped = {r["point"]["a"] for r in tried if r["stopped_early"]}
    assert stopped == set(range(30)) - {r["point"]["a"] for r in full}
    assert not any(r["stopped_early"] for r in full)


def test_ties_go_to_grid_order():
    calls = []
    halve_epochs(
        _scorer(dict.fromkeys(range(9), 0.7), calls), BudgetSearch({"a": tuple(range(9))}, max_epochs=9), "accuracy"
    )
    assert [p["a"] for p in calls[-1]] == [0, 1]


def test_halving_needs_a_classifier_trained_by_epochs(tmp_path):
    with pytest.raises(FeatxError, match="--clf dense"):
        budget_search("logreg")
    rc, _, err = cli("tune", "--cache-dir", tmp_path, "--clf", "logreg", "--search", "halving")
    assert_one_line_error(rc, err, "needs a classifier trained by epochs")


@pytest.mark.slow
def test_tune_dense_by_halving_chooses_a_contender_close_to_the_exact_grid_best(digits):
    from featx.selection.search import search
    from featx.selection.spec import FitSpec

    X, y, split = digits
    keep = np.isin(split, ("val", "test")) | (np.arange(len(y)) % 2 == 0)  # half the train rows: cheaper
    X, y, split = X[keep], y[keep], split[keep]
    budget = BudgetSearch(
        {"lr": (0.0003, 0.003, 0.03)}, max_epochs=4, min_epochs=1, fixed={"optimizer": "adam", "hidden": ()}
    )
    quiet = {"log": lambda *a: None, "metric": "accuracy"}
    halving = search(X, y, split, FitSpec(classifier="dense"), space=budget, **quiet)
    curve = halving.curve
    assert list(curve["stage"]) == ["halving"] * 5 + ["default"] and list(curve["epochs"][:5]) == [1, 1, 1, 4, 4]
    assert halving.searched == ("epochs", "lr")
    best = curve[curve["best"]].iloc[0]
    assert best["epochs"] == 4 and not best["stopped_early"] and halving.best_params["epochs"] == 4
    full = curve[(curve["epochs"] == 4) & (curve["stage"] == "halving")]
    assert best["accuracy"] == full["accuracy"].max()
    assert curve.loc[curve["epochs"] == 1, "stopped_early"].sum() == 1
    exact = search(X, y, split, FitSpec(classifier="dense"), space=budget.exact(), **quiet)
    # halving's choice is a point of the exact grid, trained the same way: its score there is the same fit's
    grid = exact.curve[exact.curve["stage"] == "coarse"]
    mine = grid.loc[np.isclose(grid["lr"], best["lr"]), "accuracy"].iloc[0]
    assert mine == pytest.approx(best["accuracy"])  # the same seeded fit in this process: the same score
    n_val = int((split == "val").sum())
    assert grid["accuracy"].max() - mine <= 2 * np.sqrt(0.25 / n_val)  # within two binomial standard errors
    assert exact.test is not None and halving.test is not None

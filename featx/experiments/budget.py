"""Budgeted search: successive halving over a classifier's configurations, with training epochs as the budget.

`featx tune --clf dense --search halving` (API: `tune(..., search="halving")`): every configuration of the grid
(learning rate x weight decay x dropout x ..., for a tail also the cut) is trained for a few epochs and scored on
the selection splits (val, or every CV fold, never test); the best third (at least two) go on with three times
the epochs, and so on until the contenders are trained for the full budget, `max_epochs`, the epochs every point
gets in the exact search of the same grid. Only the contenders' scores at the full budget choose the model, as the
exact search would choose among all points, so the choice is a point of the exact grid. The vocabulary is
`featx compare --search halving`'s (there folds are the budget, here epochs): the best third, at least two,
`stopped_early` in the table.

Each rung trains from scratch (no weights carry over): a rung's score is the estimator's own fit with
epochs=r, a model anyone can refit from its parameters, and a rung costs r epochs per configuration. This is
successive halving (Jamieson & Talwalkar, 2016), one bracket of Hyperband (Li et al., 2017), and sklearn's
HalvingGridSearchCV with the epochs as its resource.

This module holds the schedule and the halving loop; featx.experiments.tune runs the fits (its _Runner) and
turns the rows into the search curve, the refit and the logged run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from featx.errors import FeatxError

HALVING_FACTOR = 3  # as compare's halving: each rung keeps the best third (at least two) and triples their budget
BUDGET_PARAM = "epochs"


@dataclass(frozen=True)
class BudgetSearch:
    """What `tune --search halving` tries for one classifier.

    grid : {param: values}; the configurations are their full product, in grid order.
    max_epochs : the contenders' epochs at the last rung, and every point's epochs in the exact search of `grid`.
    min_epochs : no rung trains for fewer epochs.
    factor : each rung keeps 1/factor of the configurations (at least two) and multiplies their epochs by factor.
    fixed : parameters set on every fit.
    """

    grid: dict
    max_epochs: int = 27
    min_epochs: int = 1
    factor: int = HALVING_FACTOR
    fixed: dict = field(default_factory=dict)

    def __post_init__(self):
        if BUDGET_PARAM in self.grid:
            raise FeatxError(
                f"a halving search's grid cannot list {BUDGET_PARAM}: the epochs are its budget; set max_epochs instead"
            )
        if not 1 <= self.min_epochs <= self.max_epochs or self.factor < 2:
            raise FeatxError(
                f"a halving search needs 1 <= min_epochs <= max_epochs and factor >= 2 (got min_epochs="
                f"{self.min_epochs}, max_epochs={self.max_epochs}, factor={self.factor})"
            )

    def configurations(self) -> list[dict]:
        """Every point of the grid, in grid order (the last parameter varies fastest)."""
        import itertools

        return [dict(zip(self.grid, values)) for values in itertools.product(*self.grid.values())]

    def exact(self):
        """The exact search of the same grid: every configuration, and the defaults, trained for max_epochs (a
        tune.Search)."""
        from featx.experiments.tune import Search

        return Search(
            {**self.grid, BUDGET_PARAM: (self.max_epochs,)}, fixed={**self.fixed, BUDGET_PARAM: self.max_epochs}
        )  # the defaults at the full budget too

    def exact_epochs(self) -> int:
        """Epochs the exact search of the same grid trains: every configuration for max_epochs."""
        return len(self.configurations()) * self.max_epochs


# dense: the existing tune grid (lr x l2 x hidden) with dropout added; the exact search of this grid at
# max_epochs is `tune(..., search=BUDGET_SEARCHES["dense"].exact())`.
BUDGET_SEARCHES = {
    "dense": BudgetSearch(
        {"lr": (0.001, 0.01, 0.1), "l2": (0.0, 1e-4, 1e-2), "dropout": (0.0, 0.3), "hidden": ((), (256,))},
        max_epochs=27,
        min_epochs=1,
    ),
    # tail: backbone learning rate x weight decay x dropout; one warm-up epoch so every rung trains the tail too. Given
    # no cut, tune adds the cuts the entries cache as one more axis (featx.experiments.tail.with_cut_axis).
    "tail": BudgetSearch(
        {"backbone_lr": (1e-4, 1e-3), "weight_decay": (1e-4, 1e-2), "dropout": (0.3, 0.5)},
        max_epochs=18,
        min_epochs=2,
        fixed={"warmup_epochs": 1},
    ),
}


def budget_search(clf: str) -> BudgetSearch:
    if clf not in BUDGET_SEARCHES:
        raise FeatxError(
            f"--search halving spends training epochs and needs a classifier trained by epochs; "
            f"use --clf {' or --clf '.join(BUDGET_SEARCHES)} (or --search exact for {clf})"
        )
    return BUDGET_SEARCHES[clf]


def schedule(n_configs: int, search: BudgetSearch) -> list[tuple[int, int]]:
    """The rungs, [(configurations, epochs each)], first to last; the last trains its configurations for max_epochs.

    Each rung keeps the best 1/factor of the last (at least two) and multiplies its epochs by factor: from the top,
    max_epochs, max_epochs // factor, ... down to min_epochs, with no more rungs than halvings of n_configs down to
    two (a rung that kept everyone would only cost epochs). So 36 configurations, 27 epochs, factor 3: 36 at 1
    epoch, 12 at 3, 4 at 9, 2 at 27 (162 epochs; the exact grid trains 972).
    """
    counts = [n_configs]
    while counts[-1] > 2:
        counts.append(max(2, math.ceil(counts[-1] / search.factor)))
    epochs = [search.max_epochs]
    while len(epochs) < len(counts) and epochs[0] // search.factor >= search.min_epochs:
        epochs.insert(0, epochs[0] // search.factor)
    return list(zip(counts, epochs))


def successive_halving(evaluate, search: BudgetSearch, metric: str, log=None) -> list[dict]:
    """Run the rungs of `schedule` and return every row tried, as tune's runner gives them.

    evaluate(stage, points) -> rows: scores every point (parameters with "epochs") on every selection split,
    one row per (point, split) with `point`, the METRICS and "split" (tune._Runner).
    Between rungs the configurations are ranked by their mean `metric` over the splits (ties: grid order) and
    the best `count` of the next rung go on; rows of the configurations stopped there get stopped_early=True.
    """
    alive = search.configurations()
    rungs = schedule(len(alive), search)
    tried = []
    for number, (_count, epochs) in enumerate(rungs):
        rows = evaluate("halving", [{**config, BUDGET_PARAM: epochs} for config in alive])
        tried += rows
        if number == len(rungs) - 1:
            break
        means = _config_means(rows, metric)
        keep = rungs[number + 1][0]
        ranked = sorted(range(len(alive)), key=lambda i: -means[_key(alive[i])])  # stable: ties keep grid order
        kept = sorted(ranked[:keep])
        stopped = {_key(alive[i]) for i in ranked[keep:]}
        for row in rows:
            row["stopped_early"] = _key(_config(row["point"])) in stopped
        if log is not None:
            log(
                f"halving: {len(alive)} configuration(s) at {epochs} epoch(s); best {keep} go on to "
                f"{rungs[number + 1][1]} epochs"
            )
        alive = [alive[i] for i in kept]
    for row in tried:
        row.setdefault("stopped_early", False)
    return tried


def contenders(tried: list[dict]) -> list[dict]:
    """The rows of the last rung: the configurations trained for the full budget."""
    top = max(row["point"][BUDGET_PARAM] for row in tried if row.get("stage") != "default")
    return [row for row in tried if row.get("stage") != "default" and row["point"][BUDGET_PARAM] == top]


def epochs_spent(tried: list[dict]) -> int:
    """Training epochs the rows cost: each row is one fit of `epochs` epochs (on one split)."""
    return int(sum(row["point"].get(BUDGET_PARAM, 0) for row in tried))


def mark_curve(curve: pd.DataFrame, tried: list[dict], metric: str) -> pd.DataFrame:
    """tune's curve of a halving search (one row per distinct point of `tried`, in the order they were first
    tried): `stopped_early` per row (its configuration went no further), and `best` moved to the best contender,
    the best point at the full budget (never a cheaper rung's)."""
    stopped = {}
    for row in tried:
        stopped[_key(row["point"])] = stopped.get(_key(row["point"]), False) or bool(row.get("stopped_early"))
    if len(stopped) != len(curve):
        raise ValueError(f"the curve has {len(curve)} rows for {len(stopped)} distinct points")
    curve = curve.copy()
    curve["stopped_early"] = list(stopped.values())
    candidates = curve["stage"] != "default"
    full = curve[candidates & (curve[BUDGET_PARAM] == curve.loc[candidates, BUDGET_PARAM].max())]
    curve["best"] = curve.index == full[metric].idxmax()
    return curve


def _config(point: dict) -> dict:
    return {k: v for k, v in point.items() if k != BUDGET_PARAM}


def _key(point: dict) -> tuple:
    return tuple(sorted(((k, repr(v)) for k, v in point.items())))


def _config_means(rows: list[dict], metric: str) -> dict:
    sums: dict = {}
    for row in rows:
        key = _key(_config(row["point"]))
        total, n = sums.get(key, (0.0, 0))
        sums[key] = (total + row[metric], n + 1)
    return {key: total / n for key, (total, n) in sums.items()}

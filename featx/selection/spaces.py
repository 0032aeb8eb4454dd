"""Search spaces: what tune tries per classifier (grids with refinement), and what a halving search over
training epochs tries (BudgetSearch)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from featx.errors import FeatxError
from featx.selection.halving import BUDGET_PARAM, HALVING_FACTOR, ladder, schedule


@dataclass(frozen=True)
class Search:
    """What tune tries for one classifier.

    grid : {param: coarse values}, tried as a full product.
    refine : params refined on a log scale around the coarse best: `refine_points` values per param
        spanning +-`refine_decades` decades (points already tried are skipped).
    fixed : parameters set on every fit (warm_start for the C path).
    """

    grid: dict
    refine: tuple = ()
    refine_points: int = 7
    refine_decades: float = 1.0
    fixed: dict = field(default_factory=dict)


C_PATH = tuple(float(c) for c in np.logspace(-6, 6, 13))


SEARCHES = {
    "logreg": Search({"C": C_PATH}, refine=("C",), fixed={"warm_start": True}),
    "linear-svm": Search({"C": C_PATH}, refine=("C",)),
    # gamma_scale multiplies sklearn's gamma="scale" (1 / (n_features * X.var())), so the grid fits any feature scale
    "svm": Search(
        {"C": (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0), "gamma_scale": (0.01, 0.1, 1.0, 10.0)},
        refine=("C", "gamma_scale"),
        refine_points=3,
        refine_decades=0.5,
    ),
    "nystroem-svm": Search(
        {"C": (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0), "gamma_scale": (0.1, 1.0, 10.0)},
        refine=("C", "gamma_scale"),
        refine_points=3,
        refine_decades=0.5,
    ),
    "sgd": Search({"alpha": tuple(float(a) for a in np.logspace(-7, 1, 9))}, refine=("alpha",)),
    "rf": Search({"min_samples_leaf": (1, 2, 5, 10, 20), "max_features": ("sqrt", "log2", 0.05, 0.2)}),
    "dense": Search({"lr": (0.001, 0.01, 0.1), "l2": (0.0, 1e-4, 1e-2), "hidden": ((), (256,))}),
    # the tail's recipe knobs (featx.classifiers.tail): how far the backbone layers move, and how much they are held
    "tail": Search({"backbone_lr": (1e-5, 1e-4, 1e-3), "weight_decay": (1e-4, 1e-2)}),
}


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
        return [dict(zip(self.grid, values)) for values in itertools.product(*self.grid.values())]

    def rungs(self, n_configs: int) -> list[tuple[int, int]]:
        """The halving rungs over `n_configs` configurations, [(configurations, epochs each)]: epochs spent from
        scratch, hanging from max_epochs down to min_epochs (featx.selection.halving.schedule)."""
        budgets = ladder(self.min_epochs, self.max_epochs, self.factor, from_top=True)
        return schedule(n_configs, budgets, cumulative=False, factor=self.factor)

    def exact(self) -> Search:
        """The exact search of the same grid: every configuration, and the defaults, trained for max_epochs."""
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
    # no cut, tune adds the cuts the entries cache as one more axis (with_cut_axis).
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


def with_cut_axis(search, cuts):
    """A tune search (Search or BudgetSearch) of the tail with the cut as its last axis (the search
    curve's plot then draws a line per cut): `cuts`, in depth order; the defaults train above the first, the lowest."""
    import dataclasses

    return dataclasses.replace(search, grid={**search.grid, "cut": tuple(cuts)}, fixed={**search.fixed, "cut": cuts[0]})

"""Successive halving, once: the rungs and the loop that compare (folds as the budget) and tune (training epochs as the
budget, for the dense head and the tail) both run.

Every candidate gets the first rung's budget; the best third (at least two) go on with three times the budget, and
so on until the contenders have the full budget, which alone chooses: successive halving (Jamieson & Talwalkar,
2016), one bracket of Hyperband (Li et al., 2017), scikit-learn's HalvingGridSearchCV with the budget as its resource.
The budgets come as a ladder (`ladder`); how a budget is spent decides the schedule (`schedule`):

- cumulative (compare: a rung adds folds to those a row already has): every step of the ladder from one fold up to
  all K is a rung, so 5 folds give rungs at 1, 3 and 5 folds;
- from scratch (tune: a rung trains each configuration anew for its epochs, a model anyone can refit from its
  parameters): the ladder hangs from the full budget down (max_epochs, max_epochs / 3, ...), and there are no more
  rungs than halvings of the candidates down to two (a rung that kept everyone would only cost epochs).

This module holds the schedule and the loop; compare and tune (featx.experiments) run the fits and say which
candidates went how far (`stopped_early` in their tables).
"""

from __future__ import annotations

import math

import pandas as pd

HALVING_FACTOR = 3  # each rung keeps the best third (at least MIN_KEEP) and triples their budget
MIN_KEEP = 2
BUDGET_PARAM = "epochs"  # the parameter a halving search over training epochs sets per rung


def ladder(low: int, high: int, factor: int = HALVING_FACTOR, *, from_top: bool) -> list[int]:
    """The budgets a halving search may spend, ascending: from_top, high, high // factor, ... down to low (epochs: the
    contenders get exactly the full budget); else low, low * factor, ... up to high (folds: one fold first, then
    three, ... all of them)."""
    if from_top:
        budgets = [high]
        while budgets[0] // factor >= low:
            budgets.insert(0, budgets[0] // factor)
        return budgets
    budgets = [low]
    while budgets[-1] < high:
        budgets.append(min(high, budgets[-1] * factor))
    return budgets


def schedule(
    n_candidates: int, budgets: list[int], *, cumulative: bool, factor: int = HALVING_FACTOR
) -> list[tuple[int, int]]:
    """The rungs, [(candidates, budget each)], first to last, over the ascending `budgets` (a ladder).

    Each rung keeps the best 1/factor of the last (at least MIN_KEEP). A cumulative budget (folds added to those
    scored) makes every budget of the ladder a rung, the last ones keeping MIN_KEEP; a budget spent from scratch
    (epochs) has no more rungs than halvings of the candidates down to MIN_KEEP, the ladder's top ones. So 36
    configurations and epochs (1, 3, 9, 27): 36 at 1 epoch, 12 at 3, 4 at 9, 2 at 27 (162 epochs; the exact grid
    trains 972); 10 rows and folds (1, 3, 5): 10 on 1 fold, 4 on 3, 2 on 5.
    """
    counts = [n_candidates]
    while counts[-1] > MIN_KEEP:
        counts.append(max(MIN_KEEP, math.ceil(counts[-1] / factor)))
    if cumulative:
        counts += [counts[-1]] * (len(budgets) - len(counts))
        return list(zip(counts, budgets))
    return list(zip(counts, budgets[-len(counts) :]))


def successive_halving(candidates: list, rungs: list[tuple[int, int]], run, score, *, on_stop=None) -> list:
    """Run `rungs` (schedule's) over `candidates` and return those of the last rung (the contenders), in the
    candidates' order.

    run(alive, budget, last) spends a rung's budget on the candidates alive (last: the final rung); score(candidate,
    budget) is a candidate's mean score after that rung (higher is better). Between rungs the candidates are ranked
    by it (ties keep the candidates' order) and the best of the next rung's count go on; on_stop(candidate, budget,
    kept) is called for each one stopped there, best first (kept: how many went on).
    """
    order = {id(c): n for n, c in enumerate(candidates)}
    alive = list(candidates)
    for number, (_, budget) in enumerate(rungs):
        last = number == len(rungs) - 1
        run(alive, budget, last)
        if last:
            break
        keep = rungs[number + 1][0]
        ranked = sorted(alive, key=lambda c: -score(c, budget))  # stable: ties keep the candidates' order
        for candidate in ranked[keep:]:
            if on_stop is not None:
                on_stop(candidate, budget, keep)
        alive = sorted(ranked[:keep], key=lambda c: order[id(c)])
    return alive


def halve_epochs(evaluate, search, metric: str, log=None) -> list[dict]:
    """successive_halving over the configurations of `search` (a featx.selection.spaces.BudgetSearch), training
    epochs as the budget; returns every row tried, as tune's runner gives them.

    evaluate(stage, points) -> rows: scores every point (parameters with "epochs") on every selection split,
    one row per (point, split) with `point`, the METRICS and "split" (tune's runner). Between rungs the
    configurations are ranked by their mean `metric` over the splits (ties: grid order); rows of the configurations
    stopped there get stopped_early=True.
    """
    configurations = search.configurations()
    rungs = search.rungs(len(configurations))
    tried: list[dict] = []
    rung_rows: list[dict] = []

    def run(alive, epochs, last):
        rung_rows[:] = evaluate("halving", [{**config, BUDGET_PARAM: epochs} for config in alive])
        tried.extend(rung_rows)
        if not last and log is not None:
            keep, following = next((n, e) for n, e in rungs if e > epochs)
            log(f"halving: {len(alive)} configuration(s) at {epochs} epoch(s); best {keep} go on to {following} epochs")

    def score(config, _epochs):
        return _config_means(rung_rows, metric)[_key(config)]

    def stop(config, _epochs, _kept):  # its rows of this rung: the configuration went no further
        for row in rung_rows:
            if _key(_config(row["point"])) == _key(config):
                row["stopped_early"] = True

    successive_halving(configurations, rungs, run, score, on_stop=stop)
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

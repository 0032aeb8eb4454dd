"""compare: layer subsets x classifiers x parameter grid in one command, every fit logged as a run.

The union of all requested layers is read from the cache once; each subset is a column slice of it
(Features.feature_slices), so a layer is never read twice however many subsets contain it.

Rows are ranked by one metric: the CV mean with `cv` (every row scored on the same seeded folds, so
differences are paired), else the val score; the baselines majority and stratified are scored the same
way, and the table ends with one line saying whether the best row beats the runner-up beyond noise.

Every fit (each row's train fit and each of its folds) is one task, run on `n_jobs` workers with a progress
bar; a row's line is printed when its last fit is done. Work is shared where the numbers stay the estimator's
own: rows with the same columns and spec ("each" repeats a layer also named on its own, e.g. top_activation)
are fitted once and share the results; each fold's transforms are fitted once; L2 linear models on more than
twice as many features as rows are solved in the row space of the fold (featx.selection.rowspace, as tune does);
float32 features stay float32, and each fit runs on one core while the folds and rows run in parallel. Every
fold starts cold and is fitted by featx.selection.train.score_fold, as fit's folds are, so a row refitted by
`featx fit --like` gets the same CV scores.
ConvergenceWarnings are counted per row (`not_converged`) and summed in one line. `search="halving"` spends the
full CV only on contenders (successive halving over rows on the same folds; see _halving).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from tqdm.auto import tqdm

from featx.backbones.layers import LayerSelection
from featx.cache.pick import entry_label
from featx.cache.store import Cache
from featx.classifiers import BASELINES, make_classifier
from featx.classifiers.gram import Gram, takes_gram
from featx.classifiers.registry import large_n_note
from featx.compute import Compute
from featx.errors import FeatxError
from featx.experiments.inputs import check_trainable, load_features, loaded_views, tail_specs
from featx.features.head2toe import bind_spec
from featx.features.load import select_cached
from featx.figures.selection_plots import plot_layer_scores
from featx.progress import silent
from featx.runs.record import record_run
from featx.runs.reports import comparison_plot, new_report_folder, write_compare_report
from featx.runs.store import cv_columns, prepare_log, selection_columns
from featx.selection.cv import (
    CVResult,
    Folds,
    fold_result,
    make_folds,
    paired_difference,
    quietly,
    summarize,
    val_folds,
)
from featx.selection.halving import ladder, schedule, successive_halving
from featx.selection.metrics import METRICS, SELECTION_SPLITS, default_metric
from featx.selection.spec import METRIC_NAMES, Evaluation, FitSpec, baseline_specs, fit_spec, score_column, swept_params
from featx.selection.train import Scores, score_fold, train_and_score
from featx.terminal import fit_lines, fit_table

EACH = "each"
SAVE_MODELS = ("best", "all")
BASELINE_LAYERS = "(baseline)"  # the layers cell of a baseline row: it ignores the features
TABLE_COLUMNS = (
    "layers",
    "depth",
    "classifier",
    "params",
    "n_features",
    "val_accuracy",
    "val_f1_macro",
    "test_accuracy",
    "test_f1_macro",
    "fit_seconds",
    "not_converged",
    "run_id",
)


@dataclass
class CompareResult:
    table: pd.DataFrame  # one row per (layer subset, classifier, params) and baseline, best first; TABLE_COLUMNS,
    #                      val/test_<metric>, and with cv cv_<metric>_mean/_ci95 for every METRICS name and cv_folds
    csv: Path
    plot: Path
    metric: str  # the ranking metric
    score: str  # the column ranked by: cv_<metric>_mean, or val_<metric>
    best_line: str  # "best: ...; <paired verdict against the runner-up>"
    not_converged: int = 0  # fits that ended with a ConvergenceWarning, over all rows
    fits: int = 0  # fits run (train fits and folds; rows with the same columns and spec share theirs)


def compare(
    entry=None,
    layer_sets=("blocks",),
    specs: list[FitSpec] | None = None,
    evaluation: Evaluation | None = None,
    *,
    save_models: str = "best",
    plots: bool = False,
    command: str | None = None,
    cache=None,
    compute: Compute | None = None,
    log=print,
) -> CompareResult:
    """Fit every (layer subset, spec of `specs`) and the baselines, judged by `evaluation`; tabulate them best first.

    entry : a cache entry of `cache` (name, key prefix, folder or CacheEntry; None: the most recent).
    layer_sets : subsets, each a layer name, group (all, blocks, final, fc), comma list of them, or "each" (every
        cached layer alone, with its depth index, for a per-depth accuracy curve).
    specs : one FitSpec per classifier and grid point (featx.selection.spec.compare_specs builds them from
        classifiers, a grid and fixed params; default: a random forest), all with the same views and tta. The
        parameters that vary between the specs of a classifier are named in each row's model label.
    evaluation : the ranking metric (None: chosen from the class balance of the train+val labels, logged), and the
        protocol: `cv` scores each row by repeated stratified K-fold (cv_repeats times) over train+val, on folds
        made once from its seed (paired across rows); rows are then ranked by the CV mean. Each row's model is
        still fitted on train and scored once on val and test, as without cv. search "exact" scores every row on
        every fold; "halving" (needs cv) scores every row on one fold, keeps the best third (at least two) for
        three times the folds, and so on until the contenders have all folds; only they are fitted on train,
        logged as runs and ranked; the others stay in the table with the folds they had (`folds_scored`,
        `stopped_early`).
    save_models : "best" (default) saves the model of the best row by the ranking score only (the first of
        equals), "all" every row's; rows without a model are logged all the same, with an empty model path.
    plots : also draw each run's confusion PNGs (off: drawing them takes longer than most fits; the confusion CSVs
        are always written). command : the command line that ran this compare, kept in the report folder.
    cache : a Cache (or a cache folder; None: the default one). compute : how wide (featx.compute.Compute: the fits
        run on `workers` joblib workers, each fit on one core; with workers=1 one at a time in this process, each
        classifier on every core; or on a Dask cluster, the feature matrix sent to each worker once; a progress
        bar over the fits on stderr; reuse: row-space solving and shared kernels in the folds). The specs' n_jobs is
        replaced by how the fits share the cores (it never changes a number).
    log : called with each message line, each row's line as it finishes, and the table (default print); None
        prints nothing.
    Every FitSpec is checked before any data is read. Saves results.csv, report.json and layer_comparison.png in
    <reports>/compare-<id>/ (featx.runs.reports).
    """
    specs = list(specs) if specs else [fit_spec("rf")]
    grid = swept_params(specs)
    log, evaluation, compute = log or silent, evaluation or Evaluation(), compute or Compute()
    if save_models not in SAVE_MODELS:
        raise FeatxError(f"unknown --save-models '{save_models}'; choose one of {', '.join(SAVE_MODELS)}")
    cv, metric, search = evaluation.cv, evaluation.metric, evaluation.search
    names = list(dict.fromkeys(spec.classifier for spec in specs))
    workers = compute.parallel
    inner = -1 if workers == 1 else 1  # the classifier's cores, or the workers'
    specs = [spec if spec.n_jobs == inner else replace(spec, n_jobs=inner) for spec in specs]
    baselines = baseline_specs(specs)
    compute.require()
    entry = Cache.resolve(cache).open(entry)
    specs, _ = tail_specs(entry, specs)  # the tail's params need the entry: its cut's maps, the backbone they came from
    check_trainable(entry, cv=cv, selects=True)  # before anything is written: rows are ranked on val or CV
    subsets = expand_subsets(entry, [layer_sets] if isinstance(layer_sets, str) else layer_sets)
    jobs = [(subset, spec) for subset in subsets for spec in specs] + [((subsets[0][0], None), s) for s in baselines]
    features = load_features(  # the tail's maps stream from HDF5, as in fit and tune
        [entry],
        specs,
        [n for selection, _ in subsets for n in selection.names],  # the union, once
        views=loaded_views(specs[0]),
    )
    X, y, meta = features
    jobs = [
        (subset, bind_spec(spec, features.feature_slices, subset[0].names))  # layer-aware steps' layout
        for subset, spec in jobs
    ]
    prepare_log(entry.cache)  # unwritable folders or a broken log fail before any fit
    folder = new_report_folder(entry.cache, "compare")
    split, slices, n_views = meta["split"].to_numpy(), features.feature_slices, len(specs[0].views)
    if metric is None:
        metric, reason = default_metric(y[np.isin(split, SELECTION_SPLITS)])
        log(reason)
    for note in filter(None, (large_n_note(name, int((split == "train").sum()) * n_views) for name in names)):
        log(note)
    folds = make_folds(y, split, cv, evaluation.cv_repeats, evaluation.seed) if cv else None
    judged = replace(evaluation, metric=metric)  # as logged: the metric chosen
    log(
        f"compare: {len(subsets)} layer subset(s) x classifiers x grid = {len(jobs)} row(s)"
        + (f" x ({len(folds)} folds + 1 train fit)" if folds else "")
        + (", successive halving over the folds" if search == "halving" else "")
        + f", {'one at a time' if workers == 1 else 'in parallel'},\n  on {entry_label(entry)}"
    )
    columns = {
        selection: _view_columns([np.arange(*slices[n]) for n in selection.names], X.shape[1] // n_views, n_views)
        for selection, _ in subsets
    }
    rows = [_Row(selection, depth, spec, columns[selection]) for (selection, depth), spec in jobs]
    total = len(rows) * (1 + len(folds or ()))
    bar = tqdm(
        total=total,
        unit="fit",
        desc="compare",
        file=sys.stderr,
        disable=not compute.progress or not sys.stderr.isatty(),
    )
    distributed = compute.cluster is not None
    runner = _Runner(entry.class_names, X, y, split, folds, workers, distributed, compute.reuse, bar, log, metric)
    with compute.joblib(entry.cache, scatter=[X], log=log), bar:
        if search == "halving":
            _halving(runner, rows)
        else:
            runner.run_train(rows)
            runner.run_folds(rows, range(len(folds or ())))
        bar.total = bar.n  # rows stopped early by halving never ran their remaining fits
    score = f"cv_{metric}_mean" if cv else f"val_{metric}"
    finished = [row for row in rows if row.scores is not None]
    best = _best_model_row(finished, metric, folds)
    for n, row in enumerate(finished):
        row.run = record_run(
            entry,
            row.spec,
            row.scores,
            selection=row.selection,
            log=None,
            plots=plots,
            cv=row.cv_result(folds),
            evaluation=judged,
            keep_model=save_models == "all" or n == best,
            name_entry=False,
        )
    table, results = _table(rows, grid, metric, score, folds, search == "halving")
    best_line = _best_line(table, results, metric, score, split)
    csv = write_compare_report(  # model = classifier + the swept params: the printed table's
        folder, entry, table.drop(columns="model"), metric=metric, score=score, best_line=best_line, command=command
    )
    shown = table[table["stopped_early"] == False] if "stopped_early" in table else table  # noqa: E712
    plot = plot_layer_scores(
        shown,
        comparison_plot(folder),
        mean=score,
        ci=f"cv_{metric}_ci95" if cv else None,
        hue="model",
        baselines=BASELINES,
        order=_depth_order(entry, subsets),
        title=f"{metric} by layer subset ({folds.label}, 95% CI)" if cv else f"{metric} on val",
    )
    n_fits, not_converged = sum(row.fits for row in rows), sum(row.not_converged for row in rows)
    log(_convergence_line(rows, n_fits, not_converged))
    log(_format(table, metric, score))
    log(fit_lines(best_line))
    log(f"saved {csv} and {plot}")
    return CompareResult(table, csv, plot, metric, score, best_line, not_converged, runner.ran)


@dataclass(eq=False)
class _Row:
    """One (layer subset, FitSpec) of a comparison and what its fits returned so far."""

    selection: LayerSelection
    depth: int | None
    spec: FitSpec
    columns: np.ndarray
    fold_scores: dict = field(default_factory=dict)  # fold index -> {metric: value, ..., "fit_seconds": s}
    scores: Scores | None = None  # the train fit, scored on val and test
    fits: int = 0
    not_converged: int = 0
    stopped: int | None = None  # halving: the number of folds it had when it was stopped
    run: object = None  # its FitResult, once recorded

    @property
    def baseline(self) -> bool:
        return self.spec.classifier in BASELINES

    def label(self, grid: dict | None = None) -> str:
        layers = BASELINE_LAYERS if self.baseline else _short(self.selection.spec)
        return f"{_model(self.spec, grid or self.spec.params)} on {layers}"

    def key(self) -> tuple:
        """Equal for rows whose fits are the same: the same columns and spec."""
        return repr(self.spec), self.columns.tobytes()

    def cv_result(self, folds: Folds | None, n: int | None = None) -> CVResult | None:
        """Its scores on the first `n` folds (default: every fold it has) as a CVResult on those folds."""
        if folds is None:
            return None
        n = len(self.fold_scores) if n is None else n
        part = (
            folds
            if n == len(folds)
            else Folds(folds.splits[:n], folds.repeats[:n], folds.n_rows, f"{folds.label}[{n}/{len(folds)}]")
        )
        return fold_result(part, [(self.fold_scores[i], True) for i in range(n)])  # convergence: counted per row

    def mean(self, metric: str, n: int) -> float:
        return float(np.mean([self.fold_scores[i][metric] for i in range(n)]))


@dataclass
class _Runner:
    """Runs fits as joblib tasks (in this process with workers=1), advancing the bar, and prints each row's
    line when its last fit is done."""

    class_names: list
    X: np.ndarray
    y: np.ndarray
    split: np.ndarray
    folds: Folds | None
    workers: int
    cluster: bool
    reuse: bool
    bar: object
    log: object
    metric: str
    done: int = 0
    ran: int = 0  # fits run (a row identical to another shares its fits)
    grams: dict = field(default_factory=dict)  # column subset -> the Gram its untransformed kernel fits share

    def run_train(self, rows: list[_Row]) -> None:
        """Each row's fit on the train rows, scored on val and test."""
        tasks = [
            (row, None, delayed(_train_task)(self.X, row.columns, self.y, self.split, row.spec, self.class_names))
            for row in rows
        ]
        self._run(tasks)

    def run_folds(self, rows: list[_Row], indices) -> None:
        """The folds `indices` of each row."""
        tasks = [
            (
                row,
                i,
                delayed(_fold_task)(
                    self.X,
                    row.columns,
                    self.y,
                    row.spec,
                    *self.folds.splits[i],
                    self.reuse,
                ),
            )
            for row in rows
            for i in indices
        ]
        self._run(tasks)

    def _run(self, tasks) -> None:
        """Run `tasks` ((row, fold or None, delayed call) each), a task identical to an earlier one only once: rows
        with the same columns and spec ("each" repeats a layer also named on its own) are the same deterministic
        fits, so each such row gets the one result (and counts it as its own fit). Fits of the same rows through
        the same transforms by a classifier whose fit takes a Gram (the exact SVM's grid: C, gamma, kernel) run as
        one task sharing one, so their kernels cost one matrix product (_kernel_batches)."""
        groups: dict = {}
        for row, fold, call in tasks:
            groups.setdefault((row.key(), fold), []).append((row, fold, call))
        unique = [members[0] for members in groups.values()]
        batches = _kernel_batches(unique) if self.reuse else [([n], False) for n in range(len(unique))]
        calls = [
            (_batch, ([unique[n][2] for n in batch], self._gram(unique[batch[0]][0]) if shares else None), {})
            for batch, shares in batches
        ]
        if self.workers == 1:
            results = (_keyed(n, call) for n, call in enumerate(calls))
        else:
            results = Parallel(n_jobs=self.workers, return_as="generator" if self.cluster else "generator_unordered")(
                delayed(_keyed)(n, call) for n, call in enumerate(calls)
            )
        for n, batch_results in results:
            for task, result in zip(batches[n][0], batch_results):
                self._take(unique[task], groups, result)

    def _gram(self, row: _Row):
        """The Gram a batch of `row`'s kernel fits shares: without transforms, one of every row a fit of its columns
        takes (train, and train+val with folds; labelled by row, computed here once per column subset, each fit's
        kernel a slice of it) within the kernel memory budget and off a cluster (it would travel with each task);
        else a new unbound one per batch, which the batch's first fit binds to its own rows (one shared by batches
        would stay bound to the first batch's rows, and the next batch's fits on other rows would refuse it)."""
        if row.spec.transforms or self.cluster:
            return Gram()
        key = row.columns.tobytes()
        if key not in self.grams:
            rows = np.flatnonzero(np.isin(self.split, SELECTION_SPLITS if self.folds else ("train",)))
            spec = row.spec
            shared = takes_gram(make_classifier(spec.classifier, spec.params, spec.seed), len(rows))
            self.grams[key] = Gram(self.X[np.ix_(rows, row.columns)], labels=rows).compute() if shared else None
        return Gram() if self.grams[key] is None else self.grams[key]

    def _take(self, task, groups: dict, result) -> None:
        """Give one task's result to every row it stands for."""
        self.ran += 1
        first, fold, _ = task
        for row, _, _ in groups[(first.key(), fold)]:
            converged = result[-1]
            row.fits += 1
            row.not_converged += not converged
            if fold is None:
                row.scores = result[0]
            else:
                row.fold_scores[fold] = result[0]
            self.bar.update()
            if row.scores is not None and len(row.fold_scores) == len(self.folds or ()):
                self.say(row)

    def say(self, row: _Row, stopped: str = "") -> None:
        """The row's line: its CV (or val) score so far, fits, convergence."""
        self.done += 1
        parts = []
        if row.fold_scores:
            result = summarize(row.cv_result(self.folds))
            ci = result[f"{self.metric}_ci95"]
            parts.append(
                f"cv {self.metric} {result[f'{self.metric}_mean']:.3f}"
                + ("" if np.isnan(ci) else f" ± {ci:.3f}")
                + f" on {len(row.fold_scores)} fold(s)"
            )
        val = row.scores.metrics.get("val") if row.scores is not None else None
        if val is not None:
            parts.append(f"val {self.metric} {val[self.metric]:.3f}")
        if row.not_converged:
            parts.append(f"{row.not_converged} of {row.fits} fit(s) not converged")
        with tqdm.external_write_mode(file=sys.stdout):
            self.log(f"row {self.done}: {row.label()}: " + "; ".join(parts) + stopped)


def _keyed(n, call):
    """Run a joblib delayed call here, returning its task number with its result (for unordered results)."""
    function, args, kwargs = call
    return n, function(*args, **kwargs)


def _kernel_batches(tasks) -> list[tuple[list[int], bool]]:
    """(indices of `tasks`, whether they share a Gram) to run together: the tasks ((row, fold, call) each) fitting
    the same rows (columns, fold or train split) through the same transforms and seed with a plain spec of a
    classifier whose fit takes a Gram form one batch; every other task is a batch of its own."""
    batches: dict = {}
    for n, (row, fold, _) in enumerate(tasks):
        spec = row.spec
        shares = spec.plain and takes_gram(make_classifier(spec.classifier, spec.params, spec.seed))
        key = (row.columns.tobytes(), repr(spec.transforms), spec.seed, fold) if shares else n
        batches.setdefault(key, ([], shares))[0].append(n)
    return list(batches.values())


def _batch(calls, gram=None) -> list:
    """Run joblib delayed calls here, in order, each handed `gram` (a featx.classifiers.gram.Gram) where not None:
    an unbound one is bound by the first fit to its (transformed) rows, so the batch computes them once."""
    return [function(*args, **kwargs, **({} if gram is None else {"gram": gram})) for function, args, kwargs in calls]


def _train_task(X, columns, y, split, spec: FitSpec, class_names, gram=None):
    """Fit spec on the train rows of the column subset and score val and test: (Scores, converged).
    gram : a featx.classifiers.gram.Gram the batch's fits share (labelled by X's rows, or unbound), or None."""
    head = None if gram is None else {"gram": gram.at(np.flatnonzero(split == "train"))}
    scores, converged = quietly(
        train_and_score, X[:, columns], y, split, spec, class_names=class_names, head_params=head
    )
    return scores, converged


def _fold_task(X, columns, y, spec: FitSpec, train, held_out, reuse: bool = True, gram=None):
    """Fit spec on a fold's train rows, score the held-out rows: ({metric: value, "fit_seconds": s}, converged).
    gram : a featx.classifiers.gram.Gram the batch's fits share (labelled by X's rows, or unbound), or None."""
    return score_fold(spec, X[:, columns], y, train, held_out, reuse, None if gram is None else gram.at(train))


def _halving(runner: _Runner, rows: list[_Row]) -> None:
    """Successive halving over rows on the same folds (featx.selection.halving, folds a cumulative budget): every
    row gets fold 1, the best third (at least two) by the mean so far get folds up to 3, the best third of those up
    to 9, ... until the contenders have every fold; only they are fitted on train. Baselines (cheap, and the
    reference every row is read against) get every fold."""
    n_folds = len(runner.folds)
    baselines = [row for row in rows if row.baseline]
    runner.run_folds(baselines, range(n_folds))
    had = [0]

    def run(alive, budget, last):
        if last:
            runner.run_train(alive + baselines)
        runner.run_folds(alive, range(had[0], budget))
        had[0] = budget

    def stop(row, budget, _kept):
        row.stopped = budget
        runner.say(row, f"; stopped at {budget}/{n_folds} fold(s)")

    alive = [row for row in rows if not row.baseline]
    rungs = schedule(len(alive), ladder(1, n_folds, from_top=False), cumulative=True)
    successive_halving(alive, rungs, run, lambda row, budget: row.mean(runner.metric, budget), on_stop=stop)


def _convergence_line(rows: list[_Row], n_fits: int, not_converged: int) -> str:
    if not not_converged:
        return f"convergence: all {n_fits} fit(s) converged"
    worst = sorted((row for row in rows if row.not_converged), key=lambda row: -row.not_converged)
    named = ", ".join(f"{row.label()} ({row.not_converged})" for row in worst[:3])
    return (
        f"convergence: {not_converged} of {n_fits} fit(s) stopped at max_iter without converging, in "
        f"{len(worst)} row(s): {named}{', ...' if len(worst) > 3 else ''}; their scores are of unfinished fits: "
        "raise max_iter (--param max_iter=N), standardize (--standardize) or regularize more (smaller C)"
    )


def _model(spec: FitSpec, grid) -> str:
    shown = [k for k in grid if k in spec.params and k != "backbone"]  # the tail's: the entry's, said above
    return " ".join([spec.classifier, *(f"{k}={spec.params[k]}" for k in shown)])


def _table(
    rows: list[_Row], grid: dict, metric: str, score: str, folds: Folds | None, halving: bool
) -> tuple[pd.DataFrame, list]:
    """The rows, best first by `score` (stable: ties keep the run order; with halving, rows that had every fold
    first), and their CV (or val) results."""
    extra = [f"{s}_{metric}" for s in ("val", "test") if f"{s}_{metric}" not in TABLE_COLUMNS]
    records, results = [], []
    for row in rows:
        if row.run is not None:
            logged = row.run.row
            record = {
                **{k: logged.get(k) for k in [*TABLE_COLUMNS, *extra] if k in logged},
                **{k: v for k, v in logged.items() if k.startswith("cv_")},
            }
        else:  # stopped early by halving: no train fit, no run; its CV on the folds it had
            result = row.cv_result(folds)
            record = {
                **selection_columns(row.selection),
                "classifier": row.spec.classifier,
                "params": row.spec.params_json(),
                "n_features": len(row.columns) // len(row.spec.views),
                **{f"cv_{k}": round(v, 4) for k, v in summarize(result).items()},
                "cv": result.folds.label,
            }
        record.update(
            depth=row.depth,
            not_converged=row.not_converged,
            layers=BASELINE_LAYERS if row.baseline else row.selection.spec,
            model=_model(row.spec, grid),
        )
        if halving:
            record.update(folds_scored=len(row.fold_scores), stopped_early=row.stopped is not None)
        records.append(record)
        results.append(
            row.cv_result(folds)
            if folds is not None and row.stopped is None
            else (_val_result(row.run) if row.run is not None else None)
        )
    table = pd.DataFrame(records)
    for column in [*TABLE_COLUMNS, *extra]:
        if column not in table:
            table[column] = np.nan
    cv_columns = [c for c in table.columns if c.startswith("cv_")]
    table = table[
        [*TABLE_COLUMNS, *extra, *cv_columns, *(["folds_scored", "stopped_early"] if halving else []), "model"]
    ]
    if table["depth"].isna().all():
        table = table.drop(columns="depth")
    keys = pd.DataFrame(
        {
            "score": table[score].astype(float),
            "full": ~table["stopped_early"] if halving else True,
            "folds": table["folds_scored"] if halving else 0,
        }
    )
    order = keys.sort_values(["full", "folds", "score"], ascending=False, kind="stable", na_position="last").index
    return table.loc[order].reset_index(drop=True), [results[i] for i in order]


def _val_result(run) -> CVResult | None:
    """A row's one val score as a one-split result, so the best-row line has one code path (and says that
    one split gives no CI)."""
    val = run.scores.metrics.get("val")
    if val is None:
        return None
    return CVResult(pd.DataFrame([{m: val[m] for m in METRICS}]), None, None)


def _best_line(table: pd.DataFrame, results: list, metric: str, score: str, split) -> str:
    name = [f"{m} on {_short(layers)}" for m, layers in zip(table["model"], table["layers"])]
    ci = table.get(f"cv_{metric}_ci95")
    best = f"best: {name[0]} {metric} {table[score].iloc[0]:.3f}" + (f" ± {ci.iloc[0]:.3f}" if ci is not None else "")
    if len(table) < 2 or results[0] is None or results[1] is None:
        return best
    a, b = results[:2]
    if a.folds is None:  # val: the one split, made here
        a, b = (CVResult(r.scores, val_folds(split), None) for r in (a, b))
    verdict = paired_difference(a, b, metric, name[0], name[1]).verdict
    return f"{best};\n  {verdict}" + ("; pass --cv K for a confidence interval" if a.folds.label == "val" else "")


def _format(table: pd.DataFrame, metric: str, score: str) -> str:
    """The printed table, best first, within the terminal's width (featx.terminal.fit_table): the ranking score
    (mean ± CI under CV), val/test of the ranking metric, fit time and the short run id; baselines marked, the
    data and backbone said once above it (results.csv has every column, run ids whole)."""
    from featx.runs.ranking import cut, short_id

    baseline = table["classifier"].isin(BASELINES)
    shown = pd.DataFrame(
        {
            "layers": [("-" if b else cut(_short(layers), 26)) for b, layers in zip(baseline, table["layers"])],
            "model": [f"{m} (baseline)" if b else cut(m, 30) for b, m in zip(baseline, table["model"])],
            "features": table["n_features"],
        }
    )
    if score.startswith("cv_"):
        shown["cv mean ± ci95"] = (
            table[score].map("{:.3f}".format) + " ± " + table[f"cv_{metric}_ci95"].map("{:.3f}".format)
        )
    for split in ("val", "test"):
        shown[split] = table[f"{split}_{metric}"].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
    shown["fit_s"] = table["fit_seconds"].map(lambda v: "" if pd.isna(v) else f"{v:.1f}")
    if "stopped_early" in table:  # halving: the folds each row was scored on, * where it was stopped there
        shown["folds"] = [
            f"{int(k)}{'*' if stop else ''}" for k, stop in zip(table["folds_scored"], table["stopped_early"])
        ]
    if "not_converged" in table and (table["not_converged"].fillna(0) > 0).any():
        shown["not_conv"] = table["not_converged"].fillna(0).astype(int)
    shown["run"] = table["run_id"].map(lambda run: "" if pd.isna(run) else short_id(run))
    note = (
        "\n* stopped early by successive halving at that many folds: not fitted on train, not logged"
        if "stopped_early" in table and table["stopped_early"].any()
        else ""
    )
    return f"{metric}, best first by {'the CV mean' if score.startswith('cv_') else 'val'}:\n" + fit_table(shown) + note


def _depth_order(entry, subsets) -> list[str]:
    """The subsets' specs by depth: the deepest layer of each, then fewer layers first (a layer before a group
    ending at it)."""
    depth = {name: n for n, name in enumerate(entry.layer_info)}
    ranked = sorted(subsets, key=lambda item: (max(depth.get(n, -1) for n in item[0].names), len(item[0].names)))
    return list(dict.fromkeys(selection.spec for selection, _ in ranked))


def _short(layers: str) -> str:
    parts = str(layers).split(",")
    return layers if len(parts) <= 2 else f"{parts[0]}…+{len(parts) - 1} layers"


def _view_columns(parts, width: int, n_views: int) -> np.ndarray:
    """A subset's columns (`parts` index one view's `width` columns) in every view's block, view by view."""
    one = np.concatenate(parts)
    return np.concatenate([view * width + one for view in range(n_views)])


def _best_model_row(rows: list[_Row], metric: str, folds: Folds | None) -> int:
    """The row whose model compare keeps by default: featx.runs.ranking.recommended of the rows' selection
    scores (the best non-baseline row by the CV mean, else val; the first of equals); -1 when none has a score."""
    from featx.runs.ranking import recommended_index

    return recommended_index(
        pd.DataFrame(
            [
                {"classifier": row.spec.classifier, **_val_columns(row), **cv_columns(row.cv_result(folds))}
                for row in rows
            ]
        ),
        metric,
    )


def _val_columns(row: _Row) -> dict:
    val = row.scores.metrics.get("val", {})  # rounded as logged: ranked as `featx runs` ranks the logged row
    return {score_column("val", m): round(val[m], 4) if m in val else None for m in METRIC_NAMES}


def expand_subsets(entry, layer_sets) -> list[tuple[LayerSelection, int | None]]:
    """(LayerSelection, depth index or None) per subset; "each" gives one per cached layer, with its depth."""
    if not layer_sets:
        raise FeatxError("compare needs at least one layer subset, e.g. --layer-sets top_activation blocks each")
    subsets = []
    for spec in layer_sets:
        if spec == EACH:
            subsets += [
                (select_cached(entry, name), depth)
                for depth, name in enumerate(entry.layer_info)
                if name in entry.layers
            ]
        else:
            subsets.append((select_cached(entry, spec), None))
    return subsets

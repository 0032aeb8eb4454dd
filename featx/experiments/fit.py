"""fit: one classifier Pipeline on one layer subset of a cache entry, scored on val and test, logged as a run.

A fit is one value, `FitSpec`; `train_and_score` turns features and a FitSpec into `Scores` without touching
disk (compare, and cross-validation folds, call it many times); `record_run` writes the run folder, the model,
the metrics and the log row. `fit` = load + train_and_score + record_run.
Works from the cache alone: no backbone is built, and TensorFlow is imported only for the dense head.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import InvalidParameterError

from featx.backbones.layers import LayerSelection
from featx.cache.atomic import write_json
from featx.cache.pick import entry_label
from featx.cache.store import CacheEntry
from featx.classifiers import BASELINES, fit_pipeline
from featx.classifiers.registry import bad_param_message, large_n_note
from featx.classifiers.views import final_classifier
from featx.errors import FeatxError
from featx.experiments.models import MODEL_FILE, save_model
from featx.experiments.runlog import EVAL_SPLITS, log_run, prepare_log, stage_run
from featx.experiments.selection import CVResult, Folds, cross_validate, make_folds, quietly, summarize
from featx.experiments.spec import Evaluation, FitSpec, fit_spec, view_names, with_class_weight  # noqa: F401  (also featx.experiments.fit's names)
from featx.experiments.tail import load_features, tail_specs
from featx.features.head2toe import bind_blocks
from featx.features.load import open_entries, require_layers
from featx.reports import evaluate, plot_confusion, plot_learning_curves
from featx.sources.views import IDENTITY


@dataclass
class Scores:
    """What train_and_score returns: the fitted pipeline and its scores, nothing written anywhere."""

    pipeline: Pipeline  # fitted on the train rows
    metrics: dict  # {split: featx.reports.evaluate(...)} for each evaluated split that has rows
    n_train: int
    n_features: int
    fit_seconds: float
    predict_seconds: float


@dataclass
class FitResult:
    run_id: str
    folder: Path
    spec: FitSpec
    scores: Scores
    row: dict  # the line logged in the runs log

    @property
    def pipeline(self) -> Pipeline:
        return self.scores.pipeline

    @property
    def metrics(self) -> dict:
        return self.scores.metrics


def fit(
    cache=None,
    *,
    layers=None,
    clf: str = "rf",
    params: dict | None = None,
    seed: int = 0,
    n_jobs: int | None = -1,
    cache_dir=None,
    runs_dir=None,
    cv: int | None = None,
    cv_repeats: int = 1,
    class_weight: str | None = None,
    views=None,
    view_seed: int = 0,
    tta: bool = False,
    log=print,
    **transforms,
) -> FitResult:
    """Fit `clf` on the train split of `layers`, evaluate on val and test, save the model and log the run.

    cache : an entry, or a list of entries of the same images whose features are concatenated (see
        featx.features.load.load_combined); the run is logged in the first entry's cache folder.
    layers : names and groups (all, blocks, final, fc), or a LayerSelection, concatenated in the backbone's depth order
        whatever order they are named in; None = every cached layer.
    params, seed, n_jobs, transforms : as FitSpec's params, seed, n_jobs and transforms (standardize,
        discretize ("fne" | "kbins"), pca, kbins, fne_low, fne_high; fitted on the train split only).
    log : called with each message line (default print); None prints nothing.
    runs_dir : folder for the run and the log (default <cache_dir>/runs), e.g. for a read-only cache; it
        becomes the entry's Cache's runs_dir, which record_run asks.
    cv : also score the spec by repeated stratified K-fold (cv_repeats times) over train+val, folds in
        parallel (seeded by `seed`); the mean and 95% CI of each metric are logged. The model saved is still
        the one fitted on train, scored once on val and test.
    class_weight : "balanced" weighs classes inversely to their frequency (classifiers that have class_weight).
    views, view_seed : train on these augmented views of each train image too (see view_names); they must be
        cached. tta : predict val and test by averaging over those views, instead of from the identity view.
    """
    spec = fit_spec(
        clf,
        params=params,
        seed=seed,
        n_jobs=n_jobs,
        class_weight=class_weight,
        views=views,
        view_seed=view_seed,
        tta=tta,
        **transforms,
    )
    return fit_run(
        cache,
        spec,
        Evaluation(cv=cv, cv_repeats=cv_repeats, seed=seed),
        layers=layers,
        cache_dir=cache_dir,
        runs_dir=runs_dir,
        log=log,
    )


def fit_run(
    cache, spec: FitSpec, evaluation: Evaluation | None = None, *, layers=None, cache_dir=None, runs_dir=None, log=print
) -> FitResult:
    """Fit `spec` on the train split of `layers` of `cache`, judged by `evaluation` (its cv, cv_repeats and fold seed;
    default: the fixed val split), and log it as a run: what featx.fit does once its keywords are a FitSpec and an
    Evaluation, and what a pipeline's fit step and `featx fit` (`--like RUN_ID` too) call with theirs.
    cache, layers, cache_dir, runs_dir, log : as in fit."""
    log, evaluation = log or _silent, evaluation or Evaluation()
    cv, clf = evaluation.cv, spec.classifier
    entries = open_entries(cache, cache_dir, runs_dir=runs_dir)
    (spec,), layers = tail_specs(entries[0], [spec], layers)  # a tail's params: its cut's maps, the entry's backbone
    for entry in entries[1:]:
        require_layers(entry)
    check_trainable(entries[0], cv=cv, log=log)  # data that cannot be fitted: one line, nothing read or written
    features = load_features(entries, [spec], layers, views=loaded_views(spec))  # the tail's maps: read as it trains
    X, y, meta = features
    spec = dataclasses.replace(spec, transforms=bind_blocks(spec.transforms, features.feature_slices))  # their layout
    prepare_log(entries[0].cache)  # an unwritable folder or a broken log fails before training
    if layers is None:
        log(
            f"no layers given: fitting on every cached layer of {'+'.join(e.name for e in entries)} "
            f"({len(features.layers)}, {X.shape[1] // len(spec.views)} features); choose some with --layers (API: layers=)"
        )
    split = meta["split"].to_numpy()
    note = large_n_note(clf, int((split == "train").sum()) * len(spec.views))  # the rows fitted: views counted
    if note:
        log(note)
    result = None
    if cv:
        result = cross_validate_spec(
            X, y, make_folds(y, split, cv, evaluation.cv_repeats, evaluation.seed), spec, n_jobs=spec.n_jobs
        )
        log(
            f"{result.folds.label}: "
            + ", ".join(f"{m} {v['mean']:.3f} ± {v['ci95']:.3f}" for m, v in _by_metric(summarize(result)).items())
        )
    scores, converged = quietly(train_and_score, X, y, split, spec, class_names=entries[0].class_names)
    unfinished = (not converged) + (result.not_converged if result is not None else 0)
    if unfinished:  # one line, not a ConvergenceWarning per fit
        log(
            f"note: {unfinished} fit(s) of {1 + (len(result.folds) if result is not None else 0)} stopped at max_iter "
            "without converging (their scores are of unfinished fits); raise max_iter (--param max_iter=N), "
            "standardize (--standardize) or regularize more (smaller C)"
        )
    return record_run(
        entries if len(entries) > 1 else entries[0],
        spec,
        scores,
        selection=features.selection,
        log=log,
        cv=result,
        evaluation=evaluation,
    )


def check_trainable(entry: CacheEntry, *, cv: int | None = None, selects: bool = False, log=print) -> None:
    """One line, before anything is read or written, when `entry` cannot train a classifier: no layer cached
    yet (a first extraction still pending), images of fewer than 2 classes, in all or in the train rows, or
    (`selects`: compare and tune rank on val unless `cv`) no val rows. fit without val rows and without `cv`
    is still scored on test, but `featx runs` cannot rank its run: `log` says so."""
    require_layers(entry)
    valid = np.asarray(entry.valid, dtype=bool)
    labels, split, names = np.asarray(entry.labels)[valid], np.asarray(entry.split)[valid], entry.class_names
    present = np.unique(labels)
    if len(present) < 2:
        what = "no decoded images" if not len(present) else f"1 class ({names[present[0]]})"
        of = f" of its {len(names)}, the others having no decoded image" if len(present) and len(names) > 1 else ""
        raise FeatxError(
            f"cache entry {entry.name} ({entry.data_label}) has {what}{of}; a classifier needs at least 2 "
            "— add images of another class and run `featx extract` again"
        )
    train = np.unique(labels[split == "train"])
    if not len(train):
        raise FeatxError(
            f"cache entry {entry.name} has no train rows to fit on; re-run `featx extract` with a --split "
            "that has a train part"
        )
    if len(train) < 2:
        raise FeatxError(
            f"the train rows of cache entry {entry.name} have 1 class ({names[train[0]]}) of its "
            f"{len(present)}; a classifier needs at least 2 — give other classes train rows (the "
            "manifest's split column, or --split/--seed at `featx extract`)"
        )
    if cv or (split == "val").any():
        return
    if selects:
        raise FeatxError(
            f"cache entry {entry.name} has no val rows (split {_split_label(entry)}), so nothing can "
            "be selected on val; pass --cv K to select by cross-validation over the train rows, or "
            "re-extract with a val part, e.g. --split 0.7,0.15,0.15"
        )
    log(
        f"note: cache entry {entry.name} has no val rows (split {_split_label(entry)}): this run gets no val score, "
        "so `featx runs` cannot rank it (never by test); pass --cv K to score it by cross-validation over train"
    )


def _split_label(entry: CacheEntry) -> str:
    fractions = entry.split_settings.get("fractions") if isinstance(entry.split_settings, dict) else None
    return ",".join(f"{f:g}" for f in fractions) if fractions else "from the manifest"


def loaded_views(spec: FitSpec) -> tuple[str, ...] | None:
    """What `load` reads for spec: its views side by side, or None (the plain features) for a plain spec."""
    return None if spec.plain else spec.views


def cross_validate_spec(X, y, folds: Folds, spec: FitSpec, n_jobs: int | None = -1) -> CVResult:
    """spec's pipeline (transforms refitted inside each fold) scored on every fold, folds in parallel with
    `n_jobs` joblib workers and the classifier itself on one core, so the two do not oversubscribe."""
    pipeline = dataclasses.replace(spec, n_jobs=1).pipeline() if n_jobs != 1 else spec.pipeline()
    return cross_validate(pipeline, X, y, folds, n_jobs=n_jobs)


def _by_metric(summary: dict) -> dict:
    names = dict.fromkeys(k.rpartition("_")[0] for k in summary)
    return {m: {"mean": summary[f"{m}_mean"], "ci95": summary[f"{m}_ci95"]} for m in names}


def train_and_score(X, y, split, spec: FitSpec, *, class_names, eval_splits=EVAL_SPLITS, head_params=None) -> Scores:
    """Fit spec's pipeline on the rows whose split is "train" and score it on `eval_splits`; writes nothing.

    X : ndarray of shape (n_samples, n_features), or (n_images, V * n_features) with spec's V views side by
        side; y : int ndarray of shape (n_samples,) indexing class_names. Scores.n_features is one view's.
    split : ndarray of shape (n_samples,) naming each row's part: "train" rows are fitted, the rows of each
        name in eval_splits are scored, any other name is ignored. A cross-validation fold is a split array
        with "train" and "val" per row. "val" rows are also the dense head's validation data.
    head_params : passed to the classifier's fit (featx.classifiers.fit_pipeline), e.g. a shared gram.
    """
    train, val = split == "train", split == "val"
    if not train.any():
        raise FeatxError("no train rows to fit on; re-run `featx extract` with a --split that has a train part")
    pipeline = spec.pipeline()
    began = time.perf_counter()
    try:
        fit_pipeline(pipeline, X[train], y[train], X[val], y[val], **(head_params or {}))
    except InvalidParameterError as exc:  # a constraint scikit-learn checks only once it sees the data
        raise FeatxError(bad_param_message(exc, spec.classifier)) from None
    fit_seconds = time.perf_counter() - began
    began = time.perf_counter()
    predictions = {s: pipeline.predict(X[split == s]) for s in eval_splits if (split == s).any()}
    predict_seconds = time.perf_counter() - began
    metrics = {s: evaluate(y[split == s], p, class_names) for s, p in predictions.items()}
    return Scores(pipeline, metrics, int(train.sum()), X.shape[1] // len(spec.views), fit_seconds, predict_seconds)


def record_run(
    entry: CacheEntry | list[CacheEntry],
    spec: FitSpec,
    scores: Scores,
    *,
    selection: LayerSelection,
    log=print,
    plots: bool = True,
    keep_model: bool = True,
    cv: CVResult | None = None,
    evaluation: Evaluation | None = None,
    name_entry: bool = True,
) -> FitResult:
    """Save a scored fit as a run: <runs>/<run_id>/ (model, metrics, confusion CSV/PNG, history) and one row
    in the runs log, where <runs> is `entry.cache.runs_dir`.

    entry : the entry fitted on, or the entries whose features were combined (the log's cache_key,
    cache_entry and backbone then join theirs with "+"; the run goes to the first one's runs folder). The row's
    split_fingerprint records which rows the scores are on (the entries' split now, as `load` served it).
    selection : the layers the features came from (the log keeps its spec and names). plots : draw the confusion
    PNGs (the CSVs are always written). keep_model : save the fitted model (else the row's model_path and
    model_sha256 are empty, and predict refuses it). cv : the score the spec is selected by, as a CVResult: on
    K-fold folds, logged as the cv_* columns (mean and CI of every metric); on the one val split (folds labelled
    "val": tune's selection on val, whose refit has no val rows left), logged as the val_* scores. evaluation : how
    the run was judged (default: the fixed val split), logged whole with the spec and their spec_hash.
    What the row's columns mean is the same for every run: n_train and fit_seconds are the rows the saved model
    was fitted on and the seconds that fit took (tune's refit: train+val, the refit alone, not the search); val_*
    and test_* are that model's scores, except val_* of a run selected on val (above).
    The run folder is written under a temporary name and published with its log row, or not at all.
    name_entry : the logged line names the entry's data and backbone (False where the caller said them once
    above, as compare does).
    """
    entries, log = (entry if isinstance(entry, list) else [entry]), log or _silent
    metrics, layers = scores.metrics, selection.spec
    with stage_run(entries[0].cache) as staged:
        run_id, folder = staged.run_id, staged.folder
        _write_reports(folder, scores, f"{spec.classifier} on {layers}", plots)
        sha = save_model(scores.pipeline, folder / MODEL_FILE) if keep_model else ""
        row = log_run(
            staged,
            entries,
            spec,
            evaluation or Evaluation(),
            scores,
            selection=selection,
            cv=cv,
            model_path=f"{run_id}/{MODEL_FILE}" if keep_model else "",
            model_sha256=sha,
        )
    folder = staged.final
    text = " | ".join(f"{s} acc {m['accuracy']:.3f} f1 {m['f1_macro']:.3f}" for s, m in metrics.items())
    views = "" if spec.plain else f" with views {spec.views_label()}{' (tta)' if spec.tta else ''}"
    shown = {k: v for k, v in spec.params.items() if k != "backbone"}  # the tail's: the entry's, said below
    params = _json(shown).replace('"', "").replace(" ", "")  # {min_samples_leaf:1,n_estimators:300}: fits a terminal
    what = (
        f"{spec.classifier} (baseline: ignores the features)"
        if spec.classifier in BASELINES
        else f"{spec.classifier} {params}{views} on {layers} ({scores.n_features} features)"
    )
    source = f"; of {' + '.join(map(entry_label, entries))}" if name_entry else ""
    log(f"run {run_id}: {what}, fit {scores.fit_seconds:.1f}s\n  {text}{source} -> {folder}")
    return FitResult(run_id, folder, spec, scores, row)


def _write_reports(folder: Path, scores: Scores, title: str, plots: bool) -> None:
    metrics = scores.metrics
    # unsorted: each report lists the classes in label order (class index 0 first), as the confusion CSVs do
    write_json(
        folder / "metrics.json",
        {s: {k: v for k, v in m.items() if k != "confusion"} for s, m in metrics.items()},
        sort_keys=False,
    )
    for split, m in metrics.items():
        m["confusion"].to_csv(folder / f"confusion_{split}.csv")
        if plots:
            plot_confusion(
                m["confusion"], folder / f"confusion_{split}.png", f"{title} ({split}, accuracy {m['accuracy']:.3f})"
            )
    history = getattr(final_classifier(scores.pipeline), "history_", None)
    if history is not None:
        history.to_csv(folder / "history.csv", index=False)
        plot_learning_curves(history, folder / "learning_curves.png")
    from featx.reports.kept_layers import write_kept_layers

    write_kept_layers(scores.pipeline, folder)  # --select: kept features per layer, CSV and bar plot


def _silent(*_) -> None:
    """log=None: say nothing."""


def _json(params: dict) -> str:
    return json.dumps(params, sort_keys=True, default=str)


@dataclass
class RunFiles:
    """What a run folder holds besides its model (written by _write_reports), for reports to show."""

    folder: Path
    confusion: dict  # {split: DataFrame of shape (n_classes, n_classes)}, rows true, columns predicted
    confusion_png: dict  # {split: Path}, only the PNGs that were drawn (compare draws none without --plots)
    history: object  # DataFrame of the dense head's epochs (epoch, loss, accuracy, val_loss, val_accuracy), or None
    learning_png: Path | None


def run_files(runs_dir: Path, run_id: str) -> RunFiles:
    """The confusion matrices, learning curves and their PNGs in <runs_dir>/<run_id>/ (missing parts are empty)."""
    import pandas as pd

    folder = Path(runs_dir) / run_id
    confusion = {
        s: pd.read_csv(folder / f"confusion_{s}.csv", index_col=0)
        for s in EVAL_SPLITS
        if (folder / f"confusion_{s}.csv").is_file()
    }
    pngs = {s: folder / f"confusion_{s}.png" for s in EVAL_SPLITS if (folder / f"confusion_{s}.png").is_file()}
    history = pd.read_csv(folder / "history.csv") if (folder / "history.csv").is_file() else None
    learning = folder / "learning_curves.png"
    return RunFiles(folder, confusion, pngs, history, learning if learning.is_file() else None)


_TRANSFORM_FLAGS = (  # transforms_label() part -> the fit flags that make it again
    (re.compile(r"^standardize$"), lambda m: ["--standardize"]),
    (re.compile(r"^fne\(([^,]+),([^)]+)\)$"), lambda m: ["--discretize", "fne", "--fne-low", m[1], "--fne-high", m[2]]),
    (re.compile(r"^kbins\((\d+)\)$"), lambda m: ["--discretize", "kbins", "--kbins", m[1]]),
    (re.compile(r"^pca\(([^)]+)\)$"), lambda m: ["--pca", m[1]]),
    (re.compile(r"^layernorm$"), lambda m: ["--normalize", "layer"]),
    (
        re.compile(r"^group-lasso\(([^,]+),([^)]+)\)$"),
        lambda m: ["--select", f"group-lasso:{m[1]}", "--select-penalty", m[2]],
    ),
)


def fit_command(row) -> str:
    """The `featx fit` command line that fits a logged run again (row: a runs-log row), from its entry, layers,
    classifier, params, transforms (the reader of transforms_label), views and seed."""
    import shlex

    words = [
        "featx",
        "fit",
        *str(row["cache_entry"]).split("+")[:1],
        *(f"--cache={e}" for e in str(row["cache_entry"]).split("+")[1:]),
        "--layers",
        str(row["layers"]),
        "--clf",
        str(row["classifier"]),
    ]
    from featx.values import parse_value

    for key, value in json.loads(row["params"] or "{}").items():
        text = str(value) if not isinstance(value, str) or parse_value(value) == value else repr(value)
        words += ["--param", f"{key}={text}"]
    label = str(row.get("transforms") or "none")
    for part in [] if label == "none" else label.split("+"):
        words += next((flags(m) for pattern, flags in _TRANSFORM_FLAGS if (m := pattern.match(part))), [f"#{part}"])
    views = str(row.get("views") or IDENTITY).split(",")
    if views != [IDENTITY]:
        words += ["--views", ",".join(views[1:])] + (["--tta"] if int(row.get("tta") or 0) else [])
    words += ["--seed", str(int(row["seed"]))]
    return shlex.join(words)

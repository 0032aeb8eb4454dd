"""fit: one classifier Pipeline on one layer subset of a cache entry, scored on val and test, logged as a run.

Works from the cache alone: no backbone is built, and TensorFlow is imported only for the dense head.
"""

from __future__ import annotations

import inspect
import json
import time
from dataclasses import dataclass
from pathlib import Path

from sklearn.pipeline import Pipeline

from featx.cache.atomic import write_json
from featx.cache.store import CacheEntry, open_entry
from featx.classifiers import make_pipeline
from featx.errors import FeatxError
from featx.experiments.runs import MODEL_FILE, append_run, prepare_log, save_model, stage_run
from featx.features.load import load
from featx.features.transforms import build_feature_pipeline
from featx.reports import evaluate, plot_confusion, plot_learning_curves

EVAL_SPLITS = ("val", "test")
TRANSFORM_KEYS = tuple(k for k in inspect.signature(build_feature_pipeline).parameters if k != "seed")


@dataclass
class FitResult:
    run_id: str
    folder: Path
    pipeline: Pipeline
    metrics: dict  # {"val": evaluate(...), "test": evaluate(...)} for the splits that have rows
    row: dict  # the row logged in the runs log


def fit(cache=None, layers=None, clf: str = "rf", params: dict | None = None, seed: int = 0, n_jobs: int | None = -1,
        cache_dir=None, log=print, runs_dir=None, **transforms) -> FitResult:
    """Fit `clf` on the train split of `layers`, evaluate on val and test, save the model and log the run.

    layers : names and groups (all, blocks, fc), concatenated in the backbone's depth order whatever order
        they are named in; None = every cached layer.
    params : classifier parameters (any of the sklearn estimator's, e.g. {"min_samples_leaf": 2}).
    n_jobs : the classifier's parallelism (where it has one); seed : its random_state and the transforms'.
    transforms : keywords of featx.features.transforms.build_feature_pipeline: standardize, discretize
        ("fne" | "kbins"), pca, kbins, fne_low, fne_high. Fitted on the train split only, saved with the model.
    runs_dir : folder for the run and the log (default <cache_dir>/runs), e.g. for a read-only cache.
    """
    check_transforms(transforms)
    entry = open_entry(cache, cache_dir)
    prepare_log(entry.path.parent, runs_dir)  # an unwritable folder or a broken log fails before training
    X, y, meta = load(entry, layers)
    return fit_features(entry, X, y, meta["split"].to_numpy(), _spec(layers, meta.attrs["layers"]),
                        meta.attrs["layers"], clf, params, transforms, seed, n_jobs, log, runs_dir=runs_dir)


def check_transforms(transforms: dict) -> None:
    unknown = sorted(set(transforms) - set(TRANSFORM_KEYS))
    if unknown:
        raise FeatxError(f"unknown transform option(s) {', '.join(unknown)}; choose from {', '.join(TRANSFORM_KEYS)}")


def fit_features(entry: CacheEntry, X, y, split, layers: str, layer_names: list[str], clf: str, params, transforms: dict,
                 seed: int, n_jobs, log=print, plots: bool = True, runs_dir=None) -> FitResult:
    """The shared core of fit and compare, on features already in memory.

    X : ndarray of shape (n_samples, n_features); y, split : ndarrays of shape (n_samples,).
    plots : draw the confusion PNGs (the CSVs are always written). runs_dir : as in fit.
    The run folder is written under a temporary name and published with its log row, or not at all.
    """
    pipeline = make_pipeline(clf, params, build_feature_pipeline(seed=seed, **transforms), seed, n_jobs)
    train = split == "train"
    if not train.any():
        raise FeatxError(f"cache {entry.name} has no train rows; re-run `featx extract` with a --split that has a train part")
    began = time.perf_counter()
    _train(pipeline, X[train], y[train], X[split == "val"], y[split == "val"])
    fit_seconds = time.perf_counter() - began
    began = time.perf_counter()
    predictions = {s: pipeline.predict(X[split == s]) for s in EVAL_SPLITS if (split == s).any()}
    predict_seconds = time.perf_counter() - began
    metrics = {s: evaluate(y[split == s], p, entry.class_names) for s, p in predictions.items()}

    cache_dir = entry.path.parent
    with stage_run(cache_dir, runs_dir) as staged:
        run_id, folder = staged.run_id, staged.folder
        _write_reports(folder, pipeline, metrics, f"{clf} on {layers}", plots)
        sha = save_model(pipeline, folder / MODEL_FILE)
        estimator = pipeline[-1]
        row = {
            "run_id": run_id, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"), "cache_key": entry.key,
            "cache_entry": entry.name, "backbone": entry.settings["backbone"], "layers": layers,
            "layer_names": ",".join(layer_names), "n_features": X.shape[1], "classifier": clf,
            "params": _json(params or {}), "all_params": _json(estimator.get_params()),
            "transforms": describe_transforms(transforms), "seed": seed, "n_train": int(train.sum()),
            **{f"{s}_{m}": round(metrics[s][m], 4) if s in metrics else None
               for s in EVAL_SPLITS for m in ("accuracy", "f1_weighted", "f1_macro")},
            "fit_seconds": round(fit_seconds, 3), "predict_seconds": round(predict_seconds, 3),
            "model_path": f"{run_id}/{MODEL_FILE}", "model_sha256": sha,
        }
        append_run(cache_dir, row, staged=staged, runs_dir=runs_dir)
    folder = staged.final
    scores = " | ".join(f"{s} acc {m['accuracy']:.3f} f1 {m['f1_macro']:.3f}" for s, m in metrics.items())
    log(f"run {run_id}: {clf} {row['params']} on {layers} ({X.shape[1]} features): {scores} "
        f"(fit {fit_seconds:.1f}s) -> {folder}")
    return FitResult(run_id, folder, pipeline, metrics, row)


def describe_transforms(transforms: dict) -> str:
    """A short label, e.g. 'standardize+fne(-0.25,0.15)+pca(50)'; 'none' when there are none."""
    steps = build_feature_pipeline(**transforms)
    labels = {"fne": lambda s: f"fne({s.low},{s.high})", "kbins": lambda s: f"kbins({s.n_bins})",
              "pca": lambda s: f"pca({s.n_components})"}
    return "+".join(labels.get(name, lambda s: name)(step) for name, step in steps) or "none"


def _train(pipeline: Pipeline, X_train, y_train, X_val, y_val) -> None:
    """Pipeline.fit, except that the dense head gets the cache's val split (mapped by the train-fitted
    transforms) as validation data; it is dropped afterwards so the saved model holds no data."""
    head = pipeline[-1]
    if "validation_data" not in head.get_params() or not len(y_val):
        pipeline.fit(X_train, y_train)
        return
    for _, step in pipeline.steps[:-1]:
        X_train, X_val = step.fit_transform(X_train, y_train), step.transform(X_val)
    head.set_params(validation_data=(X_val, y_val)).fit(X_train, y_train)
    head.set_params(validation_data=None)


def _write_reports(folder: Path, pipeline: Pipeline, metrics: dict, title: str, plots: bool) -> None:
    write_json(folder / "metrics.json", {s: {k: v for k, v in m.items() if k != "confusion"} for s, m in metrics.items()})
    for split, m in metrics.items():
        m["confusion"].to_csv(folder / f"confusion_{split}.csv")
        if plots:
            plot_confusion(m["confusion"], folder / f"confusion_{split}.png", f"{title} ({split}, accuracy {m['accuracy']:.3f})")
    history = getattr(pipeline[-1], "history_", None)
    if history is not None:
        history.to_csv(folder / "history.csv", index=False)
        plot_learning_curves(history, folder / "learning_curves.png")


def _spec(layers, names: list[str]) -> str:
    if layers is None:
        return ",".join(names)
    return layers if isinstance(layers, str) else ",".join(layers)


def _json(params: dict) -> str:
    return json.dumps({k: v for k, v in params.items() if k != "validation_data"}, sort_keys=True, default=str)

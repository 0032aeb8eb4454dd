"""predict: new images -> the run's backbone and layers -> the run's saved Pipeline -> labels and probabilities.

Features are computed exactly as the cache computed them: the backbone rebuilt from the run's cache entry
(refused if its weights changed), the same layers in the same depth order, the same pool and dtype.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from featx.backbones.layers import LayerSelection, infos_from_metadata, layer_selection
from featx.cache.atomic import atomic_path
from featx.cache.store import Cache, CacheEntry
from featx.classifiers.views import ViewEnsemble, final_classifier
from featx.compute import Compute
from featx.errors import FeatxError, RunFailed
from featx.progress import silent
from featx.runs.folders import run_folder, writable_folder
from featx.runs.models import load_model
from featx.runs.store import logged_selection
from featx.sources.views import IDENTITY
from featx.terminal import fit_table


def predict(
    run_id: str,
    paths,
    *,
    tta: bool | None = None,
    output=None,
    cache=None,
    compute: Compute | None = None,
    log=print,
) -> pd.DataFrame:
    """Classify image files (folders are searched recursively) with the model of run `run_id` (or a unique prefix)
    of `cache` (a Cache, its runs_dir included, or a cache folder; None: the default one).

    Returns a DataFrame with columns path, label (class name), error (why a file could not be decoded,
    else empty) and p_<class> per class where the classifier gives probabilities; also saved as CSV to
    `output` (default <runs>/<run_id>/predictions-<time>.csv in the cache's runs folder).
    Images are decoded in parallel a few batches ahead of the backbone, never all held in memory.
    tta : average the model's predictions over the augmented views it was fitted on (computed here, as extract
        computes them; compute.batch_size then counts model inputs, images x views, as extract counts them); False: the
        identity view decides; None: as the model was fitted and scored (TTA for a run fitted with --tta). A run
        fitted without views has none to average.
    """
    from featx import runtime
    from featx.backbones import backbone_from_entry
    from featx.extractor import LayerExtractor

    cache, compute, log = Cache.resolve(cache), compute or Compute(), log or silent
    batch_size = compute.batch_size
    pipeline, run = load_model(run_id, cache)
    pipeline, views = with_tta(pipeline, run, tta)
    if "+" in run["cache_entry"]:
        raise FeatxError(
            f"run {run['run_id']} was fitted on several cache entries ({run['cache_entry']}); predict "
            "takes runs fitted on one entry"
        )
    entry = cache.open(run["cache_entry"])
    if entry.key != run["cache_key"]:
        raise FeatxError(f"cache entry {entry.name} no longer has the key run {run['run_id']} was fitted on; fit again")
    selection = run_layers(entry, run)
    files = _image_files([paths] if isinstance(paths, (str, Path)) else paths)
    if output is None:  # inside the run's own folder, checked to be one (never a path a log row points elsewhere)
        output = run_folder(cache.runs_dir, run["run_id"]) / f"predictions-{time.strftime('%Y%m%d-%H%M%S')}.csv"
    output = Path(output)
    writable_folder(output.parent, "predictions", "pass --output naming a file in a writable folder")
    runtime.configure_tensorflow()
    with runtime.compute_dtype(entry.settings.get("mixed_precision", False)):  # as the cached features were made
        backbone = backbone_from_entry(entry)
    extractor = LayerExtractor(backbone, list(selection.names), entry.settings["pool"], entry.settings["dtype"])
    features, errors = [], {}
    images = batch_size if views is None else max(1, batch_size // len(views))  # model inputs per pass, as extract
    for _, outputs, bad in extractor.batches([str(p) for p in files], 0, images, views=views):
        errors.update(bad)
        block = np.concatenate([outputs[n] for n in selection.names], axis=-1)  # (b, d), or (b, V, d) with views
        features.append(block.reshape(len(block), -1))  # views side by side, as the model was fitted on
    table = pd.DataFrame(
        {"path": [str(p) for p in files], "label": "", "error": [errors.get(i, "") for i in range(len(files))]}
    )
    good = (table["error"] == "").to_numpy()
    if good.any():
        X, rows = np.concatenate(features)[good], table.index[good]
        names = np.asarray(entry.class_names, dtype=object)
        table.loc[rows, "label"] = names[pipeline.predict(X)]
        if hasattr(pipeline, "predict_proba"):  # columns follow the classes seen in training
            for name, column in zip(names[pipeline.classes_], pipeline.predict_proba(X).T):
                table.loc[rows, f"p_{name}"] = column.round(4)
    _save(table, output)
    log(fit_table(table, long=("path", "error")))
    log(f"saved {output}")
    return table


def with_tta(model, run, tta: bool | None):
    """(the model set to average over its views or to use the identity view, the views to compute or None).
    The views and tta are the run's logged FitSpec's; a run logged before featx kept specs has them on its model
    (a ViewEnsemble, or the tail, which holds its own views)."""
    from featx.selection.spec import logged_spec

    holder = model if isinstance(model, ViewEnsemble) else final_classifier(model)  # what averages over views
    logged = logged_spec(run, required=False)
    if logged is not None:
        views, fitted_tta = logged[0].views, logged[0].tta
    else:
        views = tuple(getattr(holder, "views", (IDENTITY,)))
        fitted_tta = bool(getattr(holder, "tta", False))
    if tta is None:  # as the run's val and test scores were computed
        tta = fitted_tta and len(views) > 1
    if tta and len(views) < 2:
        raise FeatxError(
            f"run {run['run_id']} was fitted without augmented views, so --tta has none to average; "
            "fit with --views SPEC (e.g. flip) to get a model that has, or drop --tta"
        )
    if len(views) < 2:
        return model, None
    holder.set_params(tta=tta)
    return model, views if tta else None


def run_layers(entry: CacheEntry, run) -> LayerSelection:
    """The run's logged layers, checked against its entry's backbone before that is built; in depth order, the
    order its features were concatenated in when it was fitted."""
    logged = logged_selection(run)
    selection = layer_selection(
        infos_from_metadata(entry.layer_info),
        list(logged.names),
        pool=entry.settings["pool"],
        model_name=entry.settings["backbone"],
    )
    return LayerSelection(logged.spec, selection.names)


def _save(table: pd.DataFrame, output: Path) -> None:
    try:
        with atomic_path(output) as tmp:
            table.to_csv(tmp, index=False)
    except OSError as exc:
        raise RunFailed(
            f"writing predictions to {output} failed ({exc.strerror or exc}); free disk space or pass "
            "--output naming a file in a writable folder"
        ) from None


def _image_files(paths) -> list[Path]:
    """Files as given, and every non-hidden file under a folder (bad ones are reported at decode)."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        elif path.is_file():
            files.append(path)
        else:
            raise FeatxError(f"'{path}' is not an image file or folder; pass existing paths to predict")
    if not files:
        raise FeatxError(f"no files found in {', '.join(map(str, paths))}; pass image files or folders of them")
    return files

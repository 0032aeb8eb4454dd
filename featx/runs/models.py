"""Model files: a run's fitted Pipeline saved with skops (the Keras model of the dense head, or of the tail: its
layers above the cut + head, beside it as head.keras),
their sha256 for the log, and the only code that loads them.

Models are never unpickled: pipelines load through skops with an explicit list of the types featx itself
produces (trusted_types), the dense head's Keras model in Keras safe mode; the sha256 in the log guards against
accidental changes, the loaders against malicious ones.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

from featx.cache.atomic import fsync_file
from featx.cache.store import Cache
from featx.classifiers.views import final_classifier, with_final_classifier
from featx.errors import FeatxError
from featx.runs.store import find_run

MODEL_FILE, HEAD_FILE = "model.skops", "head.keras"


def trusted_types() -> list[str]:
    """Every type featx puts in a saved pipeline beyond skops' defaults (scikit-learn estimators, numpy):
    featx's own transformers and head, and the fitted internals of the registry's classifiers."""
    from featx.features.head2toe import GroupLassoSelector, LayerNormalizer
    from featx.features.transforms import FNEDiscretizer, QuietKBinsDiscretizer

    own = [
        f"{t.__module__}.{t.__qualname__}"
        for t in (FNEDiscretizer, QuietKBinsDiscretizer, LayerNormalizer, GroupLassoSelector)
    ]
    metrics = [
        f"sklearn.metrics._dist_metrics.{m}Distance{bits}"
        for m in ("Euclidean", "SEuclidean", "Manhattan", "Chebyshev", "Minkowski", "Cosine")
        for bits in (32, 64)
    ]
    return [
        *own,
        "featx.classifiers.dense.DenseHeadClassifier",
        "featx.classifiers.tail.TailClassifier",
        "featx.classifiers.views.ViewEnsemble",
        "featx.classifiers.kernel.NystroemSVC",
        "featx.classifiers.linear.ExactLinearSVC",
        "featx.classifiers.svm.BlasSVC",
        "sklearn.tree._tree.Tree",
        "sklearn.neighbors._kd_tree.KDTree",
        "sklearn.neighbors._ball_tree.BallTree",
        *metrics,
    ]


def save_model(pipeline, path: Path) -> str:
    """Save the fitted Pipeline at `path` with skops (a Keras head's model beside it as head.keras), in a
    staged run folder (its rename publishes them); returns the sha256 of the model file(s) for the log."""
    import skops.io

    path = Path(path)
    head = final_classifier(pipeline)
    if hasattr(head, "save_keras_model"):  # a KerasModelFile (dense head, tail): its Keras model goes to head.keras
        head.save_keras_model(path.with_name(HEAD_FILE))
        fsync_file(path.with_name(HEAD_FILE))
        pipeline = with_final_classifier(pipeline, head.without_keras_model())  # the caller's keeps its head
    skops.io.dump(pipeline, path)
    fsync_file(path)
    return model_sha256(path)


def model_sha256(path: Path) -> str:
    """sha256 over the model file and, for the dense head, its head.keras (in that order)."""
    digest = hashlib.sha256()
    for part in (path, path.with_name(HEAD_FILE)):
        if part == path or part.exists():
            with open(part, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def load_model(run_id: str, cache=None):
    """(fitted Pipeline, log row) of a run; refuses a file outside the runs folder, whose sha256 changed, in
    the old pickle format, or holding any type outside trusted_types() (nothing in it is executed)."""
    row = find_run(run_id, cache)
    if not isinstance(row["model_path"], str) or not row["model_path"]:
        raise FeatxError(
            f"run {row['run_id']} has no saved model (compare keeps only its best row's model unless "
            "--save-models all); fit it again with `featx fit` to get one"
        )
    root = Cache.resolve(cache).runs_dir.resolve()
    path = (root / str(row["model_path"])).resolve()
    if path.suffix == ".joblib":
        raise FeatxError(
            f"run {row['run_id']} saved its model as a pickle ({path.name}), which featx no longer loads "
            "because unpickling can run code; fit it again (same layers, classifier and options) to get "
            "a safe model file"
        )
    if not path.is_relative_to(root) or not path.is_file():
        raise FeatxError(
            f"model of run {row['run_id']} ('{row['model_path']}') is not a file inside {root}; refusing to load it"
        )
    if model_sha256(path) != row["model_sha256"]:
        raise FeatxError(
            f"model file {path} does not match the sha256 recorded for run {row['run_id']} (modified or "
            "replaced); refusing to load it: fit the model again"
        )
    return _load_pipeline(path, row["run_id"]), row


def load_sklearn_pipeline(path: Path):
    """A skops file that must hold scikit-learn objects only (an exported model's pipeline.skops): loaded with skops'
    defaults and scikit-learn's own internals from trusted_types(), never a featx type; anything else is one line."""
    import skops.io

    try:
        return skops.io.load(path, trusted=[t for t in trusted_types() if t.startswith("sklearn.")])
    except Exception as exc:  # noqa: BLE001  skops raises many types for a file it refuses
        raise FeatxError(
            f"{path} is not a scikit-learn pipeline featx exported ({str(exc)[:200] or type(exc).__name__}); "
            "refusing to load it: export the run again"
        ) from None


def _load_pipeline(path: Path, run_id: str):
    import skops.io

    refuse = f"model file {path} of run {run_id} is not a skops model featx wrote"
    try:
        pipeline = skops.io.load(path, trusted=trusted_types())
    except skops.io.exceptions.UntrustedTypesFoundException as exc:
        raise FeatxError(
            f"{refuse}: it holds types featx never saves ({str(exc)[:200]}); refusing to load it: fit the model again"
        ) from None
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError) as exc:
        raise FeatxError(
            f"{refuse} ({str(exc)[:200] or type(exc).__name__}); refusing to load it: fit the model again"
        ) from None
    head = final_classifier(pipeline)
    if hasattr(head, "load_keras_model"):
        keras_file = path.with_name(HEAD_FILE)
        if not keras_file.is_file():
            raise FeatxError(
                f"Keras head {keras_file} of run {run_id} is missing (the dense head's model is saved "
                "beside model.skops); refusing the run: fit the model again"
            )
        if not zipfile.is_zipfile(keras_file):
            raise FeatxError(
                f"Keras head {keras_file} of run {run_id} is corrupt: not a Keras file (a .keras file "
                "is a zip archive); refusing it: fit the model again"
            )
        try:
            head.load_keras_model(keras_file)
        except (OSError, ValueError, TypeError) as exc:  # safe mode refuses code (Lambda layers, custom objects)
            raise FeatxError(
                f"Keras head {keras_file} of run {run_id} does not load in Keras safe mode "
                f"({str(exc).splitlines()[0][:200]}); refusing it: fit the model again"
            ) from None
    return pipeline

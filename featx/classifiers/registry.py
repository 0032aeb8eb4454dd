"""Downstream classifiers by name, so configs and the CLI can pick one with a string.

Each registry entry is an estimator class and featx's defaults for it; `make_classifier` then adds the seed
and parallelism where the estimator supports them, and the user's parameters, and checks every value against
the estimator's own parameter constraints before any data is read.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
from functools import cache
from numbers import Integral, Real

from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import InvalidParameterError, validate_parameter_constraints

from featx.classifiers.gram import KERNEL_MAX_BYTES, max_kernel_rows
from featx.classifiers.linear import ExactLinearSVC
from featx.classifiers.svm import BlasSVC
from featx.errors import FeatxError

CLASSIFIERS = {  # name -> (estimator class, or "module:Class" imported on first use; featx's defaults)
    "rf": (RandomForestClassifier, {"n_jobs": -1}),  # every core, unless the caller or the user sets n_jobs
    # SVC with its kernels by BLAS (libsvm on the precomputed kernel; solver="libsvm": SVC itself). No
    # probability=True: deprecated in sklearn 1.9 and a 5-fold CV per fit
    "svm": (BlasSVC, {"kernel": "rbf"}),
    "linear-svm": (ExactLinearSVC, {}),  # LinearSVC solved to its optimum (Newton), liblinear where that is too big
    "logreg": (LogisticRegression, {"max_iter": 2000}),
    # for many rows: an approximate RBF SVM linear in the rows, and a linear model trained by SGD epochs
    "nystroem-svm": ("featx.classifiers.kernel:NystroemSVC", {}),
    "sgd": (SGDClassifier, {"loss": "log_loss"}),  # log_loss: class probabilities for predict's CSV
    "knn": (KNeighborsClassifier, {}),
    "dense": ("featx.classifiers.dense:DenseHeadClassifier", {}),  # keras costs seconds to import
    # the backbone's own layers above a cached cut (featx extract --pool none), then a softmax head
    "tail": ("featx.classifiers.tail:TailClassifier", {}),
    # chance-level references, scored like any model: the most frequent train class; random labels in train shares
    "majority": (DummyClassifier, {"strategy": "most_frequent"}),
    "stratified": (DummyClassifier, {"strategy": "stratified"}),
}
BASELINES = ("majority", "stratified")
TAIL = "tail"  # the backbone's layers above a cut, trained on its cached maps

# n_jobs does nothing for LogisticRegression's default lbfgs solver; sklearn >= 1.8 warns if set.
IGNORES_N_JOBS = {"logreg"}

# featx's upper bounds on parameters whose scikit-learn constraint has none (or a C int's), where a typo or a
# file from a stranger would take every byte of memory or never end (a forest of 2**63 trees): name -> (the
# largest value, why). Checked with the estimator's own constraints (check_params), so at every FitSpec's
# creation, for every classifier having the parameter; a sequence (dense's hidden sizes) is checked item by item.
PARAM_BOUNDS = {
    "n_estimators": (
        10_000,
        "each tree stays in memory: 0.08 MB a tree on 2,000 rows of 4 classes, 0.8 GB at the bound",
    ),
    "max_leaf_nodes": (10_000_000, "the tree builder reserves two nodes per leaf up front"),
    "max_iter": (1_000_000, "libsvm and liblinear count iterations in a C int, and time grows with them"),
    "degree": (100, "libsvm takes a C int, and (gamma x.y + coef0) ** degree overflows float64 long before"),
    "cache_size": (65_536, "libsvm's kernel cache, in MB, is allocated as it fills"),
    "n_components": (100_000, "nystroem-svm holds a rows x n_components kernel map in memory"),
    "n_neighbors": (100_000, "knn holds a rows x n_neighbors distance matrix in memory"),
    "hidden": (16_384, "each hidden layer's kernel is inputs x width floats in memory"),
    "epochs": (10_000, "each epoch is a pass over every training row"),
    "warmup_epochs": (10_000, "each epoch is a pass over every training row"),
    "batch_size": (65_536, "a minibatch's activations are held in memory at once"),
    "n_jobs": (1_024, "each job is a thread or process with its own memory"),
}
MAX_SEQUENCE = 100  # items of one sequence-valued parameter (dense's hidden layers)

# the exact SVM's kernel is n^2 float64 values: beyond the rows whose kernel fits featx.classifiers.gram's budget it
# falls back to libsvm's own kernel loop (hours), and fit/compare/tune say so
LARGE_N = max_kernel_rows()
FASTER_CHOICE = {"svm": "nystroem-svm (an RBF kernel map + linear SVM, linear in the rows) or linear-svm"}


def large_n_note(name: str, n_train: int) -> str | None:
    """A one-line note when classifier `name` is slow at `n_train` training rows (views counted) and a faster one
    exists."""
    if name in FASTER_CHOICE and n_train > LARGE_N:
        return (
            f"note: --clf {name} on {n_train:,} training rows: its exact kernel ({8 * n_train**2 / 1e9:.1f} GB) "
            f"passes the {KERNEL_MAX_BYTES / 1e9:g} GB budget, so libsvm computes it entry by entry (quadratic in "
            f"rows, hours); --clf {FASTER_CHOICE[name]} is much faster there"
        )
    return None


def make_classifier(name, params=None, seed=0, n_jobs=None):
    """Build classifier `name` from CLASSIFIERS, with its parameter values checked.

    name : a key of CLASSIFIERS.
    params : dict of estimator parameters, applied last (they override seed and n_jobs).
    seed : random_state, set where the estimator has one (None leaves its default).
    n_jobs : parallelism, set where the estimator has it (None leaves its default).
    """
    valid = classifier_params(name)
    params = params or {}
    for key in params:
        if key not in valid:
            raise FeatxError(
                f"unknown parameter {key!r} for classifier {name!r}.{_did_you_mean(key, valid)} "
                f"Valid parameters: {', '.join(sorted(valid))}."
            )
    check_n_jobs(n_jobs)
    cls, defaults = CLASSIFIERS[name]
    settings = dict(defaults)
    if "random_state" in valid and seed is not None:
        settings["random_state"] = seed
    if "n_jobs" in valid and n_jobs is not None and name not in IGNORES_N_JOBS:
        settings["n_jobs"] = n_jobs
    estimator = estimator_class(name)(**{**settings, **params})
    check_params(estimator, name)
    return estimator


def make_pipeline(clf_name, params=None, transforms_steps=(), seed=0, n_jobs=None):
    """Pipeline: `transforms_steps` (from build_feature_pipeline), then the classifier as "clf"."""
    return Pipeline([*transforms_steps, ("clf", make_classifier(clf_name, params, seed, n_jobs))])


@cache
def estimator_class(name):
    """The estimator class behind registry name `name` (imported on first use for the dense head)."""
    if name not in CLASSIFIERS:
        raise FeatxError(
            f"unknown classifier {name!r}.{_did_you_mean(name, CLASSIFIERS)} Choose one of: {', '.join(CLASSIFIERS)}."
        )
    cls = CLASSIFIERS[name][0]
    if isinstance(cls, str):
        module, _, attr = cls.partition(":")
        cls = getattr(importlib.import_module(module), attr)
    return cls


@cache
def classifier_params(name) -> frozenset:
    """Parameter names of classifier `name`, read from its class's signature (no estimator is built)."""
    parameters = inspect.signature(estimator_class(name)).parameters.values()
    return frozenset(p.name for p in parameters if p.kind is not p.VAR_KEYWORD)


def check_params(estimator, name) -> None:
    """Check parameter values against the estimator's `_parameter_constraints`, as its own fit would.

    scikit-learn 1.9 has no public pre-fit validator; this calls the function its `fit` calls, so a bad value
    fails before any data is loaded, with scikit-learn's wording (type and allowed range) in one line.
    """
    constraints = getattr(type(estimator), "_parameter_constraints", {})
    params = estimator.get_params(deep=False)
    try:
        validate_parameter_constraints(constraints, params, type(estimator).__name__)
    except InvalidParameterError as exc:
        raise FeatxError(bad_param_message(exc, name)) from None
    check_bounds(params, name)


def check_bounds(params: dict, name) -> None:
    """One line where a value of `params` lies beyond featx's bound on that parameter (PARAM_BOUNDS)."""
    for key, value in params.items():
        if key not in PARAM_BOUNDS:
            continue
        high, why = PARAM_BOUNDS[key]
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        if len(items) > MAX_SEQUENCE:
            raise FeatxError(
                f"{key} of classifier {name!r} has {len(items):,} items; featx takes at most {MAX_SEQUENCE}"
            )
        too_big = [v for v in items if _is_number(v) and abs(v) > high]
        if too_big:
            raise FeatxError(
                f"{key} = {too_big[0]} is beyond featx's bound for classifier {name!r}: at most {high:,} ({why}); "
                "pass a smaller value"
            )


def check_n_jobs(n_jobs) -> None:
    """n_jobs (the parallelism a spec asks for) is None or a whole number of jobs other than 0 within bounds."""
    high, why = PARAM_BOUNDS["n_jobs"]
    if n_jobs is None:
        return
    if not isinstance(n_jobs, Integral) or isinstance(n_jobs, bool) or n_jobs == 0 or abs(n_jobs) > high:
        raise FeatxError(
            f"n_jobs {n_jobs!r} is not a number of parallel jobs; give -1 (all cores), or 1 to {high:,} ({why})"
        )


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def bad_param_message(exc: InvalidParameterError, name) -> str:
    """scikit-learn's "The 'C' parameter of SVC must be ... Got -1 instead." as one featx error line."""
    text = re.sub(r"\.\s*Got (.*) instead\.?$", r", got \1", str(exc).strip())
    text = text[0].lower() + text[1:]
    return f"{text}; pass a value it allows for classifier {name!r} (--param KEY=VALUE)"


def _did_you_mean(word, choices):
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def fit_pipeline(pipeline: Pipeline, X, y, X_val=None, y_val=None, **head_params) -> Pipeline:
    """`pipeline.fit(X, y)`, passing validation data to a final step whose fit takes X_val/y_val, and `head_params`
    to the final step's fit (e.g. the exact SVM's gram: a featx.classifiers.gram.Gram shared by several fits).

    Pipeline cannot route X_val itself: it must go through the transforms fitted on X first (metadata routing
    would hand it to the head untransformed). So the transform steps are fitted here, in order, on X, and the
    head gets fit(Xt, y, X_val=Xt_val, y_val=y_val) -- scikit-learn's convention (cf. HistGradientBoosting).
    X, X_val : ndarrays of shape (n_samples, n_features) and (n_val, n_features); y, y_val : their labels.
    Without validation data, or for a head that takes none, this is plain `pipeline.fit(X, y)`. An estimator
    that is not a Pipeline (featx.classifiers.views.ViewEnsemble) gets X_val and y_val in its own fit.
    """
    head = pipeline[-1] if isinstance(pipeline, Pipeline) else pipeline
    if X_val is None or not len(X_val) or "X_val" not in inspect.signature(head.fit).parameters:
        if head is pipeline or not head_params:
            return pipeline.fit(X, y, **head_params)
        return pipeline.fit(X, y, **{f"{pipeline.steps[-1][0]}__{k}": v for k, v in head_params.items()})
    if head is pipeline:
        return pipeline.fit(X, y, X_val=X_val, y_val=y_val, **head_params)
    for _, step in pipeline.steps[:-1]:
        X, X_val = step.fit_transform(X, y), step.transform(X_val)
    head.fit(X, y, X_val=X_val, y_val=y_val, **head_params)
    return pipeline

"""Downstream classifiers by name, so configs and the CLI can pick one with a string.

Each registry entry builds the estimator with featx's defaults; `make_classifier` then adds
the seed and parallelism where the estimator supports them, and the user's parameters.
"""

from __future__ import annotations

import ast
import difflib
from functools import partial

from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC, LinearSVC

from featx.errors import FeatxError


def _dense_head():
    # Imported here: keras costs seconds to import, and only the dense head needs it.
    from featx.classifiers.dense import DenseHeadClassifier

    return DenseHeadClassifier()


CLASSIFIERS = {
    "rf": RandomForestClassifier,
    "svm": partial(SVC, kernel="rbf"),  # no probability=True: deprecated in sklearn 1.9 and a 5-fold CV per fit
    "linear-svm": LinearSVC,
    "logreg": partial(LogisticRegression, max_iter=2000),
    "knn": KNeighborsClassifier,
    "dense": _dense_head,
    # chance-level references, scored like any model: the most frequent train class; random labels in train shares
    "majority": partial(DummyClassifier, strategy="most_frequent"),
    "stratified": partial(DummyClassifier, strategy="stratified"),
}
BASELINES = ("majority", "stratified")

# n_jobs does nothing for LogisticRegression's default lbfgs solver; sklearn >= 1.8 warns if set.
IGNORES_N_JOBS = {"logreg"}


def make_classifier(name, params=None, seed=0, n_jobs=None):
    """Build classifier `name` from CLASSIFIERS.

    name : a key of CLASSIFIERS.
    params : dict of estimator parameters, applied last (they override seed and n_jobs).
    seed : random_state, set where the estimator has one (None leaves its default).
    n_jobs : parallelism, set where the estimator has it (None leaves its default).
    """
    if name not in CLASSIFIERS:
        raise FeatxError(
            f"unknown classifier {name!r}.{_did_you_mean(name, CLASSIFIERS)} "
            f"Choose one of: {', '.join(CLASSIFIERS)}."
        )
    estimator = CLASSIFIERS[name]()
    valid = estimator.get_params()
    if "random_state" in valid and seed is not None:
        estimator.set_params(random_state=seed)
    if "n_jobs" in valid and n_jobs is not None and name not in IGNORES_N_JOBS:
        estimator.set_params(n_jobs=n_jobs)
    params = params or {}
    for key in params:
        if key not in valid:
            raise FeatxError(
                f"unknown parameter {key!r} for classifier {name!r}.{_did_you_mean(key, valid)} "
                f"Valid parameters: {', '.join(sorted(valid))}."
            )
    return estimator.set_params(**params)


def make_pipeline(clf_name, params=None, transforms_steps=(), seed=0, n_jobs=None):
    """Pipeline: `transforms_steps` (from build_feature_pipeline), then the classifier as "clf"."""
    return Pipeline([*transforms_steps, ("clf", make_classifier(clf_name, params, seed, n_jobs))])


def parse_param_values(items):
    """Turn ["key=value", ...] (e.g. repeated --param options) into a dict.

    Values are Python literals where they parse as one (3, 0.5, None, True, (128, 64)),
    otherwise plain strings ("entropy").
    """
    params = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise FeatxError(f"bad parameter {item!r}: write it as key=value, e.g. max_depth=3.")
        if key in params:
            raise FeatxError(f"parameter {key!r} is given twice; keep one {key}=... .")
        params[key] = _literal(text.strip())
    return params


def _literal(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError):
        return text


def _did_you_mean(word, choices):
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""

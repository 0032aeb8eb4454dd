"""Portable forms of a fitted featx model (a Pipeline: feature transforms, then a classifier), for running it where
featx is not installed.

* `keras_form` applies the model to a Keras tensor of features as built-in Keras layers and keras.ops nodes: the
  steps that are affine or Lipschitz-continuous maps of the features (standardize, Head2Toe's layer normalization and selection,
  PCA, the linear classifiers, the dense head) have an exact Keras form, the same arithmetic in float32. Steps
  that compare features with thresholds (FNE and kbins discretization, trees) or hold rows (kernel SVMs, k-NN)
  raise NoKerasForm: there a feature within float32 rounding of a threshold may land on the other side, and the
  output would not be the same function to float32 tolerance.
* `plain_sklearn` rewrites the whole model with scikit-learn's own classes only (featx's transformers and
  classifiers as the scikit-learn objects that compute the same numbers), so a skops file of it loads with skops'
  default trusted types plus scikit-learn's internals, and no featx import.
* `output_kind`: what the model's scores are, "probabilities" (predict_proba) or "decision_scores"
  (decision_function, for classifiers without probabilities).

Nothing here imports Keras unless a Keras form or the dense head is asked for.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import KBinsDiscretizer, Normalizer, StandardScaler
from sklearn.svm import SVC, LinearSVC

from featx.errors import FeatxError

PROBABILITIES, DECISION_SCORES = "probabilities", "decision_scores"


class NoKerasForm(Exception):
    """Step `step` of a model has no exact Keras form; `reason` says why (for a one-line message)."""

    def __init__(self, step: str, reason: str):
        super().__init__(f"step {step}: {reason}")
        self.step, self.reason = step, reason


def steps_of(model) -> list[tuple[str, object]]:
    """(name, estimator) of a fitted Pipeline's steps, or [("clf", model)] for a bare classifier; passthrough
    steps left out."""
    steps = model.steps if isinstance(model, Pipeline) else [("clf", model)]
    return [(name, step) for name, step in steps if step not in (None, "passthrough")]


def output_kind(model) -> str:
    """PROBABILITIES where the fitted model has predict_proba, else DECISION_SCORES (decision_function)."""
    if hasattr(model, "predict_proba"):
        return PROBABILITIES
    if hasattr(model, "decision_function"):
        return DECISION_SCORES
    raise FeatxError(f"{type(model).__name__} gives neither probabilities nor decision scores; it cannot be exported")


def n_outputs(model) -> int:
    """Columns of the model's scores: one per class, except binary decision scores (one column, for classes_[1],
    as scikit-learn's decision_function gives them)."""
    classes = len(model.classes_)
    return 1 if classes == 2 and output_kind(model) == DECISION_SCORES else classes


# ---- Keras -------------------------------------------------------------------------------------------------


def keras_form_problem(model) -> NoKerasForm | None:
    """Why fitted `model` has no exact Keras form (the first such step), or None; imports no Keras."""
    steps = steps_of(model)
    for name, step in steps[:-1]:
        if _transform_kind(step) is None:
            what = "it maps features to bins by thresholds" if _discretizes(step) else f"{type(step).__name__} has none"
            return NoKerasForm(name, what)
    name, clf = steps[-1]
    if _head_kind(clf) is None:
        what = {
            "RandomForestClassifier": "a forest of trees (thresholds)",
            "SVC": "a kernel SVM (support vectors)",
            "BlasSVC": "a kernel SVM (support vectors)",
            "NystroemSVC": "a Nystroem kernel SVM",
            "KNeighborsClassifier": "k-nearest neighbours (stored rows)",
        }.get(type(clf).__name__, type(clf).__name__)
        return NoKerasForm(name, f"the classifier is {what}")
    return None


def keras_form(model, features):
    """(scores, kind): fitted `model` applied to the Keras tensor `features` (batch, n_features) as built-in layers.

    model : a fitted Pipeline (transforms, then a classifier) or a bare classifier, as featx fits them (a
        ViewEnsemble's estimator_: the caller averages over views). Each step becomes a nested functional model
        named as the step ("layernorm", "standardize", "select", "pca", "clf"), so `exported.get_layer("pca")`
        finds it; arrays the step learned are Dense weights (PCA, linear heads) or constants of its op nodes.
    Returns the float32 Keras tensor (batch, n_outputs(model)) of output_kind(model) scores, in the column order
    of model.classes_. Raises NoKerasForm for a step without an exact Keras form (keras_form_problem).
    """
    problem = keras_form_problem(model)
    if problem is not None:
        raise problem
    steps = steps_of(model)
    x = features
    for name, step in steps[:-1]:
        x = _named(name, x, _transform(step))
    name, clf = steps[-1]
    return _named(name, x, _head(name, clf)), output_kind(model)


def _named(name: str, x, build):
    """`build` (a function of a Keras tensor) applied to x as a functional model named `name`."""
    import keras

    inputs = keras.Input(tuple(x.shape[1:]), name=f"{name}_features")
    return keras.Model(inputs, build(inputs), name=name)(x)


def _float32(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


def _discretizes(step) -> bool:
    return isinstance(step, KBinsDiscretizer) or type(step).__name__ == "FNEDiscretizer"


def _transform_kind(step) -> str | None:
    """Which exact Keras form transformer `step` has (None: none)."""
    from featx.features.head2toe import GroupLassoSelector, LayerNormalizer

    if type(step) is StandardScaler:
        return "standardize"
    if isinstance(step, LayerNormalizer):
        return "layernorm"
    if isinstance(step, GroupLassoSelector):
        return "select"
    if type(step) is PCA:
        return "pca"
    return None


def _head_kind(clf) -> str | None:
    """Which exact Keras form classifier `clf` has (None: none)."""
    if type(clf).__name__ == "DenseHeadClassifier":
        return "dense"
    if isinstance(clf, (LogisticRegression, SGDClassifier, LinearSVC)):
        return "linear"
    return None


def _transform(step):
    """A function of a Keras tensor computing transformer `step` (one with a _transform_kind)."""
    from keras import ops

    kind = _transform_kind(step)
    if kind == "standardize":  # the same float32 arithmetic: (x - mean) / scale

        def standardize(x):
            if step.mean_ is not None:
                x = ops.subtract(x, _float32(step.mean_))
            return x if step.scale_ is None else ops.divide(x, _float32(step.scale_))

        return standardize
    if kind == "layernorm":
        return _layer_norm(_bounds(step.blocks))
    if kind == "select":
        kept = np.flatnonzero(step.support_).astype(np.int32)
        return lambda x: ops.take(x, kept, axis=1)
    # pca: (x - mean) @ components.T, then / sqrt(explained variance) when whitening
    kernel = step.components_.T.astype(np.float64)
    if step.whiten:
        kernel = kernel / np.sqrt(step.explained_variance_)
    return _dense(kernel, -(step.mean_.astype(np.float64) @ kernel), "pca_dense")


def _bounds(blocks) -> list[tuple[int, int]]:
    """(start, stop) of each [layer, width] block, in column order."""
    bounds, start = [], 0
    for _, width in blocks:
        bounds.append((start, start + int(width)))
        start += int(width)
    return bounds


def _layer_norm(bounds):
    """Head2Toe's per-block L2 normalization: each block divided by its norm, a zero block left at zero."""
    from keras import ops

    def normalize(x):
        parts = []
        for a, b in bounds:
            block = x[:, a:b]
            norm = ops.sqrt(ops.sum(ops.square(block), axis=1, keepdims=True))
            parts.append(ops.divide(block, ops.where(ops.equal(norm, 0.0), 1.0, norm)))
        return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=1)

    return normalize


def _dense(kernel: np.ndarray, bias: np.ndarray, name: str, activation=None):
    """x @ kernel + bias as a Keras Dense layer holding them as float32 weights."""
    import keras

    def apply(x):
        layer = keras.layers.Dense(kernel.shape[1], activation=activation, name=name)
        y = layer(x)
        layer.set_weights([_float32(kernel), _float32(bias)])
        return y

    return apply


def _head(name: str, clf):
    """A function of a Keras tensor giving classifier `clf`'s scores (output_kind); clf has a _head_kind."""
    from keras import ops

    if _head_kind(clf) == "dense":
        return clf.model_  # a functional model of built-in layers, softmax last
    coef = np.atleast_2d(clf.coef_)
    intercept = np.broadcast_to(np.asarray(clf.intercept_, dtype=np.float64), (coef.shape[0],))
    decision = _dense(coef.T, intercept, f"{name}_decision")
    if output_kind(clf) == DECISION_SCORES:
        return decision
    binary = len(clf.classes_) == 2
    if isinstance(clf, LogisticRegression) and not binary:
        return lambda x: ops.softmax(decision(x), axis=-1)
    if isinstance(clf, SGDClassifier) and clf.loss == "modified_huber":

        def positive(z):
            return (ops.clip(z, -1.0, 1.0) + 1.0) / 2.0

    else:  # logistic: binary LogisticRegression, SGD's log_loss (one-vs-rest)
        positive = ops.sigmoid

    def probabilities(x):
        p = positive(decision(x))
        if binary:
            return ops.concatenate([1.0 - p, p], axis=1)
        total = ops.sum(p, axis=1, keepdims=True)  # one-vs-rest, normalized; all zero -> uniform, as scikit-learn
        zero = ops.equal(total, 0.0)
        return ops.divide(ops.where(zero, 1.0, p), ops.where(zero, float(p.shape[1]), total))

    return probabilities


# ---- plain scikit-learn ------------------------------------------------------------------------------------


def plain_sklearn(model):
    """(pipeline, head): fitted `model` rewritten with scikit-learn's own classes, computing the same numbers.

    model : a fitted Pipeline or bare classifier as in keras_form.
    pipeline : a fitted sklearn Pipeline of scikit-learn objects only: featx's FNE discretizer as a StandardScaler
        (its float32 statistics), a KBinsDiscretizer (its thresholds as bin edges) and a shift; the kbins
        discretizer, the linear SVM and the exact SVM (BlasSVC) as their scikit-learn bases; the Nystroem SVM as
        Nystroem then LinearSVC;
        Head2Toe's layer normalization and selection as ColumnTransformers (Normalizer per layer block,
        passthrough of the kept columns). The FNE, kbins, selection and classifier steps give bit-identical
        outputs on float32 features; the layer normalization's Normalizer computes each norm in another order
        (float32 rounding) and leaves a block of norm below 10 * float32 epsilon unscaled (featx scales any
        non-zero block); the exact SVM's SVC computes its kernel entry by entry in libsvm where BlasSVC took
        BLAS products (float64 rounding of the squared distances).
    head : None, or the dense head's Keras model, which then follows the pipeline (a pipeline of transforms only).
    """
    steps = steps_of(model)
    head = None
    if type(steps[-1][1]).__name__ == "DenseHeadClassifier":
        head = steps[-1][1].model_
        steps = steps[:-1]
    plain = [(name, _plain(name, step)) for name, step in steps]
    return Pipeline(plain or [("identity", "passthrough")]), head


def _plain(name: str, step):
    from featx.classifiers.kernel import NystroemSVC
    from featx.classifiers.svm import BlasSVC
    from featx.features.head2toe import GroupLassoSelector, LayerNormalizer
    from featx.features.transforms import FNEDiscretizer

    if type(step).__module__.startswith("sklearn."):
        return step
    if isinstance(step, KBinsDiscretizer):  # featx's QuietKBinsDiscretizer: only fit differs
        return _as(KBinsDiscretizer, step)
    if isinstance(step, LinearSVC):  # featx's ExactLinearSVC: only fit differs
        plain = _as(LinearSVC, step)
        for attribute in ("solver", "solver_"):
            plain.__dict__.pop(attribute, None)
        return plain
    if isinstance(step, BlasSVC):  # featx's SVC: its fitted state is SVC's own attribute layout (libsvm predicts)
        plain = _as(SVC, step)
        for attribute in ("solver", "solver_", "_support_rows"):
            plain.__dict__.pop(attribute, None)
        return plain
    if isinstance(step, NystroemSVC):
        return Pipeline([("nystroem", step.nystroem_), ("svc", _plain("svc", step.svc_))])
    if isinstance(step, FNEDiscretizer):
        return _plain_fne(step)
    if isinstance(step, LayerNormalizer):
        parts = [(f"block{i}", Normalizer(), slice(a, b)) for i, (a, b) in enumerate(_bounds(step.blocks))]
        return _fitted(ColumnTransformer(parts, sparse_threshold=0), step.n_features_in_)
    if isinstance(step, GroupLassoSelector):
        kept = np.flatnonzero(step.support_)
        return _fitted(ColumnTransformer([("kept", "passthrough", kept)], sparse_threshold=0), step.n_features_in_)
    raise FeatxError(f"step {name} ({type(step).__name__}) has no plain scikit-learn form; it cannot be exported")


def _as(cls, step) -> BaseEstimator:
    """A `cls` holding `step`'s parameters and fitted attributes (step is an instance of a subclass of cls)."""
    plain = object.__new__(cls)
    plain.__dict__.update(step.__dict__)
    return plain


def _fitted(transformer, n_features: int):
    """A stateless ColumnTransformer fitted on one row of zeros: only its column layout is learned."""
    return transformer.fit(np.zeros((1, n_features), dtype=np.float32))


def _plain_fne(step) -> Pipeline:
    """FNE as scikit-learn: z = (x - mean) / scale with FNE's float32 statistics (float32 in, the same float32
    operations), bins [-inf, low), [low, high], (high, inf) as KBinsDiscretizer's ordinal codes 0, 1, 2 (edges:
    the smallest float32 values on the upper side of FNE's own comparisons), then the codes shifted by -1.
    Features constant in fit stay 0 (edges -inf and inf)."""
    d = step.n_features_in_
    z = StandardScaler()
    z.mean_, z.scale_ = step.mean_.astype(np.float32), step.scale_.astype(np.float32)
    z.var_, z.n_features_in_, z.n_samples_seen_ = z.scale_.astype(np.float64) ** 2, d, np.int64(1)
    low = _first_float32(step.low, lambda v: ~(v < step.low))
    high = _first_float32(step.high, lambda v: v > step.high)
    edges = np.array([-np.inf, low, high, np.inf])
    bins = KBinsDiscretizer(n_bins=3, encode="ordinal", strategy="uniform")
    bins.bin_edges_ = np.empty(d, dtype=object)
    for j in range(d):
        bins.bin_edges_[j] = np.array([-np.inf, -np.inf, np.inf, np.inf]) if step.constant_[j] else edges
    bins.n_bins_, bins.n_features_in_ = np.full(d, 3), d
    shift = StandardScaler(with_std=False)
    shift.mean_, shift.scale_, shift.var_ = np.ones(d, dtype=np.float32), None, None
    shift.n_features_in_, shift.n_samples_seen_ = d, np.int64(1)
    return Pipeline([("zscore", z), ("bins", bins), ("codes", shift)])


def _first_float32(threshold, holds) -> float:
    """The smallest float32 v for which `holds(float32 array [v])` is true, for a test that is false below some
    value and true from it on (FNE's comparisons, evaluated with its own expression on a float32 array, so the
    threshold's dtype promotion is the same); found next to float32(threshold)."""
    down, up = np.float32(-np.inf), np.float32(np.inf)
    v = np.float32(threshold)
    while holds(np.array([np.nextafter(v, down)], dtype=np.float32))[0]:
        v = np.nextafter(v, down)
    while not holds(np.array([v], dtype=np.float32))[0]:
        v = np.nextafter(v, up)
    return float(v)

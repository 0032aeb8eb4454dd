"""Head2Toe's feature steps (Evci et al., ICML 2022; google-research/head2toe): L2 normalization of each layer's
block of features per sample, and the group-lasso ranking that keeps a fraction of all features.

Both are scikit-learn transformers that learn (or check) everything in `fit`, so featx fits them on the train rows
of each split or CV fold only, like every transform. They need the layer layout of the columns, `blocks`: a list
of [layer name, width] in column order, which featx's fit, compare and tune set from the layers they load
(`bind_blocks`); with the Python API pass `blocks=layer_blocks(features.feature_slices)` in the transforms (features = featx.load(...)).
"""

from __future__ import annotations

import warnings
from numbers import Real

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_selection import SelectorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from featx.errors import FeatxError
from featx.features.options import GROUP_LASSO

NORMALIZERS = ("layer",)
DEFAULT_FRACTION = 0.1


def layer_blocks(slices: dict, names=None) -> list[list]:
    """[[layer, width], ...] of the columns `featx.load` returned (its Features.feature_slices: {layer: (start,
    stop)} of one view's columns), in column order; names : only these layers, in their column order (a compare
    row's subset)."""
    keep = slices if names is None else {n: slices[n] for n in names}
    return [[name, int(stop - start)] for name, (start, stop) in sorted(keep.items(), key=lambda item: item[1][0])]


def needs_blocks(transforms: dict) -> bool:
    return transforms.get("normalize") is not None or transforms.get("select") is not None


def bind_blocks(transforms: dict, slices: dict, names=None) -> dict:
    """transforms with `blocks` set from the loaded layers where a layer-aware step asks for them (a copy; as
    given otherwise, or where blocks are already set)."""
    if not needs_blocks(transforms) or transforms.get("blocks") is not None:
        return transforms
    return {**transforms, "blocks": layer_blocks(slices, names)}


def bind_spec(spec, slices: dict, names=None):
    """A FitSpec with bind_blocks applied to its transforms (the same spec when nothing changes)."""
    import dataclasses

    transforms = bind_blocks(spec.transforms, slices, names)
    return spec if transforms is spec.transforms else dataclasses.replace(spec, transforms=transforms)


def parse_select(select) -> float:
    """The fraction F of `group-lasso:F` (plain `group-lasso`: DEFAULT_FRACTION); anything else is one line."""
    text = str(select).strip()
    method, _, fraction = text.partition(":")
    if method == GROUP_LASSO:
        try:
            value = float(fraction) if fraction else DEFAULT_FRACTION
        except ValueError:
            value = None
        if value is not None and 0 < value <= 1:
            return value
    raise FeatxError(
        f"unknown --select {select!r}; use group-lasso:F with F the fraction of features kept, "
        "0 < F <= 1 (e.g. group-lasso:0.1)"
    )


def _check_blocks(blocks, n_features: int, what: str) -> list[tuple[str, int, int]]:
    """[(name, start, stop)] of blocks that cover exactly n_features columns; else one line."""
    if blocks is None:
        raise FeatxError(
            f"{what} needs the layer layout of the columns (blocks); featx's fit, compare and tune set it "
            "from the layers loaded; in Python pass transforms blocks=featx.features.head2toe."
            "layer_blocks(featx.load(...).feature_slices)"
        )
    out, start = [], 0
    for name, width in blocks:
        out.append((str(name), start, start + int(width)))
        start += int(width)
    if start != n_features:
        raise FeatxError(
            f"{what}: the layer blocks cover {start} columns but the features have {n_features}; "
            "bind the blocks of the layers actually loaded (featx.features.head2toe.layer_blocks)"
        )
    return out


class LayerNormalizer(TransformerMixin, BaseEstimator):
    """Each layer's block of features divided by its L2 norm, per sample (Head2Toe's "unit_vector"
    normalization, zero-aware as its reference code: a block of zeros stays zeros).

    Stateless: fit only checks the layout, so it is the same whether fitted on a fold or on all rows.

    Parameters
    ----------
    blocks : list of (layer name, width), in column order; the widths add up to n_features.

    Attributes
    ----------
    n_features_in_ : int
    """

    def __init__(self, blocks=None):
        self.blocks = blocks

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        tags.requires_fit = True
        return tags

    def fit(self, X, y=None):
        """X : ndarray of shape (n_samples, n_features); y : ignored."""
        X = validate_data(self, X, dtype=(np.float64, np.float32))
        _check_blocks(self.blocks, X.shape[1], "--normalize layer")
        return self

    def transform(self, X):
        """X : ndarray of shape (n_samples, n_features) -> the same shape, each block of each row of norm 1 (or 0)."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=(np.float64, np.float32), reset=False, copy=True)
        for _, start, stop in _check_blocks(self.blocks, X.shape[1], "--normalize layer"):
            norms = np.linalg.norm(X[:, start:stop], axis=1, keepdims=True)
            X[:, start:stop] /= np.where(norms == 0, 1, norms).astype(X.dtype)
        return X


class GroupLassoSelector(SelectorMixin, BaseEstimator):
    """Keep the fraction `fraction` of all features, ranked by a group-lasso linear model (Head2Toe's selection).

    One group per input feature: its weights across the classes. The model is scikit-learn's MultiTaskLasso on
    the one-hot class indicators, which minimizes ``1/(2n) ||Y - X W - b||_F^2 + alpha * sum_j ||W_j||_2``, the
    L2,1 (group-lasso) penalty with exactly that grouping, by coordinate descent with gap-safe screening and a
    duality-gap stop (a maintained solver, already a dependency; skglm has the same multitask model with working
    sets but adds numba). Head2Toe itself trains a softmax head with the same penalty by Adam; here the loss is
    squared, the grouping and the ranking are the same. Features are ranked by the squared norm of their weights,
    ties among the zero weights by how close each is to entering the model (||X_j^T R||, R the residual: the KKT
    quantity), and the top `fraction` of all features is kept, ranked globally, not per layer. The classifier
    after this step is then refitted on the kept features alone.

    Parameters
    ----------
    fraction : float in (0, 1], the share of features kept (at least 1).
    penalty : float > 0, alpha as a fraction of alpha_max = max_j ||X_j^T Y_c||_2 / n, the smallest alpha that
        zeroes every weight: so one value means the same sparsity whatever the features' scale. Smaller keeps more
        features in the model (and costs more iterations).
    blocks : list of (layer name, width) in column order, optional: names the kept features (layer:index) and
        counts them per layer (kept_per_layer); the ranking does not use it.
    max_iter, tol : MultiTaskLasso's.

    Attributes
    ----------
    scores_ : ndarray of shape (n_features,), squared L2 norm of each feature's weights across classes.
    ranking_ : ndarray of shape (n_features,), column indices best first.
    support_ : ndarray of shape (n_features,), bool, the kept columns.
    alpha_ : float, the alpha used. n_iter_ : int, the solver's iterations.
    n_features_in_ : int
    """

    def __init__(self, fraction=DEFAULT_FRACTION, penalty=0.1, blocks=None, max_iter=1000, tol=1e-4):
        self.fraction = fraction
        self.penalty = penalty
        self.blocks = blocks
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, X, y):
        """X : ndarray of shape (n_samples, n_features), the train rows only; y : (n_samples,) class labels."""
        from sklearn.linear_model import MultiTaskLasso

        if not isinstance(self.fraction, Real) or not 0 < self.fraction <= 1:
            raise FeatxError(f"group-lasso fraction must be in (0, 1], got {self.fraction!r}")
        if not isinstance(self.penalty, Real) or not self.penalty > 0:
            raise FeatxError(
                f"group-lasso penalty must be > 0 (a fraction of the smallest penalty that keeps no "
                f"feature), got {self.penalty!r}"
            )
        X, y = validate_data(self, X, y, dtype=(np.float64, np.float32))
        if self.blocks is not None:
            _check_blocks(self.blocks, X.shape[1], "--select group-lasso")
        classes, codes = np.unique(y, return_inverse=True)
        Y = np.eye(len(classes))[codes]
        Yc = Y - Y.mean(axis=0)
        correlation = np.linalg.norm(X.T @ Yc, axis=1) / len(X)  # ||X_j^T Yc|| (X^T Yc = Xc^T Yc)
        alpha_max = float(correlation.max()) if X.size else 0.0
        self.alpha_ = self.penalty * alpha_max
        if alpha_max == 0:  # constant features: nothing to rank by
            coef, closeness, self.n_iter_ = np.zeros((len(classes), X.shape[1])), correlation, 0
        else:
            model = MultiTaskLasso(alpha=self.alpha_, max_iter=self.max_iter, tol=self.tol)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*[Oo]bjective did not converge.*")
                model.fit(X, Y)
            coef, self.n_iter_ = model.coef_, int(model.n_iter_)
            residual = Y - model.predict(X)
            residual -= residual.mean(axis=0)
            closeness = np.linalg.norm(X.T @ residual, axis=1)
        self.scores_ = (coef**2).sum(axis=0)
        self.ranking_ = np.lexsort((np.arange(X.shape[1]), -closeness, -self.scores_))
        self.support_ = np.zeros(X.shape[1], dtype=bool)
        self.support_[self.ranking_[: max(1, int(round(self.fraction * X.shape[1])))]] = True
        return self

    def _get_support_mask(self):
        check_is_fitted(self)
        return self.support_

    def get_feature_names_out(self, input_features=None):
        """Names of the kept columns: layer:index (index within the layer's block) when blocks are given, else
        scikit-learn's (input_features or x0, x1, ...)."""
        if self.blocks is None or input_features is not None:
            return super().get_feature_names_out(input_features)
        check_is_fitted(self)
        names = [
            f"{name}:{i}"
            for name, start, stop in _check_blocks(self.blocks, self.n_features_in_, "names")
            for i in range(stop - start)
        ]
        return np.asarray(names, dtype=object)[self.support_]

    def kept_per_layer(self) -> dict[str, int]:
        """{layer: kept features}, every layer of blocks in column (depth) order, zeros included."""
        check_is_fitted(self)
        blocks = _check_blocks(self.blocks, self.n_features_in_, "kept_per_layer")
        return {name: int(self.support_[start:stop].sum()) for name, start, stop in blocks}


def head2toe_steps(*, normalize=None, select=None, select_penalty=0.1, blocks=None) -> tuple[list, list]:
    """(steps before standardize, steps after it) for build_feature_pipeline: the layer normalization comes first
    (it is per sample), the selection after standardize (it ranks the features as the classifier will see them)."""
    before, after = [], []
    if normalize is not None:
        if normalize not in NORMALIZERS:
            raise FeatxError(
                f"unknown --normalize {normalize!r}; choose one of {', '.join(NORMALIZERS)} (per layer "
                "block L2; --standardize is the per-feature one)"
            )
        before.append(("layernorm", LayerNormalizer(blocks=blocks)))
    if select is not None:
        after.append(
            ("select", GroupLassoSelector(fraction=parse_select(select), penalty=select_penalty, blocks=blocks))
        )
    return before, after


def selector_of(pipeline):
    """The fitted GroupLassoSelector of a featx pipeline (a ViewEnsemble's inner one), or None."""
    inner = getattr(pipeline, "estimator_", pipeline)
    steps = getattr(inner, "named_steps", {})
    step = steps.get("select") if hasattr(steps, "get") else None
    return step if isinstance(step, GroupLassoSelector) else None

"""Feature transforms that sit between cached activations and a classifier.

Every transform learns its statistics in `fit`, and featx only ever fits on the train
split, so validation and test features are mapped with train statistics (no leakage).
"""

from __future__ import annotations

import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.preprocessing import KBinsDiscretizer, StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data

from featx.errors import FeatxError
from featx.features.options import TRANSFORM_DEFAULTS

DISCRETIZERS = ("fne", "kbins")
MAX_BINS = 1_024  # kbins: every feature keeps its bin edges (55,816 features x 1,025 edges is 0.5 GB)
MAX_PCA = 100_000  # pca components: PCA holds components x features floats


class FNEDiscretizer(TransformerMixin, BaseEstimator):
    """Full-Network Embedding discretization (Garcia-Gasulla et al., 2018).

    Each feature is standardized with the mean and std seen in `fit`, then mapped to
    -1 (value < low), 1 (value > high) or 0. The asymmetric default thresholds come from
    the paper: they keep sparse ReLU activations mostly at 0 and let only features that are
    clearly above or below their usual level speak, which makes one embedding built from
    many layers comparable across layers.

    Parameters
    ----------
    low : float, default=-0.25
        Standardized values strictly below this become -1.
    high : float, default=0.15
        Standardized values strictly above this become 1. Must be greater than `low`.

    Attributes
    ----------
    mean_ : ndarray of shape (n_features,)
    scale_ : ndarray of shape (n_features,)
        Std of each feature; 1 where the std is 0.
    constant_ : ndarray of shape (n_features,), dtype bool
        Features with zero std in `fit`: they carry no information, so they always map to 0
        (a value outside the train range must not fire on a feature that never varied).
    n_features_in_ : int
    """

    def __init__(self, low=-0.25, high=0.15):
        self.low = low
        self.high = high

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]  # the output is always float32 {-1, 0, 1}
        return tags

    def fit(self, X, y=None):
        """Learn per-feature mean and std.

        X : ndarray of shape (n_samples, n_features), the train split only.
        y : ignored.
        """
        if not self.low < self.high:
            raise FeatxError(
                f"FNE thresholds need low < high, got low={self.low} high={self.high}; pass e.g. low=-0.25 high=0.15."
            )
        X = validate_data(self, X, dtype=(np.float32, np.float64))
        std = X.std(axis=0, dtype=np.float64)
        self.mean_ = X.mean(axis=0, dtype=np.float64)
        self.constant_ = std == 0
        self.scale_ = np.where(self.constant_, 1.0, std)
        return self

    def transform(self, X):
        """Map X to {-1, 0, 1} with the statistics learned in `fit`.

        X : ndarray of shape (n_samples, n_features).
        Returns ndarray of shape (n_samples, n_features), float32.
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=(np.float32, np.float64), reset=False)
        # Keep the input precision: full-network embeddings are wide, float64 would double memory.
        z = (X - self.mean_.astype(X.dtype)) / self.scale_.astype(X.dtype)
        z[:, self.constant_] = 0
        return (z > self.high).astype(np.float32) - (z < self.low).astype(np.float32)


def build_feature_pipeline(*, seed=0, **transforms):
    """Steps to put in front of a classifier, in order normalize -> standardize -> select -> discretize -> PCA.

    The keywords (but seed) are featx.features.options.TRANSFORM_OPTIONS, the one declaration of their names and
    defaults that the CLI, the spec builders and pipeline files read; another keyword is an error.

    standardize : bool, add a StandardScaler.
    discretize : None, "fne" (FNEDiscretizer) or "kbins" (per-feature quantile bins,
        ordinal codes).
    pca : None, an int number of components, or a float in (0, 1) = variance to keep.
    kbins : number of bins for discretize="kbins".
    fne_low, fne_high : FNE thresholds.
    normalize : None or "layer" (featx.features.head2toe.LayerNormalizer: L2 per layer block per sample).
    select : None or "group-lasso:F" (featx.features.head2toe.GroupLassoSelector keeping the fraction F), with
        select_penalty its penalty (a fraction of the smallest penalty that keeps no feature).
    blocks : [[layer, width], ...] of the columns, for normalize and select (featx.features.head2toe.bind_blocks).
    seed : random_state of PCA (randomized SVD on wide features) and KBinsDiscretizer
        (subsampling), so runs repeat exactly.

    Returns a list of (name, estimator) pairs for sklearn.pipeline.Pipeline; empty when
    nothing is asked for.
    """
    from featx.features.head2toe import head2toe_steps

    unknown = sorted(set(transforms) - set(TRANSFORM_DEFAULTS))
    if unknown:
        raise FeatxError(
            f"unknown transform option(s) {', '.join(unknown)}; choose from {', '.join(TRANSFORM_DEFAULTS)}"
        )
    values = {**TRANSFORM_DEFAULTS, **transforms}
    standardize, discretize, pca, kbins = (values[k] for k in ("standardize", "discretize", "pca", "kbins"))
    fne_low, fne_high, normalize, select = (values[k] for k in ("fne_low", "fne_high", "normalize", "select"))
    select_penalty, blocks = values["select_penalty"], values["blocks"]
    steps = []
    if not isinstance(standardize, bool):
        raise FeatxError(f"standardize must be true or false, got {standardize!r}.")
    for name, value in (("fne_low", fne_low), ("fne_high", fne_high)):
        if not isinstance(value, Real) or isinstance(value, bool):
            raise FeatxError(f"{name} must be a number, got {value!r}.")
    first, selection = head2toe_steps(normalize=normalize, select=select, select_penalty=select_penalty, blocks=blocks)
    steps += first
    if standardize:
        steps.append(("standardize", StandardScaler()))
    steps += selection
    if discretize == "fne":
        steps.append(("fne", FNEDiscretizer(low=fne_low, high=fne_high)))
    elif discretize == "kbins":
        steps.append(("kbins", _kbins(kbins, seed)))
    elif discretize is not None:
        raise FeatxError(f"unknown discretize {discretize!r}; choose one of: {', '.join(DISCRETIZERS)} (or none).")
    if pca is not None:
        steps.append(("pca", PCA(n_components=_pca_components(pca), random_state=seed)))
    return steps


class QuietKBinsDiscretizer(KBinsDiscretizer):
    """KBinsDiscretizer without one warning per constant feature: dead ReLU units are normal in CNN features."""

    def fit(self, X, y=None, **params):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Bins whose width are too small")
            warnings.filterwarnings("ignore", message="Feature .* is constant")
            return super().fit(X, y, **params)


def _kbins(n_bins, seed):
    """Quantile KBinsDiscretizer, with the sklearn >= 1.7 quantile method where available
    (it silences the FutureWarning about the changing default)."""
    if not _is_int(n_bins) or not 2 <= n_bins <= MAX_BINS:
        raise FeatxError(f"kbins must be an integer from 2 to {MAX_BINS:,}, got {n_bins!r}.")
    discretizer = QuietKBinsDiscretizer(n_bins=n_bins, encode="ordinal", strategy="quantile", random_state=seed)
    if "quantile_method" in discretizer.get_params():
        discretizer.set_params(quantile_method="averaged_inverted_cdf")
    return discretizer


def _pca_components(pca):
    """Check `pca` here so a bad value fails before any data is loaded."""
    if _is_int(pca) and 1 <= pca <= MAX_PCA or isinstance(pca, Real) and not _is_int(pca) and 0 < pca < 1:
        return pca
    raise FeatxError(f"pca must be an int from 1 to {MAX_PCA:,} or a float in (0, 1), got {pca!r}.")


def _is_int(value):
    return isinstance(value, Integral) and not isinstance(value, bool)

"""Augmented views at the classifier: train on every view of the training images, predict from the identity
view or average over all views (test-time augmentation).

Features of V views of one image sit side by side in one row, view v in columns [v*d, (v+1)*d), so every
row is an image: splits and cross-validation folds of rows are splits of images, and no image's views ever
land on both sides of one. Only inside `fit` do the views become rows of their own.
"""

from __future__ import annotations

import copy
import inspect

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from featx.classifiers.registry import fit_pipeline
from featx.errors import FeatxError
from featx.sources.views import IDENTITY


def _inner_has(method: str):
    """available_if check: the wrapped (fitted, else unfitted) estimator has `method`."""

    def check(self):
        return hasattr(getattr(self, "estimator_", self.estimator), method)

    return check


class ViewEnsemble(ClassifierMixin, BaseEstimator):
    """Fit `estimator` on all augmented views of each training image; predict from the identity view, or
    with `tta` average the predictions over the image's views.

    Parameters
    ----------
    estimator : classifier or Pipeline (transforms + classifier), unfitted
        Cloned and fitted on one row per (image, view).
    views : tuple of str, default=("id",)
        The view names, identity ("id") first, in the order of their column blocks in X.
    tta : bool, default=False
        Test-time augmentation: average predict_proba over an image's views (decision_function where the
        estimator has no predict_proba; a majority vote of predict where it has neither). False predicts
        from the identity view only.

    Attributes
    ----------
    estimator_ : the fitted clone of `estimator`, on inputs of shape (n_rows, n_view_features_)
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int, V * n_view_features_
    n_view_features_ : int, the features of one view (d)
    """

    def __init__(self, estimator, *, views=(IDENTITY,), tta=False):
        self.estimator = estimator
        self.views = views
        self.tta = tta

    def fit(self, X, y, X_val=None, y_val=None):
        """Fit a clone of `estimator` on the V views of each image as V rows, each with the image's label.

        X : ndarray of shape (n_images, V * d), view v of image i in X[i, v*d:(v+1)*d].
        y : ndarray of shape (n_images,).
        X_val : ndarray of shape (n_val, V * d) or (n_val, d), or None; y_val : shape (n_val,).
            Validation data for an estimator whose final step takes it (the dense head): identity view
            only. Without it such a head gets a stratified hold-out of whole images, never of single views.
        """
        n_views = self._check_views()
        X, y = validate_data(self, X, y)
        check_classification_targets(y)
        if X.shape[1] % n_views:
            raise ValueError(f"X has {X.shape[1]} features, not a multiple of the {n_views} views {list(self.views)}")
        self.n_view_features_ = X.shape[1] // n_views
        self.estimator_ = fit_pipeline(
            clone(self.estimator), *training_rows(self.estimator, X, y, n_views, X_val, y_val)
        )
        self.classes_ = self.estimator_.classes_
        return self

    def predict(self, X):
        """X : ndarray of shape (n_images, V * d), or (n_images, d) without tta -> labels (n_images,)."""
        check_is_fitted(self)
        X = self._check_X(X)
        if not self.tta:
            return self.estimator_.predict(X)
        return tta_predict(self.estimator_, view_rows(X, len(self.views)), len(self.views))

    @available_if(_inner_has("predict_proba"))
    def predict_proba(self, X):
        """X as in predict -> ndarray (n_images, n_classes); with tta the mean over the image's views."""
        return self._per_image("predict_proba", X)

    @available_if(_inner_has("decision_function"))
    def decision_function(self, X):
        """X as in predict -> ndarray (n_images,) or (n_images, n_classes); with tta the mean over views."""
        return self._per_image("decision_function", X)

    def _per_image(self, method: str, X):
        """The fitted estimator's `method` on the identity view, or with tta its mean over each image's views."""
        X = self._check_X(X)
        if not self.tta:
            return getattr(self.estimator_, method)(X)
        return view_mean(self.estimator_, method, view_rows(X, len(self.views)), len(self.views))

    def _check_X(self, X) -> np.ndarray:
        """X with all views (tta) or the identity view's columns (no tta, from V*d or d columns)."""
        check_is_fitted(self)
        shape = getattr(X, "shape", ())
        if not self.tta and len(shape) == 2 and shape[1] == self.n_view_features_ != self.n_features_in_:
            return check_array(X)  # the identity view alone
        X = validate_data(self, X, reset=False)  # scikit-learn's ValueError for any other width
        return X if self.tta else X[:, : self.n_view_features_]

    def _check_views(self) -> int:
        views = tuple(self.views)
        if not views or views[0] != IDENTITY or len(set(views)) != len(views):
            raise ValueError(f"views must be distinct names with the identity view '{IDENTITY}' first, got {views}")
        return len(views)


def view_rows(X: np.ndarray, n_views: int) -> np.ndarray:
    """(n, V*d) -> (n*V, d): rows image by image, each image's views in order."""
    return X.reshape(len(X) * n_views, X.shape[1] // n_views)


def training_rows(estimator, X, y, n_views: int, X_val=None, y_val=None):
    """What `estimator` is fitted on for images X (n, V*d) with labels y (n,): rows X_rows (n*V, d) and
    y_rows (n*V,), and validation data (n_val, d) of the identity view, or None.

    An estimator whose final step takes validation data (the dense head) and gets none here is given a
    stratified hold-out of whole images: its own hold-out of rows would put views of one image on both sides.
    """
    if X_val is None and n_views > 1 and _takes_validation(estimator):
        X, X_val, y, y_val = _hold_out_images(X, y, estimator)
    if X_val is not None:
        X_val = np.asarray(X_val)
        X_val = X_val[:, : X.shape[1] // n_views] if X_val.ndim == 2 and X_val.shape[1] == X.shape[1] else X_val
    return view_rows(X, n_views), np.repeat(y, n_views), X_val, y_val


def view_mean(estimator, method: str, rows: np.ndarray, n_views: int) -> np.ndarray:
    """The mean over each image's views of `estimator.<method>` on view rows (n*V, d): (n, ...) per image."""
    out = np.asarray(getattr(estimator, method)(rows))
    return out.reshape(len(rows) // n_views, n_views, *out.shape[1:]).mean(axis=1)


def tta_predict(estimator, rows: np.ndarray, n_views: int) -> np.ndarray:
    """Labels of n images from a fitted estimator's outputs on their view rows (n*V, d): the class of the
    highest mean probability, else of the highest mean decision value, else the majority vote of predict
    (ties: the first class)."""
    classes = estimator.classes_
    if hasattr(estimator, "predict_proba"):
        return classes[np.argmax(view_mean(estimator, "predict_proba", rows, n_views), axis=1)]
    if hasattr(estimator, "decision_function"):
        scores = view_mean(estimator, "decision_function", rows, n_views)
        return classes[(scores > 0).astype(int) if scores.ndim == 1 else np.argmax(scores, axis=1)]
    votes = np.asarray(estimator.predict(rows)).reshape(len(rows) // n_views, n_views)
    return classes[np.argmax(np.stack([(votes == c).sum(axis=1) for c in classes], axis=1), axis=1)]


def _takes_validation(estimator) -> bool:
    head = estimator[-1] if isinstance(estimator, Pipeline) else estimator
    return "X_val" in inspect.signature(head.fit).parameters


def _hold_out_images(X, y, estimator):
    """A stratified 15% of the images (all their views) as validation data, as the dense head would hold out
    rows itself: a row split would put views of one image on both sides."""
    from featx.classifiers.dense import VALIDATION_FRACTION

    head = estimator[-1] if isinstance(estimator, Pipeline) else estimator
    try:
        return train_test_split(
            X, y, test_size=VALIDATION_FRACTION, stratify=y, random_state=getattr(head, "random_state", 0)
        )
    except ValueError as error:
        raise FeatxError(
            f"cannot hold out a stratified {VALIDATION_FRACTION:.0%} of the images for validation "
            f"({error}); pass X_val and y_val to fit or use more images per class"
        ) from None


def final_classifier(model):
    """The classifier at the end of a featx model: a Pipeline's last step, or that of a ViewEnsemble's
    (fitted, else unfitted) pipeline."""
    if isinstance(model, ViewEnsemble):
        return final_classifier(getattr(model, "estimator_", model.estimator))
    return model[-1] if isinstance(model, Pipeline) else model


def with_final_classifier(model, classifier):
    """A shallow copy of `model` whose final classifier is `classifier` (the caller's model is unchanged)."""
    if isinstance(model, ViewEnsemble):
        model = copy.copy(model)
        model.estimator_ = with_final_classifier(model.estimator_, classifier)
        return model
    if isinstance(model, Pipeline):
        model = copy.copy(model)
        model.steps = [*model.steps[:-1], (model.steps[-1][0], classifier)]
        return model
    return classifier

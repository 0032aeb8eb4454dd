"""An RBF-kernel SVM for many rows: a Nystroem kernel map, then a linear SVM on it.

Exact `SVC` costs O(n^2)..O(n^3) in the rows and keeps up to n support vectors; at 20,000 images it takes
minutes to hours. The Nystroem method (Williams & Seeger 2001; scikit-learn's kernel_approximation) maps each
row to its kernel values against `n_components` landmark rows, whitened so that inner products of the mapped
rows approximate the RBF kernel; a linear SVM on those `n_components` columns (LinearSVC's objective, solved
to its optimum by featx.classifiers.linear) is then linear in the rows.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.kernel_approximation import Nystroem
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from featx.classifiers.linear import ExactLinearSVC


class NystroemSVC(ClassifierMixin, BaseEstimator):
    """Approximate RBF-kernel SVM: `Nystroem(kernel="rbf")` then `LinearSVC`, one estimator with both's knobs.

    Parameters
    ----------
    n_components : int, default 1000
        Landmark rows of the kernel map (capped at the number of training rows): the mapped width, and the
        accuracy/cost knob (fit and predict cost O(n_samples * n_components * n_features)).
    gamma : float or "scale", default "scale"
        RBF width; "scale" is 1 / (n_features * X.var()) of the training rows, as SVC's default.
    C : float, default 1.0
        Inverse regularization of the linear SVM.
    class_weight : dict, "balanced" or None
    tol, max_iter : the linear SVM's stopping tolerance (liblinear only) and iteration cap.
    random_state : int or None
        Seeds the landmark choice.

    Attributes
    ----------
    nystroem_ : fitted Nystroem; components_ of shape (n_landmarks, n_features).
    svc_ : fitted ExactLinearSVC on the (n_samples, n_landmarks) mapped rows.
    gamma_ : float, the RBF width used. classes_ : ndarray of shape (n_classes,). n_iter_ : the linear SVM's iterations.
    """

    _parameter_constraints = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "gamma": [Interval(Real, 0, None, closed="neither"), StrOptions({"scale"})],
        "C": [Interval(Real, 0, None, closed="neither")],
        "class_weight": [dict, StrOptions({"balanced"}), None],
        "tol": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(
        self, *, n_components=1000, gamma="scale", C=1.0, class_weight=None, tol=1e-4, max_iter=1000, random_state=None
    ):
        self.n_components = n_components
        self.gamma = gamma
        self.C = C
        self.class_weight = class_weight
        self.tol = tol
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X, y):
        """X : array of shape (n_samples, n_features); y : array of shape (n_samples,)."""
        self._validate_params()
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        variance = float(X.var()) if X.size else 0.0
        self.gamma_ = (
            (1.0 / (X.shape[1] * variance) if variance > 0 else 1.0) if self.gamma == "scale" else float(self.gamma)
        )
        self.nystroem_ = Nystroem(
            kernel="rbf",
            gamma=self.gamma_,
            n_components=min(self.n_components, X.shape[0]),
            random_state=self.random_state,
        )
        mapped = self.nystroem_.fit_transform(X)
        self.svc_ = ExactLinearSVC(
            C=self.C,
            class_weight=self.class_weight,
            tol=self.tol,
            max_iter=self.max_iter,
            random_state=self.random_state,
        ).fit(mapped, y)
        self.classes_, self.n_iter_ = self.svc_.classes_, self.svc_.n_iter_
        return self

    def decision_function(self, X):
        """Array of shape (n_samples,) for two classes, else (n_samples, n_classes)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return self.svc_.decision_function(self.nystroem_.transform(X))

    def predict(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return self.svc_.predict(self.nystroem_.transform(X))

"""The fitted Keras model of featx's Keras estimators (the dense head, the tail) as files: one owner for how it is
saved beside the skops pipeline (featx.runs.models writes it as head.keras), loaded back in Keras safe mode,
and pickled as .keras bytes so joblib can pass whole Pipelines between processes."""

from __future__ import annotations

import os
import tempfile

import keras
from sklearn.utils.validation import check_is_fitted


class KerasModelFile:
    """Mixin for a scikit-learn estimator whose fitted Keras model is `model_` (and its training history, a
    DataFrame, `history_`): put it before the scikit-learn bases, e.g. `class Head(KerasModelFile, ClassifierMixin,
    BaseEstimator)`."""

    def save_keras_model(self, path):
        """Write the fitted Keras model as a .keras file (featx saves the rest of the estimator with skops)."""
        check_is_fitted(self)
        self.model_.save(path)

    def without_keras_model(self):
        """A copy holding everything but the Keras model and the training history (a DataFrame, which skops does not
        load; featx keeps it as history.csv): what skops saves."""
        head = object.__new__(type(self))
        head.__dict__.update({k: v for k, v in self.__dict__.items() if k not in ("model_", "history_")})
        return head

    def load_keras_model(self, path):
        """Put back the Keras model saved by save_keras_model, in Keras safe mode (no code in it runs)."""
        self.model_ = keras.saving.load_model(path, safe_mode=True, compile=False)
        return self

    def __getstate__(self):
        """Pickle the Keras model as .keras bytes: only recent Keras 3 releases pickle models by themselves; the
        public save/load API used here works on every Keras 3."""
        state = dict(super().__getstate__())  # a copy: it can be self.__dict__ itself
        if "model_" in state:
            state["model_"] = model_to_bytes(state["model_"])
        return state

    def __setstate__(self, state):
        if "model_" in state:
            state = {**state, "model_": model_from_bytes(state["model_"])}
        super().__setstate__(state)


def model_to_bytes(model) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        with open(path, "rb") as f:
            return f.read()


def model_from_bytes(data: bytes):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        with open(path, "wb") as f:
            f.write(data)
        return keras.saving.load_model(path, safe_mode=True)

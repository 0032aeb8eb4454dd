"""A small Keras MLP on cached features, usable anywhere a scikit-learn classifier is.

The usual transfer-learning head (dense layers + softmax on frozen CNN features) trains in
seconds once the features are cached; wrapping it in the scikit-learn API lets it share
pipelines, transforms and metrics with the classical classifiers. Saved models keep the Keras
model in a .keras file and the rest of the head with skops (save_keras_model / without_keras_model /
load_keras_model); pickling (joblib between processes) embeds the .keras bytes.
"""

from __future__ import annotations

from numbers import Integral, Real

import keras
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import train_test_split
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from featx.classifiers.keras_file import KerasModelFile
from featx.errors import FeatxError

VALIDATION_FRACTION = 0.15


class DenseHeadClassifier(KerasModelFile, ClassifierMixin, BaseEstimator):
    """Keras MLP head; keeps the weights of the epoch with the best validation accuracy.

    Parameters
    ----------
    hidden : tuple of int (or one int), default=(256,)
        Units of each hidden layer; () gives a softmax regression.
    activation : str, default="relu"
    dropout : float, default=0.0
        Dropout rate after each hidden layer (0 = none).
    batch_norm : bool, default=False
        BatchNormalization between each hidden Dense layer and its activation.
    l2 : float, default=0.0
        L2 penalty on every Dense kernel.
    optimizer : {"sgd", "adam"}, default="sgd"
    lr : float, default=0.01
    momentum : float, default=0.9
        SGD momentum (ignored by adam).
    epochs : int, default=100
    batch_size : int, default=32
    patience : int or None, default=None
        Stop after this many epochs without a new best validation accuracy; None trains
        all `epochs`. The best epoch's weights are restored either way.
    mixup : float, default=0.0
        MixUp alpha: each training minibatch is blended with a shuffled copy of itself, features and
        one-hot labels alike, by a weight drawn from Beta(alpha, alpha) per sample -- the augmentation
        frozen-feature heads lose when images become cached vectors. 0 = off. Training only.
    feature_noise : float, default=0.0
        Standard deviation of Gaussian noise added to the training features of every minibatch (after
        MixUp), in the units the head sees (standardized features if the pipeline standardizes).
        0 = off. Training only.
    random_state : int or None, default=0
        Seeds Keras (weights, shuffling, dropout), the augmentation draws and the held-out split.
    verbose : int, default=0
        Keras fit verbosity.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    model_ : keras.Model
        Maps float32 (n_samples, n_features_in_) to class probabilities (n_samples, n_classes).
    history_ : pandas.DataFrame
        One row per trained epoch: epoch (from 1), loss, accuracy, val_loss, val_accuracy. loss and
        accuracy are on the augmented minibatches (accuracy against each mixed row's dominant label).
    best_epoch_ : int
        Epoch (from 1) whose weights `model_` holds.
    """

    _parameter_constraints = {
        "hidden": [Interval(Integral, 0, None, closed="left"), "array-like"],
        "activation": [str],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "batch_norm": ["boolean"],
        "l2": [Interval(Real, 0, None, closed="left")],
        "optimizer": [StrOptions({"sgd", "adam"})],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "patience": [Interval(Integral, 1, None, closed="left"), None],
        "mixup": [Interval(Real, 0, None, closed="left")],
        "feature_noise": [Interval(Real, 0, None, closed="left")],
        "random_state": [Interval(Integral, 0, None, closed="left"), None],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        *,
        hidden=(256,),
        activation="relu",
        dropout=0.0,
        batch_norm=False,
        l2=0.0,
        optimizer="sgd",
        lr=0.01,
        momentum=0.9,
        epochs=100,
        batch_size=32,
        patience=None,
        mixup=0.0,
        feature_noise=0.0,
        random_state=0,
        verbose=0,
    ):
        self.hidden = hidden
        self.activation = activation
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.l2 = l2
        self.optimizer = optimizer
        self.lr = lr
        self.momentum = momentum
        self.epochs = epochs
        self.batch_size = batch_size
        self.patience = patience
        self.mixup = mixup
        self.feature_noise = feature_noise
        self.random_state = random_state
        self.verbose = verbose

    def fit(self, X, y, X_val=None, y_val=None):
        """Train the head, keeping the weights of the epoch with the best accuracy on (X_val, y_val).

        X : ndarray of shape (n_samples, n_features)
        y : ndarray of shape (n_samples,), any labels sklearn accepts.
        X_val : ndarray of shape (n_val, n_features) or None
            Validation features in this classifier's input space (inside a Pipeline with transforms,
            after them: featx.classifiers.fit_pipeline maps them). None holds out a stratified 15%
            of X instead.
        y_val : ndarray of shape (n_val,) or None, labels that occur in y.
        """
        self._validate_params()
        X, y = validate_data(self, X, y, dtype=np.float32)
        check_classification_targets(y)
        self.classes_, y_encoded = np.unique(y, return_inverse=True)
        X_train, X_val, y_train, y_val = self._split(X, y_encoded, X_val, y_val)

        # Every random draw is seeded here, at the op: initializers, dropout, and the per-epoch shuffle and
        # augmentation of a dataset built here. keras.utils.set_random_seed would reseed Python, NumPy and
        # TensorFlow for the whole process (tests/test_process_state.py).
        self.model_ = self._build(len(self.classes_))
        keep_best = _KeepBest(self.patience)
        batches, steps = self._batches(X_train, y_train)
        history = self.model_.fit(
            batches,
            steps_per_epoch=steps,
            validation_data=(X_val, self._one_hot(y_val)),
            epochs=self.epochs,
            shuffle=False,  # the batches come shuffled, from this estimator's own generator
            callbacks=[keep_best],
            verbose=self.verbose,
        )
        self.history_ = pd.DataFrame(history.history)[["loss", "accuracy", "val_loss", "val_accuracy"]]
        self.history_.insert(0, "epoch", np.arange(1, len(self.history_) + 1))
        self.best_epoch_ = keep_best.best_epoch
        return self

    def predict_proba(self, X):
        """X : ndarray of shape (n_samples, n_features) -> float32 (n_samples, n_classes)."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float32, reset=False)
        return self.model_.predict(X, batch_size=max(self.batch_size, 1024), verbose=0)

    def predict(self, X):
        """X : ndarray of shape (n_samples, n_features) -> labels of shape (n_samples,)."""
        probabilities = self.predict_proba(X)  # first: it checks that the head is fitted
        return self.classes_[np.argmax(probabilities, axis=1)]

    def _split(self, X, y_encoded, X_val, y_val):
        """Train/validation arrays, with validation labels encoded like the training ones."""
        if (X_val is None) != (y_val is None):
            raise FeatxError("pass both X_val and y_val to the dense head's fit, or neither.")
        if X_val is not None:
            y_val = np.asarray(y_val)
            unseen = np.setdiff1d(y_val, self.classes_)
            if unseen.size:
                raise FeatxError(
                    f"validation labels {unseen.tolist()} do not occur in training; "
                    "use a validation split whose classes all appear in train."
                )
            X_val = check_array(X_val, dtype=np.float32)
            return X, X_val, y_encoded, np.searchsorted(self.classes_, y_val)
        try:
            return train_test_split(
                X,
                y_encoded,
                test_size=VALIDATION_FRACTION,
                stratify=y_encoded,
                random_state=self.random_state,
            )
        except ValueError as error:
            raise FeatxError(
                f"cannot hold out a stratified {VALIDATION_FRACTION:.0%} validation split "
                f"({error}); pass X_val and y_val to fit or use more samples per class."
            ) from None

    def _one_hot(self, y_encoded):
        """float32 (n, n_classes) targets: the loss takes soft labels, which MixUp makes."""
        return np.eye(len(self.classes_), dtype=np.float32)[y_encoded]

    def _batches(self, X, y_encoded):
        """(dataset of minibatches, batches per epoch): the endless stream of `_minibatches`, as Keras reads it."""
        import tensorflow as tf

        targets = self._one_hot(y_encoded)
        signature = (tf.TensorSpec((None, X.shape[1]), tf.float32), tf.TensorSpec((None, targets.shape[1]), tf.float32))
        return (
            tf.data.Dataset.from_generator(lambda: self._minibatches(X, targets), output_signature=signature),
            -(-len(targets) // self.batch_size),
        )

    def _minibatches(self, X, targets):
        """Endless (features, targets) minibatches, float32, reshuffled every epoch and augmented per batch.

        Every draw comes from one NumPy generator seeded with random_state: a tf.data shuffle or random op
        would also depend on TensorFlow's global seed. Without augmentation the draws are the permutations
        alone, so plain fits stay what they were before MixUp and noise existed.
        X : float32 (n, n_features); targets : float32 (n, n_classes), one-hot.
        """
        rng, n, size = np.random.default_rng(self.random_state), len(targets), self.batch_size
        while True:
            order = rng.permutation(n)
            for start in range(0, n, size):
                rows = order[start : start + size]
                features, labels = X[rows], targets[rows]
                if self.mixup:
                    weight = rng.beta(self.mixup, self.mixup, size=(len(rows), 1)).astype(np.float32)
                    partner = rng.permutation(len(rows))
                    features = weight * features + (1 - weight) * features[partner]
                    labels = weight * labels + (1 - weight) * labels[partner]
                if self.feature_noise:
                    features = features + rng.normal(0.0, self.feature_noise, features.shape).astype(np.float32)
                yield features, labels

    def _initializer(self, layer: int):
        """Glorot-uniform kernels (Keras's default) seeded per layer from random_state."""
        seed = None if self.random_state is None else self.random_state + layer
        return keras.initializers.GlorotUniform(seed=seed)

    def _build(self, n_classes):
        """Compiled MLP: [Dense, (BatchNorm), activation, (Dropout)] per hidden layer, softmax."""
        regularizer = keras.regularizers.L2(self.l2) if self.l2 else None
        hidden = (self.hidden,) if isinstance(self.hidden, Integral) else tuple(self.hidden)
        inputs = keras.Input(shape=(self.n_features_in_,))
        x = inputs
        for layer, units in enumerate(hidden):
            x = keras.layers.Dense(units, kernel_initializer=self._initializer(layer), kernel_regularizer=regularizer)(
                x
            )
            if self.batch_norm:
                x = keras.layers.BatchNormalization()(x)
            x = keras.layers.Activation(self.activation)(x)
            if self.dropout:
                x = keras.layers.Dropout(self.dropout, seed=self.random_state)(x)
        outputs = keras.layers.Dense(
            n_classes,
            activation="softmax",
            kernel_initializer=self._initializer(len(hidden)),
            kernel_regularizer=regularizer,
        )(x)
        model = keras.Model(inputs, outputs)
        model.compile(
            optimizer=self._optimizer(),
            loss="categorical_crossentropy",
            metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        )
        return model

    def _optimizer(self):
        if self.optimizer == "sgd":
            return keras.optimizers.SGD(learning_rate=self.lr, momentum=self.momentum)
        if self.optimizer == "adam":
            return keras.optimizers.Adam(learning_rate=self.lr)
        raise FeatxError(f"unknown optimizer {self.optimizer!r} for the dense head; choose sgd or adam.")


class _KeepBest(keras.callbacks.Callback):
    """Remember the weights of the epoch with the highest val_accuracy (earliest on ties),
    optionally stop after `patience` epochs without improvement, and put the best weights
    back when training ends.

    Written out instead of EarlyStopping(restore_best_weights=True) because some Keras
    versions restore only when training actually stopped early.
    """

    def __init__(self, patience):
        super().__init__()
        self.patience = patience

    def on_train_begin(self, logs=None):
        self.best_accuracy = -np.inf
        self.best_epoch = 0
        self.best_weights = None

    def on_epoch_end(self, epoch, logs=None):
        if logs["val_accuracy"] > self.best_accuracy:
            self.best_accuracy = logs["val_accuracy"]
            self.best_epoch = epoch + 1
            self.best_weights = self.model.get_weights()
        elif self.patience is not None and epoch + 1 - self.best_epoch >= self.patience:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)

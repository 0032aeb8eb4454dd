"""The backbone's own top layers, trained on cached maps of a cut: fine-tuning without re-running the bottom.

With a cut layer's activation maps cached (`featx extract --layers CUT --pool none`; a cut is a layer every path
from the input to the final feature layer passes through, featx.backbones.cuts), the network above the cut (the
*tail*) computes from that map alone. `TailClassifier` rebuilds the backbone through the registry with the
entry's own weights (file hashes and weights id checked, as predict checks them), takes its layers from the cut
to the final feature layer as a Keras functional model, and adds global average pooling (over a vision
transformer's tokens: its CLS token, or the mean patch token where it has none), dropout and a dense
softmax. Training is the usual fine-tuning recipe: the head alone first (warm-up), then head and tail with a
smaller learning rate for the backbone layers, AdamW weight decay, label smoothing, optional MixUp, BatchNorm in
inference mode unless `train_bn`, early stopping on val accuracy with the best epoch's weights restored. One step
on cached maps updates the weights exactly as one step on the whole network fed the images with every layer
below the cut frozen (tests/test_classifiers_tail.py checks it on EfficientNet-Lite0).

X is an image's map, flattened as the cache stores it: (n_images, V * h*w*c) with V views side by side, an
ndarray or a featx.features.maps.CachedMaps that reads minibatches from HDF5 (maps of 10,000+ images never need
to fit in memory). Saved like the dense head: the Keras model (tail + head) as a .keras file beside the skops
file (save_keras_model / without_keras_model / load_keras_model), loaded in Keras safe mode.
"""

from __future__ import annotations

import functools
import json
import time
from numbers import Integral, Real

import keras
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import train_test_split
from sklearn.utils._param_validation import Interval
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted

from featx.classifiers.dense import VALIDATION_FRACTION
from featx.classifiers.keras_file import KerasModelFile
from featx.errors import FeatxError
from featx.sources.views import IDENTITY

SHUFFLE_BYTES = 64 * 2**20  # maps held at once while streaming: the shuffle window (whole train set if it fits)
NO_DECAY = r"gamma|beta|bias"  # BatchNorm scale/offset and biases are not weight-decayed


class TailClassifier(KerasModelFile, ClassifierMixin, BaseEstimator):
    """The layers of a backbone above a cut, plus pooling, dropout and a softmax, trained on the cut's cached maps.

    Parameters
    ----------
    cut : str
        The layer whose maps X holds; must be a cut of the backbone (`featx layers BACKBONE --cuts`).
    backbone : dict
        The backbone the maps came from, as featx.backbones.backbone_description(entry) gives it: name, weights,
        input_size, preprocess, file_hashes, weights_id. `featx fit --clf tail` fills it from the cache entry.
    backbone_lr : float, default=1e-4
        AdamW learning rate of the tail's (backbone) layers once they are unfrozen.
    head_lr : float, default=1e-3
        AdamW learning rate of the dense head, in both stages.
    warmup_epochs : int, default=3
        Epochs that train the head alone (the tail frozen) before the tail is unfrozen. They count in `epochs`.
    epochs : int, default=20
        Total epochs (warm-up included).
    patience : int or None, default=5
        After the warm-up, stop after this many epochs without a better val accuracy; None trains all `epochs`.
        The best epoch's weights are restored either way.
    weight_decay : float, default=1e-4
        AdamW decoupled weight decay of kernels (not of biases or BatchNorm scale/offset).
    dropout : float, default=0.3
        Dropout rate between the global pooling and the dense softmax.
    label_smoothing : float, default=0.1
    train_bn : bool, default=False
        Let the tail's BatchNorm layers train (batch statistics, moving averages updated). False keeps them in
        inference mode with the backbone's statistics, the usual choice for small data.
    batch_size : int, default=32
        Maps per training step (and per prediction batch).
    mixup : float, default=0.0
        MixUp alpha: each training minibatch is blended with a shuffled copy of itself, maps and one-hot labels
        alike, by per-sample weights from Beta(alpha, alpha). 0 = off.
    views : tuple of str, default=("id",)
        The views side by side in X (identity first): every view of a training image is a training map;
        validation uses the identity view. Set by featx from the fit's --views.
    tta : bool, default=False
        Predict by averaging the class probabilities over the views (else from the identity view).
    random_state : int or None, default=0
        Seeds the head's initial weights, dropout, the shuffles, MixUp draws and the held-out split; no global
        random state is touched.
    verbose : int, default=0
        1 prints one line per epoch.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int, V * h*w*c
    map_shape_ : tuple (h, w, c), the cut's map; (tokens, width) for a vision transformer's token sequence
    head_pool_ : str, how the head pools the final layer (head_pool): "avg", "cls" or "patches:P"
    model_ : keras.Model
        float32 maps (batch, h, w, c) -> class probabilities (batch, n_classes); its layer "tail" is the backbone's
        sub-network above the cut.
    history_ : pandas.DataFrame
        One row per epoch: epoch (from 1), stage ("head" or "tail"), loss, accuracy (on the augmented training
        minibatches), val_loss, val_accuracy, seconds.
    best_epoch_ : int
        Epoch (from 1) whose weights `model_` holds.
    """

    _parameter_constraints = {
        "cut": [str, None],
        "backbone": [dict, None],
        "backbone_lr": [Interval(Real, 0, None, closed="left")],
        "head_lr": [Interval(Real, 0, None, closed="neither")],
        "warmup_epochs": [Interval(Integral, 0, None, closed="left")],
        "epochs": [Interval(Integral, 1, None, closed="left")],
        "patience": [Interval(Integral, 1, None, closed="left"), None],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "label_smoothing": [Interval(Real, 0, 1, closed="left")],
        "train_bn": ["boolean"],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "mixup": [Interval(Real, 0, None, closed="left")],
        "views": ["array-like"],
        "tta": ["boolean"],
        "random_state": [Interval(Integral, 0, None, closed="left"), None],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        *,
        cut=None,
        backbone=None,
        backbone_lr=1e-4,
        head_lr=1e-3,
        warmup_epochs=3,
        epochs=20,
        patience=5,
        weight_decay=1e-4,
        dropout=0.3,
        label_smoothing=0.1,
        train_bn=False,
        batch_size=32,
        mixup=0.0,
        views=(IDENTITY,),
        tta=False,
        random_state=0,
        verbose=0,
    ):
        self.cut = cut
        self.backbone = backbone
        self.backbone_lr = backbone_lr
        self.head_lr = head_lr
        self.warmup_epochs = warmup_epochs
        self.epochs = epochs
        self.patience = patience
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.label_smoothing = label_smoothing
        self.train_bn = train_bn
        self.batch_size = batch_size
        self.mixup = mixup
        self.views = views
        self.tta = tta
        self.random_state = random_state
        self.verbose = verbose

    # ---- fitting

    def fit(self, X, y, X_val=None, y_val=None):
        """Train head, then head and tail, keeping the epoch with the best accuracy on (X_val, y_val).

        X : ndarray or CachedMaps of shape (n_images, V * h*w*c), the cut's maps flattened as cached, views side by
            side; or a CutMaps holding the maps of several cuts, of which the tail takes its cut's. y : ndarray of shape (n_images,).
        X_val : same kind, (n_val, V * h*w*c) or (n_val, h*w*c) (identity view used), or None: a stratified 15% of
            the images (all their views) is held out instead. y_val : (n_val,), labels occurring in y.
        """
        self._validate_params()
        tail = self._tail_model()  # the backbone first: a wrong cut or changed weights fail before any data is read
        self.map_shape_ = tuple(int(d) for d in tail.input_shape[1:])
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        y = np.asarray(y)
        check_classification_targets(y)
        X, y = self._check_fit_input(_of_cut(X, self.cut), y)
        self.classes_, y_encoded = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"the tail needs at least 2 classes in y, got {len(self.classes_)}")
        if (X_val is None) != (y_val is None):
            raise FeatxError("pass both X_val and y_val to the tail's fit, or neither.")
        if X_val is None:
            X, X_val, y_encoded, y_val_encoded = self._hold_out(X, y_encoded)
        else:
            y_val = np.asarray(y_val)
            unseen = np.setdiff1d(y_val, self.classes_)
            if unseen.size:
                raise FeatxError(
                    f"validation labels {unseen.tolist()} do not occur in training; use a validation "
                    "split whose classes all appear in train."
                )
            X_val, y_val_encoded = (
                self._check_predict_input(_of_cut(X_val, self.cut), identity=True),
                np.searchsorted(self.classes_, y_val),
            )
        self.model_ = self._build(tail, len(self.classes_))
        self._train(X, y_encoded, X_val, y_val_encoded)
        return self

    def _check_fit_input(self, X, y):
        y = np.asarray(y)
        if not _is_lazy(X):
            X = check_array(X, dtype=(np.float32, np.float16, np.float64))
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} rows and y {len(y)}")
        d = int(np.prod(self.map_shape_))
        if X.shape[1] != len(self._views()) * d:
            raise ValueError(
                f"X has {X.shape[1]} features; the {len(self._views())} view(s) of cut {self.cut}'s "
                f"{'x'.join(map(str, self.map_shape_))} map need {len(self._views()) * d}"
            )
        self.n_features_in_ = X.shape[1]
        return X, y

    def _check_predict_input(self, X, identity=False):
        """X (n, V*d) or (n, d) -> X as an array or CachedMaps, checked against the fitted width."""
        d = int(np.prod(self.map_shape_))
        if not _is_lazy(X):
            X = check_array(X, dtype=(np.float32, np.float16, np.float64))
        if X.shape[1] not in (d, self.n_features_in_):
            raise ValueError(
                f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input"
            )
        if X.shape[1] == d and self.tta and len(self._views()) > 1 and not identity:
            raise ValueError(
                f"tta averages over the {len(self._views())} views, so X needs all their {self.n_features_in_} features"
            )
        return X

    def _views(self) -> tuple:
        views = tuple(self.views)
        if not views or views[0] != IDENTITY or len(set(views)) != len(views):
            raise ValueError(f"views must be distinct names with the identity view '{IDENTITY}' first, got {views}")
        return views

    def _hold_out(self, X, y_encoded):
        """A stratified 15% of the images (at least one per class) for early stopping, when fit gets no X_val."""
        n_classes = len(np.unique(y_encoded))
        try:
            train, val = train_test_split(
                np.arange(len(y_encoded)),
                test_size=max(int(np.ceil(VALIDATION_FRACTION * len(y_encoded))), n_classes),
                stratify=y_encoded,
                random_state=self.random_state,
            )
        except ValueError as error:
            raise FeatxError(
                f"cannot hold out a stratified {VALIDATION_FRACTION:.0%} of the images for validation "
                f"({error}); pass X_val and y_val to fit or use more images per class"
            ) from None
        train, val = np.sort(train), np.sort(val)
        return X[train], X[val], y_encoded[train], y_encoded[val]

    # ---- the network

    def _tail_model(self):
        """The backbone's layers from `cut` to its final feature layer, with the backbone's pretrained weights."""
        from featx.backbones import backbone_file_problem
        from featx.backbones.cuts import build_tail, check_cut, final_layer

        if self.cut is None or self.backbone is None:
            raise FeatxError(
                "the tail classifier needs cut (a layer of the backbone) and backbone (the cache "
                "entry's, set by `featx fit --clf tail --cut LAYER`)"
            )
        args = dict(self.backbone)
        try:
            weights_id = args.pop("weights_id")
        except KeyError:
            raise FeatxError(
                "the tail's backbone description lacks weights_id; build it with "
                "featx.backbones.backbone_description(entry)"
            ) from None
        where = f"the tail's backbone {args.get('name')}"
        problem = backbone_file_problem(args)  # every fit: a weights file changed since the build is refused
        if problem:
            raise FeatxError(f"{where}: {problem}")
        backbone = _built_backbone(json.dumps(args, sort_keys=True, default=str), weights_id, where)
        check_cut(backbone, self.cut)
        self.head_pool_ = head_pool(backbone.tokens)
        source = build_tail(backbone.model, self.cut, final_layer(backbone), name="tail")
        tail = keras.models.clone_model(source)  # layers of its own: the built backbone's weights never train
        tail.set_weights(source.get_weights())
        tail.trainable = True  # the model's own flag; the registry froze each layer, so each is unfrozen here
        for layer in _all_layers(tail):  # Keras 3: a frozen BatchNormalization runs in inference mode
            layer.trainable = self.train_bn or not isinstance(layer, keras.layers.BatchNormalization)
        return tail

    def _build(self, tail, n_classes):
        seed = self.random_state
        maps = keras.Input(shape=self.map_shape_, name="maps")
        x = tail(maps)
        for layer in head_pool_layers(self.head_pool_, tuple(x.shape[1:])):
            x = layer(x)
        x = keras.layers.Dropout(self.dropout, seed=seed, name="head_dropout")(x)
        outputs = keras.layers.Dense(
            n_classes,
            activation="softmax",
            name="head_softmax",
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
        )(x)
        return keras.Model(maps, outputs, name=f"tail_{self.cut}")

    def _optimizers(self):
        head = keras.optimizers.AdamW(learning_rate=self.head_lr, weight_decay=self.weight_decay)
        tail = keras.optimizers.AdamW(learning_rate=self.backbone_lr, weight_decay=self.weight_decay)
        for optimizer in (head, tail):
            optimizer.exclude_from_weight_decay(var_names=[NO_DECAY])
        return head, tail

    def train_step_functions(self, model=None):
        """(head_step, full_step): tf.functions taking (maps float32 (b, h, w, c), targets float32 (b, n_classes))
        that apply one optimizer step (the head alone; head and tail) and return (loss, n correct). Public so the
        same-math test can drive exactly the step fit uses; `model` defaults to model_."""
        import tensorflow as tf

        model = self.model_ if model is None else model
        tail_layer = model.get_layer("tail")
        tail_vars = list(tail_layer.trainable_variables)
        tail_ids = {id(v) for v in tail_vars}
        head_vars = [v for v in model.trainable_variables if id(v) not in tail_ids]
        head_opt, tail_opt = self._optimizers()
        head_opt.build(head_vars)
        tail_opt.build(tail_vars)
        loss_fn = keras.losses.CategoricalCrossentropy(label_smoothing=self.label_smoothing)

        def step(maps, targets, variables, optimizers):
            with tf.GradientTape() as tape:
                probabilities = model(maps, training=True)
                loss = loss_fn(targets, probabilities)
            gradients = tape.gradient(loss, [v for group in variables for v in group])
            start = 0
            for group, optimizer in zip(variables, optimizers):
                optimizer.apply(gradients[start : start + len(group)], group)
                start += len(group)
            correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(probabilities, 1), tf.argmax(targets, 1)), tf.float32))
            return loss, correct

        signature = [
            tf.TensorSpec((None, *model.input_shape[1:]), tf.float32),
            tf.TensorSpec((None, model.output_shape[-1]), tf.float32),
        ]
        head_step = tf.function(lambda m, t: step(m, t, [head_vars], [head_opt]), input_signature=signature)
        full_step = tf.function(
            lambda m, t: step(m, t, [head_vars, tail_vars], [head_opt, tail_opt]), input_signature=signature
        )
        return head_step, full_step

    # ---- training loop

    def _train(self, X, y_encoded, X_val, y_val_encoded):
        import tensorflow as tf

        rng = np.random.default_rng(self.random_state)
        head_step, full_step = self.train_step_functions()
        n_classes = len(self.classes_)
        stream = _MapStream(X, y_encoded, self._views(), self.map_shape_, self.batch_size)
        predict = tf.function(
            lambda m: self.model_(m, training=False),
            input_signature=[tf.TensorSpec((None, *self.map_shape_), tf.float32)],
        )
        rows, best, best_epoch, best_weights = [], -np.inf, 0, None
        for epoch in range(1, self.epochs + 1):
            began = time.perf_counter()
            stage = "head" if epoch <= self.warmup_epochs else "tail"
            step = head_step if stage == "head" else full_step
            total_loss, total_correct, seen = 0.0, 0.0, 0
            for maps, labels in stream.epoch(rng):
                targets = np.eye(n_classes, dtype=np.float32)[labels]
                if self.mixup:
                    weight = rng.beta(self.mixup, self.mixup, size=(len(labels), 1)).astype(np.float32)
                    partner = rng.permutation(len(labels))
                    blend = weight.reshape(-1, *(1,) * len(self.map_shape_))  # over every axis of a map
                    maps = blend * maps + (1 - blend) * maps[partner]
                    targets = weight * targets + (1 - weight) * targets[partner]
                loss, correct = step(tf.constant(maps), tf.constant(targets))
                total_loss += float(loss) * len(labels)
                total_correct += float(correct)
                seen += len(labels)
            probabilities = self._probabilities(X_val, predict, identity=True)
            val_loss = float(
                keras.losses.CategoricalCrossentropy()(
                    np.eye(n_classes, dtype=np.float32)[y_val_encoded], probabilities
                )
            )
            val_accuracy = float(np.mean(np.argmax(probabilities, axis=1) == y_val_encoded))
            rows.append(
                {
                    "epoch": epoch,
                    "stage": stage,
                    "loss": total_loss / seen,
                    "accuracy": total_correct / seen,
                    "val_loss": val_loss,
                    "val_accuracy": val_accuracy,
                    "seconds": round(time.perf_counter() - began, 3),
                }
            )
            if self.verbose:
                print(
                    f"epoch {epoch} ({stage}): loss {rows[-1]['loss']:.4f} acc {rows[-1]['accuracy']:.3f} "
                    f"val_loss {val_loss:.4f} val_acc {val_accuracy:.3f}"
                )
            if val_accuracy > best:
                best, best_epoch, best_weights = val_accuracy, epoch, self.model_.get_weights()
            elif (
                stage == "tail"
                and self.patience is not None
                and epoch - max(best_epoch, self.warmup_epochs) >= self.patience
            ):
                break
        self.model_.set_weights(best_weights)
        self.history_ = pd.DataFrame(rows)
        self.best_epoch_ = best_epoch

    # ---- prediction

    def _probabilities(self, X, predict=None, identity=False):
        """float32 (n, n_classes): the identity view's probabilities, or with tta (and not `identity`) their mean
        over the views; X streamed in batches of at least batch_size maps."""
        import tensorflow as tf

        if predict is None:
            predict = tf.function(
                lambda m: self.model_(m, training=False),
                input_signature=[tf.TensorSpec((None, *self.map_shape_), tf.float32)],
            )
        views = self._views() if (self.tta and not identity) else (IDENTITY,)
        d, batch = int(np.prod(self.map_shape_)), max(self.batch_size, 64)
        total = None
        for v, view in enumerate(views):
            parts = []
            for start in range(0, len(X), batch):
                positions = np.arange(start, min(start + batch, len(X)))
                maps = _read(X, positions, v, view, d).reshape(len(positions), *self.map_shape_)
                parts.append(predict(tf.constant(maps)).numpy())
            probabilities = np.concatenate(parts) if parts else np.zeros((0, len(self.classes_)), np.float32)
            total = probabilities if total is None else total + probabilities
        return total / len(views)

    def predict_proba(self, X):
        """X : (n_images, V * h*w*c), or (n_images, h*w*c) without tta -> float32 (n_images, n_classes)."""
        check_is_fitted(self)
        return self._probabilities(self._check_predict_input(_of_cut(X, self.cut)))

    def predict(self, X):
        """X as in predict_proba -> labels of shape (n_images,)."""
        probabilities = self.predict_proba(X)  # first: it checks that the tail is fitted
        return self.classes_[np.argmax(probabilities, axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags


def head_pool(tokens) -> str:
    """How the head pools the final layer's output: "avg" (global average) over a CNN's map; over a vision
    transformer's tokens (tokens: its featx.backbones.base.TokenLayout) "cls", the CLS token, as ViT and CLIP fine-tune,
    or "patches:P", the mean of the patch tokens after the P prefix tokens, for a model without one (SigLIP)."""
    if tokens is None:
        return "avg"
    return "cls" if tokens.cls else f"patches:{tokens.prefix}"


def head_pool_layers(pool: str, shape: tuple) -> list:
    """The head's pooling as plain Keras layers named head_*, in order (so an exported model loads in safe mode with
    no featx code): pool from head_pool, shape the final layer's output shape without the batch axis."""
    if pool == "avg":
        return [keras.layers.GlobalAveragePooling2D(name="head_pool")]
    if pool == "cls":  # (tokens, width) -> the first token
        return [
            keras.layers.Cropping1D((0, int(shape[0]) - 1), name="head_crop"),
            keras.layers.Flatten(name="head_pool"),
        ]
    prefix = int(pool.split(":", 1)[1])
    crop = [keras.layers.Cropping1D((prefix, 0), name="head_crop")] if prefix else []
    return [*crop, keras.layers.GlobalAveragePooling1D(name="head_pool")]


def stream_bytes(map_shape, batch_size: int = 32) -> int:
    """The most bytes of maps the training stream of cached maps (CachedMaps) holds at once beyond the model: the
    shuffle window and the batch being assembled, float32. Maps smaller than the window are held whole (read
    once): that is then the bound. For benchmarks to set beside the measured peak RSS."""
    d = int(np.prod(map_shape))
    window = max(batch_size, SHUFFLE_BYTES // (4 * d))
    return 4 * d * (window + 2 * batch_size)


@functools.lru_cache(maxsize=2)
def _built_backbone(args: str, weights_id: str, where: str):
    """featx.backbones.backbone_from_args of the JSON `args`, built once per process for the fits of a search (a
    backbone build costs seconds, as much as a few epochs of a small tail): each fit clones the layers above its cut
    and copies their pretrained weights, so the built model itself never changes."""
    from featx.backbones import backbone_from_args

    return backbone_from_args(json.loads(args), weights_id, where)


def _of_cut(X, cut: str):
    """X itself, or from the maps of several cuts (featx.features.maps.CutMaps, a search over the cut) those of
    `cut`."""
    return X.for_cut(cut) if hasattr(X, "for_cut") else X


def _is_lazy(X) -> bool:
    return hasattr(X, "read") and hasattr(X, "rows")


def _all_layers(model):
    """Every layer inside `model`, nested ones (ConvNeXt's downsampling blocks) included."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def _read(X, positions, v: int, view: str, d: int) -> np.ndarray:
    """float32 (len(positions), d): view number v (named `view`) of images `positions` of X, checked finite."""
    if _is_lazy(X):
        block = X.read(positions, view)
    else:
        block = np.asarray(X[positions, v * d : (v + 1) * d] if X.shape[1] > d else X[positions], dtype=np.float32)
    if not np.isfinite(block).all():
        raise FeatxError(
            f"the cached maps hold NaN/Inf values (view {view}); run `featx verify` and re-extract the "
            "cut layer (a backbone that overflows needs --dtype float32 and no --mixed-precision)"
        )
    return block


class _MapStream:
    """Training minibatches (maps float32 (b, h, w, c), labels (b,)) of every (image, view) pair, reshuffled every
    epoch from the estimator's own generator.

    In-memory X, or maps that fit in SHUFFLE_BYTES, are read once and permuted whole each epoch. Larger cached maps
    are streamed: the pairs are grouped by (view, HDF5 chunk), the groups shuffled, and windows of about
    SHUFFLE_BYTES of consecutive groups read (each chunk once) and shuffled within: memory stays at one window.
    """

    def __init__(self, X, labels, views, map_shape, batch_size):
        self.X, self.labels, self.views, self.map_shape, self.batch_size = X, labels, views, map_shape, batch_size
        self.d = int(np.prod(map_shape))
        n_pairs = len(labels) * len(views)
        self.window = max(batch_size, SHUFFLE_BYTES // (4 * self.d))
        self.in_memory = None
        if not _is_lazy(X) or n_pairs <= self.window:
            self.in_memory = (
                np.concatenate([_read(X, np.arange(len(labels)), v, view, self.d) for v, view in enumerate(views)])
                if len(labels)
                else None
            )

    def epoch(self, rng):
        n, size = len(self.labels), self.batch_size
        all_labels = np.tile(self.labels, len(self.views))
        if self.in_memory is not None:
            order = rng.permutation(len(all_labels))
            for start in range(0, len(order), size):
                rows = order[start : start + size]
                yield self.in_memory[rows].reshape(len(rows), *self.map_shape), all_labels[rows]
            return
        chunk = self.X.chunk_rows()
        pairs = np.stack([np.repeat(np.arange(len(self.views)), n), np.tile(np.arange(n), len(self.views))], axis=1)
        keys = pairs[:, 0] * (len(self.X.entry.labels) // chunk + 1) + self.X.rows[pairs[:, 1]] // chunk
        groups = [pairs[keys == k] for k in rng.permutation(np.unique(keys))]
        pending_maps, pending_labels = np.zeros((0, self.d), np.float32), np.zeros(0, dtype=self.labels.dtype)
        window: list = []
        for i, group in enumerate(groups):
            window.append(group)
            if sum(map(len, window)) < self.window and i < len(groups) - 1:
                continue
            chosen = np.concatenate(window)[rng.permutation(sum(map(len, window)))]
            window = []
            maps = np.empty((len(chosen), self.d), np.float32)
            for v, view in enumerate(self.views):
                mine = chosen[:, 0] == v
                if mine.any():
                    maps[mine] = _read(self.X, chosen[mine, 1], v, view, self.d)
            pending_maps = np.concatenate([pending_maps, maps])
            pending_labels = np.concatenate([pending_labels, self.labels[chosen[:, 1]]])
            while len(pending_labels) >= size:
                yield pending_maps[:size].reshape(size, *self.map_shape), pending_labels[:size]
                pending_maps, pending_labels = pending_maps[size:], pending_labels[size:]
        if len(pending_labels):
            yield pending_maps.reshape(len(pending_labels), *self.map_shape), pending_labels

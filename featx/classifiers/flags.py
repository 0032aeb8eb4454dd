"""The classifier parameters the command line offers as flags of their own, as data: flag, parameter, the
classifiers that have it and the defaults its help states (tests/test_classifiers_flags.py holds each stated default to the
estimator's own: the registry's defaults, else the estimator class's).

Light on purpose: the command line builds its parser from this table without importing scikit-learn or Keras. Any
other parameter goes through `--param KEY=VALUE`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Flag:
    """`--flag VALUE` sets `param` (the flag's name with - as _, unless given) of the classifiers that have it.

    text : what it does, with {classifier} placeholders where a default is stated (filled from `defaults`).
    classifiers : who has it, named at the start of its help. defaults : {classifier: the default the help states}.
    """

    name: str
    classifiers: tuple
    text: str
    defaults: dict = field(default_factory=dict)
    param: str | None = None

    @property
    def dest(self) -> str:
        return self.name[2:].replace("-", "_")

    @property
    def parameter(self) -> str:
        return self.param or self.dest

    @property
    def help(self) -> str:
        shown = {name.replace("-", "_"): _Default(value) for name, value in self.defaults.items()}
        return f"{', '.join(self.classifiers)}: {self.text.format(**shown)}"


@dataclass(frozen=True)
class _Default:
    """A default as the help writes it: with the text's format spec where it gives one, else 1e-4, 0, 0.3, 256,128."""

    value: object

    def __format__(self, spec: str) -> str:
        value = self.value
        if spec:
            return format(value, spec)
        if isinstance(value, tuple):
            return ",".join(map(str, value))
        if isinstance(value, float):
            return f"{value:.0e}".replace("e-0", "e-") if 0 < value < 0.01 else f"{value:g}"
        return str(value)


FLAGS = (  # --flag VALUE -> the classifier parameter, value parsed as in --param
    Flag("--n-estimators", ("rf",), "number of trees"),
    Flag("--min-samples-leaf", ("rf",), "minimum samples per leaf"),
    Flag("--max-features", ("rf",), "features tried per split (sqrt, log2, an int or a fraction)"),
    Flag(
        "--n-components",
        ("nystroem-svm",),
        "landmark rows of the RBF kernel map, its width (default {nystroem_svm})",
        {"nystroem-svm": 1000},
    ),
    Flag(
        "--gamma",
        ("svm", "nystroem-svm"),
        "RBF kernel width (default {svm}: 1 / (n_features * X.var()))",
        {"svm": "scale", "nystroem-svm": "scale"},
    ),
    Flag(
        "--loss",
        ("sgd",),
        "{sgd} (default; class probabilities) or hinge (a linear SVM), modified_huber, ...",
        {"sgd": "log_loss"},
    ),
    Flag(
        "--alpha",
        ("sgd",),
        "L2 penalty strength (default {sgd:.4f}); standardize the features for SGD",
        {"sgd": 0.0001},
    ),
    Flag("--hidden", ("dense",), "hidden layer sizes, e.g. 256,128 (default {dense})", {"dense": (256,)}),
    Flag("--activation", ("dense",), "hidden activation (default {dense})", {"dense": "relu"}),
    Flag(
        "--dropout",
        ("dense",),
        "dropout rate after each hidden layer (default {dense}); tail: before its softmax (default {tail})",
        {"dense": 0.0, "tail": 0.3},
    ),
    Flag("--l2", ("dense",), "L2 penalty on every kernel (default {dense})", {"dense": 0.0}),
    Flag("--optimizer", ("dense",), "sgd or adam (default {dense})", {"dense": "sgd"}),
    Flag("--lr", ("dense",), "learning rate (default {dense})", {"dense": 0.01}),
    Flag("--momentum", ("dense",), "SGD momentum (default {dense})", {"dense": 0.9}),
    Flag(
        "--epochs",
        ("dense", "tail"),
        "maximum epochs (default {dense}, tail {tail}); the best-val-accuracy epoch is kept",
        {"dense": 100, "tail": 20},
    ),
    Flag(
        "--dense-batch-size",
        ("dense", "tail"),
        "minibatch size (default {dense}); --batch-size is images per forward pass elsewhere",
        {"dense": 32, "tail": 32},
        param="batch_size",
    ),
    Flag(
        "--patience",
        ("dense", "tail"),
        "stop after this many epochs without a better val accuracy (tail default {tail})",
        {"tail": 5},
    ),
    Flag(
        "--mixup",
        ("dense",),
        "MixUp alpha on training minibatches, features and one-hot labels (default {dense}: off)",
        {"dense": 0.0},
    ),
    Flag(
        "--feature-noise",
        ("dense",),
        "std of Gaussian noise added to the training features of each minibatch (default {dense})",
        {"dense": 0.0},
    ),
    Flag(
        "--cut",
        ("tail",),
        "the layer whose cached maps (--pool none) the backbone's layers above it train on "
        "(`featx layers BACKBONE --cuts`); tune without --cut searches every cut the entry caches",
    ),
    Flag(
        "--backbone-lr",
        ("tail",),
        "AdamW learning rate of the backbone layers above the cut (default {tail})",
        {"tail": 1e-4},
    ),
    Flag("--head-lr", ("tail",), "AdamW learning rate of the softmax head (default {tail})", {"tail": 1e-3}),
    Flag(
        "--warmup-epochs",
        ("tail",),
        "epochs that train the head alone before the tail is unfrozen (default {tail})",
        {"tail": 3},
    ),
    Flag("--weight-decay", ("tail",), "AdamW weight decay of the kernels (default {tail})", {"tail": 1e-4}),
    Flag("--label-smoothing", ("tail",), "label smoothing of the cross-entropy (default {tail})", {"tail": 0.1}),
)
SWITCHES = (  # --switch (no value) -> the classifier parameter set to True
    Flag("--batch-norm", ("dense",), "batch normalization in each hidden layer"),
    Flag(
        "--early-stopping",
        ("sgd",),
        "stop when the score on 10%% of the train rows, held out, stops improving",
    ),
)

"""The feature-transform options, declared once.

`build_feature_pipeline` takes exactly these keywords (a test holds it to that), `fit`/`compare`/pipeline files
accept them and the CLI offers one flag per option. This module imports nothing heavy, so the CLI can build its
parser from it without loading scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass

GROUP_LASSO = "group-lasso"  # --select's feature selection (Head2Toe's), group-lasso or group-lasso:F


@dataclass(frozen=True)
class TransformOption:
    name: str
    default: object
    help: str
    choices: tuple = ()
    cli: bool = True  # offered as a --flag (blocks is set by featx from the layers loaded, not typed)


TRANSFORM_OPTIONS = (
    TransformOption("standardize", False, "zero mean, unit variance per feature"),
    TransformOption(
        "discretize", None, "fne: full-network embedding to {-1,0,1}; kbins: quantile bins", ("fne", "kbins")
    ),
    TransformOption("pca", None, "PCA to N components (int) or to a fraction of variance (0-1)"),
    TransformOption("kbins", 5, "kbins: number of bins (default 5)"),
    TransformOption("fne_low", -0.25, "FNE: standardized values below become -1 (default -0.25)"),
    TransformOption("fne_high", 0.15, "FNE: standardized values above become 1 (default 0.15)"),
    TransformOption(
        "normalize",
        None,
        "layer: divide each layer's block of features by its L2 norm, per sample (Head2Toe; before --standardize)",
        ("layer",),
    ),
    TransformOption(
        "select",
        None,
        "group-lasso:F: keep the fraction F of all features, ranked by a group-lasso "
        "linear model fitted on the train rows (Head2Toe; after --standardize)",
    ),
    TransformOption(
        "select_penalty",
        0.1,
        "group-lasso: the penalty as a fraction of the smallest one that keeps no feature (default 0.1)",
    ),
    TransformOption(
        "blocks",
        None,
        "the layer layout of the columns, [[layer, width], ...]: set by featx from the "
        "layers loaded, for normalize and select",
        cli=False,
    ),
)
TRANSFORM_KEYS = tuple(option.name for option in TRANSFORM_OPTIONS)
TRANSFORM_DEFAULTS = {option.name: option.default for option in TRANSFORM_OPTIONS}

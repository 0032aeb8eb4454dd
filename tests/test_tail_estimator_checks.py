"""scikit-learn's own estimator checks on the tail estimator (featx.classifiers.tail.TailClassifier), as
tests/test_estimator_checks.py runs them on the dense head: clone, get/set_params, fit/predict shapes, input
validation, class handling, pickling. Its backbone is a user's tiny saved .keras model (the estimator rebuilds it
through the registry, file hash and weights id checked) whose cut map is 1x1x2, so the checks' two-feature data
are maps of the cut; checks that feed data of another width are exempt: no such data is a map of this cut."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest


def _tiny_backbone(folder: Path) -> dict:
    import keras

    from featx.backbones import file_hashes, get_backbone

    inputs = keras.Input((4, 4, 3))
    cut = keras.layers.Conv2D(2, 4, name="cut")(inputs)  # (1, 1, 2)
    top = keras.layers.Conv2D(2, 1, name="top")(cut)
    outputs = keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling2D(name="pool")(top))
    path = str(folder / "tiny.keras")
    keras.Model(inputs, outputs).save(path)
    backbone = get_backbone(path, preprocess="none")
    return {
        "name": path,
        "weights": "imagenet",
        "input_size": None,
        "preprocess": "none",
        "file_hashes": file_hashes(path, "imagenet"),
        "weights_id": backbone.weights_id,
    }


def _tail():
    from featx.classifiers.tail import TailClassifier

    folder = Path(tempfile.mkdtemp(prefix="featx-tail-checks-"))
    return TailClassifier(
        cut="cut",
        backbone=_tiny_backbone(folder),
        epochs=8,  # check_classifiers_train wants accuracy > 0.83: 3 epochs passed alone but not always in the suite
        warmup_epochs=1,
        head_lr=0.05,
        backbone_lr=0.01,
        dropout=0.0,
        label_smoothing=0.0,
    )


WIDTH = "feeds data whose width is not the cut's 1x1x2 map (2 features); the tail says so in a ValueError"
TAIL_EXEMPT = dict.fromkeys(
    (
        "check_dict_unchanged",
        "check_dont_overwrite_parameters",
        "check_dtype_object",
        "check_estimators_dtypes",
        "check_estimators_nan_inf",
        "check_estimators_pickle",
        "check_f_contiguous_array_estimator",
        "check_fit2d_1feature",
        "check_fit2d_1sample",
        "check_fit2d_predict1d",
        "check_fit_score_takes_y",
        "check_methods_sample_order_invariance",
        "check_methods_subset_invariance",
        "check_n_features_in_after_fitting",
        "check_pipeline_consistency",
        "check_positive_only_tag_during_fit",
        "check_supervised_y_2d",
        "check_classifiers_one_label",
    ),
    WIDTH,
)


@pytest.mark.slow  # a few Keras fits per check, each rebuilding the tiny backbone: about 5 minutes on 2 cores
def test_tail_passes_sklearn_checks():
    """Every check of scikit-learn's check_estimator (run here, not at collection: building the estimator needs
    Keras, which the fast tier never imports): all pass but the exempt ones, which still fail for their reason."""
    from sklearn.utils.estimator_checks import check_estimator

    results = check_estimator(_tail(), on_fail=None, expected_failed_checks=TAIL_EXEMPT)
    failed = sorted({f"{r['check_name']}: {r['exception']!r}"[:300] for r in results if r["status"] == "failed"})
    assert not failed, failed
    passed = {r["check_name"] for r in results if r["status"] == "passed"}
    assert {
        "check_classifiers_train",
        "check_estimators_unfitted",
        "check_requires_y_none",
        "check_fit_idempotent",
        "check_classifiers_regression_target",
        "check_n_features_in",
        "check_estimator_cloneable",
    } <= passed

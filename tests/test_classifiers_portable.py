"""featx.classifiers.portable: a fitted featx model as built-in Keras layers (keras_form) or as plain scikit-learn
(plain_sklearn), on scikit-learn's digits (real 8x8 images, 64 features): the same scores as the featx Pipeline.

The plain scikit-learn tests import no TensorFlow (fast tier); the Keras ones build small models on a features input
(no backbone) and save and load them in Keras safe mode.
"""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from featx.classifiers.portable import (
    DECISION_SCORES,
    PROBABILITIES,
    keras_form_problem,
    n_outputs,
    output_kind,
    plain_sklearn,
)
from featx.selection.spec import FitSpec

from helpers import U32, assert_same_classes, magnitude

BLOCKS = [["top_rows", 16], ["middle_rows", 32], ["bottom_rows", 16]]  # digits' 8x8 pixels as three "layers"


def fitted(digits, classifier, classes=None, params=None, **transforms):
    """(fitted featx Pipeline, X_test float32) of FitSpec(classifier, transforms) on digits' train rows."""
    X, y, split = digits
    X = X.astype(np.float32)
    keep = np.isin(y, classes) if classes is not None else np.ones(len(y), bool)
    train, test = keep & (split == "train"), keep & (split == "test")
    spec = FitSpec(classifier=classifier, params=params or {}, transforms=transforms, n_jobs=1)
    return spec.pipeline().fit(X[train], y[train]), X[test]


def scores(model, X):
    return model.predict_proba(X) if output_kind(model) == PROBABILITIES else model.decision_function(X)


# ---- plain scikit-learn (no TensorFlow) ----------------------------------------------------------------------

PLAIN_CASES = {
    "rf+fne": ("rf", {"n_estimators": 30}, {"discretize": "fne"}),
    "svm+standardize+fne": ("svm", {}, {"standardize": True, "discretize": "fne", "fne_low": -0.5, "fne_high": 0.3}),
    "linear-svm+kbins": ("linear-svm", {}, {"discretize": "kbins", "kbins": 4}),
    "nystroem-svm+layernorm": ("nystroem-svm", {"n_components": 50}, {"normalize": "layer", "blocks": BLOCKS}),
    "knn+select+pca": ("knn", {}, {"standardize": True, "select": "group-lasso:0.3", "blocks": BLOCKS, "pca": 10}),
    "logreg+fne+pca": ("logreg", {}, {"discretize": "fne", "pca": 0.9}),
}


@pytest.mark.parametrize("case", PLAIN_CASES)
def test_plain_sklearn_is_scikit_learn_only_and_gives_the_same_scores(digits, case):
    classifier, params, transforms = PLAIN_CASES[case]
    model, X_test = fitted(digits, classifier, params=params, **transforms)
    plain, head = plain_sklearn(model)
    assert head is None
    modules = {type(step).__module__.split(".")[0] for _, step in plain.steps}
    nested = [s for _, s in plain.steps if hasattr(s, "steps")]
    modules |= {type(inner).__module__.split(".")[0] for s in nested for _, inner in s.steps}
    assert modules == {"sklearn"}, modules
    # FNE, kbins, selection and the classifiers are rewritten exactly; the layer normalization's Normalizer sums
    # in another order, and its one-ulp differences reach the scores through a smooth map only
    expected, got = scores(model, X_test), scores(plain, X_test)
    if "layernorm" in case:
        np.testing.assert_allclose(got, expected, rtol=0, atol=64 * U32 * np.abs(expected).max())
    elif classifier == "svm":
        # the exact SVM's kernel by BLAS (|x|^2 + |v|^2 - 2 x.v) vs libsvm's sum of squared differences, both float64:
        # each squared distance within 4 d u64 (|x|^2 + |v|^2) (Higham eq. 3.5), each kernel value then within
        # gamma times that (exp' <= 1), and a decision value within the sum of |dual coefficients| times it
        svc = plain.steps[-1][1]
        rows = plain[:-1].transform(X_test).astype(np.float64)
        norms = (rows**2).sum(axis=1).max() + (svc.support_vectors_**2).sum(axis=1).max()
        distance = 4 * rows.shape[1] * np.finfo(np.float64).eps / 2 * norms
        np.testing.assert_allclose(got, expected, rtol=0, atol=np.abs(svc.dual_coef_).sum() * svc._gamma * distance)
    else:
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(plain.predict(X_test), model.predict(X_test))


def test_plain_fne_keeps_fne_s_strict_thresholds_to_the_last_float32():
    """Values exactly at, and one float32 step either side of, each threshold land in FNE's own bins."""
    from featx.features.transforms import FNEDiscretizer

    fne = FNEDiscretizer(low=-0.25, high=0.15).fit(np.array([[-1.0, 5.0], [1.0, 5.0]], dtype=np.float32))
    edges = [np.float32(-0.25), np.float32(0.15)]
    values = [v for e in edges for v in (np.nextafter(e, np.float32(-1)), e, np.nextafter(e, np.float32(1)))]
    X = np.array([[v, 5.0 + v] for v in values], dtype=np.float32)  # column 1 is constant in fit: always 0
    plain, _ = plain_sklearn(fne)
    np.testing.assert_array_equal(plain.transform(X), fne.transform(X))
    assert fne.transform(X)[:, 0].tolist() == [-1, 0, 0, 0, 0, 1] and not fne.transform(X)[:, 1].any()


def test_keras_form_problem_names_the_step_without_an_exact_keras_form():
    """Decided from the steps' types alone (before any backbone is built): fitted or not."""
    expected = {
        ("rf", "fne"): ("fne", "bins by thresholds"),
        ("logreg", "kbins"): ("kbins", "bins by thresholds"),
        ("rf", None): ("clf", "forest of trees"),
        ("svm", None): ("clf", "kernel SVM"),
        ("knn", None): ("clf", "neighbours"),
        ("nystroem-svm", None): ("clf", "Nystroem"),
    }
    for (classifier, discretize), (step, reason) in expected.items():
        model = FitSpec(classifier=classifier, transforms={"discretize": discretize, "standardize": True}).pipeline()
        problem = keras_form_problem(model)
        assert problem is not None and problem.step == step and reason in problem.reason, (classifier, problem)
    for classifier in ("logreg", "linear-svm", "sgd"):
        model = FitSpec(classifier=classifier, transforms={"standardize": True, "pca": 12}).pipeline()
        assert keras_form_problem(model) is None


def test_outputs_are_probabilities_or_decision_scores_one_column_per_class_but_binary_scores(digits):
    model, _ = fitted(digits, "linear-svm", classes=[3, 8])
    assert (output_kind(model), n_outputs(model)) == (DECISION_SCORES, 1)
    model, _ = fitted(digits, "logreg", classes=[3, 8])
    assert (output_kind(model), n_outputs(model)) == (PROBABILITIES, 2)
    model, _ = fitted(digits, "sgd", params={"loss": "hinge"})
    assert (output_kind(model), n_outputs(model)) == (DECISION_SCORES, 10)


# ---- Keras ---------------------------------------------------------------------------------------------------

KERAS_CASES = {
    "logreg+standardize+pca": ("logreg", None, {}, {"standardize": True, "pca": 20}),
    "logreg binary+pca whiten": ("logreg", [3, 8], {}, {"pca": 10}),
    "linear-svm+layernorm+standardize+select": (
        "linear-svm",
        None,
        {},
        {"normalize": "layer", "blocks": BLOCKS, "standardize": True, "select": "group-lasso:0.25"},
    ),
    "linear-svm binary": ("linear-svm", [1, 7], {}, {"standardize": True}),
    "sgd log_loss": ("sgd", None, {}, {"standardize": True}),
    "sgd modified_huber": ("sgd", None, {"loss": "modified_huber"}, {"standardize": True}),
    "sgd hinge binary": ("sgd", [0, 6], {"loss": "hinge"}, {"normalize": "layer", "blocks": BLOCKS}),
    "dense+standardize": ("dense", None, {"hidden": [32], "epochs": 3}, {"standardize": True}),
}


def keras_modules(config) -> set[str]:
    """The `module` of every serialized object in a .keras config.json."""
    if isinstance(config, dict):
        found = {config["module"]} if isinstance(config.get("module"), str) and "class_name" in config else set()
        return found.union(*(keras_modules(v) for v in config.values()))
    if isinstance(config, list):
        return set().union(*(keras_modules(v) for v in config))
    return set()


@pytest.mark.slow
@pytest.mark.parametrize("case", KERAS_CASES)
def test_keras_form_loads_in_safe_mode_and_gives_the_pipeline_s_scores(digits, case, tmp_path):
    import keras

    from featx.classifiers.portable import keras_form

    classifier, classes, params, transforms = KERAS_CASES[case]
    model, X_test = fitted(digits, classifier, classes=classes, params=params, **transforms)
    features = keras.Input((X_test.shape[1],), name="features")
    outputs, kind = keras_form(model, features)
    path = tmp_path / "model.keras"
    keras.Model(features, outputs).save(path)
    config = zipfile.ZipFile(path).read("config.json").decode()
    modules = keras_modules(json.loads(config))  # built-in layers and keras.ops nodes only: no Lambda, no custom class
    assert "Lambda" not in config and modules and all(m.startswith("keras") for m in modules), modules
    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    got = np.asarray(loaded.predict(X_test, verbose=0), dtype=np.float64)
    expected = scores(model, X_test)
    assert kind == output_kind(model) and got.shape == (len(X_test), n_outputs(model))
    # Higham's bound for float32 dot products, |fl(w.z) - w.z| <= n u sum|w_i z_i| (n = the features, u = 2^-24),
    # at the size of the model's linear map; softmax and sigmoid are 1-Lipschitz, so probabilities stay within it
    # (measured on 2026-12-06: 1/100 to 1/10,000 of the bound)
    tolerance = X_test.shape[1] * U32 * magnitude(model, X_test)
    np.testing.assert_allclose(got, expected.reshape(got.shape), rtol=0, atol=tolerance)
    assert_same_classes(got, expected.reshape(got.shape), tolerance, model.classes_, model.predict(X_test))


@pytest.mark.slow
def test_every_step_is_a_named_nested_model_and_learned_arrays_are_weights(digits):
    import keras

    from featx.classifiers.portable import keras_form

    transforms = {"normalize": "layer", "blocks": BLOCKS, "standardize": True, "select": "group-lasso:0.5", "pca": 8}
    model, X_test = fitted(digits, "logreg", **transforms)
    features = keras.Input((X_test.shape[1],))
    network = keras.Model(features, keras_form(model, features)[0])
    names = [layer.name for layer in network.layers[1:]]
    assert names == ["layernorm", "standardize", "select", "pca", "clf"]
    pca, clf = network.get_layer("pca"), network.get_layer("clf")
    np.testing.assert_allclose(pca.get_weights()[0], model["pca"].components_.T, rtol=1e-6)
    assert clf.get_weights()[0].shape == (8, 10)

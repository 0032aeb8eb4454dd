"""FNE discretization and the feature-pipeline builder, on scikit-learn's digits."""

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import KBinsDiscretizer, StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from featx.errors import FeatxError
from featx.experiments.fit import fit
from featx.features.load import load
from featx.features.transforms import FNEDiscretizer, QuietKBinsDiscretizer, build_feature_pipeline
from featx.selection.spec import fit_spec

from helpers import split_rows


@pytest.fixture(scope="module")
def digits_split():
    X, y = load_digits(return_X_y=True)
    X_train, X_val, _, _ = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    return X_train, X_val


def test_fne_output_is_ternary_float32(digits_split):
    X_train, X_val = digits_split
    out = FNEDiscretizer().fit(X_train).transform(X_val)
    assert out.dtype == np.float32
    assert out.shape == X_val.shape
    assert set(np.unique(out)) == {-1.0, 0.0, 1.0}


def test_fne_uses_train_statistics_only(digits_split):
    X_train, X_val = digits_split
    fne = FNEDiscretizer().fit(X_train)
    np.testing.assert_allclose(fne.mean_, X_train.mean(axis=0))  # the same float64 mean (rtol 1e-7: a few u64)
    out = fne.transform(X_val + 10)
    # With train stats, a +10 shift pushes almost every varying feature above `high`; stats
    # refitted on train + shifted val would leave only ~90% at 1.
    assert (out[:, ~fne.constant_] == 1).mean() > 0.95  # counts of thresholded values, not round-off


def test_fne_zero_std_column_maps_to_zero(digits_split):
    X_train, X_val = digits_split
    X_train = X_train.copy()
    X_train[:, 5] = 7.0
    fne = FNEDiscretizer().fit(X_train)
    assert fne.scale_[5] == 1.0
    assert not fne.transform(X_train)[:, 5].any()
    # Even values never seen in train stay 0 on a feature that never varied.
    assert not fne.transform(X_val + 100)[:, 5].any()


def test_fne_thresholds_default_and_custom():
    # One feature with mean 0 and std 1: standardized values equal the raw values.
    X_train = np.array([[-1.0], [1.0]])
    X = np.array([[-0.3], [-0.2], [0.1], [0.2]])
    fne = FNEDiscretizer().fit(X_train)
    assert (fne.low, fne.high) == (-0.25, 0.15)
    np.testing.assert_array_equal(fne.transform(X).ravel(), [-1, 0, 0, 1])
    custom = FNEDiscretizer(low=-0.1, high=0.5).fit(X_train)
    np.testing.assert_array_equal(custom.transform(X).ravel(), [-1, -1, 0, 0])
    # Hand-computed: train [[2], [6]] -> mean 4, std 2; 4.4 -> 0.2 > 0.15 -> 1.
    assert FNEDiscretizer().fit([[2.0], [6.0]]).transform([[4.4]])[0, 0] == 1


def test_fne_rejects_low_not_below_high():
    with pytest.raises(FeatxError, match="low < high"):
        FNEDiscretizer(low=0.2, high=0.1).fit(np.ones((3, 2)))


def test_build_feature_pipeline_steps_in_order():
    steps = build_feature_pipeline(standardize=True, discretize="kbins", pca=0.9, kbins=4)
    assert [name for name, _ in steps] == ["standardize", "kbins", "pca"]
    assert isinstance(steps[0][1], StandardScaler)
    assert isinstance(steps[1][1], KBinsDiscretizer) and steps[1][1].n_bins == 4
    assert isinstance(steps[2][1], PCA) and steps[2][1].n_components == 0.9
    assert build_feature_pipeline() == []
    ((name, fne),) = build_feature_pipeline(discretize="fne", fne_low=-0.5, fne_high=0.5)
    assert name == "fne" and (fne.low, fne.high) == (-0.5, 0.5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"discretize": "fnee"}, "fne, kbins"),
        ({"pca": 1.5}, "pca"),
        ({"discretize": "kbins", "kbins": 1}, "kbins"),
    ],
)
def test_build_feature_pipeline_rejects_bad_options(kwargs, message):
    with pytest.raises(FeatxError, match=message):
        build_feature_pipeline(**kwargs)


def test_transform_options_are_the_one_declaration_of_the_builder_keywords():
    import inspect

    from featx.features.options import TRANSFORM_OPTIONS

    parameters = inspect.signature(build_feature_pipeline).parameters
    assert [p.kind for p in parameters.values()] == [inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.VAR_KEYWORD]
    declared = {option.name: option.default for option in TRANSFORM_OPTIONS}
    assert repr(build_feature_pipeline(**declared)) == repr(build_feature_pipeline())  # the defaults: declared once
    with pytest.raises(FeatxError, match="unknown transform option"):
        build_feature_pipeline(standardise=True)


@pytest.mark.parametrize("kwargs", [{"fne_low": "low"}, {"fne_high": None}, {"fne_low": True}])
def test_fne_thresholds_must_be_numbers(kwargs):
    with pytest.raises(FeatxError, match="must be a number"):
        build_feature_pipeline(discretize="fne", **kwargs)


@parametrize_with_checks([FNEDiscretizer(), QuietKBinsDiscretizer(n_bins=3, quantile_method="averaged_inverted_cdf")])
def test_transformers_pass_sklearn_checks(estimator, check):
    check(estimator)


def test_fne_maps_to_three_values_with_train_statistics_only(elpv_cache):
    result = fit(
        None,
        "block6d_add,top_activation",
        fit_spec("logreg", discretize="fne", fne_low=-0.3, fne_high=0.2),
        cache=elpv_cache,
        log=lambda *a: None,
    )
    fne = result.pipeline.named_steps["fne"]
    X_train, _, _ = split_rows(elpv_cache, "block6d_add,top_activation", "train")
    X_all, _, _ = load(None, "block6d_add,top_activation", cache=elpv_cache)
    # float64 means of the same float32 rows (another summation order at most: n u64 = 1e-13), vs the means of
    # all rows, which differ by far more
    np.testing.assert_allclose(fne.mean_, X_train.mean(axis=0, dtype=np.float64), rtol=1e-6)
    assert not np.allclose(fne.mean_, X_all.mean(axis=0, dtype=np.float64), rtol=1e-6)
    assert (fne.low, fne.high) == (-0.3, 0.2) and result.row["transforms"] == "fne(-0.3,0.2)"
    assert set(np.unique(fne.transform(X_all))) == {-1.0, 0.0, 1.0}

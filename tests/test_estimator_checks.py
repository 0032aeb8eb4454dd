"""scikit-learn's own estimator checks on featx's estimators: they must behave like any sklearn estimator
(clone, get/set_params, fit/transform shapes, input validation, pickling) to sit in Pipelines and joblib files."""

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from featx.classifiers.dense import DenseHeadClassifier
from featx.classifiers.kernel import NystroemSVC
from featx.features.transforms import FNEDiscretizer, QuietKBinsDiscretizer


@parametrize_with_checks([FNEDiscretizer(), QuietKBinsDiscretizer(n_bins=3, quantile_method="averaged_inverted_cdf")])
def test_transformers_pass_sklearn_checks(estimator, check):
    check(estimator)


@parametrize_with_checks([NystroemSVC(n_components=20, random_state=0)])
def test_nystroem_svm_passes_sklearn_checks(estimator, check):
    check(estimator)


DENSE_EXEMPT = {
    "check_fit2d_1sample": "one sample cannot be split into train and validation rows; the head says so with a "
                           "FeatxError (featx's one-line user error), not the ValueError wording this check expects",
}


@pytest.mark.slow  # about 200 s: a few Keras fits per check
@parametrize_with_checks([DenseHeadClassifier(hidden=(8,), epochs=3, lr=0.1)],
                         expected_failed_checks=lambda estimator: DENSE_EXEMPT)
def test_dense_head_passes_sklearn_checks(estimator, check):
    check(estimator)

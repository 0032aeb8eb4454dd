"""scikit-learn's own estimator checks on featx's estimators: they must behave like any sklearn estimator
(clone, get/set_params, fit/transform shapes, input validation, pickling) to sit in Pipelines and joblib files."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from featx.classifiers.kernel import NystroemSVC
from featx.classifiers.linear import ExactLinearSVC
from featx.classifiers.svm import BlasSVC
from featx.features.transforms import FNEDiscretizer, QuietKBinsDiscretizer


@parametrize_with_checks([FNEDiscretizer(), QuietKBinsDiscretizer(n_bins=3, quantile_method="averaged_inverted_cdf")])
def test_transformers_pass_sklearn_checks(estimator, check):
    check(estimator)


@parametrize_with_checks([NystroemSVC(n_components=20, random_state=0)])
def test_nystroem_svm_passes_sklearn_checks(estimator, check):
    check(estimator)


@parametrize_with_checks(
    [ExactLinearSVC(), ExactLinearSVC(solver="newton", class_weight="balanced")],
    expected_failed_checks=lambda estimator: (
        {
            # solver="auto" fits sparse X with liblinear, whose dual solver scikit-learn marks so for LinearSVC
            "check_sample_weight_equivalence_on_sparse_data": "sparse X goes to liblinear (LinearSVC's xfail)"
        }
        if estimator.solver == "auto"
        else {}
    ),
)
def test_exact_linear_svm_passes_sklearn_checks(estimator, check):
    check(estimator)


@parametrize_with_checks(
    [BlasSVC(class_weight="balanced"), BlasSVC(solver="libsvm")],
    expected_failed_checks=lambda estimator: {
        # scikit-learn's own expected failures for SVC (sklearn.utils._test_common.instance_generator): libsvm's
        # sample weights rescale C per row, which is not the same as repeating rows
        f"check_sample_weight_equivalence_on_{kind}_data": "sample_weight is not equivalent to removing/repeating "
        "samples (SVC's xfail)"
        for kind in ("dense", "sparse")
    },
)
def test_blas_svm_passes_sklearn_checks(estimator, check):
    check(estimator)

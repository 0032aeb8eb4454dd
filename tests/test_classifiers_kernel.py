"""featx.classifiers.kernel: the Nystroem approximation of the RBF SVM passes scikit-learn's own estimator checks
(clone, get/set_params, fit/predict shapes, input validation, pickling), to sit in Pipelines and joblib files
(its scores against the exact SVM: tests/test_classifiers.py)."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from featx.classifiers.kernel import NystroemSVC


@parametrize_with_checks([NystroemSVC(n_components=20, random_state=0)])
def test_nystroem_svm_passes_sklearn_checks(estimator, check):
    check(estimator)

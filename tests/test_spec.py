"""featx.experiments.spec: FitSpec and Evaluation as values (round trip, hash), built once at every front door."""

from __future__ import annotations

import inspect
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featx.errors import FeatxError
from featx.experiments.spec import (
    METRIC_NAMES,
    Evaluation,
    FitSpec,
    _decode,
    _encode,
    _canonical,
    fit_spec,
    spec_hash,
)


def _json(value):
    """Through JSON text, as the runs log stores it."""
    return json.loads(json.dumps(value))


scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False),
                    st.text(max_size=8))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.tuples(inner, inner), st.lists(inner, max_size=3).map(tuple),
    st.dictionaries(st.one_of(st.text(max_size=5), st.integers(0, 9)), inner, max_size=3)), max_leaves=8)


@given(st.dictionaries(st.text(max_size=6), values, max_size=4))
@settings(max_examples=300, deadline=None)
def test_parameter_values_round_trip_through_json_exactly(params):
    canonical = _canonical(params)
    assert _decode(_json(_encode(canonical))) == canonical


classifiers = st.sampled_from([
    ("rf", {"n_estimators": st.integers(1, 50), "min_samples_leaf": st.integers(1, 5),
            "max_features": st.sampled_from(["sqrt", "log2", 0.5, None]),
            "class_weight": st.sampled_from([None, "balanced", {0: 1.0, 1: 2.5}])}),
    ("logreg", {"C": st.floats(1e-6, 1e6), "max_iter": st.integers(10, 500),
                "class_weight": st.sampled_from(["balanced", {0: 2.0, 3: 0.5}])}),
    ("knn", {"n_neighbors": st.integers(1, 9), "weights": st.sampled_from(["uniform", "distance"])}),
    ("svm", {"C": st.floats(0.01, 100.0), "gamma": st.sampled_from(["scale", "auto", 0.01])}),
    ("majority", {}),
])
transforms = st.fixed_dictionaries({}, optional={
    "standardize": st.booleans(), "discretize": st.sampled_from([None, "fne", "kbins"]),
    "pca": st.sampled_from([None, 2, 0.9]), "kbins": st.integers(2, 9),
    "fne_low": st.floats(-1.0, -0.01), "fne_high": st.floats(0.01, 1.0)})
views = st.lists(st.sampled_from(["hflip", "vflip", "rot90", "crop1", "rand1s0", "rand2s3"]), unique=True,
                 max_size=3).map(lambda extra: ("id", *extra))


@st.composite
def specs(draw):
    name, space = draw(classifiers)
    params = draw(st.fixed_dictionaries({}, optional=space))
    chosen = draw(views)
    return dict(classifier=name, params=params, transforms=draw(transforms), seed=draw(st.integers(0, 2**31 - 1)),
                n_jobs=draw(st.sampled_from([-1, 1, 2, None])), views=chosen, tta=len(chosen) > 1 and draw(st.booleans()))


evaluations = st.builds(lambda cv, r, metric, seed, fit_on: Evaluation(cv=cv, cv_repeats=r, metric=metric, seed=seed,
                                                                       fit_on=fit_on),
                        st.sampled_from([None, 2, 3, 5]), st.integers(1, 3), st.sampled_from([None, *METRIC_NAMES]),
                        st.integers(0, 99), st.sampled_from(["train", "train+val"]))


@given(specs(), evaluations)
@settings(max_examples=150, deadline=None)
def test_fitspec_and_evaluation_round_trip_exactly_and_hash_alike(keywords, evaluation):
    spec = FitSpec(**keywords)
    again = FitSpec.from_dict(_json(spec.to_dict()))
    assert again == spec and again.to_dict() == spec.to_dict()
    assert Evaluation.from_dict(_json(evaluation.to_dict())) == evaluation
    assert spec_hash(again, Evaluation.from_dict(_json(evaluation.to_dict()))) == spec_hash(spec, evaluation)
    # n_jobs and the metric do not change the numbers, so they do not change the hash
    assert spec_hash(FitSpec.from_dict({**spec.to_dict(), "n_jobs": 7}), evaluation) == spec_hash(spec, evaluation)


def test_the_hash_changes_with_what_changes_the_numbers_and_only_with_that():
    base, plain = FitSpec(classifier="logreg", params={"C": 0.1}, transforms={"standardize": True}), Evaluation()
    same = [FitSpec(classifier="logreg", params={"C": 0.1}, transforms={"standardize": True, "kbins": 5}, n_jobs=1),
            base]
    for spec in same:
        assert spec_hash(spec, plain) == spec_hash(base, plain)
    assert spec_hash(base, Evaluation(metric="f1_macro", seed=5)) == spec_hash(base, plain)  # no folds: no seed
    different = [FitSpec(classifier="logreg", params={"C": 0.2}, transforms={"standardize": True}),
                 FitSpec(classifier="logreg", params={"C": 0.1}),
                 FitSpec(classifier="logreg", params={"C": 0.1}, transforms={"standardize": True}, seed=1),
                 FitSpec(classifier="logreg", params={"C": 0.1}, transforms={"standardize": True},
                         views=("id", "hflip"))]
    hashes = {spec_hash(spec, plain) for spec in different} | {
        spec_hash(base, Evaluation(cv=3)), spec_hash(base, Evaluation(cv=3, seed=1)),
        spec_hash(base, Evaluation(cv=3, cv_repeats=2)), spec_hash(base, Evaluation(fit_on="train+val"))}
    assert spec_hash(base, plain) not in hashes and len(hashes) == 8


@pytest.mark.slow  # the dense head's spec is checked by building it, which imports Keras
def test_a_dense_spec_keeps_its_tuples_through_json():
    spec = FitSpec(classifier="dense", params={"hidden": (64, 32), "lr": 0.01}, views=("id", "hflip"), tta=True)
    assert spec.to_dict()["params"] == {"hidden": [64, 32], "lr": 0.01}
    again = FitSpec.from_dict(_json(spec.to_dict()))
    assert again == spec and again.params["hidden"] == (64, 32)
    assert FitSpec(classifier="dense", params={"hidden": [64, 32]}).params["hidden"] == (64, 32)  # one form


@pytest.mark.parametrize("data, message", [
    ({"classifier": "rf", "colour": 1}, "unknown key"),
    ({"classifier": "rf", "params": [1]}, "must be a table"),
    ({"classifier": "forest"}, "unknown classifier 'forest'"),
    ("rf", "must be a JSON object"),
])
def test_from_dict_refuses_what_it_cannot_make_in_one_line(data, message):
    with pytest.raises(FeatxError, match=message):
        FitSpec.from_dict(data)


@pytest.mark.parametrize("kwargs, message", [
    ({"metric": "auc"}, "unknown metric 'auc'"), ({"search": "random"}, "unknown --search"),
    ({"search": "halving"}, "needs cross-validation"), ({"fit_on": "all"}, "unknown fit_on")])
def test_evaluation_is_checked_when_made(kwargs, message):
    with pytest.raises(FeatxError, match=message):
        Evaluation(**kwargs)


def test_metric_names_are_spelled_once():
    import importlib

    from featx import cli

    runs, selection = (importlib.import_module(f"featx.experiments.{name}") for name in ("runs", "selection"))

    assert tuple(selection.METRICS) == METRIC_NAMES
    assert cli.METRIC_NAMES is METRIC_NAMES and runs.SELECTION_METRICS is METRIC_NAMES


def test_the_api_keywords_default_to_the_builders_defaults():
    """The defaults live in the builders: featx.fit and featx.compare spell the same ones (one test, not a copy
    per front door that could drift)."""
    from featx.experiments import compare, fit
    from featx.experiments.spec import compare_specs

    def defaults(function):
        return {k: p.default for k, p in inspect.signature(function).parameters.items() if p.default is not p.empty}

    built = {**defaults(fit_spec), **defaults(Evaluation), **defaults(compare_specs)}
    for function in (fit, compare):
        shared = {k: v for k, v in defaults(function).items() if k in built}
        assert shared and all(built[k] == v for k, v in shared.items() if k != "n_jobs"), function
    assert defaults(fit)["n_jobs"] == defaults(fit_spec)["n_jobs"]

"""featx.selection.spec: FitSpec and Evaluation as values (round trip, hash), built once at every front door;
the pure train_and_score, typed CLI values and parameter errors, and the keyword-only API."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import featx
from featx.cache.store import Cache
from featx.cli import main
from featx.compute import Compute
from featx.errors import FeatxError
from featx.experiments.compare import compare
from featx.experiments.fit import fit
from featx.experiments.pipelines import run_pipeline
from featx.experiments.predict import predict
from featx.experiments.tsne import tsne
from featx.experiments.tune import tune
from featx.selection.spec import (
    METRIC_NAMES,
    Evaluation,
    FitSpec,
    _canonical,
    _decode,
    _encode,
    fit_spec,
    fit_specs,
    spec_hash,
    tune_specs,
)
from featx.selection.train import train_and_score
from featx.values import parse_grid


def _json(value):
    """Through JSON text, as the runs log stores it."""
    return json.loads(json.dumps(value))


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.floats(allow_nan=False), st.text(max_size=8)
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.tuples(inner, inner),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(st.one_of(st.text(max_size=5), st.integers(0, 9)), inner, max_size=3),
    ),
    max_leaves=8,
)


@given(st.dictionaries(st.text(max_size=6), values, max_size=4))
@settings(max_examples=300, deadline=None)
def test_parameter_values_round_trip_through_json_exactly(params):
    canonical = _canonical(params)
    assert _decode(_json(_encode(canonical))) == canonical


classifiers = st.sampled_from(
    [
        (
            "rf",
            {
                "n_estimators": st.integers(1, 50),
                "min_samples_leaf": st.integers(1, 5),
                "max_features": st.sampled_from(["sqrt", "log2", 0.5, None]),
                "class_weight": st.sampled_from([None, "balanced", {0: 1.0, 1: 2.5}]),
            },
        ),
        (
            "logreg",
            {
                "C": st.floats(1e-6, 1e6),
                "max_iter": st.integers(10, 500),
                "class_weight": st.sampled_from(["balanced", {0: 2.0, 3: 0.5}]),
            },
        ),
        ("knn", {"n_neighbors": st.integers(1, 9), "weights": st.sampled_from(["uniform", "distance"])}),
        ("svm", {"C": st.floats(0.01, 100.0), "gamma": st.sampled_from(["scale", "auto", 0.01])}),
        ("majority", {}),
    ]
)
transforms = st.fixed_dictionaries(
    {},
    optional={
        "standardize": st.booleans(),
        "discretize": st.sampled_from([None, "fne", "kbins"]),
        "pca": st.sampled_from([None, 2, 0.9]),
        "kbins": st.integers(2, 9),
        "fne_low": st.floats(-1.0, -0.01),
        "fne_high": st.floats(0.01, 1.0),
    },
)
views = st.lists(
    st.sampled_from(["hflip", "vflip", "rot90", "crop1", "rand1s0", "rand2s3"]), unique=True, max_size=3
).map(lambda extra: ("id", *extra))


@st.composite
def specs(draw):
    name, space = draw(classifiers)
    params = draw(st.fixed_dictionaries({}, optional=space))
    chosen = draw(views)
    return dict(
        classifier=name,
        params=params,
        transforms=draw(transforms),
        seed=draw(st.integers(0, 2**31 - 1)),
        n_jobs=draw(st.sampled_from([-1, 1, 2, None])),
        views=chosen,
        tta=len(chosen) > 1 and draw(st.booleans()),
    )


evaluations = st.builds(
    lambda cv, r, metric, seed, fit_on: Evaluation(cv=cv, cv_repeats=r, metric=metric, seed=seed, fit_on=fit_on),
    st.sampled_from([None, 2, 3, 5]),
    st.integers(1, 3),
    st.sampled_from([None, *METRIC_NAMES]),
    st.integers(0, 99),
    st.sampled_from(["train", "train+val"]),
)


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
    same = [
        FitSpec(classifier="logreg", params={"C": 0.1}, transforms={"standardize": True, "kbins": 5}, n_jobs=1),
        base,
    ]
    for spec in same:
        assert spec_hash(spec, plain) == spec_hash(base, plain)
    assert spec_hash(base, Evaluation(metric="f1_macro", seed=5)) == spec_hash(base, plain)  # no folds: no seed
    different = [
        FitSpec(classifier="logreg", params={"C": 0.2}, transforms={"standardize": True}),
        FitSpec(classifier="logreg", params={"C": 0.1}),
        FitSpec(classifier="logreg", params={"C": 0.1}, transforms={"standardize": True}, seed=1),
        FitSpec(classifier="logreg", params={"C": 0.1}, transforms={"standardize": True}, views=("id", "hflip")),
    ]
    hashes = {spec_hash(spec, plain) for spec in different} | {
        spec_hash(base, Evaluation(cv=3)),
        spec_hash(base, Evaluation(cv=3, seed=1)),
        spec_hash(base, Evaluation(cv=3, cv_repeats=2)),
        spec_hash(base, Evaluation(fit_on="train+val")),
    }
    assert spec_hash(base, plain) not in hashes and len(hashes) == 8


@pytest.mark.slow  # the dense head's spec is checked by building it, which imports Keras
def test_a_dense_spec_keeps_its_tuples_through_json():
    spec = FitSpec(classifier="dense", params={"hidden": (64, 32), "lr": 0.01}, views=("id", "hflip"), tta=True)
    assert spec.to_dict()["params"] == {"hidden": [64, 32], "lr": 0.01}
    again = FitSpec.from_dict(_json(spec.to_dict()))
    assert again == spec and again.params["hidden"] == (64, 32)
    assert FitSpec(classifier="dense", params={"hidden": [64, 32]}).params["hidden"] == (64, 32)  # one form


@pytest.mark.parametrize(
    "data, message",
    [
        ({"classifier": "rf", "colour": 1}, "unknown key"),
        ({"classifier": "rf", "params": [1]}, "must be a table"),
        ({"classifier": "forest"}, "unknown classifier 'forest'"),
        ("rf", "must be a JSON object"),
    ],
)
def test_from_dict_refuses_what_it_cannot_make_in_one_line(data, message):
    with pytest.raises(FeatxError, match=message):
        FitSpec.from_dict(data)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"metric": "auc"}, "unknown metric 'auc'"),
        ({"search": "random"}, "unknown --search"),
        ({"search": "halving"}, "needs cross-validation"),
        ({"fit_on": "all"}, "unknown fit_on"),
    ],
)
def test_evaluation_is_checked_when_made(kwargs, message):
    with pytest.raises(FeatxError, match=message):
        Evaluation(**kwargs)


def test_metric_names_are_spelled_once():
    import importlib

    from featx.cli import options as cli

    runs, selection = (importlib.import_module(name) for name in ("featx.runs.listing", "featx.selection.metrics"))

    assert tuple(selection.METRICS) == METRIC_NAMES
    assert cli.METRIC_NAMES is METRIC_NAMES and runs.SELECTION_METRICS is METRIC_NAMES


def test_the_defaults_live_in_the_builders_only():
    """The defaults of what is fitted and how it is judged live in the builders and Evaluation: the verbs take those
    values and spell none of their keywords (one place, not a copy per front door that could drift)."""
    from featx.experiments.compare import compare
    from featx.experiments.fit import fit
    from featx.experiments.tune import tune
    from featx.selection.spec import compare_specs, tune_specs

    def defaults(function):
        return {k: p.default for k, p in inspect.signature(function).parameters.items() if p.default is not p.empty}

    built = {**defaults(fit_spec), **defaults(Evaluation), **defaults(compare_specs), **defaults(tune_specs)}
    assert {"seed", "params", "views", "cv", "metric", "class_weight"} <= set(built)
    for function in (fit, compare, tune):
        assert defaults(function) and not set(defaults(function)) & set(built), function


# --- a real runs log: every logged spec re-runs to the same numbers (the session's ELPV features)

LAYER = "top_activation"


def _scores(row) -> dict:
    """A logged run's numbers: val and test of every metric and, with CV, the CV means."""
    return {
        k: row[k]
        for k in row.index
        if k.startswith(("val_", "test_", "cv_"))
        and k.endswith(tuple(METRIC_NAMES) + tuple(f"{m}_mean" for m in METRIC_NAMES))
        and not pd.isna(row[k])
    }


@pytest.fixture(scope="module")
def logged(elpv_cache, tmp_path_factory):
    """A runs folder holding real fits, a compare (CV, grid, baselines), a view-less tune and a CLI fit."""
    import featx

    runs_dir = tmp_path_factory.mktemp("spec_runs")
    where = {"cache": featx.Cache(elpv_cache, runs_dir=runs_dir), "log": None}
    featx.fit(None, LAYER, featx.fit_spec("logreg", params={"C": 0.5}, standardize=True), **where)
    featx.fit(
        None,
        LAYER,
        featx.fit_spec("rf", params={"n_estimators": 15, "min_samples_leaf": 2}, seed=3),
        featx.Evaluation(cv=3, seed=3),
        **where,
    )
    featx.fit(None, LAYER, featx.fit_spec("knn", class_weight=None, discretize="kbins", kbins=4), **where)
    featx.compare(
        None,
        [LAYER],
        featx.compare_specs("logreg,knn", grid={"n_neighbors": [3, 5]}, standardize=True),
        featx.Evaluation(cv=3),
        compute=featx.Compute(progress=False),
        **where,
    )
    tune(
        None,
        LAYER,
        tune_specs("logreg", standardize=True),
        Evaluation(fit_on="train+val"),
        compute=Compute(workers=1, progress=False),
        **where,
    )
    return runs_dir


def test_every_logged_spec_round_trips_and_refits_to_the_same_scores(logged, elpv_cache, tmp_path):
    from featx.cache.store import Cache
    from featx.features.load import load
    from featx.runs.store import logged_selection, read_log
    from featx.selection.metrics import evaluate
    from featx.selection.spec import logged_spec

    table = read_log(Cache(None, runs_dir=logged))
    assert len(table) == 3 + (3 + 2) + 1 and table["spec_hash"].notna().all()
    entry = Cache(elpv_cache).open(table["cache_entry"].iloc[0])
    for _, row in table.iterrows():
        spec, evaluation = logged_spec(row)
        assert json.loads(row["spec"]) == spec.to_dict() and json.loads(row["evaluation"]) == evaluation.to_dict()
        assert spec_hash(spec, evaluation) == row["spec_hash"]
        if evaluation.fit_on == "train":  # fit and compare rows: the same fit again, from the spec alone
            again = fit(entry, logged_selection(row), spec, evaluation, cache=Cache(None, runs_dir=tmp_path), log=None)
            assert again.row["spec_hash"] == row["spec_hash"]
            expected, got = _scores(row), {k: v for k, v in again.row.items() if k in _scores(row)}
            # exactly: fit scores a spec's folds along compare's path (featx.selection.train.score_fold, each cold,
            # wide ones solved in row space), not merely at the same optimum within the solver's tolerance
            assert expected.keys() == got.keys()
            differ = {k: (expected[k], got[k]) for k in expected if expected[k] != got[k]}
            assert not differ, (row["run_id"], row["classifier"], differ)
        else:  # tune's refit on train+val, scored on test once
            X, y, meta = load(entry, logged_selection(row))
            split = meta["split"].to_numpy()
            selection = np.isin(split, ("train", "val"))
            model = spec.pipeline().fit(X[selection], y[selection])
            test = evaluate(y[split == "test"], model.predict(X[split == "test"]), entry.class_names)
            assert all(round(test[m], 4) == row[f"test_{m}"] for m in METRIC_NAMES)
            assert row["n_train"] == selection.sum()


def test_compare_runs_and_prune_rank_by_one_rule(logged, elpv_cache, tmp_path):
    """The model compare keeps is the run `featx runs` recommends; featx.list_runs() scores every run as rank() does;
    prune keeps rank()'s first."""
    import shutil

    from featx.runs.housekeeping import prune
    from featx.runs.listing import list_runs as runs
    from featx.runs.ranking import rank, recommended
    from featx.runs.store import read_log

    table = read_log(Cache(None, runs_dir=logged))
    compared = table[table["cv"].notna() & (table["classifier"] != "rf")]
    metric = "accuracy"
    best = recommended(rank(compared, metric))
    kept = compared[compared["model_path"].astype(str) != ""]
    assert list(kept["run_id"]) == [best["run_id"]]
    ranked = rank(table, metric).table
    ordered = runs(Cache(None, runs_dir=logged), metric=metric)  # one list by that score (rank: blocks per protocol)
    assert ordered["selection_score"].is_monotonic_decreasing
    for column in ("selection_score", "selected_by"):
        assert ordered.set_index("run_id")[column].to_dict() == ranked.set_index("run_id")[column].to_dict()
    copy = tmp_path / "runs"
    shutil.copytree(logged, copy)
    prune(1, metric=metric, cache=Cache(elpv_cache, runs_dir=copy), log=lambda *a: None)
    assert list(read_log(Cache(None, runs_dir=copy))["run_id"]) == [ranked["run_id"].iloc[0]]


def test_fit_like_refits_a_logged_run_and_flags_override_it(logged, elpv_cache, tmp_path):
    """`featx fit --like RUN_ID` in a real process: the same spec and scores; a flag given replaces its part only."""
    import shutil
    import subprocess
    import sys

    from featx.runs.store import read_log

    from helpers import assert_one_line_error

    runs_dir = tmp_path / "runs"
    shutil.copytree(logged, runs_dir)
    first = read_log(Cache(None, runs_dir=runs_dir)).iloc[0]  # logreg C=0.5 standardize
    where = ["--cache-dir", str(elpv_cache), "--runs-dir", str(runs_dir)]

    def featx(*args):
        return subprocess.run(
            [sys.executable, "-m", "featx", "fit", *args, *where], capture_output=True, text=True, timeout=300
        )

    done = featx("--like", first["run_id"][-6:])
    assert done.returncode == 0, done.stderr
    again = read_log(Cache(None, runs_dir=runs_dir)).iloc[-1]
    assert again["run_id"] != first["run_id"] and again["spec_hash"] == first["spec_hash"]
    assert again["spec"] == first["spec"] and _scores(again) == _scores(first) and again["layers"] == first["layers"]

    done = featx("--like", first["run_id"], "--param", "C=0.1", "--cv", "3")
    assert done.returncode == 0, done.stderr
    changed = read_log(Cache(None, runs_dir=runs_dir)).iloc[-1]
    spec = json.loads(changed["spec"])
    assert spec["params"] == {"C": 0.1} and spec["transforms"] == {"standardize": True}
    assert json.loads(changed["evaluation"])["cv"] == 3 and changed["cv"] == "cv3x1"
    assert changed["spec_hash"] != first["spec_hash"]

    done = featx("--like", "nosuchrun")
    assert_one_line_error(done.returncode, done.stderr, r"run 'nosuchrun' is not in .*runs.sqlite")


def test_a_pipeline_step_reuses_the_run_of_the_same_featx_fit(elpv_cache, tmp_path, capsys):
    """The step spells a default out (kbins = 5) and the command line leaves it; both build one FitSpec, one hash."""
    from conftest import ELPV_LAYERS, ELPV_LIMIT

    from featx.cli import main
    from featx.runs.store import read_log

    assert (
        main(
            [
                "fit",
                "--cache-dir",
                str(elpv_cache),
                "--layers",
                LAYER,
                "--clf",
                "logreg",
                "--param",
                "C=0.37",
                "--standardize",
                "--seed",
                "5",
            ]
        )
        == 0
    )
    logged = read_log(elpv_cache).iloc[-1]
    layers = ", ".join(f'"{name}"' for name in ELPV_LAYERS.split(","))
    (tmp_path / "p.toml").write_text(
        f'data = "elpv"\nlayers = [{layers}]\n[extract]\nlimit = {ELPV_LIMIT}\n'
        f'[[steps]]\nkind = "fit"\nclf = "logreg"\nlayers = "{LAYER}"\nparams = {{ C = 0.37 }}\n'
        "standardize = true\nkbins = 5\nseed = 5\nn_jobs = 1\n"
    )
    capsys.readouterr()
    assert main(["run", str(tmp_path / "p.toml"), "--cache-dir", str(elpv_cache)]) == 0
    assert "reused 1 logged run(s)" in capsys.readouterr().out
    assert read_log(elpv_cache).iloc[-1]["run_id"] == logged["run_id"]  # nothing appended


CLASSES = [str(d) for d in range(10)]


@pytest.mark.slow  # describes a dense-head spec (imports Keras)
def test_fitspec_is_a_keyword_only_frozen_value_with_a_stable_description():
    params = {"n_estimators": 20, "min_samples_leaf": 2}
    spec = FitSpec(classifier="rf", params=params, transforms={"standardize": True}, seed=3)
    params["n_estimators"] = 999  # the spec keeps its own copy
    assert spec.params == {"n_estimators": 20, "min_samples_leaf": 2}
    with pytest.raises(TypeError):
        FitSpec("rf")
    with pytest.raises(AttributeError):
        spec.seed = 4
    assert spec.describe() == 'rf {"min_samples_leaf": 2, "n_estimators": 20} transforms=standardize seed=3'
    assert json.loads(json.dumps(spec.to_dict())) == {
        "classifier": "rf",
        "params": {"min_samples_leaf": 2, "n_estimators": 20},
        "transforms": {"standardize": True},
        "seed": 3,
        "n_jobs": -1,
    }
    assert FitSpec(classifier="dense", params={"hidden": (64, 32)}).to_dict()["params"] == {"hidden": [64, 32]}
    assert spec == FitSpec(
        classifier="rf", params={"min_samples_leaf": 2, "n_estimators": 20}, transforms={"standardize": True}, seed=3
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"classifier": "forest"}, "unknown classifier 'forest'"),
        ({"params": {"max_dpth": 3}}, "Did you mean 'max_depth'"),
        ({"params": {"max_depth": "abc"}}, "'max_depth' parameter of RandomForestClassifier must be an int"),
        ({"transforms": {"standardise": True}}, "unknown transform option"),
        ({"transforms": {"pca": "abc"}}, "pca must be"),
    ],
)
def test_fitspec_is_checked_when_made(kwargs, message):
    with pytest.raises(FeatxError, match=message):
        FitSpec(**kwargs)


def test_train_and_score_is_pure_and_repeatable(digits, tmp_path, monkeypatch):
    X, y, split = digits
    monkeypatch.chdir(tmp_path)  # anything written relative to the working directory would land here
    spec = FitSpec(classifier="logreg", transforms={"standardize": True})
    first = train_and_score(X, y, split, spec, class_names=CLASSES)
    again = train_and_score(X, y, split, spec, class_names=CLASSES)
    assert list(tmp_path.iterdir()) == []
    assert set(first.metrics) == {"val", "test"} and first.metrics["test"]["accuracy"] > 0.9  # digits: a floor
    assert first.n_train == (split == "train").sum() and first.n_features == X.shape[1]
    assert first.metrics["test"]["accuracy"] == again.metrics["test"]["accuracy"]
    assert first.pipeline is not again.pipeline


def test_train_and_score_takes_any_split_array_so_folds_can_reuse_it(digits):
    X, y, _ = digits
    fold = np.where(np.arange(len(y)) % 5 == 0, "val", "train")  # one cross-validation fold
    scores = train_and_score(X, y, fold, FitSpec(classifier="knn"), class_names=CLASSES)
    assert set(scores.metrics) == {"val"} and scores.n_train == (fold == "train").sum()
    assert scores.metrics["val"]["confusion"].to_numpy().sum() == (fold == "val").sum()
    with pytest.raises(FeatxError, match="no train rows"):
        train_and_score(X, y, np.full(len(y), "test"), FitSpec(classifier="knn"), class_names=CLASSES)


def test_compare_builds_one_fitspec_per_classifier_and_grid_point_it_accepts():
    specs = fit_specs(
        "rf,knn",
        parse_grid(["min_samples_leaf=1,3", "n_neighbors=3,5"]),
        {"n_estimators": 10},
        {"standardize": True},
        seed=1,
        n_jobs=1,
    )
    assert [s.describe() for s in specs] == [
        'rf {"min_samples_leaf": 1, "n_estimators": 10} transforms=standardize seed=1',
        'rf {"min_samples_leaf": 3, "n_estimators": 10} transforms=standardize seed=1',
        'knn {"n_neighbors": 3} transforms=standardize seed=1',
        'knn {"n_neighbors": 5} transforms=standardize seed=1',
    ]
    with pytest.raises(FeatxError, match="belong to none of the classifiers"):
        fit_specs("knn", {"min_samples_leaf": [1]}, {}, {}, 0, 1)
    with pytest.raises(FeatxError, match="min_samples_leaf"):  # every point is checked before data is read
        fit_specs("rf", {"min_samples_leaf": [1, 0]}, {}, {}, 0, 1)


@pytest.mark.parametrize(
    "args, words",
    [
        (["--param", "max_depth=abc"], ["max_depth", "'abc'", "int in the range [1, inf)"]),
        (["--n-estimators", "abc"], ["n_estimators", "'abc'", "int in the range [1, inf)"]),
        (["--clf", "svm", "--param", "C=-1"], ["'C'", "SVC", "got -1", "(0.0, inf]"]),
        pytest.param(
            ["--clf", "dense", "--dense-batch-size", "0"], ["batch_size", "got 0"], marks=pytest.mark.slow
        ),  # builds the Keras dense head to check it
        (["--pca", "abc"], ["pca", "'abc'"]),
    ],
)
def test_bad_parameter_values_are_one_error_line_before_any_data_is_read(tmp_path, capsys, args, words):
    empty = str(tmp_path / "no-cache-here")  # a check after loading would say "no cache entries" instead
    assert main(["fit", "--cache-dir", empty, *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    assert all(word in err for word in words), err


def test_cli_values_arrive_typed_and_grid_errors_name_the_item(tmp_path, capsys):
    empty = str(tmp_path / "no-cache-here")
    assert main(["compare", "--cache-dir", empty, "--layer-sets", "blocks", "--grid", "min_samples_leaf=1,0"]) == 2
    assert "min_samples_leaf" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:  # argparse's own usage error: --grid without key=
        main(["compare", "--cache-dir", empty, "--layer-sets", "blocks", "--grid", "1,2"])
    assert done.value.code == 2 and "bad parameter '1,2'" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --batch-size is extract/predict's images per forward pass, not the head's
        main(["fit", "--cache-dir", empty, "--clf", "dense", "--batch-size", "8"])
    assert "--batch-size" in capsys.readouterr().err


def test_public_entry_points_are_keyword_only_after_their_first_arguments():
    positional = {  # the entry and the values a verb acts on; how it runs is keyword-only
        featx.load: 2,
        fit: 4,
        compare: 4,
        featx.tune: 4,
        featx.extract: 3,
        tsne: 2,
        run_pipeline: 1,
        predict: 2,
        featx.fit: 4,
    }
    for function, count in positional.items():
        parameters = list(inspect.signature(function).parameters.values())
        assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in parameters[:count]), function.__name__
        assert all(p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD) for p in parameters[count:]), function.__name__
    with pytest.raises(TypeError):
        featx.load(None, "top_activation", "test")  # a split name can no longer slide into another parameter

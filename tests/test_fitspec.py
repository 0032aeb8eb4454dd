"""FitSpec, the pure train_and_score, typed CLI values and parameter errors, and the keyword-only API."""

import inspect
import json

import numpy as np
import pytest

import featx
from featx.cli import main
from featx.errors import FeatxError
from featx.experiments.compare import compare
from featx.experiments.fit import fit
from featx.experiments.pipelines import run_pipeline
from featx.experiments.predict import predict
from featx.experiments.tsne import tsne
from featx.selection.spec import FitSpec, fit_specs
from featx.selection.train import train_and_score
from featx.values import parse_grid

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

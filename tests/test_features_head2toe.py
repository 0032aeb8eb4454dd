"""Head2Toe's steps: --normalize layer (L2 per layer block per sample) and --select group-lasso:F, as scikit-learn
transformers fitted on train rows only (poisoned val rows change nothing), on real data: scikit-learn's digits
(fast tier) and ELPV features of the embedded default backbone (slow tier)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, MultiTaskLasso
from sklearn.utils.estimator_checks import parametrize_with_checks

from featx.errors import FeatxError
from featx.features.head2toe import GroupLassoSelector, LayerNormalizer, parse_select
from featx.features.transforms import build_feature_pipeline
from featx.selection.cv import cross_validate, make_folds
from featx.selection.spec import Evaluation, FitSpec, Head2ToeSearch
from featx.selection.train import cross_validate_spec, train_and_score

from helpers import extract

DIGIT_BLOCKS = [["top_rows", 16], ["middle_rows", 32], ["bottom_rows", 16]]  # digits' 8x8 pixels, row bands
CLASSES = [str(i) for i in range(10)]


def test_layer_normalizer_gives_each_block_unit_norm(digits):
    X, _, _ = digits
    X = X.copy()
    X[0, :16] = 0  # a zero block stays zero (Head2Toe's zero-aware normalize)
    out = LayerNormalizer(blocks=DIGIT_BLOCKS).fit(X[:100]).transform(X)
    norms = np.stack([np.linalg.norm(out[:, a:b], axis=1) for a, b in ((0, 16), (16, 48), (48, 64))], axis=1)
    np.testing.assert_allclose(norms[1:], 1.0, rtol=1e-12)  # float64 norms of <= 32 values: a few u64
    assert norms[0, 0] == 0 and np.allclose(norms[0, 1:], 1.0)
    nonzero = X[5, 16:48] != 0
    ratio = out[5, 16:48][nonzero] / X[5, 16:48][nonzero]  # within a block, a row is scaled, not reshaped
    assert np.allclose(ratio, ratio[0])  # one float64 factor per row
    assert (
        out.dtype == np.float64
        and LayerNormalizer(blocks=DIGIT_BLOCKS).fit_transform(X.astype(np.float32)).dtype == np.float32
    )


def test_layer_normalizer_refuses_a_missing_or_wrong_layout(digits):
    X = digits[0]
    with pytest.raises(FeatxError, match="layer layout"):
        LayerNormalizer().fit(X)
    with pytest.raises(FeatxError, match="cover 48 columns but the features have 64"):
        LayerNormalizer(blocks=DIGIT_BLOCKS[:2]).fit(X)
    with pytest.raises(FeatxError, match="--normalize 'batch'"):
        build_feature_pipeline(normalize="batch")


def test_group_lasso_ranks_by_the_multitask_lasso_group_norms(digits):
    """The kept features are the largest ||W_j||^2 of scikit-learn's MultiTaskLasso on one-hot targets (the L2,1
    penalty with one group per feature across classes), F of all features ranked globally."""
    X, y, split = digits
    train = split == "train"
    selector = GroupLassoSelector(fraction=0.25, penalty=0.05, blocks=DIGIT_BLOCKS).fit(X[train], y[train])
    Y = np.eye(10)[y[train]]
    alpha_max = np.linalg.norm(X[train].T @ (Y - Y.mean(axis=0)), axis=1).max() / train.sum()
    reference = MultiTaskLasso(alpha=0.05 * alpha_max).fit(X[train], Y)
    norms = (reference.coef_**2).sum(axis=0)
    # the same solver on the same float64 data: equal up to its tolerance (rtol 1e-6 covers another memory order)
    np.testing.assert_allclose(selector.scores_, norms, rtol=1e-6, atol=1e-12)
    assert selector.support_.sum() == 16
    nonzero = np.flatnonzero(norms > 0)
    assert len(nonzero) >= 16  # at this penalty the kept ones are all in the model: the 16 largest norms
    assert set(np.flatnonzero(selector.support_)) == set(np.argsort(-norms)[:16])
    assert (norms == 0).any()  # group sparsity: whole features (all 10 class weights) at zero
    kept = selector.kept_per_layer()
    assert list(kept) == [b[0] for b in DIGIT_BLOCKS] and sum(kept.values()) == 16
    names = selector.get_feature_names_out()
    assert len(names) == 16 and all(n.split(":")[0] in kept for n in names)
    assert selector.transform(X).shape == (len(X), 16)


def test_group_lasso_keeps_the_informative_features(digits):
    """Real signal: a linear head on the top 15% of pixels beats one on the bottom 15% by a wide margin."""
    X, y, split = digits
    train, test = split == "train", split == "test"
    selector = GroupLassoSelector(fraction=0.15, penalty=0.1).fit(X[train], y[train])
    top, bottom = selector.ranking_[:10], selector.ranking_[-10:]

    def accuracy(columns):
        return LogisticRegression(max_iter=2000).fit(X[train][:, columns], y[train]).score(X[test][:, columns], y[test])

    assert accuracy(top) > accuracy(bottom) + 0.3


@pytest.mark.parametrize("text,fraction", [("group-lasso:0.05", 0.05), ("group-lasso:1", 1.0), ("group-lasso", 0.1)])
def test_select_spelling(text, fraction):
    assert parse_select(text) == fraction


@pytest.mark.parametrize("bad", ["group-lasso:0", "group-lasso:1.5", "group-lasso:x", "lasso:0.1", "0.1"])
def test_select_refuses_bad_spellings_before_any_data(bad):
    with pytest.raises(FeatxError, match="group-lasso:F"):
        FitSpec(classifier="logreg", transforms={"select": bad})


def test_selection_never_sees_val_rows(digits):
    """Poisoned val rows (labels shuffled, features replaced by noise) change neither what is kept nor the test
    predictions: the normalizer and the selector are fitted on the train rows only."""
    X, y, split = digits
    spec = FitSpec(
        classifier="logreg",
        params={"max_iter": 3000},
        seed=0,
        transforms={"normalize": "layer", "select": "group-lasso:0.3", "blocks": DIGIT_BLOCKS},
    )
    clean = train_and_score(X, y, split, spec, class_names=CLASSES)
    rng = np.random.default_rng(1)
    val = split == "val"
    X_bad, y_bad = X.copy(), y.copy()
    X_bad[val] = rng.normal(50, 30, size=(val.sum(), X.shape[1]))
    y_bad[val] = rng.permutation(y_bad[val])
    poisoned = train_and_score(X_bad, y_bad, split, spec, class_names=CLASSES)
    kept = [s.pipeline.named_steps["select"].support_ for s in (clean, poisoned)]
    np.testing.assert_array_equal(kept[0], kept[1])
    test = split == "test"
    np.testing.assert_array_equal(clean.pipeline.predict(X[test]), poisoned.pipeline.predict(X_bad[test]))
    assert clean.metrics["test"]["accuracy"] == poisoned.metrics["test"]["accuracy"]
    assert poisoned.metrics["val"]["accuracy"] < clean.metrics["val"]["accuracy"]  # the poison did reach val


def test_selection_is_refitted_inside_each_cv_fold(digits):
    """Each fold fits its own selection on its own train rows: the folds keep different features, and poisoning
    the rows fold 0 holds out (noise features, shuffled labels) leaves fold 0's selection exactly as it was."""
    X, y, split = digits
    spec = FitSpec(
        classifier="logreg",
        params={"max_iter": 3000},
        n_jobs=1,
        transforms={"normalize": "layer", "select": "group-lasso:0.3", "blocks": DIGIT_BLOCKS},
    )
    folds = make_folds(y, split, 3, 1, 0)
    clean = cross_validate(spec.pipeline(), X, y, folds, return_estimators=True)
    supports = [e.named_steps["select"].support_ for e in clean.estimators]
    assert any(not np.array_equal(supports[0], s) for s in supports[1:])
    held_out = folds.splits[0][1]
    X_bad, y_bad = X.copy(), y.copy()
    rng = np.random.default_rng(2)
    X_bad[held_out] = rng.normal(50, 30, size=(len(held_out), X.shape[1]))
    y_bad[held_out] = rng.permutation(y_bad[held_out])
    poisoned = cross_validate(spec.pipeline(), X_bad, y_bad, folds, return_estimators=True)
    np.testing.assert_array_equal(poisoned.estimators[0].named_steps["select"].support_, supports[0])
    assert poisoned.scores["accuracy"].iloc[0] < clean.scores["accuracy"].iloc[0]  # the poison reached its score
    assert 0.8 < cross_validate_spec(X, y, folds, spec, n_jobs=1).scores["accuracy"].mean() <= 1.0  # digits: a floor


@parametrize_with_checks([GroupLassoSelector(fraction=0.5, penalty=0.1)])
def test_group_lasso_selector_passes_sklearn_checks(estimator, check):
    check(estimator)


SIZE = 96  # Lite0 at 96 px: blocks of 48x48 down to 3x3 maps, cheap


@pytest.fixture(scope="module")
def h2t_entries(elpv_folder, tmp_path_factory):
    """The 18-image ELPV folder through EfficientNet-Lite0 blocks: an avg entry with flip views, and grid:256."""
    cache_dir = tmp_path_factory.mktemp("h2t")
    quiet = {"input_size": SIZE, "cache_dir": cache_dir, "progress": False, "log": lambda *a: None}
    avg = extract(str(elpv_folder), "blocks", pool="avg", views="flip", **quiet).entry
    grid = extract(str(elpv_folder), "blocks", pool="grid:256", **quiet).entry
    return cache_dir, avg, grid


@pytest.mark.slow
def test_tune_head2toe_searches_t_penalty_fraction_and_c(h2t_entries):
    from featx.experiments.tune_head2toe import tune_head2toe

    cache_dir, avg, grid = h2t_entries
    lines = []
    result = tune_head2toe(
        [avg.name, grid.name],
        None,
        Head2ToeSearch(penalties=(0.3, 0.1), fractions=(0.1, 0.5), Cs=(0.1, 10.0)),
        Evaluation(metric="accuracy"),
        cache=cache_dir,
        log=lines.append,
    )
    curve = result.curve
    assert set(curve["pool"]) == {"avg", "grid:256"} and set(curve["penalty"]) == {0.3, 0.1}
    assert set(curve["fraction"]) == {0.1, 0.5} and set(curve["C"]) == {0.1, 10.0} and len(curve) == 16
    assert curve["best"].sum() == 1 and curve.loc[curve["best"], "accuracy"].iloc[0] == curve["accuracy"].max()
    assert (result.folder / "head2toe_curve.csv").is_file() and (result.folder / "head2toe_curve.png").is_file()
    assert grid.layer_info["block1a_project_bn"]["n_features"] > 16  # grid keeps positions: more than C columns
    run_folder = cache_dir / "runs" / result.run_id
    kept = result.kept
    assert (run_folder / "kept_per_layer.png").is_file() and kept is not None
    entry = avg if result.best["entry"] == avg.name else grid
    assert list(kept["layer"]) == [n for n in entry.layer_info if n in entry.layers]  # every layer, depth order
    n_features = sum(entry.layer_info[n]["n_features"] for n in entry.layers)
    assert (
        kept["kept"].sum() == max(1, round(result.best["fraction"] * n_features))
        and kept["features"].sum() == n_features
    )
    assert result.test is not None and any("saved search curve" in line for line in lines)


@pytest.mark.slow
def test_fit_with_layer_norm_selection_views_and_tta(h2t_entries, capsys):
    """The Head2Toe steps inside a ViewEnsemble: trained on both views, TTA at val and test, kept plot saved, and
    the logged run's command line fits it again."""
    import featx.cli
    from featx.runs.record import fit_command

    cache_dir, avg, _ = h2t_entries
    assert (
        featx.cli.main(
            [
                "fit",
                avg.name,
                "--cache-dir",
                str(cache_dir),
                "--clf",
                "logreg",
                "--normalize",
                "layer",
                "--select",
                "group-lasso:0.2",
                "--select-penalty",
                "0.05",
                "--views",
                "flip",
                "--tta",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    run_id = out.split("run ")[1].split(":")[0]
    folder = cache_dir / "runs" / run_id
    assert (folder / "kept_per_layer.png").is_file()
    import pandas as pd

    kept = pd.read_csv(folder / "kept_per_layer.csv")
    assert kept["kept"].sum() == round(0.2 * kept["features"].sum())
    row = {
        "cache_entry": avg.name,
        "layers": "blocks",
        "classifier": "logreg",
        "params": "{}",
        "seed": 0,
        "transforms": "layernorm+group-lasso(0.2,0.05)",
        "views": "id,hflip",
        "tta": 1,
    }
    assert "--normalize layer --select group-lasso:0.2 --select-penalty 0.05" in fit_command(row)


@pytest.mark.slow
def test_tune_cli_select_group_lasso(h2t_entries, capsys):
    import featx.cli

    cache_dir, avg, grid = h2t_entries
    assert (
        featx.cli.main(
            [
                "tune",
                avg.name,
                "--cache",
                grid.name,
                "--cache-dir",
                str(cache_dir),
                "--select",
                "group-lasso:0.3",
                "--select-penalty",
                "0.1",
                "--param",
                "C=1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "selected: " in out and "fraction=0.3" in out and "penalty=0.1" in out and "C=1" in out
    # with views, every candidate entry must hold them: one line before any fit, naming the extract to run
    argv = ["tune", avg.name, "--cache", grid.name, "--cache-dir", str(cache_dir), "--select", "group-lasso:0.3"]
    assert featx.cli.main([*argv, "--views", "flip", "--tta"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cache entry {grid.name} lacks view(s) hflip") and "\n" not in err
    assert "--views hflip" in err


@pytest.mark.slow
def test_tune_head2toe_with_views_and_tta_is_the_view_ensemble_fit(h2t_entries):
    """tune --select group-lasso on cached flip views with TTA: each CV point scores exactly as the fit contract's
    ViewEnsemble of the same spec (trained on every view of the fold's train images, TTA on the held-out ones) on
    the same folds of images; the refit is that ViewEnsemble, logged with its views."""
    import featx
    from featx.classifiers.views import ViewEnsemble
    from featx.experiments.tune_head2toe import tune_head2toe
    from featx.features.head2toe import layer_blocks

    cache_dir, avg, _ = h2t_entries
    result = tune_head2toe(
        avg.name,
        None,
        Head2ToeSearch(
            views=("id", "hflip"), tta=True, standardize=True, penalties=(0.1,), fractions=(0.3,), Cs=(1.0,)
        ),
        Evaluation(cv=3, metric="accuracy"),
        cache=cache_dir,
        log=None,
    )
    assert result.views == ("id", "hflip") and result.tta and "views=id,hflip (tta)" in result.line()
    features = featx.load(avg.name, views="flip", cache=cache_dir)
    X, y, meta = features
    split = meta["split"].to_numpy()
    spec = FitSpec(
        classifier="logreg",
        params={"C": 1.0, "max_iter": 2000},
        n_jobs=1,
        views=("id", "hflip"),
        tta=True,
        transforms={
            "normalize": "layer",
            "standardize": True,
            "select": "group-lasso:0.3",
            "select_penalty": 0.1,
            "blocks": layer_blocks(features.feature_slices),
        },
    )
    ensemble = cross_validate_spec(X, y, make_folds(y, split, 3, 1, 0), spec, n_jobs=1).scores
    point = result.curve.iloc[0]
    for metric in ("accuracy", "balanced_accuracy", "f1_macro"):
        assert point[metric] == pytest.approx(ensemble[metric].mean(), abs=1e-9)  # the same CV: equal scores
    model, row = featx.load_model(result.run_id, cache_dir)
    assert isinstance(model, ViewEnsemble) and row["views"] == "id,hflip" and int(row["tta"]) == 1


@pytest.mark.slow
def test_tune_head2toe_with_views_refits_selection_per_fold(h2t_entries):
    """With views, each fold's ranking is fitted on every view of that fold's train images only: poisoning fold 0's
    held-out images (every view: noise features, shuffled labels) leaves fold 0's ranking exactly as it was and
    changes its scores, while fold 1, which trains on those images, ranks otherwise."""
    import featx
    from featx.experiments.tune_head2toe import search_split
    from featx.features.head2toe import layer_blocks

    cache_dir, avg, _ = h2t_entries
    features = featx.load(avg.name, views="flip", cache=cache_dir)
    X, y, meta = features
    folds = make_folds(y, meta["split"].to_numpy(), 3, 1, 0)
    recipe = Head2ToeSearch(penalties=(0.1,), fractions=(0.3,), Cs=(1.0,), views=("id", "hflip"), tta=True)
    options = {"blocks": layer_blocks(features.feature_slices)}
    X_bad, y_bad = X.copy(), y.copy()
    held_out = folds.splits[0][1]
    rng = np.random.default_rng(3)
    X_bad[held_out] = rng.normal(5, 3, size=(len(held_out), X.shape[1]))
    y_bad[held_out] = (y_bad[held_out] + 1) % 3  # every held-out label wrong
    clean, clean_rank = search_split(X, y, *folds.splits[0], recipe, **options)
    poisoned, poisoned_rank = search_split(X_bad, y_bad, *folds.splits[0], recipe, **options)
    np.testing.assert_array_equal(clean_rank[0.1], poisoned_rank[0.1])
    assert poisoned[0]["accuracy"] < clean[0]["accuracy"]  # the poison reached fold 0's scores
    other = [search_split(A, b, *folds.splits[1], recipe, **options)[1][0.1] for A, b in ((X, y), (X_bad, y_bad))]
    assert not np.array_equal(other[0], other[1])


@pytest.mark.slow
def test_shipped_head2toe_pipeline_runs(tmp_path):
    """pipelines/head2toe.toml as shipped, on a 120-image subset at 96 px: grid-pooled every layer, the recipe's fit
    logged with its kept features per layer, beside the final layer alone."""
    from pathlib import Path

    from featx.experiments.pipelines import run_pipeline

    text = (Path(__file__).parents[1] / "pipelines" / "head2toe.toml").read_text()
    assert "[extract]\n" in text and 'pool = "grid:' in text
    small = tmp_path / "head2toe.toml"
    small.write_text(text.replace("[extract]\n", "[extract]\nlimit = 120\ninput_size = 96\n"))
    result = run_pipeline(small, cache=tmp_path / "cache", log=lambda *a: None)
    assert result.entry.settings["pool"].startswith("grid:") and len(result.entry.layers) == 67
    rows = result.table.to_dict("records")
    recipe = [r for r in rows if "group-lasso" in str(r["transforms"])]
    assert len(recipe) == 1 and recipe[0]["transforms"].startswith("layernorm+group-lasso(")
    assert (tmp_path / "cache" / "runs" / recipe[0]["run_id"] / "kept_per_layer.png").is_file()
    assert any(r["layers"] == "top_activation" for r in rows)


@pytest.mark.slow
def test_compare_binds_each_subsets_layout(h2t_entries):
    """compare rows of different layer subsets each get their own layer layout (a wrong one would be refused)."""
    import featx

    cache_dir, avg, _ = h2t_entries
    result = featx.compare(
        avg.name,
        ["blocks", "each"],
        featx.compare_specs(["logreg"], normalize="layer", select="group-lasso:0.5"),
        plots=False,
        cache=cache_dir,
        compute=featx.Compute(progress=False),
        log=None,
    )
    import pandas as pd

    rows = result.table[result.table["classifier"] == "logreg"]
    assert len(rows) == 1 + len(avg.layers) and rows["val_accuracy"].notna().all()
    for row in rows.to_dict("records"):
        kept = pd.read_csv(cache_dir / "runs" / row["run_id"] / "kept_per_layer.csv")
        expected = list(avg.layers) if row["layers"] == "blocks" else [row["layers"]]
        assert list(kept["layer"]) == expected and kept["features"].sum() == row["n_features"]

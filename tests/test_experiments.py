"""Experiments stage on real features: ELPV images through EfficientNet-Lite0, extracted once (conftest.elpv_cache)."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from featx.cache.store import Cache, CacheEntry
from featx.cli import main
from featx.compute import Compute
from featx.errors import FeatxError
from featx.experiments.compare import compare
from featx.experiments.fit import fit
from featx.experiments.pipelines import read_pipeline, run_pipeline
from featx.experiments.predict import predict
from featx.features.load import load
from featx.report import pipeline_page
from featx.runs.listing import RunFilter
from featx.runs.listing import list_runs as runs
from featx.runs.models import load_model
from featx.runs.store import append_run, read_log
from featx.selection.spec import compare_specs, fit_spec

from helpers import assert_float32_close, feature_terms

QUIET = {"log": lambda *a: None}


def _log_size(cache_dir):
    return len(read_log(cache_dir))


def _split(cache_dir, layers, name):
    X, y, meta = load(None, layers, cache=cache_dir)
    rows = (meta["split"] == name).to_numpy()
    return X[rows], y[rows], meta[rows]


def test_rf_and_logreg_beat_chance_by_far_and_are_logged(elpv_cache):
    before = _log_size(elpv_cache)
    forest = fit(None, "blocks", fit_spec("rf", params={"n_estimators": 100}), cache=elpv_cache, log=lambda *a: None)
    logreg = fit(None, "top_activation", fit_spec("logreg", standardize=True), cache=elpv_cache, log=lambda *a: None)
    _, y_test, _ = _split(elpv_cache, "top_activation", "test")
    majority = np.bincount(y_test).max() / len(y_test)  # 0.57 on this subset
    for result in (forest, logreg):
        test = result.metrics["test"]
        # Measured: accuracy 0.76 / 0.78 and macro F1 0.50 / 0.51; always predicting the majority class
        # gives macro F1 0.18, guessing by class frequency about 0.25.
        assert test["accuracy"] >= majority + 0.1
        assert test["f1_macro"] >= 0.4
        assert test["confusion"].to_numpy().sum() == len(y_test)
        assert {
            "model.skops",
            "metrics.json",
            "confusion_val.csv",
            "confusion_val.png",
            "confusion_test.csv",
            "confusion_test.png",
        } <= {p.name for p in result.folder.iterdir()}
    log = read_log(elpv_cache)
    assert len(log) == before + 2
    row = log.set_index("run_id").loc[forest.run_id]
    assert (row["classifier"], row["backbone"], row["layers"], row["n_features"]) == (
        "rf",
        "efficientnet_lite0",
        "blocks",
        1808,
    )
    assert row["cache_key"] == Cache(elpv_cache).open(None).key and '"n_estimators": 100' in row["all_params"]
    assert row["test_accuracy"] == round(forest.metrics["test"]["accuracy"], 4)
    model, _ = load_model(logreg.run_id, elpv_cache)
    X_test, _, _ = _split(elpv_cache, "top_activation", "test")
    np.testing.assert_array_equal(model.predict(X_test), logreg.pipeline.predict(X_test))


def test_fne_maps_to_three_values_with_train_statistics_only(elpv_cache):
    result = fit(
        None,
        "block6d_add,top_activation",
        fit_spec("logreg", discretize="fne", fne_low=-0.3, fne_high=0.2),
        cache=elpv_cache,
        log=lambda *a: None,
    )
    fne = result.pipeline.named_steps["fne"]
    X_train, _, _ = _split(elpv_cache, "block6d_add,top_activation", "train")
    X_all, _, _ = load(None, "block6d_add,top_activation", cache=elpv_cache)
    # float64 means of the same float32 rows (another summation order at most: n u64 = 1e-13), vs the means of
    # all rows, which differ by far more
    np.testing.assert_allclose(fne.mean_, X_train.mean(axis=0, dtype=np.float64), rtol=1e-6)
    assert not np.allclose(fne.mean_, X_all.mean(axis=0, dtype=np.float64), rtol=1e-6)
    assert (fne.low, fne.high) == (-0.3, 0.2) and result.row["transforms"] == "fne(-0.3,0.2)"
    assert set(np.unique(fne.transform(X_all))) == {-1.0, 0.0, 1.0}


def test_dense_head_learns_keeps_best_epoch_and_round_trips(elpv_cache):
    # seed 1: a run whose best val epoch is neither the first nor the last, so keeping it is visible (on this
    # 37-image val split some seeds never beat their first epoch's val accuracy while the train loss falls)
    result = fit(
        None,
        "top_activation",
        fit_spec(
            "dense", params={"hidden": (64,), "epochs": 30, "lr": 0.01, "momentum": 0.9}, seed=1, standardize=True
        ),
        cache=elpv_cache,
        log=lambda *a: None,
    )
    head = result.pipeline[-1]
    history = pd.read_csv(result.folder / "history.csv")
    assert len(history) == 30 and (result.folder / "learning_curves.png").is_file()
    assert history["loss"].iloc[-1] < history["loss"].iloc[0] / 10  # it learns
    assert history["val_accuracy"].max() > history["val_accuracy"].iloc[0]  # and generalizes beyond epoch 1
    assert head.best_epoch_ == history["val_accuracy"].idxmax() + 1 < 30  # not simply the last epoch
    assert result.metrics["val"]["accuracy"] == pytest.approx(history["val_accuracy"].max())  # best weights: its score
    model, _ = load_model(result.run_id, elpv_cache)
    X_test, _, _ = _split(elpv_cache, "top_activation", "test")
    # the saved weights in a reloaded graph: probabilities <= 1 through a 1,280-wide sum, float32 (1280 u = 7.6e-5)
    np.testing.assert_allclose(model.predict_proba(X_test), result.pipeline.predict_proba(X_test), atol=1e-4)


def test_compare_reads_layers_once_and_logs_one_run_per_row(elpv_cache, monkeypatch):
    reads = []
    original = CacheEntry.read
    monkeypatch.setattr(
        CacheEntry, "read", lambda self, layers, rows=None: reads.append(layers) or original(self, layers, rows)
    )
    before = _log_size(elpv_cache)
    result = compare(
        None,
        ["each", "block6d_add,top_activation"],
        compare_specs("knn,rf", grid={"min_samples_leaf": [1, 3]}, params={"n_estimators": 10}),
        cache=elpv_cache,
        compute=Compute(workers=2),
        log=lambda *a: None,
    )
    entry = Cache(elpv_cache).open(None)
    assert [list(r) for r in reads] == [entry.layers]  # the union, once, in depth order
    table = result.table
    assert len(table) == (len(entry.layers) + 1) * 3 + 2  # knn + rf x 2 grid points per subset, 2 baselines
    assert not table.duplicated(["layers", "classifier", "params"]).any()
    assert set(table.loc[table["classifier"] == "knn", "params"]) == {"{}"}  # the grid goes only to rf
    assert table["depth"].notna().sum() == len(entry.layers) * 3  # "each" rows carry their depth index
    assert _log_size(elpv_cache) == before + len(table)
    assert set(table["run_id"]) <= set(read_log(elpv_cache)["run_id"])
    assert result.csv.is_file() and result.plot.is_file()
    pd.testing.assert_frame_equal(pd.read_csv(result.csv)[["layers", "classifier"]], table[["layers", "classifier"]])


def test_runs_sorted_best_first_and_filtered(elpv_cache):
    for leaf in (1, 5, 9):
        fit(
            None,
            "block5c_add,block6d_add",
            fit_spec("rf", params={"min_samples_leaf": leaf}),
            cache=elpv_cache,
            log=lambda *a: None,
        )
    fit(None, "block6d_add", fit_spec("knn"), cache=elpv_cache, log=lambda *a: None)
    assert runs(elpv_cache)["selection_score"].is_monotonic_decreasing  # CV mean where a run has one, else val
    forests = runs(elpv_cache, where=RunFilter(clf="rf", layers="block5c"), top=2)
    assert len(forests) == 2 and set(forests["classifier"]) == {"rf"}
    assert forests["val_accuracy"].is_monotonic_decreasing and forests["layer_names"].str.contains("block5c").all()
    fastest = runs(elpv_cache, sort="fit_seconds")
    assert fastest["fit_seconds"].is_monotonic_increasing


def test_predict_on_image_files_matches_the_cached_features(elpv_cache, tmp_path):
    result = fit(
        None, "block6d_add,top_activation", fit_spec("logreg", standardize=True), cache=elpv_cache, log=lambda *a: None
    )
    X_test, _, meta = _split(elpv_cache, "block6d_add,top_activation", "test")
    root = Cache(elpv_cache).open(None).attrs["root"]
    files = [f"{root}/{p}" for p in meta["path"][:4]]
    folder = tmp_path / "more"
    folder.mkdir()
    shutil.copy(files[3], folder / "cell.png")
    (folder / "notes.txt").write_text("not an image")
    # an id prefix as users type it; not just the timestamp, which other runs in the same second share
    table = predict(
        result.run_id[:-2],
        files[:3] + [str(folder)],
        output=tmp_path / "out.csv",
        cache=elpv_cache,
        compute=Compute(batch_size=2),
        log=lambda *a: None,
    )
    assert list(table["path"]) == files[:3] + [str(folder / "cell.png"), str(folder / "notes.txt")]
    # predict re-extracts the images, in its batches of 2: the same extractor here gives the same features, which
    # lie within float32 round-off of the cached ones (another batch layout; helpers.roundoff, per layer), and the
    # table holds the pipeline's labels and probabilities for them, the latter to the CSV's 4 decimals (5e-5).
    # (Bounding the probabilities by the cached features' instead would carry their round-off through 1,300
    # logistic-regression coefficients: a worst case near 1, whatever the measured difference.)
    from featx.backbones import backbone_from_entry
    from featx.extractor import LayerExtractor

    entry, layers = Cache(elpv_cache).open(None), ["block6d_add", "top_activation"]
    backbone = backbone_from_entry(entry)
    extractor = LayerExtractor(backbone, layers, entry.settings["pool"], entry.settings["dtype"])
    batches = extractor.batches(files[:3] + [str(folder / "cell.png")], 0, 2)
    features = np.concatenate([np.concatenate([out[n] for n in layers], axis=-1) for _, out, _ in batches])
    for layer, (start, stop) in load(entry, ",".join(layers)).feature_slices.items():
        terms = feature_terms(backbone.model, layer)
        assert_float32_close(features[:, start:stop], X_test[:4, start:stop], terms, err_msg=layer)
    expected = np.asarray(entry.class_names)[result.pipeline.predict(features)]
    assert list(table["label"][:4]) == list(expected)
    probabilities = table.filter(like="p_").to_numpy()[:4].astype(float)
    np.testing.assert_allclose(probabilities, result.pipeline.predict_proba(features), rtol=0, atol=5e-5 + 1e-12)
    assert table["error"].iloc[4] and table["label"].iloc[4] == ""
    assert pd.read_csv(tmp_path / "out.csv")["label"].iloc[:4].tolist() == list(expected)


def test_tampered_or_foreign_model_is_refused(elpv_cache):
    result = fit(None, "top_activation", fit_spec("knn"), cache=elpv_cache, log=lambda *a: None)
    outside = elpv_cache / "outside.skops"  # intact copy, right sha256, but not in the runs folder
    shutil.copy(result.folder / "model.skops", outside)
    append_run(elpv_cache, {**result.row, "run_id": "20990101-000000-f0e1d2", "model_path": "../outside.skops"})
    with pytest.raises(FeatxError, match="not a file inside"):
        load_model("20990101-000000-f0e1d2", elpv_cache)
    with open(result.folder / "model.skops", "ab") as f:
        f.write(b"\0")
    with pytest.raises(FeatxError, match="sha256"):
        load_model(result.run_id, elpv_cache)
    with pytest.raises(FeatxError, match="sha256"):
        predict(result.run_id, [result.folder], cache=elpv_cache, log=lambda *a: None)


def test_cli_fit_compare_runs_and_bad_input(elpv_cache, capsys):
    d = str(elpv_cache)
    before = _log_size(elpv_cache)
    assert (
        main(
            [
                "fit",
                "--cache-dir",
                d,
                "--layers",
                "top_activation",
                "--clf",
                "logreg",
                "--standardize",
                "--param",
                "C=0.5",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "compare",
                "--cache-dir",
                d,
                "--layer-sets",
                "top_activation",
                "block6d_add",
                "--clf",
                "rf,logreg",
                "--grid",
                "min_samples_leaf=1,3",
                "--n-estimators",
                "20",
            ]
        )
        == 0
    )
    assert _log_size(elpv_cache) == before + 1 + 2 * 3 + 2  # and the 2 baselines
    assert main(["runs", "--cache-dir", d, "--clf", "logreg", "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "compare: 2 layer subset(s)" in out and "val_accuracy" in out
    assert main(["fit", "--cache-dir", d, "--layers", "block5_conv4"]) == 2
    assert "error: layer 'block5_conv4' not in efficientnet_lite0" in capsys.readouterr().err
    assert main(["fit", "--cache-dir", d, "--clf", "svm", "--n-estimators", "5"]) == 2
    assert main(["predict", "--cache-dir", d, "--model", "nosuchrun", d]) == 2
    assert _log_size(elpv_cache) == before + 9


def test_fit_and_compare_from_the_cache_never_import_tensorflow(elpv_cache):
    code = (
        "import sys; from featx.cli import main; d = sys.argv[1]; "
        "assert main(['fit', '--cache-dir', d, '--layers', 'top_activation', '--clf', 'knn']) == 0; "
        "assert main(['compare', '--cache-dir', d, '--layer-sets', 'block6d_add', '--clf', 'knn']) == 0; "
        "assert not {'tensorflow', 'keras'} & set(sys.modules), 'tensorflow imported'"
    )
    done = subprocess.run([sys.executable, "-c", code, str(elpv_cache)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_pipeline_file_reuses_the_cache_and_rejects_unknown_keys(elpv_cache, tmp_path):
    entry = Cache(elpv_cache).open(None)
    head = f'data = "elpv"\nlayers = ["blocks", "top_activation"]\n[extract]\nlimit = {len(entry.labels)}\n'
    good = tmp_path / "small.toml"
    good.write_text(
        head + '[[steps]]\nkind = "fit"\nclf = "knn"\nlayers = "top_activation"\n'
        '[[steps]]\nkind = "compare"\nlayer_sets = ["block6d_add", "blocks"]\nclassifiers = ["logreg"]\n'
        'standardize = true\n[[steps]]\nkind = "tsne"\nlayers = "top_activation"\n'
    )
    lines = []
    result = run_pipeline(good, cache=elpv_cache, log=lines.append)
    report = pipeline_page(result.folder, cache=elpv_cache)  # the page `featx run` writes (the report is above it)
    lines.append(f"report: {report}")
    assert any("nothing to do" in line for line in lines)  # extraction was a cache hit
    assert result.entry.path == entry.path and len(result.table) == 5  # fit, 2 compare rows, 2 baselines
    assert (result.table["selected_by"] == "val").all()  # no CV: one protocol, ranked by its val score
    assert result.table["selection_score"].is_monotonic_decreasing
    assert result.table["selection_score"].tolist() == result.table[f"val_{result.ranking.metric}"].tolist()
    assert [p.suffix for p in result.plots] == [".png"] * len(result.plots) and all(p.is_file() for p in result.plots)
    assert "plots:" in lines[-3] and "tsne-" in lines[-3] and lines[-2].startswith("recommended: ")
    assert lines[-1] == f"report: {report}" and report.is_file()

    bad = tmp_path / "bad.toml"
    bad.write_text(head + '[[steps]]\nkind = "fit"\nclff = "rf"\n')
    with pytest.raises(FeatxError, match=r"unknown key 'clff' in step 1 \(fit\) of '.*bad.toml'"):
        run_pipeline(bad, cache=elpv_cache, log=lambda *a: None)
    bad.write_text('datta = "elpv"\n' + head)
    with pytest.raises(FeatxError, match="unknown key 'datta' in pipeline"):
        read_pipeline(bad)


SHIPPED = sorted(p.stem for p in (Path(__file__).parents[1] / "pipelines").glob("*.toml"))


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_pipelines_are_valid(name):
    spec = read_pipeline(Path(__file__).parents[1] / "pipelines" / f"{name}.toml")
    assert spec["steps"] and spec["data"] == "elpv"
    assert {"quickstart", "elpv_best"} <= set(SHIPPED)


@pytest.mark.slow
def test_elpv_best_recipe_runs_with_views_and_tta(tmp_path):
    """The shipped best recipe as it is, on a 120-image subset at 96 px: D4 views extracted, TTA fit logged."""
    text = (Path(__file__).parents[1] / "pipelines" / "elpv_best.toml").read_text()
    assert "[extract]\n" in text
    small = tmp_path / "elpv_best.toml"
    text = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("input_size ="))
    small.write_text(text.replace("[extract]\n", "[extract]\nlimit = 120\ninput_size = 96\n"))  # its own size out
    result = run_pipeline(small, cache=tmp_path / "cache", log=lambda *a: None)
    assert result.entry.views == ["id", "rot90", "rot180", "rot270", "hflip", "vflip", "transpose", "transverse"]
    [row] = result.table.to_dict("records")
    assert row["views"].startswith("id,rot90") and row["tta"] == 1 and 0 <= row["test_accuracy"] <= 1

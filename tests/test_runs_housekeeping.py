"""featx rm, featx prune and featx export on a real small cache and a real runs log."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

import featx
from featx.cache.lock import EntryLock
from featx.cli import main
from featx.runs.store import read_log

from helpers import U32


@pytest.fixture()
def cache(tmp_path):
    featx.extract(
        featx.DataSpec("elpv", limit=48),
        featx.BackboneSpec("mobilenet_v2", weights="none", input_size=96),
        "final,block_15_add",
        cache=tmp_path,
        compute=featx.Compute(progress=False),
        log=lambda *a: None,
    )
    assert (
        main(["compare", "--layer-sets", "final", "block_15_add", "--clf", "knn,logreg", "--cache-dir", str(tmp_path)])
        == 0
    )
    return tmp_path


@pytest.mark.slow
def test_prune_keeps_the_best_runs_and_rm_removes_runs_and_entries(cache, capsys):
    log = read_log(cache)
    assert len(log) == 4 + 2  # 2 subsets x 2 classifiers, and the majority and stratified baselines
    assert main(["prune", "--keep-best", "1", "--cache-dir", str(cache)]) == 0
    [best] = read_log(cache)["run_id"]
    from featx.runs.ranking import entry_metric, rank

    metric, _ = entry_metric(cache, log["cache_key"].iloc[0])  # the rule every table of runs ranks by
    assert best == rank(log, metric).table["run_id"].iloc[0]
    assert best == log.sort_values(f"val_{metric}", ascending=False, kind="stable")["run_id"].iloc[0]  # no CV: val
    assert sorted(p.name for p in (cache / "runs").iterdir() if p.is_dir()) == [best]
    assert len(list((cache / "reports").glob("compare-*"))) == 1  # it holds the kept run

    entry = next(p for p in cache.iterdir() if p.name.startswith("mobilenet_v2-"))
    with EntryLock(entry):  # an extract writing it: nothing is removed, not even the run named with it
        assert main(["rm", best[:18], entry.name, "--cache-dir", str(cache)]) == 2
    assert "is being written by pid" in capsys.readouterr().err and entry.exists()
    assert list(read_log(cache)["run_id"]) == [best] and (cache / "runs" / best).is_dir()

    assert main(["rm", best[:18], entry.name[:16], "--cache-dir", str(cache)]) == 0
    assert read_log(cache).empty and not (cache / "runs" / best).exists() and not entry.exists()
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no staging folders left
    assert main(["prune", "--keep-best", "0", "--cache-dir", str(cache)]) == 0
    assert not list((cache / "reports").glob("compare-*"))  # none of its runs remain


@pytest.mark.slow
def test_rm_of_several_runs_is_all_or_nothing(cache, capsys, tmp_path):
    first, second = read_log(cache)["run_id"][:2]
    outside = tmp_path / "outside"
    shutil.move(cache / "runs" / second, outside)
    (cache / "runs" / second).symlink_to(outside)  # its folder is a link elsewhere: never followed, nothing removed
    assert main(["rm", first, second, "--cache-dir", str(cache)]) == 2
    assert "is not a folder inside" in capsys.readouterr().err
    assert len(read_log(cache)) == 4 + 2 and (cache / "runs" / first).is_dir() and (outside / "metrics.json").is_file()


@pytest.mark.slow
def test_export_writes_path_label_split_and_features(cache, tmp_path, capsys):
    X, _, meta = featx.load(None, "final", cache=cache)
    out = tmp_path / "f.csv"
    assert main(["export", "--layers", "final", "--output", str(out), "--cache-dir", str(cache)]) == 0
    table = pd.read_csv(out)
    assert list(table.columns[:3]) == ["path", "label", "split"] and table.shape == (len(X), 3 + X.shape[1])
    assert list(table["label"]) == list(meta["class_name"])
    # the CSV's shortest decimal that reads back as the same float32: within half a float32 ulp (rtol u)
    np.testing.assert_allclose(table.iloc[:, 3:].to_numpy(), X, rtol=U32, atol=0)
    assert main(["export", "--format", "npy", "--output", str(tmp_path / "f.npz"), "--cache-dir", str(cache)]) == 0
    with np.load(tmp_path / "f.npz", allow_pickle=False) as arrays:
        assert arrays["features"].shape[0] == len(X) and list(arrays["split"]) == list(meta["split"])
        assert arrays["feature_names"][0] == "block_15_add_0"  # every cached layer, in depth order
    code = main(["export", "--format", "parquet", "--output", str(tmp_path / "f.parquet"), "--cache-dir", str(cache)])
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        assert code == 2 and "needs the package pyarrow" in capsys.readouterr().err
        assert not (tmp_path / "f.parquet").exists()
    else:
        assert code == 0 and list(pd.read_parquet(tmp_path / "f.parquet")["split"]) == list(meta["split"])


@pytest.mark.slow
def test_compare_keeps_only_the_best_rows_model_unless_all(cache, capsys, elpv_folder):
    log = read_log(cache)  # the fixture's compare: default --save-models best
    with_model = log[log["model_path"] != ""]
    models = log[
        ~log["classifier"].isin(["majority", "stratified"])
    ]  # ranked by val balanced accuracy (ELPV is imbalanced)
    assert len(with_model) == 1 and with_model["val_balanced_accuracy"].iloc[0] == models["val_balanced_accuracy"].max()
    assert all((cache / "runs" / r / "model.skops").exists() == (r in set(with_model["run_id"])) for r in log["run_id"])
    without = log.loc[log["model_path"] == "", "run_id"].iloc[0]
    capsys.readouterr()
    assert main(["predict", "--model", without, str(elpv_folder), "--cache-dir", str(cache)]) == 2
    err = capsys.readouterr().err
    assert f"run {without} has no saved model" in err and len(err.strip().splitlines()) == 1

    assert (
        main(
            [
                "compare",
                "--layer-sets",
                "final",
                "--clf",
                "knn,logreg",
                "--save-models",
                "all",
                "--cache-dir",
                str(cache),
            ]
        )
        == 0
    )
    assert (read_log(cache)["model_path"] != "").sum() == 1 + 2 + 2  # + every row of the new compare, baselines too

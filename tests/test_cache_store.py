"""Each contract goes one way: the cache root (and a --runs-dir) is resolved once into a Cache that every
experiment asks for its runs and reports folders; a LayerSelection travels from the request to the run log and
back to predict; ls/info/verify tables come from API functions. Real extraction (MobileNetV2, random weights,
96 px), real runs log, real Keras backbone in predict.
"""

from __future__ import annotations

import shutil

import h5py
import pytest

import featx
from featx.cache.store import Cache
from featx.cache.tables import ENTRY_COLUMNS, VERIFY_COLUMNS, entries_table, verify_all
from featx.errors import FeatxError
from featx.runs.store import append_run, logged_selection, read_log

LAYERS = ["block_3_project_BN", "block_1_project_BN"]  # named out of depth order on purpose
DEPTH_ORDER = ("block_1_project_BN", "block_3_project_BN")
QUIET = {"log": lambda *a: None}


@pytest.fixture(scope="module")
def cache(elpv_folder, tiny_cache) -> Cache:
    return Cache(tiny_cache(elpv_folder, LAYERS))


def test_runs_location_is_decided_by_the_cache(cache, tmp_path):
    mine = Cache(cache.root, runs_dir=tmp_path / "mine")
    assert (mine.runs_dir, mine.reports_dir) == (tmp_path / "mine", tmp_path / "mine" / "reports")
    assert (cache.runs_dir, cache.reports_dir) == (cache.root / "runs", cache.root / "reports")
    entry = cache.open()
    moved = mine.open(entry)  # an entry passed in takes the caller's runs location without re-reading its index
    assert moved.cache == mine and moved.data is entry.data and entry.cache == cache
    assert cache.open(entry) is entry and mine.open(entry.name).cache.runs_dir == tmp_path / "mine"
    assert cache.with_runs_dir(None) is cache and cache.with_runs_dir(tmp_path) == Cache(cache.root, runs_dir=tmp_path)


def test_selection_travels_from_request_to_log_to_predict(cache, elpv_folder, tmp_path):
    mine = tmp_path / "mine"
    loaded = featx.load(None, LAYERS, cache=cache.root)
    assert loaded.selection.names == DEPTH_ORDER and loaded.layers == list(DEPTH_ORDER)
    result = featx.fit(
        None,
        LAYERS,
        featx.fit_spec("logreg", n_jobs=1),
        cache=featx.Cache(cache.root, runs_dir=mine),
        log=lambda *a: None,
    )
    assert result.folder.parent == mine and not cache.runs_dir.exists()
    [row] = read_log(Cache(None, runs_dir=mine)).to_dict("records")
    assert (row["layers"], row["layer_names"]) == (",".join(LAYERS), ",".join(DEPTH_ORDER))
    assert logged_selection(row) == loaded.selection

    files = sorted(p for p in elpv_folder.rglob("*.png"))[:4]
    table = featx.predict(result.run_id, files, cache=featx.Cache(cache.root, runs_dir=mine), log=lambda *a: None)
    X, _, meta = featx.load(None, LAYERS, cache=cache.root)
    rows = [list(meta["path"]).index(str(f.relative_to(elpv_folder))) for f in files]
    expected = [cache.open().class_names[c] for c in result.pipeline.predict(X[rows])]
    assert list(table["label"]) == expected  # features rebuilt in the logged depth order, as fitted
    assert len(list((mine / result.run_id).glob("predictions-*.csv"))) == 1


def test_predict_refuses_a_logged_layer_the_entry_does_not_have(cache, tmp_path):
    mine = Cache(cache.root, runs_dir=tmp_path / "mine")
    result = featx.fit(
        cache.open(),
        LAYERS[0],
        featx.fit_spec("logreg", n_jobs=1),
        cache=featx.Cache(cache.root, runs_dir=mine.runs_dir),
        log=lambda *a: None,
    )
    append_run(
        mine, {**result.row, "run_id": "20990101-000000-ed17ed", "layer_names": "block_3_project_BN,block_99_add"}
    )
    with pytest.raises(FeatxError, match=r"^layer 'block_99_add' not in mobilenet_v2"):
        featx.predict(
            "20990101-000000-ed17ed",
            [tmp_path],
            cache=featx.Cache(cache.root, runs_dir=mine.runs_dir),
            log=lambda *a: None,
        )


def test_compare_subsets_are_selections(cache, tmp_path):
    result = featx.compare(
        None,
        ["each", ",".join(LAYERS)],
        featx.compare_specs("logreg"),
        cache=featx.Cache(cache.root, runs_dir=tmp_path),
        log=lambda *a: None,
    )
    table = result.table  # best first: put the model rows back in depth order, the baselines left out
    table = table[table["classifier"] == "logreg"].sort_values("depth", na_position="last").reset_index(drop=True)
    assert list(table["layers"]) == [*DEPTH_ORDER, ",".join(LAYERS)]
    depth = list(cache.open().layer_info).index
    assert list(table["depth"][:2]) == [depth(n) for n in DEPTH_ORDER] and table["depth"][:2].is_monotonic_increasing
    log = read_log(Cache(None, runs_dir=tmp_path)).set_index("run_id")
    assert list(log.loc[table["run_id"], "layer_names"]) == [*DEPTH_ORDER, ",".join(DEPTH_ORDER)]
    assert result.csv.parent.parent == tmp_path / "reports"


def test_tables_come_from_the_api(cache, tmp_path):
    entries = entries_table(cache)
    assert tuple(entries.columns) == ENTRY_COLUMNS and entries.loc[0, "layers"] == 2
    assert entries.loc[0, "backbone"] == "mobilenet_v2" and not entries.loc[0, "partial"]
    assert entries.loc[0, "size"] == "96"  # the input side: entries of one backbone at two sizes tell apart

    info = cache.open().summary()
    assert list(info["layers"]["layer"]) == list(DEPTH_ORDER) and (info["layers"]["features"] > 0).all()
    assert sum(info["split"].values()) == len(cache.open().labels) and info["key"] == cache.open().key

    checked = verify_all(cache)
    assert tuple(checked.columns) == VERIFY_COLUMNS and list(checked["status"]) == ["ok"]
    assert checked.loc[0, "notes"].startswith(f"{len(cache.open().labels)} images, 2 layer(s)")
    shutil.copytree(cache.root, tmp_path / "copy")
    damaged = Cache(tmp_path / "copy")
    layer = damaged.open().layer_file(DEPTH_ORDER[0])
    with h5py.File(layer, "r+") as f:  # one value changed, still finite
        f["features"][0, 0] += 1.0
    failed = verify_all(damaged, damaged.open().name)
    assert list(failed["status"]) == ["FAIL"] and failed.loc[0, "problems"]


def test_public_api_is_keyword_only_after_the_first_argument(cache):
    with pytest.raises(TypeError):  # data, backbone and layers, then keywords only (views is not the 4th)
        featx.extract(featx.DataSpec("elpv"), featx.BackboneSpec("mobilenet_v2"), "final", "flip")
    with pytest.raises(TypeError):
        featx.list_runs(cache.root, "val_accuracy")
    with pytest.raises(TypeError):  # the entry and the layers, then keywords only (split is not the 3rd)
        featx.load(None, "top_activation", "train", cache=cache.root)

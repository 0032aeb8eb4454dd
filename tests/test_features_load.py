"""featx.features.load returns Features: X, y and meta unpack as they always did, and what the columns are (selection,
feature slices, class names, settings, views, entries) travels as attributes of that value, not in `meta.attrs`, so
pandas operations on meta lose nothing a reader needs. No TensorFlow: the entries are written by the store."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import featx
from featx.errors import FeatxError
from featx.features.export import export
from featx.features.load import Features, load
from tests.tiny_entry import CLASSES, LABELS, LAYER, OTHER, OTHER_WIDTH, SPLIT, WIDTH, N, make_entry

from helpers import cli, extract


def test_load_unpacks_as_x_y_meta_and_says_what_its_columns_are(tmp_path):
    entry = make_entry(tmp_path)
    features = featx.load(entry, [OTHER, LAYER])  # named out of depth order
    X, y, meta = features
    assert isinstance(features, Features) and X is features.X and y is features.y and meta is features.meta
    assert features[0] is X and features[1] is y and len(features) == 3
    assert X.shape == (N, WIDTH + OTHER_WIDTH) and y.tolist() == LABELS.tolist()
    np.testing.assert_array_equal(X, entry.read([LAYER, OTHER])[0])
    assert list(meta.columns) == ["path", "label", "class_name", "split"] and meta["split"].tolist() == SPLIT.tolist()
    assert features.layers == [LAYER, OTHER] and features.selection.names == (LAYER, OTHER)
    assert features.feature_slices == {LAYER: (0, WIDTH), OTHER: (WIDTH, WIDTH + OTHER_WIDTH)}
    assert features.class_names == CLASSES and features.cache_key == entry.key and features.settings == entry.settings
    assert features.cache_path == str(entry.path) and features.entries == [entry.name]
    assert features.views is None and features.n_views == 1
    assert meta.attrs == {}  # nothing a reader needs is kept where pandas drops it

    viewed = load(entry, LAYER, views=["id", "hflip"])
    assert viewed.views == ("id", "hflip") and viewed.n_views == 2 and viewed.X.shape == (N, 2 * WIDTH)
    assert viewed.feature_slices == {LAYER: (0, WIDTH)}  # within one view's columns
    np.testing.assert_array_equal(viewed.X[:, WIDTH:], entry.read([LAYER], view="hflip")[0])


def test_pandas_operations_on_meta_lose_nothing_a_reader_needs(tmp_path):
    entry = make_entry(tmp_path)
    features = load(entry)
    _, _, meta = features
    train = meta[meta["split"] == "train"]
    reshaped = [
        meta.copy(),
        train,
        pd.concat([train, meta[meta["split"] != "train"]]),
        meta.merge(meta[["path"]]),
        meta.sort_values("path", ascending=False).reset_index(drop=True),
        meta.groupby("split").head(1),
    ]
    for other in reshaped:
        assert other.attrs == {}
    # what readers use is a property of the loaded value, whatever was done to its DataFrame
    assert features.feature_slices == {LAYER: (0, WIDTH), OTHER: (WIDTH, WIDTH + OTHER_WIDTH)}
    assert features.selection.names == (LAYER, OTHER) and features.class_names == CLASSES


def test_readers_take_what_they_need_from_the_loaded_value(tmp_path):
    entry = make_entry(tmp_path)
    path = export(entry, f"{LAYER},{OTHER}", format="npy", output=tmp_path / "f.npz", log=print)  # feature_slices
    with np.load(path, allow_pickle=False) as arrays:
        assert arrays["feature_names"].tolist() == [f"{LAYER}_{i}" for i in range(WIDTH)] + [
            f"{OTHER}_{i}" for i in range(OTHER_WIDTH)
        ]
        np.testing.assert_array_equal(arrays["features"], load(entry).X)
    result = featx.fit(
        entry, [OTHER, LAYER], featx.fit_spec("majority", n_jobs=1), log=None
    )  # logs the selection it was given
    assert result.run_id and featx.list_runs(tmp_path).iloc[0]["layers"] == f"{OTHER},{LAYER}"


def test_combined_entries_are_one_value_naming_each_entry_columns(tmp_path):
    avg, gem = make_entry(tmp_path, views=()), make_entry(tmp_path, views=(), pool="gem")
    combined = load([avg.name, gem.name], LAYER, cache=tmp_path)
    names = [f"{avg.name}/{LAYER}", f"{gem.name}/{LAYER}"]
    assert combined.layers == names and combined.feature_slices == {names[0]: (0, WIDTH), names[1]: (WIDTH, 2 * WIDTH)}
    assert combined.cache_key == f"{avg.key}+{gem.key}" and combined.entries == [avg.name, gem.name]
    assert combined.settings == {avg.name: avg.settings, gem.name: gem.settings}
    np.testing.assert_array_equal(combined.X, np.hstack([load(avg, LAYER).X, load(gem, LAYER).X]))
    X, y, meta = combined
    assert y.tolist() == LABELS.tolist() and meta.attrs == {} and combined.selection.spec == LAYER


KW = {
    "backbone": "efficientnet_lite0",
    "weights": "none",
    "input_size": 64,
    "layers": "block6a_project_bn,top_activation",
    "progress": False,
    "log": lambda *a: None,
}


@pytest.fixture(scope="module")
def pools(elpv_folder, tmp_path_factory):
    """Two poolings of the same images: two entries of one cache folder."""
    cache_dir = tmp_path_factory.mktemp("combine")
    return cache_dir, [extract(elpv_folder, pool=pool, cache_dir=cache_dir, **KW).entry for pool in ("avg", "gem")]


@pytest.mark.slow  # pays for real extractions
def test_load_concatenates_entries_row_aligned(pools):
    _, (avg, gem) = pools
    combined = featx.load([avg.name, gem], "top_activation", cache=avg.path.parent)
    X, y, meta = combined
    Xa, ya, meta_a = featx.load(avg, "top_activation")
    Xg, _, _ = featx.load(gem, "top_activation")
    np.testing.assert_array_equal(X, np.hstack([Xa, Xg]))
    np.testing.assert_array_equal(y, ya)
    assert list(meta["path"]) == list(meta_a["path"]) and X.shape[1] == 2 * 1280
    assert combined.layers == [f"{avg.name}/top_activation", f"{gem.name}/top_activation"]
    assert combined.feature_slices == {
        f"{avg.name}/top_activation": (0, 1280),
        f"{gem.name}/top_activation": (1280, 2560),
    }
    assert combined.cache_key == f"{avg.key}+{gem.key}" and combined.entries == [avg.name, gem.name]
    assert not np.array_equal(Xa, Xg)  # two poolings, two different feature sets
    single = featx.load([avg], "top_activation")  # a list of one is that entry
    np.testing.assert_array_equal(single.X, Xa)
    assert single.layers == ["top_activation"]


@pytest.mark.slow  # pays for real extractions
def test_fit_on_two_entries_logs_both_and_predict_refuses(pools, elpv_folder):
    cache_dir, (avg, gem) = pools
    rc, _, err = cli(
        "fit",
        "--cache",
        avg.name,
        "--cache",
        gem.name,
        "--clf",
        "logreg",
        "--layers",
        "top_activation",
        "--cache-dir",
        cache_dir,
    )
    assert rc == 0, err
    row = featx.list_runs(cache_dir).iloc[0]
    assert row["cache_entry"] == f"{avg.name}+{gem.name}" and row["cache_key"] == f"{avg.key}+{gem.key}"
    assert row["n_features"] == 2 * 1280 and row["backbone"] == "efficientnet_lite0+efficientnet_lite0"
    assert row["layer_names"] == f"{avg.name}/top_activation,{gem.name}/top_activation"
    rc, _, err = cli("predict", "--model", row["run_id"], elpv_folder, "--cache-dir", cache_dir)
    assert rc == 2 and err.startswith(f"error: run {row['run_id']} was fitted on several cache entries"), err


@pytest.mark.slow  # pays for real extractions
def test_entries_of_different_images_are_refused(pools, elpv_folder):
    cache_dir, (avg, _) = pools
    fewer = extract(elpv_folder, limit=12, cache_dir=cache_dir, **KW).entry
    other_split = extract(elpv_folder, pool="max", seed=1, cache_dir=cache_dir, **KW).entry  # split: not in the key
    labels = [avg.class_names[label] for label in avg.labels]  # the same files with two labels swapped
    labels[0], labels[-1] = labels[-1], labels[0]
    manifest = elpv_folder / "swapped.csv"  # manifest paths are relative to its folder
    manifest.write_text("path,label\n" + "".join(f"{p},{label}\n" for p, label in zip(avg.relpaths, labels)))
    try:
        swapped = extract(manifest, cache_dir=cache_dir, **KW).entry
    finally:
        manifest.unlink()
    for other, what in ((fewer, "image paths"), (other_split, "split"), (swapped, "labels")):
        with pytest.raises(FeatxError, match=rf"^cache entries {avg.name} and {other.name} differ in their {what}, "):
            featx.load([avg, other])
    rc, _, err = cli("fit", "--cache", avg.name, "--cache", avg.name, "--cache-dir", cache_dir)
    assert rc == 2 and err == f"error: cache entry {avg.name} is given twice; name each entry once\n"

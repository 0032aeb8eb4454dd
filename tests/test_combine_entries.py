"""Several cache entries of the same images in one fit: features side by side, row-aligned by image, and a
clear refusal when the entries' images, labels or split differ."""

from __future__ import annotations

import numpy as np
import pytest

import featx
from featx.errors import FeatxError

from helpers import cli, extract

pytestmark = pytest.mark.slow  # each test pays for real extractions

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

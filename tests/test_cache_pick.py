"""Every output says which data and backbone its numbers come from; fit/compare pick an entry by --data/--backbone."""

from __future__ import annotations

import shutil

import pytest

from featx.cli import main

from helpers import extract, unwrapped

SMALL = dict(
    backbone="mobilenet_v2", weights="none", input_size=96, layers="final", progress=False, log=lambda *a: None
)


@pytest.fixture(scope="module")
def two_entries(tmp_path_factory, elpv_folder, tiny_cache):
    """ELPV (48 images) and a class folder, both mobilenet_v2 with random weights; the folder entry is newer.
    The ELPV entry is the session's small one (it also holds block_15_add), copied."""
    cache = tmp_path_factory.mktemp("labels") / "cache"
    shutil.copytree(tiny_cache("elpv", "final,block_15_add", limit=48), cache)
    extract(elpv_folder, cache_dir=cache, **SMALL)
    return cache


@pytest.mark.slow
def test_outputs_name_data_and_random_weights(two_entries, elpv_folder, capsys):
    cache = ["--cache-dir", str(two_entries)]
    extract = [
        "extract",
        "--limit",
        "48",
        "--backbone",
        "mobilenet_v2",
        "--weights",
        "none",
        "--input-size",
        "96",
        "--layers",
        "final",
        "--quiet",
        *cache,
    ]
    assert main(extract) == 0
    out = capsys.readouterr().out
    assert "note: no --data given, so the built-in 'elpv' example data set is used" in out
    assert "(mobilenet_v2 on built-in elpv (elpv-dataset) (stratified subset of 48, seed 0) [random weights])" in out

    assert main(["ls", *cache]) == 0
    out = capsys.readouterr().out
    assert out.count("[random weights]") == 2 and f"folder {elpv_folder}" in out and "built-in elpv" in out
    assert main(["info", *cache]) == 0
    assert f"data: folder {elpv_folder} [random weights]" in capsys.readouterr().out

    assert main(["fit", "--clf", "knn", "--data", "elpv", "--backbone", "mobilenet_v2", *cache]) == 0
    line = unwrapped(capsys.readouterr().out)
    assert "of mobilenet_v2 on built-in elpv (elpv-dataset) (stratified subset of 48, seed 0) [random weights]" in line
    assert main(["compare", "--layer-sets", "final", "--clf", "knn", "--data", str(elpv_folder), *cache]) == 0
    assert f"in parallel,\n  on mobilenet_v2 on folder {elpv_folder} [random weights]" in capsys.readouterr().out
    assert main(["runs", *cache]) == 0
    table = capsys.readouterr().out
    # the fit, and the compare's knn row and its majority/stratified baselines: each entry's runs under its data,
    # said once
    assert table.startswith("data: ") and table.count("[random weights]") == 2 and "built-in elpv" in table
    assert max(map(len, table.splitlines())) <= 120


@pytest.mark.slow
def test_picking_an_entry_that_is_not_there_lists_the_candidates(two_entries, capsys):
    cache = ["--cache-dir", str(two_entries)]
    assert main(["fit", "--backbone", "vgg16", *cache]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no cache entry in") and "matches --backbone vgg16" in err
    assert err.count("mobilenet_v2 on ") == 2 and len(err.strip().splitlines()) == 1
    assert main(["fit", "some-entry", "--data", "elpv", *cache]) == 2
    assert "not both" in capsys.readouterr().err

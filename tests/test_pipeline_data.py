"""`featx run FILE --data SRC --cache-dir DIR`: one recipe, run on another data source than the file names."""

from __future__ import annotations

import re

import featx

from helpers import cli

RECIPE = """
name = "tiny"
data = "elpv"
backbone = "efficientnet_lite0"
weights = "none"
layers = "top_activation"
[extract]
input_size = 64
[[steps]]
kind = "fit"
clf = "logreg"
"""


def test_run_on_another_data_source(tmp_path, elpv_folder):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(RECIPE)
    rc, out, err = cli("run", recipe, "--data", elpv_folder, "--cache-dir", tmp_path / "cache")
    assert rc == 0, err
    (entry,) = featx.list_entries(tmp_path / "cache")  # the file's elpv (2,624 images) was never touched
    assert entry.attrs["root"] == str(elpv_folder) and len(entry.labels) == 18
    assert re.search(r"^=== tiny: 1 run\(s\), ranked by \w+$", out, re.M), out
    runs = featx.runs(tmp_path / "cache")
    assert list(runs["cache_entry"]) == [entry.name] and list(runs["classifier"]) == ["logreg"]


def test_a_recipe_without_data_needs_data(tmp_path):
    recipe = tmp_path / "nodata.toml"
    recipe.write_text(RECIPE.replace('data = "elpv"\n', ""))
    rc, _, err = cli("run", recipe, "--cache-dir", tmp_path / "cache")
    assert rc == 2 and err == f"error: pipeline '{recipe}' names no data; add data = \"...\" to it or pass --data\n", err

"""featx.sources.imageset (and the entry it names): inputs that used to be taken silently in a surprising way now
get one `note:` or `error:` line (or the expected result): a repeated manifest column, a --limit beyond the data,
an entry shared by two manifests. All on real ELPV images."""

from __future__ import annotations

import os
import re

import pytest

from featx.cache.store import Cache
from featx.errors import FeatxError
from featx.sources import resolve_source

from helpers import backbones_built_once, cli

BACKBONE = [
    "--backbone",
    "mobilenet_v2",
    "--weights",
    "none",
    "--input-size",
    "96",
    "--layers",
    "block_1_project_BN",
    "--batch-size",
    "8",
    "--quiet",
]


@pytest.fixture(scope="module", autouse=True)
def backbone_built_once():
    """Every extraction here builds the same backbone: build it once (its numbers do not change)."""
    with backbones_built_once(2):
        yield


def one_line(text: str, prefix: str) -> str:
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, text
    return lines[0]


def write_manifest(path, header: str, rows) -> None:
    path.write_text(header + "\n" + "".join(",".join(row) + "\n" for row in rows), encoding="utf-8")


@pytest.fixture
def elpv_rows(elpv_folder):
    """(path relative to the ELPV folder, class name) of its 18 real images."""
    return sorted((os.path.relpath(p, elpv_folder), p.parent.name) for p in elpv_folder.glob("*/*.png"))


def test_a_repeated_label_column_is_an_error_naming_it(elpv_folder, elpv_rows, tmp_path):
    manifest = elpv_folder / "twice.csv"
    # the second label column would win silently: every image 'functional'
    write_manifest(manifest, "path,label,label", [(p, c, "functional") for p, c in elpv_rows])
    try:
        rc, out, err = cli("extract", "--data", manifest, *BACKBONE, "--cache-dir", tmp_path)
        assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
        assert re.fullmatch(
            r"error: manifest '.*twice\.csv' has 2 'label' columns in its header; keep one 'label' "
            r"column .*\n",
            err,
        ), err
        assert not any(tmp_path.iterdir())  # nothing written

        write_manifest(manifest, "path, label ,split,label", [(p, c, "train", c) for p, c in elpv_rows])
        with pytest.raises(FeatxError, match="has 2 'label' columns"):  # the same name once stripped
            resolve_source(str(manifest))
    finally:
        manifest.unlink()


@pytest.mark.slow  # a real extraction
def test_a_limit_beyond_the_data_says_all_images_are_used(elpv_folder, tmp_path):
    rc, out, err = cli("extract", "--data", elpv_folder, *BACKBONE, "--limit", 1000, "--cache-dir", tmp_path)
    assert rc == 0, err
    note = one_line(out, "note:")
    assert note == f"note: --limit 1000 is more than the 18 images of folder {elpv_folder}; all 18 are used"
    (entry,) = Cache(tmp_path).entries()
    assert entry.data_label == f"folder {elpv_folder} [random weights]"  # not called a subset of itself
    rc, out, err = cli("extract", "--data", elpv_folder, *BACKBONE, "--cache-dir", tmp_path)  # the same images
    assert rc == 0 and "nothing to do" in out and "note:" not in out, out


@pytest.mark.slow  # real extractions
def test_an_entry_shared_by_two_manifests_says_whose_name_it_keeps(elpv_folder, elpv_rows, tmp_path):
    first, second, renamed = elpv_folder / "first.csv", elpv_folder / "second.csv", elpv_folder / "renamed.csv"
    write_manifest(first, "path,label", elpv_rows)
    write_manifest(second, "path,label", elpv_rows)  # the same images and labels: the same cache key
    # the same labels under other names (sorted the same way): the same key too
    write_manifest(renamed, "path,label", [(p, f"z_{c}") for p, c in elpv_rows])
    try:
        rc, out, err = cli("extract", "--data", first, *BACKBONE, "--cache-dir", tmp_path)
        assert rc == 0 and "note:" not in out, out + err
        (entry,) = Cache(tmp_path).entries()
        for data in (second, renamed):
            for layers in ("block_1_project_BN", "block_2_project_BN"):  # decided from files (warm); a layer to add
                rc, out, err = cli("extract", "--data", data, *BACKBONE, "--layers", layers, "--cache-dir", tmp_path)
                assert rc == 0, err
                note = one_line(out, "note:")
                assert note.startswith(
                    f"note: these images and labels are already cached as {entry.name}, made from "
                    f"manifest {first}; that entry is shared and keeps its name"
                ), note
                assert ("with its class names" in note) == (data == renamed), note
            assert [e.name for e in Cache(tmp_path).entries()] == [entry.name]
    finally:
        for path in (first, second, renamed):
            path.unlink()

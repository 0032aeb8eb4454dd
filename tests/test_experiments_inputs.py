"""Plausible inputs that used to end in a traceback: each is one `error:` line (exit 2, or 1 for a failed run)
with nothing written: no run logged, no run or report folder, no plot, no export file.

Data that cannot train a classifier (one class, one class in train, no val rows without --cv), an entry whose
first extraction is still pending, NaN features and an unusable --input-size. Every run is real: real ELPV
images, a real (small, random-weights) backbone, in this process through tests/helpers.py.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from featx.cache.store import Cache

from helpers import assert_one_line_error, cli, extract_cli

BACKBONE = ["--backbone", "mobilenet_v2", "--weights", "none", "--input-size", "96"]
LAYERS = "block_1_project_BN,block_3_project_BN"
ONE_CLASS = r"has 1 class \(functional\); a classifier needs at least 2 — add images of another class"


def extract(data, cache_dir, *extra, backbone=BACKBONE, layers=LAYERS) -> tuple[int, str, str]:
    return extract_cli(data, cache_dir, *extra, backbone=backbone, layers=layers)


def entry_name(cache_dir: Path) -> str:
    [folder] = Cache(cache_dir).folders()
    return folder.name


def assert_nothing_written(cache_dir: Path) -> None:
    """No runs log, run folder, report or plot: the cache folder holds its entries and nothing else."""
    assert not (cache_dir / "runs").exists() and not (cache_dir / "reports").exists(), sorted(cache_dir.iterdir())


def refusals(entry: str, cache_dir: Path, tmp_path: Path) -> dict[str, list]:
    """The commands that read an entry's features, each with the options that reach its data checks."""
    return {
        "fit": ["fit", entry, "--clf", "logreg", "--cache-dir", cache_dir],
        "fit --cv": ["fit", entry, "--clf", "logreg", "--cv", 2, "--cache-dir", cache_dir],
        "compare": ["compare", entry, "--layer-sets", "each", "--clf", "logreg", "--cache-dir", cache_dir],
        "tune": ["tune", entry, "--cache-dir", cache_dir],
        "export": ["export", entry, "--output", tmp_path / "features.csv", "--cache-dir", cache_dir],
    }


def csv_manifest(folder: Path, rows: list[tuple[str, str, str | None]]) -> Path:
    """A path,label[,split] manifest in `folder`."""
    split = rows[0][2] is not None
    lines = ["path,label" + (",split" if split else "")]
    lines += [",".join([path, label, *([s] if split else [])]) for path, label, s in rows]
    (folder / "list.csv").write_text("\n".join(lines) + "\n")
    return folder / "list.csv"


def images_of(folder: Path) -> list[tuple[str, str]]:
    """(relative path, class) of a class-folder data set, in sorted order."""
    return [(str(p.relative_to(folder)), p.parent.name) for p in sorted(folder.glob("*/*.png"))]


# ---- one class: cached with a note, refused by fit/compare/tune ----------------------------------------------


@pytest.mark.slow  # a real extraction
@pytest.mark.parametrize("source", ["folder", "manifest"])
def test_one_class_is_cached_with_a_note_and_refused_before_anything_is_written(source, elpv_folder, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(elpv_folder / "functional", data / "functional")
    if source == "manifest":
        data = csv_manifest(data, [(path, label, None) for path, label in images_of(data)])
    cache_dir = tmp_path / "cache"
    rc, out, err = extract(data, cache_dir)
    assert rc == 0, err
    assert re.search(
        r"^note: .* has 1 class \(functional\); the features are cached, but fit, compare and tune need "
        r"at least 2 — add images of another class$",
        out,
        re.M,
    ), out
    entry = entry_name(cache_dir)
    for command, args in refusals(entry, cache_dir, tmp_path).items():
        if command == "export":  # features of one class are still features
            continue
        rc, out, err = cli(*args)
        line = assert_one_line_error(rc, err, rf"^error: cache entry {entry} \(.*\) {ONE_CLASS}")
        assert out == "", (command, out)
        assert_nothing_written(cache_dir)
    assert line.endswith("and run `featx extract` again")


@pytest.mark.slow  # a real extraction
def test_train_rows_of_one_class_are_refused(elpv_folder, tmp_path):
    """A manifest's split column that gives only one class train rows: the other classes are only in val/test."""
    data = tmp_path / "data"
    shutil.copytree(elpv_folder, data)
    rows, seen = [], {}
    for path, label in images_of(data):
        seen[label] = seen.get(label, -1) + 1
        rows.append(
            (
                path,
                label,
                ("train", "val", "test")[seen[label] % 3]
                if label == "functional"
                else ("val", "test")[seen[label] % 2],
            )
        )
    cache_dir = tmp_path / "cache"
    rc, out, err = extract(csv_manifest(data, rows), cache_dir)
    assert rc == 0, err
    entry = entry_name(cache_dir)
    for command, args in refusals(entry, cache_dir, tmp_path).items():
        if command == "export":
            continue
        assert_one_line_error(
            *cli(*args)[::2],
            rf"^error: the train rows of cache entry {entry} have 1 class \(functional\) of its 3; a "
            r"classifier needs at least 2 — give other classes train rows \(the manifest's split column, "
            r"or --split/--seed",
        )
        assert_nothing_written(cache_dir)


# ---- a split without val rows ---------------------------------------------------------------------------------


@pytest.mark.slow  # a real extraction
def test_zero_val_fraction_needs_cv_to_select(elpv_folder, tmp_path):
    """--split 0.8,0,0.2 is cached with a note; compare and tune refuse to rank on the missing val rows unless
    --cv, before logging anything; fit says its run has no val score; compare --cv ranks on the train rows."""
    cache_dir = tmp_path / "cache"
    rc, out, err = extract(elpv_folder, cache_dir, "--split", "0.8,0,0.2")
    assert rc == 0, err
    assert "note: the split has no val rows; compare and tune then select by cross-validation over train" in out
    entry = entry_name(cache_dir)
    no_val = (
        rf"^error: cache entry {entry} has no val rows \(split 0\.8,0,0\.2\), so nothing can be selected on val; "
        r"pass --cv K to select by cross-validation over the train rows, or re-extract with a val part"
    )
    args = refusals(entry, cache_dir, tmp_path)
    for command in ("compare", "tune"):
        rc, out, err = cli(*args[command])
        assert_one_line_error(rc, err, no_val)
        assert out == "", out
        assert_nothing_written(cache_dir)

    rc, out, err = cli("compare", entry, "--layer-sets", "each", "--clf", "logreg", "--cv", 2, "--cache-dir", cache_dir)
    assert rc == 0 and "Traceback" not in err, err
    [report] = (cache_dir / "reports").iterdir()
    assert (report / "results.csv").exists() and (report / "layer_comparison.png").stat().st_size > 0
    assert re.search(r"^best: logreg on block_\w+ accuracy [\d.]+ ± [\d.]+", out, re.M), out

    rc, out, err = cli(*args["fit"])
    assert rc == 0, err
    assert f"note: cache entry {entry} has no val rows (split 0.8,0,0.2): this run gets no val score" in out
    assert re.search(r"^run \S+: logreg .*\n\s+test acc [\d.]+", out, re.M), out  # the fit line, then its scores
    rc, out, err = cli(*args["fit --cv"])
    assert rc == 0 and "no val rows" not in out, out + err


# ---- an entry whose first extraction is still pending ----------------------------------------------------------


@pytest.mark.slow  # a real extraction
@pytest.mark.parametrize("bad_name, committed", [("000 bad.png", 0), ("zzz bad.png", 4)])
def test_entry_with_its_first_pass_pending(bad_name, committed, elpv_folder, tmp_path):
    """A --strict extract stopped at a bad image leaves its first pass pending (rows in work/, no layer file
    yet), as a kill does: before its first commit (row 0 bad), or after one batch (row 6 bad, batches of 4)."""
    data = tmp_path / "data"
    shutil.copytree(elpv_folder, data)
    (data / "functional" / bad_name).write_bytes(b"<html>not an image</html>")
    cache_dir = tmp_path / "cache"
    assert_one_line_error(*extract(data, cache_dir, "--strict")[::2], r"^error: bad image .*\(--strict\)")
    entry = entry_name(cache_dir)
    progress = cache_dir / entry / "work" / "progress.json"
    assert progress.exists() and not list((cache_dir / entry / "layers").glob("*.h5"))
    rows = "no committed rows yet" if committed == 0 else "no finished layer yet"
    pending = (
        rf"^error: cache entry {entry} has {rows} \(its first extraction stopped at image {committed}/19\); "
        r"run `featx extract` again with the same options to finish it$"
    )
    for args in refusals(entry, cache_dir, tmp_path).values():
        rc, out, err = cli(*args)
        assert_one_line_error(rc, err, pending)
        assert_nothing_written(cache_dir)
    assert not (tmp_path / "features.csv").exists()
    assert_one_line_error(
        *cli("compare", entry, "--layer-sets", "block_1_project_BN", "--cache-dir", cache_dir)[::2], pending
    )
    # the advice works: the same extract without --strict finishes the pass, then fit runs
    rc, out, err = extract(data, cache_dir)
    assert rc == 0 and f"resuming interrupted extraction of 2 layer(s) at image {committed}/19" in out, err
    rc, out, err = cli(*refusals(entry, cache_dir, tmp_path)["fit"])
    assert rc == 0 and re.search(r"^run \S+: logreg ", out, re.M), err


# ---- NaN features ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nan_backbone(tmp_path_factory) -> Path:
    """A saved Keras model whose `conv` layer has a NaN in one filter (a diverged fine-tuning): its features are
    NaN in every row, written by featx's own extraction (so the layer digest is right); `clean` is finite."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    clean = keras.layers.Conv2D(4, 3, name="clean")(inputs)
    conv = keras.layers.Conv2D(4, 3, strides=2, name="conv")(clean)
    head = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D(name="gap")(conv))
    model = keras.Model(inputs, head)
    kernel, bias = model.get_layer("conv").get_weights()
    kernel[..., 1] = np.nan
    model.get_layer("conv").set_weights([kernel, bias])
    path = tmp_path_factory.mktemp("nan_backbone") / "diverged.keras"
    model.save(path)
    return path


NAN = (
    r"^error: layer {layer} of cache entry {entry} has NaN/Inf features in {rows} of 18 row\(s\) \(first: "
    r"[^)]+\.png\); leave it out of --layers, or run `featx verify` and re-extract it"
)


@pytest.mark.slow  # a real extraction through a saved Keras model
def test_nan_features_from_the_backbone(nan_backbone, elpv_folder, tmp_path):
    cache_dir = tmp_path / "cache"
    rc, out, err = extract(elpv_folder, cache_dir, backbone=["--backbone", nan_backbone], layers="clean,conv")
    assert rc == 0, err
    entry = entry_name(cache_dir)
    message = NAN.format(layer="conv", entry=entry, rows=18)
    for args in refusals(entry, cache_dir, tmp_path).values():
        assert_one_line_error(*cli(*args)[::2], message, code=1)
        assert_nothing_written(cache_dir)
    assert not (tmp_path / "features.csv").exists()
    rc, out, err = cli("fit", entry, "--layers", "clean", "--clf", "logreg", "--cache-dir", cache_dir)  # the advice
    assert rc == 0 and re.search(r"^run \S+: logreg ", out, re.M), err


@pytest.mark.slow  # a real extraction
def test_nan_written_into_a_layer_file(elpv_folder, tmp_path):
    """NaN put into two rows of a layer file afterwards. The file's digest may refuse it first (a damaged file);
    either way it is one line, exit 1 or 2, and nothing is logged."""
    cache_dir = tmp_path / "cache"
    assert extract(elpv_folder, cache_dir)[0] == 0
    entry = entry_name(cache_dir)
    with h5py.File(cache_dir / entry / "layers" / "block_3_project_BN.h5", "r+") as f:
        f["features"][[2, 5], 1] = np.nan
    rc, out, err = cli(*refusals(entry, cache_dir, tmp_path)["fit"])
    assert rc in (1, 2)
    line = assert_one_line_error(rc, err, r"^error: .*block_3_project_BN", code=rc)
    assert "NaN/Inf" not in line or re.search(NAN.format(layer="block_3_project_BN", entry=entry, rows=2), line), line
    assert_nothing_written(cache_dir)


# ---- --input-size ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [-1, 0, 8, 100000])
@pytest.mark.parametrize("command", ["layers", "extract"])
def test_unusable_input_size(command, size, elpv_folder, tmp_path):
    cache_dir = tmp_path / "cache"
    args = (
        ["layers", "mobilenet_v2", "--input-size", size]
        if command == "layers"
        else ["extract", "--data", elpv_folder, "--weights", "none", "--input-size", size, "--cache-dir", cache_dir]
    )
    rc, out, err = cli(*args)
    assert_one_line_error(
        rc,
        err,
        rf"^error: --input-size {size} is not a usable image side; give 32 to 4096 pixels "
        r"\(e\.g\. 224\), or leave it out for the backbone's own size$",
    )
    assert out == "" and not cache_dir.exists()


def test_tsne_of_an_entry_with_no_decodable_image_is_one_line(tmp_path):
    """An entry whose every file failed to decode (extract caches it, recording why): `plot-tsne` says so in one
    line and draws nothing; a max_points t-SNE cannot draw is one line too."""
    from tiny_entry import LAYER, write_entry

    labels = np.array([0, 1, 0, 1])
    entry = write_entry(
        tmp_path / "cache", {LAYER: {"id": np.zeros((4, 4))}}, labels, ["train", "val", "test", "test"], valid=[0] * 4
    )
    rc, out, err = cli("plot-tsne", entry.path, "--layers", LAYER, "--cache-dir", tmp_path / "cache")
    assert_one_line_error(rc, err, r"has 0 decoded image\(s\); a t-SNE needs at least 2 \(`featx info` lists")
    assert_nothing_written(tmp_path / "cache")
    for bad in (-1, 0, 10**6):
        rc, out, err = cli("plot-tsne", entry.path, "--max-points", bad, "--cache-dir", tmp_path / "cache")
        assert_one_line_error(rc, err, rf"--max-points {bad} must be a whole number from 2 to 100,000")


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
@pytest.mark.parametrize("content", [b"not a model\n", b"", b"\x00\x01PK"])
def test_a_backbone_file_that_is_not_a_keras_model_says_so(suffix, content, tmp_path):
    """`--backbone fake.keras` naming an existing file that is text (or empty, or binary): one line saying it is
    not a Keras model file (not Keras's "File not found"), before Keras or libhdf5 reads it."""
    fake = tmp_path / f"fake{suffix}"
    fake.write_bytes(content)
    kind = "empty" if not content else "text" if b"\x00" not in content else "something else"
    pattern = rf"backbone '.*fake\{suffix}' is not a Keras model file: a \{suffix} model is .*, and this file is {kind}"
    assert_one_line_error(*cli("layers", fake)[::2], pattern)


@pytest.mark.slow  # extract starts TensorFlow before it builds the backbone
def test_extract_with_a_backbone_file_that_is_not_a_keras_model_says_so(elpv_folder, tmp_path):
    fake = tmp_path / "fake.keras"
    fake.write_text("not a model\n")
    rc, out, err = extract(elpv_folder, tmp_path / "cache", backbone=["--backbone", fake])
    assert_one_line_error(rc, err, r"backbone '.*fake\.keras' is not a Keras model file: .* and this file is text")

"""Extractor stage end to end on real images: one pass equals per-layer models, cache hits, added layers, staleness;
bad images and bad requests (skipped and recorded, or one line, the cache left valid)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

import featx
import featx.extractor
from featx.backbones import describe_layers, get_backbone
from featx.cache.store import CacheEntry
from featx.sources.decode import load_rgb

import imagegen
from helpers import (
    U32,
    assert_float32_close,
    assert_one_line_error,
    backbones_built_once,
    cli,
    extract,
    extract_cli,
    feature_terms,
    widest_sum,
)

LITE_LAYERS = ["block2b_add", "block6a_project_bn", "top_activation", "predictions"]


@pytest.fixture(scope="module")
def lite():
    return get_backbone("efficientnet_lite0")


@pytest.fixture(scope="module")
def lite_cache(elpv_folder, tmp_path_factory, lite):
    """(cache folder, the extract's result). Tests add entries to the folder (another dtype), so each names its entry:
    `featx.load(None, ...)`, the most recent, would depend on the order the tests ran in."""
    cache_dir = tmp_path_factory.mktemp("cache")
    result = featx.extract(
        str(elpv_folder),
        "efficientnet_lite0",
        LITE_LAYERS,
        cache=cache_dir,
        compute=featx.Compute(batch_size=5, progress=False),
    )
    return cache_dir, result


def per_layer_reference(backbone, paths, layer, pool):
    """What users write by hand: one model per layer, then numpy pooling."""
    import keras

    model = keras.Model(backbone.model.input, backbone.model.get_layer(layer).output)
    images = np.stack([load_rgb(p, backbone.input_size) for p in paths]).astype(np.float32)
    out = model(backbone.preprocess(images), training=False).numpy()
    if out.ndim == 2:
        return out
    return {"avg": out.mean(axis=(1, 2)), "max": out.max(axis=(1, 2)), "none": out.reshape(len(out), -1)}[pool]


def test_one_pass_equals_per_layer_models(lite_cache, lite):
    cache_dir, result = lite_cache
    entry = result.entry
    assert result.computed_layers == LITE_LAYERS
    paths = [f"{entry.attrs['root']}/{p}" for p in entry.relpaths]
    X, slices = entry.read(LITE_LAYERS)
    for layer in LITE_LAYERS:
        start, stop = slices[layer]
        # another graph, batch and pooling code: equal up to float32 round-off (helpers.roundoff)
        reference = per_layer_reference(lite, paths, layer, "avg")
        assert_float32_close(X[:, start:stop], reference, feature_terms(lite.model, layer), err_msg=layer)


@pytest.mark.slow  # an extraction and per-layer Keras models
@pytest.mark.parametrize("pool", ["max", "none"])
def test_other_poolings_equal_reference(elpv_folder, tmp_path, lite, pool):
    result = featx.extract(
        str(elpv_folder),
        featx.BackboneSpec(featx.backbones.DEFAULT_BACKBONE, pool=pool),
        "block3a_project_bn",
        cache=tmp_path,
        compute=featx.Compute(progress=False),
    )
    X, _, meta = featx.load(result.entry, split=None)
    paths = [f"{result.entry.attrs['root']}/{p}" for p in meta["path"]]
    reference = per_layer_reference(lite, paths, "block3a_project_bn", pool)  # max and none add no sum
    assert_float32_close(X, reference, feature_terms(lite.model, "block3a_project_bn"))


def test_real_features_separate_classes(lite_cache):
    """Sanity that the features carry content: nearest class centroid beats chance on the real images."""
    X, y, _ = featx.load(lite_cache[1].entry.path, "top_activation", cache=lite_cache[0])
    centroids = np.stack([X[y == c].mean(axis=0) for c in np.unique(y)])
    predicted = np.argmin(((X[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (predicted == y).mean() > 0.6  # chance is 1/3; a floor on content, not round-off (centroids are robust)


def test_cache_layout_and_metadata(lite_cache):
    entry = lite_cache[1].entry
    with h5py.File(entry.layer_file("top_activation"), "r") as f:
        ds = f["features"]
        assert ds.shape == (18, 1280) and ds.dtype == np.float32
        assert ds.chunks is None and ds.compression is None  # rows stored contiguously (featx.cache.layerfile)
        assert ds.attrs["cache_key"] == entry.key
    assert entry.settings["backbone"] == "efficientnet_lite0" and entry.settings["pool"] == "avg"
    assert sorted(set(entry.split)) == ["test", "train", "val"]
    assert entry.class_names == sorted(entry.class_names)
    assert not (entry.path / "work").exists()


def test_second_run_is_a_noop(lite_cache, elpv_folder):
    cache_dir, first = lite_cache
    before = {n: first.entry.layer_file(n).stat().st_mtime_ns for n in LITE_LAYERS}
    said = []
    again = featx.extract(
        str(elpv_folder),
        "efficientnet_lite0",
        LITE_LAYERS,
        cache=cache_dir,
        compute=featx.Compute(batch_size=5, progress=False),
        log=said.append,
    )
    assert again.computed_layers == [] and again.entry.path == first.entry.path
    assert "nothing to do" in said[0]
    assert before == {n: first.entry.layer_file(n).stat().st_mtime_ns for n in LITE_LAYERS}


def test_extra_layer_computes_only_that_layer(lite_cache, elpv_folder):
    cache_dir, first = lite_cache
    X_before, _, _ = featx.load(first.entry.path, LITE_LAYERS, cache=cache_dir)
    result = featx.extract(
        str(elpv_folder),
        "efficientnet_lite0",
        LITE_LAYERS + ["block4a_project_bn"],
        cache=cache_dir,
        compute=featx.Compute(batch_size=5, progress=False),
    )
    assert result.computed_layers == ["block4a_project_bn"]
    X_after, _, meta = featx.load(first.entry.path, LITE_LAYERS, cache=cache_dir)
    np.testing.assert_array_equal(X_before, X_after)
    assert "block4a_project_bn" in featx.Cache(cache_dir).open(first.entry.path.name).layers


def test_layer_order_is_depth_order(lite_cache):
    m1 = featx.load(lite_cache[1].entry.path, ["top_activation", "block2b_add"], cache=lite_cache[0])
    X1 = m1.X
    X2, _, m2 = featx.load(lite_cache[1].entry.path, "block2b_add,top_activation", cache=lite_cache[0])
    np.testing.assert_array_equal(X1, X2)
    assert m1.layers == ["block2b_add", "top_activation"]
    assert m1.feature_slices["block2b_add"] == (0, 24)


def test_split_load_uses_stored_split(lite_cache):
    entry = lite_cache[1].entry
    parts = [featx.load(entry.path, "predictions", split=s, cache=lite_cache[0]) for s in ("train", "val", "test")]
    assert sum(len(p[1]) for p in parts) == 18
    for (_, y, meta), split in zip(parts, ("train", "val", "test")):
        assert set(meta["split"]) == {split} and len(np.unique(y)) == 3
    assert (entry.split == "train").sum() == 12


@pytest.mark.slow
def test_changed_image_is_never_served_stale(elpv_folder, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(elpv_folder, data)
    first = featx.extract(
        str(data), "efficientnet_lite0", "top_activation", cache=tmp_path / "c", compute=featx.Compute(progress=False)
    )
    victim = data / first.entry.relpaths[0]
    from PIL import Image

    Image.open(victim).transpose(Image.FLIP_TOP_BOTTOM).save(victim)
    second = featx.extract(
        str(data), "efficientnet_lite0", "top_activation", cache=tmp_path / "c", compute=featx.Compute(progress=False)
    )
    assert second.entry.path != first.entry.path and second.computed_layers == ["top_activation"]
    X1, _ = first.entry.read(["top_activation"])
    X2, _ = second.entry.read(["top_activation"])
    assert not np.allclose(X1[0], X2[0])  # a flipped image: features far apart, not round-off
    assert_float32_close(X1[1:], X2[1:], feature_terms(get_backbone("efficientnet_lite0").model, "top_activation"))


def test_float16_and_other_settings_get_their_own_entry(lite_cache, elpv_folder):
    cache_dir, first = lite_cache
    half = featx.extract(
        str(elpv_folder),
        featx.BackboneSpec(featx.backbones.DEFAULT_BACKBONE, dtype="float16"),
        "top_activation",
        cache=cache_dir,
        compute=featx.Compute(progress=False),
    )
    assert half.entry.path != first.entry.path
    X16, _ = half.entry.read(["top_activation"])
    X32, _ = first.entry.read(["top_activation"])
    assert X16.dtype == np.float16
    # float32 features (within round-off of the float32 entry's) rounded to float16: relative error 2**-11 (float16's
    # unit round-off), and 2**-25 absolute below its smallest normal
    recomputed = U32 * feature_terms(get_backbone("efficientnet_lite0").model, "top_activation") * np.abs(X32).max()
    np.testing.assert_array_less(np.abs(X16.astype(np.float32) - X32), 2**-11 * np.abs(X32) + 2**-25 + recomputed)


@pytest.mark.slow
def test_mixed_precision_is_its_own_entry_and_leaves_no_trace(elpv_folder, tmp_path):
    """float16 compute (the GPU option) runs on CPU too; it must not leak into later float32 extracts."""
    import keras

    kw = dict(layers="block6a_project_bn,top_activation", input_size=96, progress=False, log=lambda *a: None)
    before = extract(elpv_folder, cache_dir=tmp_path / "a", **kw)
    mixed = extract(elpv_folder, cache_dir=tmp_path / "a", mixed_precision=True, **kw)
    assert keras.mixed_precision.global_policy().name == "float32"
    after = extract(elpv_folder, cache_dir=tmp_path / "b", **kw)
    assert mixed.entry.path != before.entry.path and mixed.entry.settings["mixed_precision"] is True
    layers = ["block6a_project_bn", "top_activation"]
    X32, X16, X32_again = (r.entry.read(layers)[0] for r in (before, mixed, after))
    assert X16.dtype == np.float32 and not np.array_equal(X16, X32)  # really computed in float16
    # float16 arithmetic (u = 2**-11): the worst case n u over a sum of n = 1,280 terms is no bound at all (0.6);
    # rounding errors of random sign grow like lambda sqrt(n) u instead (Higham and Mary, SIAM J. Sci. Comput. 41,
    # 2019: with lambda = 5, for all but a vanishing fraction of sums): 0.087 of the largest feature (measured
    # 0.013 here, 0.006 for block6a)
    n = widest_sum(get_backbone("efficientnet_lite0", "imagenet", 96).model)
    np.testing.assert_allclose(X16, X32, atol=5 * np.sqrt(n) * 2**-11 * np.abs(X32).max())
    np.testing.assert_array_equal(X32_again, X32)  # the same float32 computation in this process: the same bits


@pytest.mark.parametrize("batch_size, side", [(1, 224), (32, 224), (32, 96), (128, 224), (8, 2048)])
def test_prefetch_stays_within_its_memory_budget(batch_size, side):
    from featx.extractor import PREFETCH_BYTES, PREFETCH_IMAGES, prefetch_batches

    depth = prefetch_batches(batch_size, (side, side))
    assert depth >= 2  # decode always overlaps the forward pass
    if depth > 2:  # deeper only within both budgets
        assert depth * batch_size <= PREFETCH_IMAGES and depth * batch_size * side * side * 3 <= PREFETCH_BYTES


@pytest.mark.slow  # builds VGG16 and MobileNetV2 (Keras)
def test_groups_resolve_for_vgg_and_mobilenet():
    vgg = get_backbone("vgg16", weights="none")
    from featx.backbones.layers import group_members, layer_selection

    infos = describe_layers(vgg)
    assert group_members(infos, "blocks") == [f"block{i}_conv{n}" for i, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))]
    assert group_members(infos, "fc") == ["fc1", "fc2", "predictions"]
    assert len(group_members(infos, "all")) == 16
    assert layer_selection(infos, "fc1,block5_conv3", model_name="vgg16").names == ("block5_conv3", "fc1")
    with pytest.raises(featx.errors.FeatxError, match=r"layer 'block5_conv4' not in vgg16; did you mean block5_conv"):
        layer_selection(infos, ["block5_conv4"], model_name="vgg16")


@pytest.mark.slow
def test_local_weights_file_and_imagenet_download_path(tmp_path):
    import keras

    keras.utils.set_random_seed(1)
    reference = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), include_top=False)
    path = tmp_path / "mine.weights.h5"
    reference.save_weights(path)
    loaded = get_backbone("mobilenet_v2", weights=str(path), input_size=96)
    random = get_backbone("mobilenet_v2", weights="none", input_size=96)
    assert loaded.weights_id == featx.backbones.weights_id(reference) != random.weights_id
    try:  # the real Keras download: works on a networked machine, must fail with a usable message offline
        online = get_backbone("mobilenet_v2", weights="imagenet", input_size=96)
        assert online.weights_id != random.weights_id
    except featx.errors.FeatxError as exc:
        assert "could not download imagenet weights for mobilenet_v2" in str(exc) and "--weights" in str(exc)


# ---- bad images and bad requests: every one ends in a skipped, recorded file or a clear one-line error, and the
# cache stays valid (`featx verify` clean, a layer cached before reads back identically). Most runs call
# `featx.cli.main` in this process (the backbone is built once per module to save time: backbone_built_once); runs
# that need a fresh process with a file-size limit (full disk) or without root's file-permission override
# (unreadable files, read-only folders even when the tests run as root) come from tests/forkserver.py.

BACKBONE = ["--backbone", "mobilenet_v2", "--weights", "none", "--input-size", "96"]


BASE_LAYERS = "block_1_project_BN,block_3_project_BN"


@pytest.fixture(scope="module")
def backbone_built_once():
    """Every in-process run of the bad-input tests uses the same few backbones: build each once (the numbers do not
    change); each of them asks for it."""
    with backbones_built_once(8):
        yield


def extract_base(data, cache_dir, *extra, layers=BASE_LAYERS) -> tuple[int, str, str]:
    return extract_cli(data, cache_dir, *extra, backbone=BACKBONE, layers=layers)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bad_inputs")


@pytest.fixture(scope="module")
def base_data(workdir) -> Path:
    """3 classes x 3 real ELPV cells."""
    root = workdir / "base_data"
    for path, class_name, _ in imagegen.elpv_images(9, n_classes=3):
        (root / class_name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, root / class_name / os.path.basename(path))
    return root


class Base:
    def __init__(self, cache_dir: Path):
        self.cache_dir = cache_dir
        self.entry = featx.Cache(cache_dir).open(None)
        self.name = self.entry.name
        self.layers = {n: self.entry.read([n])[0] for n in self.entry.layers}

    def copy(self, to: Path) -> Path:
        shutil.copytree(self.cache_dir, to)
        return to

    def assert_intact(self, cache_dir: Path) -> None:
        """`featx verify` finds nothing wrong and the base layers read back bit for bit."""
        rc, out, err = cli("verify", "--cache-dir", cache_dir)
        assert rc == 0, out + err
        entry = CacheEntry(cache_dir / self.name)
        assert [name for name in entry.layers if name in self.layers] == list(self.layers)  # later runs may add layers
        for name, X in self.layers.items():
            assert np.array_equal(entry.read([name])[0], X)


@pytest.fixture(scope="module")
def base(base_data, tiny_cache) -> Base:
    return Base(tiny_cache(base_data, BASE_LAYERS, batch_size=4))


BAD_KINDS = {  # kind: (file name, writer, reason in the report)
    "corrupt_jpeg": (
        "corrupt.jpg",
        lambda p: imagegen.save_corrupt_jpeg(p, imagegen.photo()),
        r"cannot decode: broken data stream",
    ),
    "truncated": (
        "truncated.jpg",
        lambda p: imagegen.save_truncated_jpeg(p, imagegen.photo()),
        r"cannot decode: image file is truncated",
    ),
    "zero_bytes": ("empty.png", imagegen.save_empty, r"empty file \(0 bytes\)"),
    "not_an_image": ("notes.txt", imagegen.save_not_an_image, r"not an image file Pillow can read"),
    "html_as_jpeg": ("download.jpg", imagegen.save_not_an_image, r"not an image file Pillow can read"),
    "decompression_bomb": ("bomb.png", imagegen.save_decompression_bomb, r"image larger than 178,956,970 pixels"),
    "dangling_symlink": (
        "gone.png",
        lambda p: os.symlink(p.parent / "nowhere.png", p),
        r"cannot read file: No such file or directory",
    ),
    "fifo": ("pipe.png", os.mkfifo, r"not a regular file"),  # opening it would block forever
}


@pytest.fixture(scope="module")
def mixed(base_data, base, workdir):
    """One run over a folder that mixes every bad kind and every good kind with the base images.

    Class folders and file names carry spaces and non-ASCII letters. Good kinds sit beside a twin that must
    decode to the same pixels (grayscale vs its RGB copy, 16-bit vs 8-bit, RGBA vs RGB, GIF vs its RGB).
    """
    root = workdir / "mixed data"
    classes = {}
    for class_name, new in zip(sorted(os.listdir(base_data)), ["class A", "clâsse B ü", "クラス C 太陽"]):
        shutil.copytree(base_data / class_name, root / new)
        classes[class_name] = root / new
    a, b, c = (root / n for n in ["class A", "clâsse B ü", "クラス C 太陽"])
    for kind, (name, write, _) in BAD_KINDS.items():
        write(a / f"bad {kind} {name}")
    rgb, gray = imagegen.photo("coffee"), imagegen.gray(5)
    gray_rgb = np.dstack([gray] * 3)
    imagegen.save_png(b / "gray.png", gray)
    imagegen.save_png(b / "gray twin rgb.png", gray_rgb)
    imagegen.save_png16_gray(b / "gray 16-bit.png", gray)
    imagegen.save_png(c / "photo.png", rgb)
    imagegen.save_png16_rgb(c / "photo 16-bit rgb.png", rgb)
    imagegen.save_rgba_png(c / "photo alpha.png", rgb)
    _, paletted = imagegen.save_palette_gif(c / "palette.gif", rgb)
    imagegen.save_png(c / "palette twin rgb.png", paletted)
    imagegen.save_cmyk_jpeg(c / "photo cmyk.jpg", rgb)
    imagegen.save_huge_jpeg(c / "huge 10000x10000.jpg", rgb)
    first = sorted(os.listdir(base_data / sorted(os.listdir(base_data))[0]))[0]
    shutil.copyfile(a / first, a / f"çé 太陽 #1 (copy of {first})")
    cache_dir = base.copy(workdir / "mixed_cache")
    rc, out, err = extract_base(root, cache_dir)
    assert rc == 0, err
    entry = featx.Cache(cache_dir).open(None)
    X, meta = entry.read(entry.layers)[0], {p: i for i, p in enumerate(entry.relpaths)}
    from featx.backbones import get_backbone

    model = get_backbone("mobilenet_v2", "none", 96).model  # BACKBONE
    terms = max(feature_terms(model, layer) for layer in BASE_LAYERS.split(","))  # for helpers.roundoff
    return {
        "root": root,
        "cache_dir": cache_dir,
        "entry": entry,
        "out": out,
        "X": X,
        "row": meta,
        "twin_of": first,
        "terms": terms,
    }


@pytest.mark.usefixtures("backbone_built_once")
@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_image_is_skipped_and_recorded(kind, mixed, base):
    name, _, reason = BAD_KINDS[kind]
    rel = f"class A/bad {kind} {name}"
    entry = mixed["entry"]
    assert re.fullmatch(reason + ".*", entry.errors[rel]), entry.errors[rel]
    assert f"skipped {len(BAD_KINDS)} bad file(s)" in mixed["out"]
    assert re.search(rf"^  {re.escape(rel)}: {reason}", mixed["out"], re.M)  # the report printed at the end
    assert not entry.valid[mixed["row"][rel]]
    X, y, meta = featx.load(entry, split=None)
    assert rel not in set(meta["path"]) and len(X) == len(entry.labels) - len(BAD_KINDS)
    base.assert_intact(mixed["cache_dir"])
    assert featx.verify(entry) == []


@pytest.mark.usefixtures("backbone_built_once")
def test_bad_files_do_not_poison_their_batches(mixed, base):
    """Good images that shared a batch with bad ones get the features they get in a clean run."""
    entry = mixed["entry"]
    X_base, _ = base.entry.read(base.entry.layers)
    renamed = {
        old: new.name
        for old, new in zip(
            sorted(set(p.split("/")[0] for p in base.entry.relpaths)),
            [Path("class A"), Path("clâsse B ü"), Path("クラス C 太陽")],
        )
    }
    for i, rel in enumerate(base.entry.relpaths):
        cls, fname = rel.split("/", 1)
        row = mixed["row"][f"{renamed[cls]}/{fname}"]
        # the same image in another batch of another run: float32 round-off of MobileNetV2 (helpers.roundoff)
        assert_float32_close(mixed["X"][row], X_base[i], mixed["terms"])
    assert np.isfinite(mixed["X"][entry.valid]).all()


GOOD_TWINS = {  # good kind: (file, twin that decodes to the same pixels)
    "grayscale": ("clâsse B ü/gray.png", "clâsse B ü/gray twin rgb.png"),
    "16_bit_gray_png": ("clâsse B ü/gray 16-bit.png", "clâsse B ü/gray twin rgb.png"),
    "16_bit_rgb_png": ("クラス C 太陽/photo 16-bit rgb.png", "クラス C 太陽/photo.png"),
    "png_with_alpha": ("クラス C 太陽/photo alpha.png", "クラス C 太陽/photo.png"),
    "palette_gif": ("クラス C 太陽/palette.gif", "クラス C 太陽/palette twin rgb.png"),
    "unicode_and_spaces": (None, None),
}


@pytest.mark.usefixtures("backbone_built_once")
@pytest.mark.parametrize("kind", GOOD_TWINS)
def test_good_image_kind_decodes_like_its_twin(kind, mixed):
    rel, twin = GOOD_TWINS[kind]
    if kind == "unicode_and_spaces":
        rel, twin = f"class A/çé 太陽 #1 (copy of {mixed['twin_of']})", f"class A/{mixed['twin_of']}"
    entry, X, row = mixed["entry"], mixed["X"], mixed["row"]
    assert rel not in entry.errors and entry.valid[row[rel]] and entry.valid[row[twin]]
    assert np.isfinite(X[row[rel]]).all() and np.abs(X[row[rel]]).sum() > 0
    assert_float32_close(X[row[rel]], X[row[twin]], mixed["terms"])  # the same pixels, maybe another batch


@pytest.mark.usefixtures("backbone_built_once")
@pytest.mark.parametrize("rel", ["クラス C 太陽/photo cmyk.jpg", "クラス C 太陽/huge 10000x10000.jpg"])
def test_cmyk_and_huge_jpeg_give_features_close_to_the_photo(rel, mixed):
    """Lossy (JPEG, CMYK round trip, draft-mode downscale): close to the RGB photo, not equal."""
    entry, X, row = mixed["entry"], mixed["X"], mixed["row"]
    photo = X[row["クラス C 太陽/photo.png"]]
    assert entry.valid[row[rel]] and np.isfinite(X[row[rel]]).all()
    assert np.corrcoef(X[row[rel]], photo)[0, 1] > 0.99  # lossy pixels (integer decoders), not round-off
    pixels = load_rgb(str(mixed["root"] / rel), (96, 96)).astype(int)
    assert np.abs(pixels - load_rgb(str(mixed["root"] / "クラス C 太陽/photo.png"), (96, 96))).mean() < 4


@pytest.mark.usefixtures("backbone_built_once")
def test_stored_unicode_paths_round_trip(mixed):
    entry = CacheEntry(mixed["entry"].path)
    assert "クラス C 太陽" in entry.class_names and "clâsse B ü" in entry.class_names
    for rel in entry.relpaths:
        assert os.path.lexists(mixed["root"] / rel), rel
    rc, out, _ = cli("info", entry.path)
    assert rc == 0 and "bad file: class A/bad corrupt_jpeg corrupt.jpg: cannot decode" in out


@pytest.mark.usefixtures("backbone_built_once")
@pytest.mark.parametrize("kind", BAD_KINDS)
def test_strict_fails_fast_naming_the_file(kind, base_data, base, tmp_path):
    name, write, reason = BAD_KINDS[kind]
    data = tmp_path / "data"
    shutil.copytree(base_data, data)
    first_class = sorted(os.listdir(data))[0]
    bad = data / first_class / f"000 {name}"  # row 0: the first batch fails
    write(bad)
    cache_dir = base.copy(tmp_path / "cache")
    rc, out, err = extract_base(data, cache_dir, "--strict")
    assert_one_line_error(
        rc,
        err,
        rf"^error: bad image '{re.escape(str(bad))}': {reason}.* \(--strict\); "
        r"fix or remove it, or drop --strict$",
    )
    base.assert_intact(cache_dir)
    # without --strict the same command resumes the pass and skips the file
    rc, out, err = extract_base(data, cache_dir)
    assert rc == 0 and "resuming interrupted extraction" in out and f"{first_class}/000 {name}: " in out, out + err
    base.assert_intact(cache_dir)


@pytest.mark.usefixtures("backbone_built_once")
def test_unreadable_files_via_manifest(base_data, base, tmp_path):
    """A manifest row naming a folder, a missing file, or a file this user may not read."""
    data = tmp_path / "data"
    shutil.copytree(base_data, data)
    (data / "a folder.png").mkdir()
    rows = [f"{p.relative_to(data)},{p.parent.name}" for p in sorted(data.glob("*/*.png"))]
    rows[1:1] = ["a folder.png,functional", "missing.png,functional"]
    (data / "list.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    cache_dir = base.copy(tmp_path / "cache")
    rc, out, err = extract_base(data / "list.csv", cache_dir)
    assert rc == 0, err
    entry = featx.Cache(cache_dir).open(None)
    assert entry.errors == {
        "a folder.png": "not a regular file",
        "missing.png": "cannot read file: No such file or directory",
    }
    assert "  missing.png: cannot read file: No such file or directory" in out
    base.assert_intact(cache_dir)


@pytest.mark.usefixtures("backbone_built_once")
def test_file_without_read_permission(base_data, base, workdir, fork_server):
    """chmod 000, run without root's permission override: skipped with 'Permission denied'; --strict names it."""
    data = workdir / "unreadable_data"
    shutil.copytree(base_data, data)
    secret = data / sorted(os.listdir(data))[0] / "000 secret.png"
    imagegen.save_png(secret, imagegen.gray(7))
    secret.chmod(0)
    cache_dir = base.copy(workdir / "unreadable_cache")
    args = [
        "extract",
        "--data",
        data,
        *BACKBONE,
        "--layers",
        BASE_LAYERS,
        "--batch-size",
        4,
        "--cache-dir",
        cache_dir,
        "--quiet",
    ]
    strict = fork_server.run([*args, "--strict"], unprivileged=True)
    assert_one_line_error(
        strict.rc, strict.err, rf"bad image '{re.escape(str(secret))}': cannot read file: Permission denied"
    )
    skip = fork_server.run(args, unprivileged=True)
    assert skip.rc == 0 and "000 secret.png: cannot read file: Permission denied" in skip.out, skip.err
    [new] = [p for p in cache_dir.iterdir() if p.name not in (base.name, ".lock")]
    assert list(CacheEntry(new).errors.values()) == ["cannot read file: Permission denied"]
    assert CacheEntry(new).data["fingerprints"][0] == "unreadable:13"  # EACCES is part of the key: fixed later, re-run
    base.assert_intact(cache_dir)


@pytest.mark.usefixtures("backbone_built_once")
def test_unknown_backbone_lists_close_names(base_data, base, tmp_path):
    cache_dir = base.copy(tmp_path / "c")
    rc, _, err = cli("extract", "--data", base_data, "--backbone", "mobilenet_v9", "--cache-dir", cache_dir, "--quiet")
    assert_one_line_error(rc, err, r"unknown backbone 'mobilenet_v9'; did you mean mobilenet_v2, ")
    base.assert_intact(cache_dir)


@pytest.mark.usefixtures("backbone_built_once")
def test_unknown_layer_lists_close_names(base_data, base, tmp_path):
    cache_dir = base.copy(tmp_path / "c")
    rc, _, err = extract_base(base_data, cache_dir, layers="block_1_project_BN,block_16_projct_BN")
    assert_one_line_error(rc, err, r"layer 'block_16_projct_BN' not in mobilenet_v2; did you mean block_16_project_BN")
    base.assert_intact(cache_dir)


@pytest.fixture(scope="module")
def tiny_models(workdir) -> dict[str, Path]:
    """Small saved Keras models: one with a Reshape layer (3-D output), one with a Lambda layer."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, name="conv")(inputs)
    shaped = keras.layers.Reshape((15 * 15, 4), name="tokens")(x)
    pooled = keras.layers.GlobalAveragePooling1D(name="pooled")(shaped)
    reshape = keras.Model(inputs, keras.layers.Dense(3, name="head")(pooled))
    reshape.save(workdir / "reshape.keras")
    doubled = keras.layers.Lambda(lambda t: t * 2.0, name="doubled")(x)
    out = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D(name="gap")(doubled))
    keras.Model(inputs, out).save(workdir / "lambda.keras")
    return {"reshape": workdir / "reshape.keras", "lambda": workdir / "lambda.keras"}


@pytest.mark.usefixtures("backbone_built_once")
def test_layer_without_poolable_output(base_data, base, tiny_models, tmp_path):
    cache_dir = base.copy(tmp_path / "c")
    rc, _, err = cli(
        "extract",
        "--data",
        base_data,
        "--backbone",
        tiny_models["reshape"],
        "--layers",
        "tokens",
        "--cache-dir",
        cache_dir,
        "--quiet",
    )
    assert_one_line_error(
        rc,
        err,
        r"layer 'tokens' has output shape \(None, 225, 4\), which featx cannot pool into a "
        r"feature vector; choose a conv \(4-D\) or dense \(2-D\) layer",
    )
    base.assert_intact(cache_dir)


@pytest.mark.usefixtures("backbone_built_once")
def test_lambda_layer_refused_unless_unsafe(base_data, base, tiny_models, tmp_path):
    """Keras safe mode: a .keras file with a Lambda layer (arbitrary code) loads only with --unsafe."""
    model = tiny_models["lambda"]
    refused = r"backbone '.*lambda\.keras' contains a Lambda layer, which Keras safe mode refuses .*; pass --unsafe"
    assert_one_line_error(*cli("layers", model)[::2], refused)
    cache_dir = base.copy(tmp_path / "c")
    rc, _, err = cli(
        "extract", "--data", base_data, "--backbone", model, "--layers", "doubled", "--cache-dir", cache_dir, "--quiet"
    )
    assert_one_line_error(rc, err, refused)
    base.assert_intact(cache_dir)
    rc, out, err = cli("layers", model, "--unsafe", "--all")
    assert rc == 0 and re.search(r"doubled\s+Lambda", out), err
    rc, out, err = cli(
        "extract",
        "--data",
        base_data,
        "--backbone",
        model,
        "--layers",
        "doubled,conv",
        "--unsafe",
        "--cache-dir",
        cache_dir,
        "--quiet",
    )
    assert rc == 0, err
    loaded = featx.load("lambda", "doubled,conv", cache=cache_dir)
    X = loaded.X
    start, stop = loaded.feature_slices["doubled"]
    c0, c1 = loaded.feature_slices["conv"]
    # the Lambda really ran: doubling is exact in binary, so the two pooled layers differ by pooling round-off only
    np.testing.assert_allclose(X[:, start:stop], 2 * X[:, c0:c1], rtol=1e-5)
    base.assert_intact(cache_dir)


@pytest.mark.usefixtures("backbone_built_once")
def test_empty_dataset(base, tmp_path):
    cache_dir = base.copy(tmp_path / "c")
    (tmp_path / "empty" / "cats").mkdir(parents=True)
    (tmp_path / "empty" / "dogs").mkdir()
    assert_one_line_error(
        *cli("extract", "--data", tmp_path / "empty", "--cache-dir", cache_dir)[::2],
        r"no images found in '.*empty'; point --data at a folder of class subfolders or a CSV manifest",
    )
    (tmp_path / "header_only.csv").write_text("path,label\n")
    assert_one_line_error(
        *cli("extract", "--data", tmp_path / "header_only.csv", "--cache-dir", cache_dir)[::2],
        r"no images found in '.*header_only.csv'",
    )
    (tmp_path / "no_classes").mkdir()
    assert_one_line_error(
        *cli("extract", "--data", tmp_path / "no_classes", "--cache-dir", cache_dir)[::2], r"has no class subfolders"
    )
    base.assert_intact(cache_dir)


@pytest.mark.usefixtures("backbone_built_once")
def test_class_with_one_image(base_data, base, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(base_data, data)
    (data / "lonely").mkdir()
    shutil.copyfile(next(data.glob("*/*.png")), data / "lonely" / "only.png")
    cache_dir = base.copy(tmp_path / "c")
    assert_one_line_error(
        *extract_base(data, cache_dir)[::2],
        r"class 'lonely' has 1 image\(s\); a stratified train/val/test split needs at least 3 per class: "
        r"add images, remove the class, or give a split column in a CSV manifest",
    )
    base.assert_intact(cache_dir)


@pytest.mark.usefixtures("backbone_built_once")
@pytest.mark.parametrize(
    "csv, message",
    [
        (
            "file,class\na.png,x\n",
            r"lacks column\(s\) path, label \(has: file, class\); the header must be path,label\[,split\]",
        ),
        ("path\na.png\n", r"lacks column\(s\) label \(has: path\)"),
        ("path,label\n../outside.png,x\n", r"line 2: path '\.\./outside\.png' is outside the manifest's folder"),
        ("path,label\n/etc/hostname,x\n", r"line 2: path '/etc/hostname' is outside the manifest's folder"),
        ("path,label,split\na.png,x,training\n", r"split value\(s\) \['training'\]; use only train, val, test"),
    ],
)
def test_bad_manifest(csv, message, base, tmp_path):
    (tmp_path / "list.csv").write_text(csv)
    cache_dir = base.copy(tmp_path / "c")
    assert_one_line_error(*cli("extract", "--data", tmp_path / "list.csv", "--cache-dir", cache_dir)[::2], message)
    base.assert_intact(cache_dir)


@pytest.mark.usefixtures("backbone_built_once")
@pytest.mark.slow  # extract configures TensorFlow before it looks at the cache folder
def test_cache_directory_is_a_file(base_data, tmp_path):
    (tmp_path / "cache").write_text("not a folder")
    assert_one_line_error(
        *extract_base(base_data, tmp_path / "cache")[::2],
        r"cache directory '.*cache' is not a folder; pass --cache-dir to a writable folder",
    )
    assert_one_line_error(*extract_base(base_data, tmp_path / "cache" / "sub")[::2], r"is not a folder")


@pytest.mark.usefixtures("backbone_built_once")
def test_cache_directory_not_writable(base_data, base, workdir, fork_server):
    """Read-only cache: a new entry and a new layer of an existing entry both fail in one line; data intact."""
    cache_dir = base.copy(workdir / "readonly_cache")
    for path in [cache_dir, *cache_dir.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    data = workdir / "readonly_data"
    shutil.copytree(base_data, data)
    shutil.copyfile(next(data.glob("*/*.png")), next(data.glob("*/")) / "extra.png")
    args = [*BACKBONE, "--batch-size", 4, "--cache-dir", cache_dir, "--quiet"]
    try:
        new_entry = fork_server.run(["extract", "--data", data, "--layers", BASE_LAYERS, *args], unprivileged=True)
        assert_one_line_error(
            new_entry.rc,
            new_entry.err,
            rf"^error: cache directory '{re.escape(str(cache_dir))}' is not writable; pass --cache-dir",
        )
        new_layer = fork_server.run(
            ["extract", "--data", base_data, "--layers", "block_2_add", *args], unprivileged=True
        )
        assert_one_line_error(
            new_layer.rc,
            new_layer.err,
            rf"cannot lock cache entry {re.escape(str(cache_dir / base.name))} \(Permission denied\): "
            "the cache is not writable; pass --cache-dir to a writable folder",
        )
    finally:
        for path in [cache_dir, *cache_dir.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    base.assert_intact(cache_dir)


@pytest.fixture
def fsize_run(fork_server):
    """`fsize_run(argv, cache_dir, limit)`: a fresh `featx` process whose files may not grow beyond `limit` bytes."""
    return lambda argv, cache_dir, limit: fork_server.run([str(a) for a in argv], fsize=limit)


def _extract_with_out_relu(base_data, cache_dir) -> list:
    """The disk-full tests' extract: the base layers plus out_relu, whose 5 kB rows fill a small file limit."""
    return [
        "extract",
        "--data",
        base_data,
        *BACKBONE,
        "--layers",
        f"{BASE_LAYERS},out_relu",
        "--batch-size",
        4,
        "--cache-dir",
        cache_dir,
        "--quiet",
    ]


@pytest.mark.usefixtures("backbone_built_once")
def test_disk_full_while_appending_batches(base_data, base, tmp_path, fsize_run):
    """A write fails mid-pass (EFBIG under RLIMIT_FSIZE, as ENOSPC on a full disk): one line, exit 1, resumable."""
    cache_dir = base.copy(tmp_path / "cache")
    args = _extract_with_out_relu(base_data, cache_dir)
    full = fsize_run(args, cache_dir, limit=6 * 1280 * 4)  # out_relu rows are 5 kB: the second batch does not fit
    assert_one_line_error(
        full.rc,
        full.err,
        r"^error: writing features failed \(File too large\); committed batches are "
        r"kept: free disk space and re-run the same command to resume$",
        code=1,
    )
    base.assert_intact(cache_dir)
    rc, out, err = cli(*args)  # the same command, disk space back (in this process: faster)
    assert rc == 0 and "resuming interrupted extraction of 1 layer(s) at image 4/9" in out, err
    base.assert_intact(cache_dir)
    assert np.isfinite(featx.load(None, "out_relu", cache=cache_dir)[0]).all()


@pytest.mark.usefixtures("backbone_built_once")
def test_disk_full_while_publishing_a_layer(base_data, base, tmp_path, fsize_run):
    cache_dir = base.copy(tmp_path / "cache")
    args = _extract_with_out_relu(base_data, cache_dir)
    full = fsize_run(args, cache_dir, limit=9 * 1280 * 4 + 512)  # the raw rows fit, the HDF5 file does not
    assert_one_line_error(
        full.rc,
        full.err,
        rf"^error: writing the cache in {re.escape(str(cache_dir / base.name))} "
        r"failed \(File too large\); committed work is kept: free disk space",
        code=1,
    )
    base.assert_intact(cache_dir)
    assert not list((cache_dir / base.name / "layers").glob(".*.tmp"))  # the partial HDF5 file was removed
    rc, out, err = cli(*args)
    assert rc == 0 and "resuming interrupted extraction of 1 layer(s) at image 9/9" in out, err
    base.assert_intact(cache_dir)


@pytest.mark.usefixtures("backbone_built_once")
def test_disk_full_while_creating_an_entry(base_data, base, tmp_path, fsize_run):
    cache_dir = base.copy(tmp_path / "cache")
    data = tmp_path / "data"
    shutil.copytree(base_data, data)
    shutil.copyfile(next(data.glob("*/*.png")), next(data.glob("*/")) / "extra.png")
    full = fsize_run(
        ["extract", "--data", data, *BACKBONE, "--layers", BASE_LAYERS, "--cache-dir", cache_dir, "--quiet"],
        cache_dir,
        limit=1024,
    )
    assert_one_line_error(
        full.rc, full.err, r"cannot create a cache entry in '.*' \(File too large\); free disk space", code=1
    )
    assert [p.name for p in cache_dir.iterdir() if not p.name.startswith(".")] == [base.name]
    base.assert_intact(cache_dir)


def _nan_row(entry):
    with h5py.File(entry.layer_file(entry.layers[0]), "r+") as f:
        f["features"][2, 3] = np.nan


def _short_layer(entry):
    name = entry.layers[0]
    with h5py.File(entry.layer_file(name), "r") as f:
        rows = f["features"][:-1]
    entry.layer_file(name).unlink()
    entry.write_layer(name, lambda a, b: rows[a:b], len(rows), rows.shape[1], rows.dtype, {})  # a row short


def _edited_settings(entry):
    import json

    with h5py.File(entry.path / "index.h5", "r+") as f:
        settings = json.loads(f.attrs["settings"])
        f.attrs["settings"] = json.dumps({**settings, "input_size": [224, 224]})


def _garbage_layer(entry):
    entry.layer_file(entry.layers[0]).write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)


def _garbage_index(entry):
    (entry.path / "index.h5").write_bytes(b"not hdf5")


def _lost_raw_rows(entry):
    import json

    from featx.cache.manifest import FORMAT_VERSION

    work = entry.path / "work"
    work.mkdir()
    state = {
        "format_version": FORMAT_VERSION,
        "layers": [{"name": "block_2_add", "n_features": 24}],
        "n_rows": 9,
        "batch_size": 4,
        "dtype": "float32",
        "committed_rows": 8,
        "errors": {},
    }
    (work / "progress.json").write_text(json.dumps(state))
    (work / "block_2_add.raw").write_bytes(np.zeros((4, 24), np.float32).tobytes())


DAMAGE = {
    "nan": (_nan_row, r"layer block_1_project_BN: NaN/Inf in 1 row\(s\), first rows \[2\]"),
    "row_count": (
        _short_layer,
        r"layer block_1_project_BN: shape \(8, (\d+)\), expected \(9, \1\) \(one row per image\)",
    ),
    "settings_hash": (_edited_settings, r"index.h5 changed since it was written \(digest mismatch\)"),
    "unopenable_layer": (_garbage_layer, r"layer block_1_project_BN: file cannot be read \(its first bytes are no"),
    "unopenable_index": (_garbage_index, r"index.h5 cannot be read"),
    "work_vs_index": (_lost_raw_rows, r"raw rows of block_2_add hold 4 of 8 committed rows"),
}


@pytest.mark.usefixtures("backbone_built_once")
@pytest.mark.parametrize("damage", DAMAGE)
def test_verify_reports_damage(damage, base, tmp_path):
    cache_dir = base.copy(tmp_path / "c")
    assert featx.verify(cache_dir / base.name) == []
    harm, message = DAMAGE[damage]
    harm(CacheEntry(cache_dir / base.name))
    problems = featx.verify(cache_dir / base.name)
    assert len(problems) == 1 and re.search(message, problems[0]), problems
    rc, out, err = cli("verify", "--cache-dir", cache_dir)
    assert rc == 1 and f"FAIL {base.name}" in out and re.search(message, out)
    assert re.fullmatch(r"error: 1 of 1 cache entries have problems \(listed above\); .*\n", err)

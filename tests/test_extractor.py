"""Extractor stage end to end on real images: one pass equals per-layer models, cache hits, added layers, staleness."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

import featx
from featx.backbones import describe_layers, get_backbone
from featx.sources.decode import load_rgb

from helpers import U32, assert_float32_close, extract, feature_terms, widest_sum

LITE_LAYERS = ["block2b_add", "block6a_project_bn", "top_activation", "predictions"]


@pytest.fixture(scope="module")
def lite():
    return get_backbone("efficientnet_lite0")


@pytest.fixture(scope="module")
def lite_cache(elpv_folder, tmp_path_factory, lite):
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
    X, y, _ = featx.load(None, "top_activation", cache=lite_cache[0])
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
    X_before, _, _ = featx.load(None, LITE_LAYERS, cache=cache_dir)
    result = featx.extract(
        str(elpv_folder),
        "efficientnet_lite0",
        LITE_LAYERS + ["block4a_project_bn"],
        cache=cache_dir,
        compute=featx.Compute(batch_size=5, progress=False),
    )
    assert result.computed_layers == ["block4a_project_bn"]
    X_after, _, meta = featx.load(None, LITE_LAYERS, cache=cache_dir)
    np.testing.assert_array_equal(X_before, X_after)
    assert "block4a_project_bn" in featx.Cache(cache_dir).open(None).layers


def test_layer_order_is_depth_order(lite_cache):
    m1 = featx.load(None, ["top_activation", "block2b_add"], cache=lite_cache[0])
    X1 = m1.X
    X2, _, m2 = featx.load(None, "block2b_add,top_activation", cache=lite_cache[0])
    np.testing.assert_array_equal(X1, X2)
    assert m1.layers == ["block2b_add", "top_activation"]
    assert m1.feature_slices["block2b_add"] == (0, 24)


def test_split_load_uses_stored_split(lite_cache):
    entry = lite_cache[1].entry
    parts = [featx.load(None, "predictions", split=s, cache=lite_cache[0]) for s in ("train", "val", "test")]
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

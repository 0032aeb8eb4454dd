"""Pooling options on a real EfficientNet-Lite0: each equals numpy pooling of the layer's own feature map,
and each pooling is its own cache entry (the pool is part of the key)."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

import featx
import featx.cli
from featx.backbones import describe_layers, get_backbone
from featx.backbones.layers import POOLS
from featx.sources.decode import load_rgb

from helpers import assert_float32_close, feature_terms

pytestmark = pytest.mark.slow  # every test here builds EfficientNet-Lite0 (Keras)

SIZE = 96  # block3a_project_bn is 12x12 (with negative values), top_activation 3x3 (odd: shared middle row)
LAYERS = ["block3a_project_bn", "top_activation", "predictions"]


@pytest.fixture(scope="module")
def lite():
    return get_backbone("efficientnet_lite0", "imagenet", SIZE)


@pytest.fixture(scope="module")
def entries(elpv_folder, tmp_path_factory, lite):
    """One entry per pooling, all in one cache folder."""
    cache_dir = tmp_path_factory.mktemp("pools")
    return {
        pool: featx.extract(
            str(elpv_folder),
            featx.BackboneSpec(featx.backbones.DEFAULT_BACKBONE, input_size=SIZE, pool=pool),
            LAYERS,
            cache=cache_dir,
            compute=featx.Compute(progress=False),
            log=lambda *a: None,
        ).entry
        for pool in POOLS
    }


def feature_map(backbone, paths, layer) -> np.ndarray:
    """What users write by hand: a Keras model ending at the layer, on the same decoded images."""
    import keras

    model = keras.Model(backbone.model.input, backbone.model.get_layer(layer).output)
    images = np.stack([load_rgb(p, backbone.input_size) for p in paths]).astype(np.float32)
    return model(backbone.preprocess(images), training=False).numpy()


def numpy_pool(out: np.ndarray, pool: str) -> np.ndarray:
    """Reference pooling of (n, h, w, c) maps; pyramid cells cut as torch's AdaptiveAvgPool2d(2):
    cell i spans [floor(i*h/2), ceil((i+1)*h/2))."""
    if out.ndim == 2:
        return out
    n, h, w, _ = out.shape
    avg, peak = out.mean(axis=(1, 2)), out.max(axis=(1, 2))
    cells = [
        out[:, i * h // 2 : -(-(i + 1) * h // 2), j * w // 2 : -(-(j + 1) * w // 2)].mean(axis=(1, 2))
        for i in range(2)
        for j in range(2)
    ]
    return {
        "avg": avg,
        "max": peak,
        "avgmax": np.concatenate([avg, peak], axis=1),
        "gem": (np.maximum(out, 1e-6) ** 3).mean(axis=(1, 2)) ** (1 / 3),
        "pyramid": np.concatenate([avg, *cells], axis=1),
        "none": out.reshape(n, -1),
    }[pool]


@pytest.mark.slow
@pytest.mark.parametrize("pool", POOLS)
def test_each_pooling_equals_numpy_on_the_feature_map(entries, lite, pool):
    entry = entries[pool]
    loaded = featx.load(entry)
    X, _, meta = loaded
    paths = [f"{entry.attrs['root']}/{p}" for p in meta["path"]]
    infos = {i.name: i for i in describe_layers(lite)}
    for layer in LAYERS:
        start, stop = loaded.feature_slices[layer]
        maps = feature_map(lite, paths, layer)
        assert stop - start == infos[layer].feature_size(pool) == entry.layer_info[layer]["n_features"]
        # the extractor's graph vs per-layer models and numpy pooling: float32 round-off (helpers.roundoff; GeM's
        # cube triples a value's relative error and its cube root divides it by three)
        terms = feature_terms(lite.model, layer)
        assert_float32_close(X[:, start:stop], numpy_pool(maps, pool), terms, err_msg=layer)
    if pool == "gem":  # the clamp is exercised: this map has negative values, and GeM then differs from plain p-mean
        maps = feature_map(lite, paths, "block3a_project_bn")
        assert (maps < 0).any()
        unclamped = np.cbrt((maps**3).mean(axis=(1, 2)))
        start, stop = loaded.feature_slices["block3a_project_bn"]
        assert not np.allclose(X[:, start:stop], unclamped, atol=1e-3)  # apart by far more than round-off
    if pool == "pyramid":  # the 3x3 map's top-left cell is its 2x2 corner; the bottom-right shares the middle row
        maps = feature_map(lite, paths, "top_activation")
        start, _ = loaded.feature_slices["top_activation"]
        c, terms = maps.shape[-1], feature_terms(lite.model, "top_activation")
        assert_float32_close(X[:, start + c : start + 2 * c], maps[:, :2, :2].mean(axis=(1, 2)), terms)
        assert_float32_close(X[:, start + 4 * c : start + 5 * c], maps[:, 1:, 1:].mean(axis=(1, 2)), terms)


@pytest.mark.slow
def test_each_pooling_is_its_own_cache_entry(entries):
    assert len({e.key for e in entries.values()}) == len({e.path for e in entries.values()}) == len(POOLS)
    assert {pool: e.settings["pool"] for pool, e in entries.items()} == {pool: pool for pool in POOLS}
    assert len(featx.Cache(next(iter(entries.values())).path.parent).entries()) == len(POOLS)


def test_layers_command_shows_pooled_sizes():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert featx.cli.main(["layers", "efficientnet_lite0", "--input-size", "64", "--pool", "pyramid"]) == 0
    rows = {line.split()[0]: line.split() for line in out.getvalue().splitlines() if line.strip()}
    assert rows["top_activation"][3] == str(5 * 1280) and rows["predictions"][3] == "1000"

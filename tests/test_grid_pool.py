"""--pool grid:T (Head2Toe's pooling) on a real EfficientNet-Lite0: equal to numpy, and to the reference code's own
Keras layers (AveragePooling2D + Flatten), on the real maps of real ELPV cells at the edge cases; T is in the key."""

from __future__ import annotations

import math

import numpy as np
import pytest

from featx.backbones.layers import LayerInfo, check_pool, grid_window
from featx.errors import FeatxError

from helpers import assert_float32_close, feature_terms

SIZE = 112  # Lite0 maps: block3a 14x14x40, block4a 7x7x80, block6b_expand 4x4x1152, top_activation 4x4x1280
T = 1280
LAYERS = ["block3a_project_bn", "block4a_project_bn", "block6b_expand_conv", "top_activation", "predictions"]
# what each layer exercises at T = 1280 (channels, T // C, k, window, cells):
EDGES = {
    "block3a_project_bn": (40, 32, 5, 2, 49),  # 14 not a multiple of k = 5: 7 x 7 cells of 2 x 2 (not 5 x 5)
    "block4a_project_bn": (80, 16, 4, 1, 49),  # 7 not a multiple of k = 4: window 1, every position
    "block6b_expand_conv": (1152, 1, 1, 4, 1),  # k = 1: one 4 x 4 cell, the mean
    "top_activation": (1280, 1, 1, 0, 1),  # C >= T (equal): global mean
}


def reference_window(width: int, channels: int, target: int) -> int:
    """Head2Toe's flatten_and_concat, line by line: 0 = global pool."""
    if channels >= target:
        return 0
    n_patches_per_row = int(math.sqrt(target // channels))
    return width // n_patches_per_row


def numpy_grid(maps: np.ndarray, target: int) -> np.ndarray:
    """Reference grid:T of (n, h, w, c) maps with explicit cells: mean of each window x window cell, valid
    padding, flattened row-major (cell row, cell column, channel); (n, d) input stays as it is."""
    if maps.ndim == 2:
        return maps
    n, h, w, c = maps.shape
    window = reference_window(w, c, target)
    if window == 0 or window > h:
        return maps.mean(axis=(1, 2), dtype=np.float64)
    cells = [
        [
            maps[:, i * window : (i + 1) * window, j * window : (j + 1) * window].mean(axis=(1, 2), dtype=np.float64)
            for j in range(w // window)
        ]
        for i in range(h // window)
    ]
    return np.stack([np.stack(row, axis=1) for row in cells], axis=1).reshape(n, -1)


@pytest.mark.parametrize(
    "shape,target,window,columns",
    [
        ((7, 7, 1280), 1280, 0, 1280),  # C >= T
        ((7, 7, 2000), 1280, 0, 2000),  # C > T
        ((14, 14, 40), 1280, 2, 49 * 40),  # W = 14 not a multiple of k = 5
        ((7, 7, 80), 1280, 1, 49 * 80),  # k = 4 > 7 // 2: window 1, every position
        ((4, 4, 1152), 1280, 4, 1152),  # k = 1: the whole map is the one cell
        ((112, 112, 32), 8192, 7, 16 * 16 * 32),  # Lite0 stem at 224 px: k = 16, 112 / 7 = 16 cells a side
        ((7, 7, 80), 8192, 0, 80),  # k = 10 > W = 7: window 0, the mean (as the reference's pool_size 0)
    ],
)
def test_grid_window_and_columns_follow_the_reference(shape, target, window, columns):
    assert grid_window(*shape, target) == window
    assert window == reference_window(shape[1], shape[2], target)
    assert LayerInfo("x", "Conv2D", (None, *shape), None).feature_size(f"grid:{target}") == columns
    assert LayerInfo("d", "Dense", (None, 1000), None).feature_size(f"grid:{target}") == 1000  # 2-D untouched


def test_pool_spelling_is_one_per_pooling():
    assert check_pool("grid:08192") == check_pool("grid:8192") == "grid:8192"
    assert check_pool("avg") == "avg"
    for bad in ("grid", "grid:", "grid:0", "grid:-5", "grid:1e3", "grid:abc", "median"):
        with pytest.raises(FeatxError, match="grid:T"):
            check_pool(bad)


@pytest.mark.slow  # imports Keras (TensorFlow)
def test_numpy_reference_equals_keras_average_pooling_on_a_random_map():
    """The numpy reference itself is the reference code's layers (no featx code involved)."""
    import keras

    rng = np.random.default_rng(0)
    maps = rng.normal(size=(3, 14, 14, 40)).astype(np.float32)
    window = reference_window(14, 40, T)
    keras_out = keras.layers.Flatten()(keras.layers.AveragePooling2D(pool_size=window, strides=window)(maps))
    # means over a window of at most 14 x 14 values: float32 sums of n <= 196 terms in two orders (helpers.roundoff)
    assert_float32_close(numpy_grid(maps, T), np.asarray(keras_out), 14 * 14)


@pytest.fixture(scope="module")
def grid_entries(elpv_folder, tmp_path_factory):
    from helpers import extract

    cache_dir = tmp_path_factory.mktemp("grid")
    quiet = {"input_size": SIZE, "cache_dir": cache_dir, "progress": False, "log": lambda *a: None}
    return {
        pool: extract(elpv_folder, LAYERS, pool=pool, **quiet).entry
        for pool in (f"grid:{T}", "grid:8192", f"grid:0{T}")
    }


@pytest.mark.slow
def test_grid_pool_equals_numpy_and_keras_on_real_maps(grid_entries):
    import keras

    import featx
    from featx.backbones import get_backbone
    from featx.sources.decode import load_rgb

    lite = get_backbone("efficientnet_lite0", "imagenet", SIZE)
    for target in (T, 8192):
        entry = grid_entries[f"grid:{target}"]
        features = featx.load(entry)
        X, _, meta = features
        paths = [f"{entry.attrs['root']}/{p}" for p in meta["path"]]
        images = np.stack([load_rgb(p, lite.input_size) for p in paths]).astype(np.float32)
        for layer in LAYERS:
            maps = keras.Model(lite.model.input, lite.model.get_layer(layer).output)(lite.preprocess(images)).numpy()
            start, stop = features.feature_slices[layer]
            expected = numpy_grid(maps, target)
            assert stop - start == expected.shape[1] == entry.layer_info[layer]["n_features"]
            terms = feature_terms(lite.model, layer)  # the extractor's graph vs a per-layer model and numpy
            assert_float32_close(X[:, start:stop], expected, terms, err_msg=layer)
            if target == T and layer in EDGES:
                channels, ratio, k, window, cells = EDGES[layer]
                assert maps.shape[-1] == channels and target // channels == ratio
                assert int(math.sqrt(ratio)) == k and reference_window(maps.shape[2], channels, target) == window
                assert expected.shape[1] == cells * channels
                if window:  # the reference code's own layers on the same map
                    pooled = keras.layers.Flatten()(keras.layers.AveragePooling2D(window, strides=window)(maps))
                    assert_float32_close(X[:, start:stop], np.asarray(pooled), terms, err_msg=layer)
        if target == 8192:  # k = 10 > 7: the reference's pool_size 0, the mean
            start, stop = features.feature_slices["block4a_project_bn"]
            assert stop - start == 80


@pytest.mark.slow
def test_grid_target_is_part_of_the_cache_key(grid_entries):
    keys = {pool: e.key for pool, e in grid_entries.items()}
    assert keys[f"grid:{T}"] != keys["grid:8192"]
    assert keys[f"grid:0{T}"] == keys[f"grid:{T}"]  # one spelling: the same entry
    assert grid_entries[f"grid:0{T}"].settings["pool"] == f"grid:{T}"

"""--pool grid:T (Head2Toe's pooling) on a real EfficientNet-Lite0: equal to numpy, and to the reference code's own
Keras layers (AveragePooling2D + Flatten), on the real maps of real ELPV cells at the edge cases; T is in the key."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest

import featx
import featx.cli
from featx.backbones import LayerSelection, describe_layers, get_backbone, layer_selection
from featx.backbones.layers import POOLS, LayerInfo, check_pool, grid_window, infos_from_metadata
from featx.cache.store import Cache
from featx.errors import FeatxError
from featx.features.load import select_cached
from featx.sources.decode import load_rgb

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


CACHED = ["top_activation", "block2b_add"]  # named out of depth order on purpose


@pytest.fixture(scope="module")
def entry(elpv_folder, tiny_cache):
    return Cache(tiny_cache(elpv_folder, CACHED, backbone="efficientnet_lite0", limit=9)).open(None)


def test_selection_is_a_value_in_depth_order(entry):
    selection = select_cached(entry, "top_activation, block2b_add")
    assert selection == LayerSelection("top_activation,block2b_add", ("block2b_add", "top_activation"))
    with pytest.raises(AttributeError):
        selection.names = ()  # frozen: it travels, nobody edits it
    assert select_cached(entry, None).names == ("block2b_add", "top_activation")
    assert select_cached(entry, ["final", "blocks"]).names == (
        "block2b_add",
        "top_activation",
    )  # groups: cached members
    assert select_cached(entry, "all").names == ("block2b_add", "top_activation")


def test_same_selection_from_backbone_and_entry(entry):
    infos = describe_layers(get_backbone("efficientnet_lite0", "none", 96))
    assert layer_selection(infos, "final", model_name="efficientnet_lite0").names == ("top_activation",)
    assert select_cached(entry, "final") == layer_selection(infos, "final", model_name="efficientnet_lite0")
    assert len(layer_selection(infos, "blocks", model_name="efficientnet_lite0").names) == 16
    stored = infos_from_metadata(entry.layer_info)
    assert [(i.name, i.groups) for i in stored] == [(i.name, i.groups) for i in infos if i.name in entry.layer_info]


@pytest.mark.parametrize(
    "spec, message",
    [
        (
            "fc",
            r"^group 'fc' matched no cached layer of .+; cached: block2b_add, top_activation; "
            r"run `featx extract` with --layers fc$",
        ),
        (
            "block3a_project_bn",
            r"^layer\(s\) block3a_project_bn not cached in .+; run `featx extract` with "
            r"--layers block3a_project_bn \(cached: block2b_add, top_activation\)$",
        ),
        ("block9_add", r"^layer 'block9_add' not in efficientnet_lite0; did you mean "),
        (
            " , ",
            r"^no layers selected from efficientnet_lite0; name layers or a group \(blocks, last4, final, embedding, fc, all\)$",
        ),
    ],
)
def test_entry_messages(entry, spec, message):
    with pytest.raises(FeatxError, match=message):
        featx.load(entry.name, spec, cache=entry.path.parent)


@pytest.mark.slow  # builds MobileNetV2
def test_group_absent_from_the_backbone(elpv_folder, tmp_path):
    """mobilenet_v2 at 96 px has no 1000-class top: `fc` matches nothing, with its own message, before any work."""
    with pytest.raises(
        FeatxError,
        match=r"^group 'fc' matched no layer of mobilenet_v2; name layers or another group; "
        r"run `featx layers mobilenet_v2`$",
    ):
        featx.extract(
            str(elpv_folder),
            featx.BackboneSpec("mobilenet_v2", weights="none", input_size=96),
            "fc",
            cache=tmp_path,
            compute=featx.Compute(progress=False),
            log=lambda *a: None,
        )
    assert not list(tmp_path.iterdir())


def test_entries_without_stored_groups_keep_their_old_meaning():
    """Entries written before groups were stored: blocks = deepest stored layer of each block, fc = Dense."""
    legacy = {
        "block1a_project_bn": {"kind": "BatchNormalization", "output_shape": [48, 48, 16], "block": "block1a"},
        "block2a_expand_conv": {"kind": "Conv2D", "output_shape": [48, 48, 96], "block": "block2a"},
        "block2a_project_bn": {"kind": "BatchNormalization", "output_shape": [24, 24, 24], "block": "block2a"},
        "top_activation": {"kind": "ReLU", "output_shape": [3, 3, 1280], "block": None},
        "predictions": {"kind": "Dense", "output_shape": [1000], "block": None},
    }
    infos = infos_from_metadata(legacy)
    pick = {g: layer_selection(infos, g, model_name="m").names for g in ("blocks", "fc", "all")}
    assert pick == {
        "blocks": ("block1a_project_bn", "block2a_project_bn"),
        "fc": ("predictions",),
        "all": ("block2a_expand_conv", "predictions"),
    }
    with pytest.raises(FeatxError, match="^group 'final' matched no layer of m"):
        layer_selection(infos, "final", model_name="m")


POOL_SIZE = 96  # block3a_project_bn is 12x12 (with negative values), top_activation 3x3 (odd: shared middle row)


POOL_LAYERS = ["block3a_project_bn", "top_activation", "predictions"]


@pytest.fixture(scope="module")
def lite():
    return get_backbone("efficientnet_lite0", "imagenet", POOL_SIZE)


@pytest.fixture(scope="module")
def entries(elpv_folder, tmp_path_factory, lite):
    """One entry per pooling, all in one cache folder."""
    cache_dir = tmp_path_factory.mktemp("pools")
    return {
        pool: featx.extract(
            str(elpv_folder),
            featx.BackboneSpec(featx.backbones.DEFAULT_BACKBONE, input_size=POOL_SIZE, pool=pool),
            POOL_LAYERS,
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


@pytest.mark.slow  # builds EfficientNet-Lite0 (Keras)
@pytest.mark.parametrize("pool", POOLS)
def test_each_pooling_equals_numpy_on_the_feature_map(entries, lite, pool):
    entry = entries[pool]
    loaded = featx.load(entry)
    X, _, meta = loaded
    paths = [f"{entry.attrs['root']}/{p}" for p in meta["path"]]
    infos = {i.name: i for i in describe_layers(lite)}
    for layer in POOL_LAYERS:
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


@pytest.mark.slow  # builds EfficientNet-Lite0 (Keras)
def test_each_pooling_is_its_own_cache_entry(entries):
    assert len({e.key for e in entries.values()}) == len({e.path for e in entries.values()}) == len(POOLS)
    assert {pool: e.settings["pool"] for pool, e in entries.items()} == {pool: pool for pool in POOLS}
    assert len(featx.Cache(next(iter(entries.values())).path.parent).entries()) == len(POOLS)


@pytest.mark.slow  # builds EfficientNet-Lite0 (Keras)
def test_layers_command_shows_pooled_sizes():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert featx.cli.main(["layers", "efficientnet_lite0", "--input-size", "64", "--pool", "pyramid"]) == 0
    rows = {line.split()[0]: line.split() for line in out.getvalue().splitlines() if line.strip()}
    assert rows["top_activation"][3] == str(5 * 1280) and rows["predictions"][3] == "1000"

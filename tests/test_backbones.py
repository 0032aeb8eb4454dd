"""The backbone registry as data: every registered model is built, and its feature info yields sensible groups;
saved models get their family's preprocessing from their layer names, or a warning."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
from test_backbones_cuts import check_cuts

import featx
from featx.backbones import available_backbones, describe_layers, get_backbone, layer_selection
from featx.backbones.keras_apps import KERAS_MODELS
from featx.backbones.layers import CONV_KINDS, group_members
from featx.cache.store import Cache
from featx.errors import FeatxError

from helpers import cli, unwrapped

pytestmark = pytest.mark.slow  # every test here builds Keras models

SMALLEST_INPUT = {"inception_v3": 75, "inception_resnet_v2": 75, "xception": 71}  # Keras refuses smaller
BLOCK_COUNTS = {  # one per block / cell, counted from the papers' architectures
    "vgg16": 5,
    "vgg19": 5,
    "resnet50": 16,
    "resnet101": 33,
    "resnet152": 50,
    "resnet50_v2": 16,
    "resnet101_v2": 33,
    "resnet152_v2": 50,
    "inception_v3": 11,
    "inception_resnet_v2": 3 + 10 + 20 + 10,
    "xception": 14,
    "mobilenet": 13,
    "mobilenet_v2": 17,
    "mobilenet_v3_small": 11,
    "mobilenet_v3_large": 15,
    "densenet121": 6 + 12 + 24 + 16,
    "densenet169": 6 + 12 + 32 + 32,
    "densenet201": 6 + 12 + 48 + 32,
    "nasnet_mobile": 2 + 3 * 4 + 2,
    "nasnet_large": 2 + 3 * 6 + 2,
    "efficientnet_b0": 16,
    "efficientnet_lite0": 16,
    "convnext_tiny": 3 + 3 + 9 + 3,
    "efficientnet_lite1": 1 + 3 + 3 + 4 + 4 + 5 + 1,
    "efficientnet_lite2": 1 + 3 + 3 + 4 + 4 + 5 + 1,
    **{f"convnext_{v}": 3 + 3 + 27 + 3 for v in ("small", "base", "large", "xlarge")},
}


def assert_sensible_groups(name, infos, input_side):
    by_name = {i.name: i for i in infos}
    blocks = [by_name[n] for n in group_members(infos, "blocks")]
    assert len(blocks) >= 3, (name, [b.name for b in blocks])
    if name in BLOCK_COUNTS:
        assert len(blocks) == BLOCK_COUNTS[name], (name, [b.name for b in blocks])
    assert len({b.block for b in blocks}) == len(blocks)  # one output per block
    sides = [b.output_shape[1] for b in blocks]
    assert all(len(b.output_shape) == 4 for b in blocks)
    assert sides == sorted(sides, reverse=True) and sides[-1] < sides[0] <= input_side, (
        name,
        sides,
    )  # deeper = smaller
    assert blocks[-1].output_shape[-1] > blocks[0].output_shape[-1]  # and wider
    (final,) = [by_name[n] for n in group_members(infos, "final")]
    order = [i.name for i in infos]
    assert order.index(final.name) >= order.index(blocks[-1].name) and len(final.output_shape) == 4
    assert final.output_shape[1] <= blocks[-1].output_shape[1]
    members = set(group_members(infos, "all"))
    assert members >= {b.name for b in blocks} | {final.name} | set(group_members(infos, "fc"))
    assert members >= {i.name for i in infos if i.kind in CONV_KINDS or i.kind == "Dense"}
    return final


@pytest.mark.slow
def test_every_registered_backbone_has_blocks_final_and_no_fc_without_top():
    """All ~45 models at their smallest input (so without the 1000-class top): about 2-3 minutes on 2 cores; and
    their cuts (featx layers --cuts)."""
    import keras

    lite = {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"}
    assert set(available_backbones()) == {*lite, *KERAS_MODELS}
    started = time.perf_counter()
    for name in available_backbones():
        side = SMALLEST_INPUT.get(name, 32)
        backbone = get_backbone(name, "none", side)
        family = "efficientnet_lite" if name in lite else KERAS_MODELS[name][1]
        assert backbone.feature_info.family == family
        infos = describe_layers(backbone)
        assert_sensible_groups(name, infos, side)
        check_cuts(name, backbone)  # tests/test_backbones_cuts.py: each model is built once, here
        if name not in lite:  # the Lite builder keeps its top at any size
            assert group_members(infos, "fc") == []
            with pytest.raises(FeatxError, match=rf"^group 'fc' matched no layer of {name}; "):
                layer_selection(infos, "fc", model_name=name)
        del backbone, infos
        keras.backend.clear_session()  # its free_memory=True runs the garbage collector
    print(f"built {len(available_backbones())} backbones in {time.perf_counter() - started:.0f} s")


@pytest.mark.parametrize(
    "name, fc, final",
    [
        ("mobilenet", ["conv_preds"], "conv_pw_13_relu"),
        ("mobilenet_v3_small", ["conv_2", "logits"], None),  # its last activation has only an automatic name
        ("efficientnet_b0", ["predictions"], "top_activation"),
    ],
)
def test_heads_at_default_size(name, fc, final):
    """With the 1000-class top, 1x1-conv heads count as fc and the final layer stops before the head."""
    backbone = get_backbone(name, "none")
    infos = describe_layers(backbone)
    assert group_members(infos, "fc") == fc
    got = assert_sensible_groups(name, infos, 224)
    assert got.output_shape[1:3] == (7, 7) and (final is None or got.name == final)


def test_layers_command_shows_blocks_and_final_layer():
    rc, out, err = cli("layers", "efficientnet_lite0", "--input-size", 96)
    assert rc == 0, err
    rows = {line.split()[0]: line.split()[-1] for line in out.splitlines() if re.match(r"\s*\w+\s+\w+\s+\d", line)}
    assert rows["top_activation"] == "final,all" and rows["block2b_add"] == "blocks,all"
    assert rows["block1a_project_bn"] == "blocks,all" and rows["predictions"] == "fc,all"
    assert "block2b_expand_bn" not in rows  # BN inside a block: only with --all
    for line in (
        "  blocks (16): each MBConv block's output",
        "  final (1): the final feature layer",
        "  fc (1): ",
        "  all (67): every conv, dense and fc output, plus the block outputs and the final feature layer",
    ):
        assert line in out
    layers = featx.backbones.layer_table(get_backbone("efficientnet_lite0", "none", 96), every_layer=True)
    assert len(layers.table) == len(describe_layers(get_backbone("efficientnet_lite0", "none", 96)))
    assert layers.groups == {"blocks": 16, "last4": 4, "final": 1, "embedding": 0, "fc": 1, "all": 67}


# ---- saved models: the family's preprocessing from its layer names ---------------------------------------


def _save(tmp_path, name, build):
    import keras

    model = build(keras.applications)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    keras.backend.clear_session()
    return path


SAVED = {  # the user's fine-tuned model, as Keras saves it (random weights, small input: only names matter)
    "vgg16": lambda a: a.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3)),
    "resnet": lambda a: a.ResNet50(weights=None, include_top=False, input_shape=(32, 32, 3)),
    "mobilenet_v2": lambda a: a.MobileNetV2(weights=None, include_top=False, alpha=0.35, input_shape=(32, 32, 3)),
    "efficientnet": lambda a: a.EfficientNetB0(weights=None, include_top=False, input_shape=(32, 32, 3)),
}


@pytest.mark.slow
@pytest.mark.parametrize("family", SAVED)
def test_saved_model_preprocessing_inferred_from_layer_names(tmp_path, family):
    import keras

    path = _save(tmp_path, family, SAVED[family])
    backbone = get_backbone(str(path))
    assert backbone.preprocessing == f"saved:{family}" and backbone.feature_info.family == family
    assert backbone.preprocessing_note.startswith(f"note: preprocessing '{family}' inferred")
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    expected = getattr(keras.applications, family).preprocess_input(pixels.copy())
    # elementwise float32 arithmetic in the same order: the same on every IEEE CPU (rtol 1e-7: a rounding or so)
    np.testing.assert_allclose(np.asarray(backbone.preprocess(pixels.copy())), np.asarray(expected))
    assert len(group_members(describe_layers(backbone), "blocks")) == BLOCK_COUNTS.get(
        {"resnet": "resnet50", "efficientnet": "efficientnet_b0"}.get(family, family)
    )
    assert get_backbone(str(path), preprocess="none").preprocessing_note is None  # the user chose


def test_lite_and_unknown_saved_models(tmp_path, elpv_folder):
    """featx's own Lite (no rescaling layer inside) gets its (x-127)/128; an unknown model a one-time warning."""
    import keras

    from featx.backbones.efficientnet_lite import build_efficientnet_lite0, preprocess_input

    lite = tmp_path / "lite.keras"
    build_efficientnet_lite0(weights=None, input_shape=(64, 64, 3)).save(lite)
    backbone = get_backbone(str(lite))
    assert backbone.preprocessing == "saved:efficientnet_lite"
    pixels = np.full((1, 4, 4, 3), 255.0, "float32")
    np.testing.assert_allclose(backbone.preprocess(pixels), preprocess_input(pixels))  # elementwise, as above

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, name="stem")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, name="deeper")(x)
    unknown = tmp_path / "mine.keras"
    keras.Model(inputs, keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling2D()(x))).save(unknown)
    cache_dir = tmp_path / "cache"
    extract = (
        "extract",
        "--data",
        elpv_folder,
        "--backbone",
        unknown,
        "--layers",
        "deeper",
        "--cache-dir",
        cache_dir,
        "--limit",
        9,
        "--quiet",
    )
    rc, out, err = cli(*extract)
    assert rc == 0, err
    warnings = [line for line in unwrapped(out).splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: the saved model's family is not recognisable from its layer names, so raw 0-255 "
        "pixels were assumed (--preprocess none); if it was trained on other inputs, pass "
        f"--preprocess with one of {', '.join(featx.backbones.SAVED_MODEL_PREPROCESSING)}"
    ]
    rc, out, err = cli("info", "--cache-dir", cache_dir)
    assert rc == 0 and warnings[0] in unwrapped(out).splitlines(), err
    rc, out, err = cli(*extract[:-1], "--preprocess", "none", "--quiet")  # same numbers, same entry, no warning
    assert rc == 0 and "warning:" not in out and len(Cache(cache_dir).entries()) == 1, out + err

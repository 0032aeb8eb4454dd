"""EfficientNet-Lite1 and Lite2 rebuilt from their packaged PyTorch checkpoints: scaled as the official lite builder
scales Lite0, registered with their own input sizes, and right on real photos."""

import numpy as np
import pytest
from PIL import Image

from featx.backbones import available_backbones, describe_layers, get_backbone
from featx.backbones.efficientnet_lite import BLOCKS_ARGS, VARIANTS, blocks_args, preprocess_input, round_filters
from featx.backbones.layers import group_members

CATS = {281, 282, 283, 285}  # tabby, tiger cat, Persian cat, Egyptian cat
COFFEE = {504, 967, 968}  # coffee mug, espresso, cup
LITE = {"efficientnet_lite1": (240, 21, 320), "efficientnet_lite2": (260, 21, 352)}  # size, blocks, last block width


def test_scaling_follows_the_official_builder():
    assert [round_filters(f, 1.1) for f in (16, 24, 40, 80, 112, 192, 320)] == [16, 24, 48, 88, 120, 208, 352]
    assert blocks_args(VARIANTS["efficientnet_lite0"]) == BLOCKS_ARGS
    lite2 = blocks_args(VARIANTS["efficientnet_lite2"])
    assert [a["repeats"] for a in lite2] == [1, 3, 3, 4, 4, 5, 1]  # first and last stage unscaled
    assert lite2[0]["filters_in"] == 32 and lite2[1]["filters_in"] == 16  # stem fixed at 32


@pytest.mark.slow
@pytest.mark.parametrize("name", LITE)
def test_classifies_real_photos(name):
    skdata = pytest.importorskip("skimage.data")
    backbone = get_backbone(name)  # the packaged ImageNet weights; a shape mismatch would raise
    size, n_blocks, width = LITE[name]
    assert name in available_backbones() and backbone.input_size == (size, size)
    assert backbone.feature_info.family == "efficientnet_lite" and backbone.preprocessing == "tf_lite_127_128"
    infos = describe_layers(backbone)
    blocks = group_members(infos, "blocks")
    assert len(blocks) == n_blocks and group_members(infos, "final") == ["top_activation"]
    assert {i.name: i for i in infos}[blocks[-1]].output_shape[-1] == width
    photos = [np.asarray(Image.fromarray(getattr(skdata, p)()).resize((size, size), Image.BILINEAR), np.float32)
              for p in ("chelsea", "coffee")]
    probs = backbone.model.predict(preprocess_input(np.stack(photos)), verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    assert np.argmax(probs[0]) in CATS and np.argmax(probs[1]) in COFFEE, np.argsort(probs)[:, -5:]

"""Where a network can be cut (featx.backbones.cuts): the layers every path from the input to the final feature layer
passes through, found from the Keras graph. Checked by what a cut means: the sub-network above a cut, fed only the
cut's map, reproduces the final layer's output; above a layer that is no cut, it cannot be built at all."""

from __future__ import annotations

import numpy as np
import pytest

from featx.errors import FeatxError

from helpers import assert_float32_close, cli, widest_sum

pytestmark = pytest.mark.slow  # every test here builds Keras models


def check_cuts(name: str, backbone) -> None:
    """The cuts of one registry backbone (called for every backbone by tests/test_backbones.py, which builds each
    once): at least one below the final layer, params above never growing with depth, the tail above a middle cut
    reproducing the final map from the cut's map, and a layer that some path bypasses refused with its nearest cuts."""
    import keras

    from featx.backbones.cuts import build_tail, check_cut, final_layer, find_cuts

    cuts, final = find_cuts(backbone), final_layer(backbone)
    assert len(cuts) >= 2 and cuts[-1].name == final and cuts[-1].params_above == 0, (name, cuts)
    above = [c.params_above for c in cuts]
    assert above == sorted(above, reverse=True) and above[0] > 0, name
    middle = [c for c in cuts if c.params_above > 0][len([c for c in cuts if c.params_above > 0]) // 2]
    model = backbone.model
    both = keras.Model(model.inputs, [model.get_layer(middle.name).output, model.get_layer(final).output])
    side = backbone.input_size[0]
    images = np.random.default_rng(0).uniform(-1, 1, (2, side, side, 3)).astype("float32")
    maps, expected = both(images, training=False)
    tail = build_tail(model, middle.name, final)
    # the same layers called again, as another graph: equal up to float32 round-off (helpers.roundoff)
    assert_float32_close(np.asarray(tail(maps, training=False)), np.asarray(expected), widest_sum(model), name)
    names = [layer.name for layer in model.layers]
    cut_names = {c.name for c in cuts}
    first, last = names.index(cuts[0].name), names.index(final)
    inside = [n for n in names[first:last] if n not in cut_names and len(model.get_layer(n).output.shape) == 4]
    if inside:  # a layer inside a residual block, one branch of a module (VGG and MobileNet V1 are chains: none)
        layer = inside[len(inside) // 2]
        with pytest.raises(
            FeatxError,
            match=rf"^layer '{layer}' is not a cut of .*nearest cut below: \S+; nearest cut "
            r"above: \S+ \(`featx layers .* --cuts`",
        ):
            check_cut(backbone, layer, cuts)


def test_saved_model_cuts_cli_and_a_non_cut_refused(tmp_path, elpv_folder):
    """A user's .keras model with a residual block: its cuts are exactly the layers outside the block, with the
    trainable parameters above each; fitting the tail at a layer inside the block is one line, exit 2."""
    import keras

    inputs = keras.Input((32, 32, 3))
    stem = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="stem")(inputs)
    branch = keras.layers.Conv2D(4, 3, padding="same", name="branch_a")(stem)
    branch = keras.layers.BatchNormalization(name="branch_bn")(branch)
    block = keras.layers.Add(name="block1_add")([stem, branch])
    top = keras.layers.Conv2D(8, 1, name="top_conv")(block)
    head = keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling2D(name="pool")(top))
    path = tmp_path / "mine.keras"
    keras.Model(inputs, head).save(path)

    from featx.backbones import get_backbone
    from featx.backbones.cuts import find_cuts

    cuts = find_cuts(get_backbone(str(path)))
    top_params = 4 * 8 + 8
    branch_params = 3 * 3 * 4 * 4 + 4 + 2 * 4  # conv kernel + bias, BN gamma + beta (moving stats do not train)
    assert [(c.name, c.params_above, c.map_shape) for c in cuts] == [
        ("stem", branch_params + top_params, (16, 16, 4)),
        ("block1_add", top_params, (16, 16, 4)),
        ("top_conv", 0, (16, 16, 8)),
    ]

    rc, out, err = cli("layers", path, "--cuts")
    assert rc == 0, err
    rows = [line.split() for line in out.splitlines()[1:4]]
    assert [(r[0], r[-2]) for r in rows] == [
        ("stem", str(branch_params + top_params)),
        ("block1_add", str(top_params)),
        ("top_conv", "0"),
    ]
    assert "3 cuts: every path from the input to the final feature layer top_conv passes through each" in out

    cache_dir = tmp_path / "cache"
    rc, _, err = cli(
        "extract",
        "--data",
        elpv_folder,
        "--backbone",
        path,
        "--preprocess",
        "unit",
        "--layers",
        "branch_bn,block1_add",
        "--pool",
        "none",
        "--limit",
        9,
        "--cache-dir",
        cache_dir,
        "--quiet",
    )
    assert rc == 0, err
    rc, out, err = cli("fit", "--clf", "tail", "--cut", "branch_bn", "--epochs", 1, "--cache-dir", cache_dir)
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert (
        err.startswith(
            "error: layer 'branch_bn' is not a cut of mine: a path from the input to its final feature "
            "layer top_conv bypasses it"
        )
        and "nearest cut below: stem; nearest cut above: block1_add" in err
    )

"""One LayerSelection parser: the same names, groups, order and messages whether validated against a backbone's
layers (extract) or a cache entry's cached layers (load)."""

from __future__ import annotations

import pytest

import featx
from featx.backbones import LayerSelection, describe_layers, get_backbone, layer_selection
from featx.backbones.layers import infos_from_metadata
from featx.cache.store import Cache
from featx.errors import FeatxError
from featx.features.load import select_cached

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

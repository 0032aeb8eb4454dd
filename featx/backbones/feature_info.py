"""Per-family feature info as data (cf. timm's feature_info): which layers are block outputs, which is the
final feature layer, which head layers act as fully connected, and how to recognise a family by its layer names."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class FeatureInfo:
    """How one backbone family names its blocks.

    blocks : regex matching block-output layer names; group 1 names the block, and when several layers of
        one block match, the deepest is its output (e.g. `block2b_add` over `block2b_project_bn`).
    final : regex naming the final feature layer (the one a classifier head pools); None means the deepest
        4-D layer before the head (the first global pooling or flatten after the last block), for families
        whose last layer has no stable name.
    fc : regex of head layers that act as fully connected besides Dense ones (1x1 convs on pooled features).
    doc : what a block is, for `featx layers` and docs/backbones.md.
    embedding : regex of the layers that give the model's own image embedding (group `embedding`), not fc.
    every_layer : every layer belongs to the `all` group (featx's own small graph of a KerasHub transformer, whose
        layers are all block-level), not only conv, dense, block and final layers.
    """

    family: str
    blocks: str
    final: str | None = None
    fc: str | None = None
    doc: str = ""
    embedding: str | None = None
    every_layer: bool = False


# KerasHub's vision transformers (featx.backbones.hub rebuilds each as a graph of these layer names):
# embed, [pre_norm,] block1..blockN, norm, [pooler, projection | head].
_TRANSFORMER_BLOCKS, _TRANSFORMER_FINAL = r"^(block\d+)$", r"^norm$"
_TRANSFORMER_DOC = "each transformer block's output token sequence (`block1`..`blockN`)"


_EFFICIENTNET_BLOCKS = r"^(block\d+[a-z])_(?:add|project_bn|project_activation)$"

# Keyed by the keras.applications module that holds the family's preprocess_input (KERAS_MODELS' 2nd field).
FAMILIES = {
    f.family: f
    for f in (
        FeatureInfo("vgg16", r"^(block\d+)_conv\d+$", r"^block5_conv\d+$", doc="last conv of each of the 5 blocks"),
        FeatureInfo("vgg19", r"^(block\d+)_conv\d+$", r"^block5_conv\d+$", doc="last conv of each of the 5 blocks"),
        FeatureInfo(
            "resnet",
            r"^(conv\d+_block\d+)_out$",
            r"^conv5_block\d+_out$",
            doc="each residual block's output (`convS_blockN_out`)",
        ),
        FeatureInfo(
            "resnet_v2",
            r"^(conv\d+_block\d+)_out$",
            r"^post_relu$",
            doc="each residual block's output (`convS_blockN_out`)",
        ),
        FeatureInfo(
            "inception_v3",
            r"^(mixed\d+)$",
            r"^mixed10$",
            doc="each inception module's concatenation (`mixed0`..`mixed10`)",
        ),
        FeatureInfo(
            "inception_resnet_v2",
            r"^(mixed_\d[a-z]|block\d+_\d+)(?:_ac|_conv)?$",
            r"^conv_7b_ac$",
            doc="each reduction module (`mixed_*`) and each residual block (`blockK_N_ac`; its branch `_conv` "
            "where Keras names no activation)",
        ),
        FeatureInfo(
            "xception",
            r"^(block\d+)_(?:conv\d_act|sepconv\d_bn|sepconv\d_act)$",
            r"^block14_sepconv2_act$",
            doc="each of the 14 blocks' last named layer (the residual branch; Keras leaves the sums unnamed)",
        ),
        FeatureInfo(
            "mobilenet",
            r"^conv_pw_(\d+)_relu$",
            r"^conv_pw_13_relu$",
            r"^conv_preds$",
            doc="each depthwise-separable block's pointwise activation (`conv_pw_N_relu`)",
        ),
        FeatureInfo(
            "mobilenet_v2",
            r"^(expanded_conv|block_\d+)_(?:project_BN|add)$",
            r"^out_relu$",
            doc="each inverted-residual block's output (`block_N_add`, else `block_N_project_BN`)",
        ),
        FeatureInfo(
            "mobilenet_v3",
            r"^(expanded_conv(?:_\d+)?)_(?:project_bn|add)$",
            fc=r"^(conv_2|logits)$",
            doc="each inverted-residual block's output (`expanded_conv_N_add`, else `..._project_bn`)",
        ),
        FeatureInfo("densenet", r"^(conv\d+_block\d+)_concat$", r"^relu$", doc="each dense block's concatenation"),
        FeatureInfo(
            "nasnet",
            r"^(normal_concat_\d+|reduction_concat_(?:stem|reduce)_\d+)$",
            doc="each normal and reduction cell's concatenation",
        ),
        FeatureInfo(
            "efficientnet",
            _EFFICIENTNET_BLOCKS,
            r"^top_activation$",
            doc="each MBConv block's output (`blockNx_add`, else `blockNx_project_bn`)",
        ),
        FeatureInfo(
            "efficientnet_v2",
            _EFFICIENTNET_BLOCKS,
            r"^top_activation$",
            doc="each (fused) MBConv block's output (`blockNx_add`, else `blockNx_project_bn`)",
        ),
        FeatureInfo(
            "efficientnet_lite",
            _EFFICIENTNET_BLOCKS,
            r"^top_activation$",
            doc="each MBConv block's output (`blockNx_add`, else `blockNx_project_bn`)",
        ),
        FeatureInfo(
            "convnext",
            r"^\w*?(stage_\d+_block_\d+)_identity$",
            doc="each block's residual branch (`..._stageS_block_N_identity`; Keras leaves the sums unnamed)",
        ),
        *(
            FeatureInfo(
                family,
                _TRANSFORMER_BLOCKS,
                _TRANSFORMER_FINAL,
                doc=_TRANSFORMER_DOC,
                embedding=embedding,
                every_layer=True,
            )
            for family, embedding in (
                ("dinov2", None),
                ("dinov3", None),
                ("clip", r"^projection$"),
                ("siglip", r"^head$"),
                ("vit", None),
            )
        ),
        FeatureInfo(
            "generic",
            r"^(block_?\d+[a-z]?|conv\d+_block\d+|stage\d+_\w*?unit\d+)_",
            doc="the deepest layer of each layer-name prefix blockN_ / convS_blockN_ (unknown family)",
        ),
    )
}

# Layer evidence that identifies a saved model's family, first match wins. Each pattern is searched in
# "Kind:name" strings, so a rule can ask for a layer type (a Rescaling layer means the model normalizes itself).
FAMILY_EVIDENCE = (
    ("vgg19", (r":block1_conv1$", r":block5_conv4$")),
    ("vgg16", (r":block1_conv1$", r":block5_conv3$")),
    ("resnet_v2", (r":conv2_block1_preact_bn$",)),
    ("densenet", (r":conv2_block1_concat$",)),
    ("resnet", (r":conv1_conv$", r":conv2_block1_out$")),
    ("xception", (r":block1_conv1$", r":block14_sepconv2$")),
    ("inception_resnet_v2", (r":mixed_5b$", r":conv_7b$")),
    ("inception_v3", (r":mixed0$", r":mixed10$")),
    ("mobilenet", (r":conv_dw_1$", r":conv_pw_1$")),
    ("mobilenet_v3", (r":expanded_conv_project_bn$", r"^Rescaling:")),
    ("mobilenet_v2", (r":(expanded_conv_project_BN|block_1_expand)$",)),
    ("nasnet", (r":normal_concat_0$",)),
    ("convnext", (r"_stage_0_block_0_identity$",)),
    ("efficientnet", (r":stem_conv$", r":block1a_dwconv$", r"^Rescaling:")),
    ("efficientnet_v2", (r":stem_conv$", r":block1a_project_conv$", r"^Rescaling:")),
    ("efficientnet_lite", (r":stem_conv$", r":block1a_dwconv$")),
)


def infer_family(layers) -> str | None:
    """The family whose naming a model's layers follow, or None when no rule matches unambiguously."""
    described = [f"{type(layer).__name__}:{layer.name}" for layer in layers]
    for family, evidence in FAMILY_EVIDENCE:
        if all(any(re.search(pattern, d) for d in described) for pattern in evidence):
            return family
    return None

"""Layer info (name, kind, output shape, pooled size) as data, and selection by names or groups."""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass

from featx.errors import FeatxError

CONV_KINDS = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose")
NOT_BLOCK_OUTPUTS = ("Pooling", "Dropout", "ZeroPadding", "Cropping")
GROUPS = ("all", "blocks", "fc")
POOLS = ("avg", "max", "none")


@dataclass(frozen=True)
class LayerInfo:
    name: str
    kind: str
    output_shape: tuple
    block: str | None

    @property
    def poolable(self) -> bool:
        return len(self.output_shape) in (2, 4) and None not in self.output_shape[1:]

    def feature_size(self, pool: str) -> int:
        """Columns this layer adds to X: channels when pooled, every activation with pool 'none'."""
        if len(self.output_shape) == 4 and pool != "none":
            return int(self.output_shape[-1])
        return math.prod(self.output_shape[1:])


def describe_layers(backbone) -> list[LayerInfo]:
    """Every layer with a single output, in the model's (depth) order."""
    pattern = re.compile(backbone.block_pattern)
    infos = []
    for layer in backbone.model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        shape = layer.output.shape if hasattr(layer, "output") and not isinstance(layer.output, (list, tuple)) else None
        if shape is None:
            continue
        match = pattern.match(layer.name)
        infos.append(LayerInfo(layer.name, type(layer).__name__, tuple(shape), match.group(1) if match else None))
    return infos


def group_members(infos: list[LayerInfo], group: str) -> list[str]:
    """`all`: every conv/dense output; `fc`: dense layers; `blocks`: the last conv of each block for
    VGG-style nets, the block's output (add/activation/BN) for the others."""
    if group == "all":
        return [i.name for i in infos if i.kind in CONV_KINDS or i.kind == "Dense"]
    if group == "fc":
        return [i.name for i in infos if i.kind == "Dense"]
    last_in_block = {}
    for info in infos:
        if info.block and len(info.output_shape) == 4 and not any(k in info.kind for k in NOT_BLOCK_OUTPUTS):
            last_in_block[info.block] = info.name
    return list(last_in_block.values())


def infos_from_metadata(layer_info: dict) -> list[LayerInfo]:
    """Rebuild LayerInfo from what a cache entry stores, so groups resolve without building the backbone."""
    return [LayerInfo(name, i["kind"], (None, *i["output_shape"]), i.get("block")) for name, i in layer_info.items()]


def select_layers(infos: list[LayerInfo], spec: list[str] | str, pool: str = "avg", model_name: str = "the model") -> list[str]:
    """Expand names and groups into layer names in depth order; unknown names list the closest valid ones."""
    if pool not in POOLS:
        raise FeatxError(f"unknown pool '{pool}'; choose one of {', '.join(POOLS)}")
    by_name = {i.name: i for i in infos}
    wanted = set()
    for item in [spec] if isinstance(spec, str) else spec:
        for name in (part.strip() for part in item.split(",")):
            if not name:
                continue
            if name in GROUPS:
                wanted.update(group_members(infos, name))
            elif name in by_name:
                wanted.add(name)
            else:
                close = difflib.get_close_matches(name, list(by_name), n=3, cutoff=0.5)
                hint = f"; did you mean {', '.join(close)}?" if close else f"; run `featx layers {model_name}`"
                raise FeatxError(f"layer '{name}' not in {model_name}{hint}")
    if not wanted:
        raise FeatxError(f"no layers selected from {model_name}; name layers or a group ({', '.join(GROUPS)})")
    for name in wanted:
        if not by_name[name].poolable:
            raise FeatxError(
                f"layer '{name}' has output shape {by_name[name].output_shape}, which featx cannot pool into a "
                "feature vector; choose a conv (4-D) or dense (2-D) layer"
            )
    return [i.name for i in infos if i.name in wanted]

"""Layer info (name, kind, output shape, pooled size, groups) as data, and the one way layers are selected."""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from featx.backbones.base import TokenLayout
from featx.backbones.feature_info import FeatureInfo
from featx.errors import FeatxError

if TYPE_CHECKING:
    import pandas as pd

CONV_KINDS = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose")
NOT_FEATURES = ("Pooling", "Dropout", "ZeroPadding", "Cropping")
HEAD_STARTS = ("GlobalAveragePooling2D", "GlobalMaxPooling2D", "Flatten")
POOLS = {  # spatial pooling of a conv (4-D) output; pooled columns per channel. 2-D outputs are never pooled.
    "avg": "mean over positions",
    "max": "maximum over positions",
    "avgmax": "avg then max, concatenated (2 columns per channel)",
    "gem": "generalized mean, (mean of max(x, 1e-6)^3)^(1/3): between avg and max; for non-negative (post-ReLU) maps",
    "pyramid": "avg over the whole map, then over each cell of a 2x2 grid (5 per channel, keeps where a feature is)",
    "none": "no pooling: every activation (height x width x channels)",
}
POOL_COLUMNS = {"avg": 1, "max": 1, "avgmax": 2, "gem": 1, "pyramid": 5}
TOKEN_POOLS = {  # pooling of a vision transformer's token sequence (batch, tokens, width); columns per width
    "cls": "the CLS token (a model without one, such as SigLIP, has none to give)",
    "mean": "mean over the patch tokens (CLS and register tokens never enter a patch pool)",
    "cls+mean": "the CLS token, then the mean patch token (DINOv2's linear evaluation; 2 columns per width)",
    "max": "maximum over the patch tokens",
    "gem": "generalized mean over the patch tokens, clamped at 1e-6 as for conv maps",
    "none": "no pooling: every token (tokens x width), for training above a cut",
}
TOKEN_POOL_COLUMNS = {"cls": 1, "mean": 1, "cls+mean": 2, "max": 1, "gem": 1}
SAME_POOL = {"avg": "mean", "mean": "avg"}  # one pooling, named for conv maps and for tokens (see pool_for)
GRID = "grid"  # grid:T, Head2Toe's pooling to about T columns per layer (grid_window); not in POOLS: it takes T
GRID_HELP = (
    "grid:T: Head2Toe's pooling to about T features per layer: the mean when channels >= T, else the means "
    "of a k x k grid, k = int(sqrt(T // channels)), window and stride width // k, flattened"
)
GEM_P, GEM_EPS = 3.0, 1e-6  # as the GeM paper (Radenovic et al.) and timm: clamping keeps x^(1/p) real
GROUPS = {
    "blocks": "each block's output (per family: `featx layers BACKBONE` says what a block is)",
    "last4": "the last four block outputs (DINOv2's linear evaluation reads the last 4 blocks)",
    "final": "the final feature layer, the one a classifier head pools",
    "embedding": "the model's image embedding (CLIP's projection, SigLIP's attention-pool head)",
    "fc": "fully connected head layers (Dense on pooled features, or 1x1 convs there); only with the 1000-class top",
    "all": "every conv, dense and fc output, plus the block outputs and the final feature layer",
}


@dataclass(frozen=True)
class LayerInfo:
    """One layer: name, Keras class, output shape (batch first), block, groups; tokens: the token layout of a
    vision transformer's (batch, tokens, width) output (featx.backbones.base.TokenLayout), None otherwise."""

    name: str
    kind: str
    output_shape: tuple
    block: str | None
    groups: tuple[str, ...] = ()
    tokens: TokenLayout | None = None

    @property
    def poolable(self) -> bool:
        rank = len(self.output_shape)
        return (rank in (2, 4) or (rank == 3 and self.tokens is not None)) and None not in self.output_shape[1:]

    def feature_size(self, pool: str) -> int:
        """Columns this layer adds to X: channels times POOL_COLUMNS when pooled, every activation with 'none',
        channels times the grid's cells with grid:T (grid_window); a token sequence's width times
        TOKEN_POOL_COLUMNS, or grid:T over its patch grid."""
        if len(self.output_shape) == 3 and self.tokens is not None and pool != "none":
            width = int(self.output_shape[2])
            if grid_target(pool) is not None:
                return _grid_columns(*self.tokens.grid, width, grid_target(pool))
            return width * TOKEN_POOL_COLUMNS["mean" if pool == "avg" else pool]
        if len(self.output_shape) == 4 and pool != "none":
            height, width, channels = (int(d) for d in self.output_shape[1:])
            target = grid_target(pool)
            if target is not None:
                return _grid_columns(height, width, channels, target)
            return channels * POOL_COLUMNS["avg" if pool == "mean" else pool]
        return math.prod(self.output_shape[1:])

    def pool_problem(self, pool: str, model_name: str) -> str | None:
        """Why `pool` cannot pool this layer (a token pooling of a conv map, a map pooling of tokens, cls where the
        model has no CLS token), or None. 2-D outputs are never pooled, so any pool fits them."""
        if len(self.output_shape) == 4 and pool in TOKEN_POOLS and pool not in POOLS and pool not in SAME_POOL:
            return (
                f"--pool {pool} pools a vision transformer's tokens, and layer '{self.name}' of {model_name} is a "
                f"conv map ({'x'.join(map(str, self.output_shape[1:]))}); choose one of {', '.join(POOLS)} or grid:T"
            )
        if self.tokens is None or len(self.output_shape) != 3:
            return None
        token_pools = ", ".join(p for p in TOKEN_POOLS if self.tokens.cls or "cls" not in p)
        if pool in POOLS and pool not in TOKEN_POOLS and pool not in SAME_POOL:
            return (
                f"--pool {pool} pools conv maps, and layer '{self.name}' of {model_name} is a token sequence "
                f"({self.tokens.describe()}); choose one of {token_pools} or grid:T (over the patch grid)"
            )
        if "cls" in pool and not self.tokens.cls:
            return (
                f"{model_name} has no CLS token (its tokens: {self.tokens.describe()}), so --pool {pool} cannot pool "
                f"layer '{self.name}'; choose one of {token_pools} or grid:T, or its embedding layer (the model's "
                "own pooled output)"
            )
        return None

    def metadata(self, pool: str) -> dict:
        """What a cache entry stores of this layer; `infos_from_metadata` is its only reader."""
        return {
            "kind": self.kind,
            "output_shape": list(self.output_shape[1:]),
            "n_features": self.feature_size(pool),
            "block": self.block,
            "groups": list(self.groups),
            **({"tokens": self.tokens.as_dict()} if self.tokens is not None else {}),
        }


def _grid_columns(height: int, width: int, channels: int, target: int) -> int:
    window = grid_window(height, width, channels, target)
    return channels if window == 0 else (height // window) * (width // window) * channels


def check_pool(pool) -> str:
    """`pool` as stored in settings and the cache key: a POOLS or TOKEN_POOLS name, or grid:T with T a whole number
    >= 1 written without leading zeros (so grid:08192 and grid:8192 are one entry); anything else is one line."""
    if isinstance(pool, str) and (pool in POOLS or pool in TOKEN_POOLS):
        return pool
    if isinstance(pool, str) and pool.startswith(f"{GRID}:") and pool[len(GRID) + 1 :].strip().isdigit():
        target = int(pool[len(GRID) + 1 :])
        if target >= 1:
            return f"{GRID}:{target}"
    raise FeatxError(
        f"unknown pool '{pool}'; choose one of {', '.join(POOLS)} (conv maps), "
        f"{', '.join(p for p in TOKEN_POOLS if p not in POOLS)} (transformer tokens) or grid:T (T >= 1 features per "
        "layer, e.g. grid:8192)"
    )


def pool_for(pool: str, tokens: bool) -> str:
    """check_pool's `pool` under the one name it has for this kind of backbone, as settings and the cache key store
    it: the mean over positions is `avg` for a CNN's conv maps and `mean` (over the patch tokens) for a vision
    transformer, so --pool avg (the default) on a transformer and --pool mean on a CNN give those, not a second
    entry of the same numbers. tokens : the backbone is a vision transformer."""
    pool = check_pool(pool)
    return SAME_POOL[pool] if pool == ("avg" if tokens else "mean") else pool


def grid_target(pool: str) -> int | None:
    """T of a grid:T pool (checked by check_pool), None for any other pool."""
    return int(pool.split(":", 1)[1]) if pool.startswith(f"{GRID}:") else None


def grid_window(height: int, width: int, channels: int, target: int) -> int:
    """The average-pooling window (= stride) of grid:T on an (height, width, channels) map; 0 means the mean over
    every position.

    As Head2Toe's reference code (google-research/head2toe, models/finetune.py, flatten_and_concat): the mean
    when channels >= T; else k = int(sqrt(T // channels)) cells per row and a window of width // k, applied
    without padding (valid), so the grid has (height // window) x (width // window) cells, which is more than
    k x k where width is not a multiple of k (a 7-wide map with k = 4: window 1, 7 x 7 cells). A window of 0
    (k > width) is the mean, as there. The reference assumes square maps; on a map less high than the window
    the mean is taken too (it would have no cell).
    """
    if channels >= target:
        return 0
    window = width // int(math.sqrt(target // channels))
    return window if 0 < window <= height else 0


@dataclass(frozen=True)
class LayerSelection:
    """Layers chosen once and validated: `spec` is the user's text (for logs), `names` in depth order."""

    spec: str
    names: tuple[str, ...]


def describe_layers(backbone) -> list[LayerInfo]:
    """Every layer with a single output, in the model's (depth) order, with its groups per the family's feature info."""
    infos = []
    for layer in backbone.model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        shape = layer.output.shape if hasattr(layer, "output") and not isinstance(layer.output, (list, tuple)) else None
        if shape is not None:
            tokens = backbone.tokens if len(shape) == 3 else None
            infos.append(LayerInfo(layer.name, type(layer).__name__, tuple(shape), None, tokens=tokens))
    return assign_groups(infos, backbone.feature_info)


def assign_groups(infos: list[LayerInfo], feature_info: FeatureInfo) -> list[LayerInfo]:
    """Tag block outputs, the final feature layer, fc and all from the family's naming rules."""
    pattern = re.compile(feature_info.blocks)
    blocks = [pattern.match(i.name) for i in infos]
    feature = [
        (len(i.output_shape) == 4 or i.tokens is not None) and i.poolable and not any(k in i.kind for k in NOT_FEATURES)
        for i in infos
    ]
    outputs = set({m.group(1): n for n, m in enumerate(blocks) if m and feature[n]}.values())  # deepest per block
    embedding = {n for n, i in enumerate(infos) if feature_info.embedding and re.match(feature_info.embedding, i.name)}
    fc = {
        n
        for n, i in enumerate(infos)  # a Dense on a 4-D tensor is a pointwise conv (ConvNeXt), not fc
        if ((i.kind == "Dense" and len(i.output_shape) == 2) or (feature_info.fc and re.match(feature_info.fc, i.name)))
        and n not in embedding
    }
    final = _final_layer(infos, feature, fc, feature_info.final, max(outputs, default=-1))
    tagged = []
    for n, info in enumerate(infos):
        groups = [
            g
            for g, member in (
                ("blocks", n in outputs),
                ("final", n == final),
                ("embedding", n in embedding),
                ("fc", n in fc),
            )
            if member
        ]
        if groups or info.kind in CONV_KINDS or info.kind == "Dense" or feature_info.every_layer:
            groups.append("all")
        tagged.append(replace(info, block=blocks[n].group(1) if blocks[n] else None, groups=tuple(groups)))
    return tagged


def _final_layer(infos, feature, fc, final_pattern, last_block: int) -> int | None:
    """Squeeze-excite blocks pool globally too, so the head starts at the first global pooling after the last block."""
    if final_pattern:
        matches = [n for n, i in enumerate(infos) if re.match(final_pattern, i.name)]
        return matches[-1] if matches else None
    head = next((n for n, i in enumerate(infos) if n > last_block and i.kind in HEAD_STARTS), len(infos))
    candidates = [n for n in range(head) if feature[n] and n not in fc]
    return candidates[-1] if candidates else None


def infos_from_metadata(layer_info: dict) -> list[LayerInfo]:
    """Rebuild LayerInfo from what a cache entry stores, so groups resolve without building the backbone.

    Entries written before groups were stored get the rules of that time: conv/dense outputs are `all`,
    Dense layers `fc`, the deepest stored layer of each named block `blocks`.
    """
    infos = [
        LayerInfo(
            name,
            i["kind"],
            (None, *i["output_shape"]),
            i.get("block"),
            tuple(i.get("groups", ())),
            TokenLayout.from_dict(i.get("tokens")),
        )
        for name, i in layer_info.items()
    ]
    if any("groups" in i for i in layer_info.values()):
        return infos
    deepest = {
        i.block: i.name
        for i in infos
        if i.block and len(i.output_shape) == 4 and not any(k in i.kind for k in NOT_FEATURES)
    }
    return [
        replace(
            i,
            groups=tuple(
                g
                for g, member in (
                    ("blocks", i.name in deepest.values()),
                    ("fc", i.kind == "Dense"),
                    ("all", i.kind in CONV_KINDS or i.kind == "Dense"),
                )
                if member
            ),
        )
        for i in infos
    ]


def group_members(infos: list[LayerInfo], group: str) -> list[str]:
    """The layers of `group`, depth order; last4 is derived from blocks (so entries stored before it have it too)."""
    if group == "last4":
        return group_members(infos, "blocks")[-4:]
    return [i.name for i in infos if group in i.groups]


def layer_selection(
    infos: list[LayerInfo],
    spec,
    *,
    model_name: str,
    pool: str = "avg",
    cached: list[str] | None = None,
    entry_name: str | None = None,
) -> LayerSelection:
    """Expand names and groups into a LayerSelection; with `cached`, only cached layers may be chosen.

    The one parser of a layer spec: extraction validates against the backbone's layers, loading against an
    entry's (then a group means its cached members, and a named layer that is not cached is an error).
    """
    pool = check_pool(pool)
    items = [spec] if isinstance(spec, str) else list(spec)
    requested = [part.strip() for item in items for part in item.split(",") if part.strip()]
    available = {i.name: i for i in infos if cached is None or i.name in cached}
    where = f"cached layer of {entry_name}" if cached is not None else f"layer of {model_name}"
    wanted = set()
    for name in requested:
        if name in GROUPS:
            members = [n for n in group_members(infos, name) if n in available]
            if not members:
                raise FeatxError(f"group '{name}' matched no {where}; " + _group_hint(infos, name, cached, model_name))
            wanted.update(members)
        elif name not in {i.name for i in infos}:
            close = difflib.get_close_matches(name, [i.name for i in infos], n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; run `featx layers {model_name}`"
            raise FeatxError(f"layer '{name}' not in {model_name}{hint}")
        else:
            wanted.add(name)
    uncached = [n for n in requested if n not in GROUPS and n not in available]
    if uncached:
        raise FeatxError(
            f"layer(s) {', '.join(uncached)} not cached in {entry_name}; run `featx extract` with "
            f"--layers {','.join(uncached)} (cached: {', '.join(cached) or 'none'})"
        )
    if not wanted:
        raise FeatxError(f"no layers selected from {model_name}; name layers or a group ({', '.join(GROUPS)})")
    for name in wanted:
        if not available[name].poolable:
            raise FeatxError(
                f"layer '{name}' has output shape {available[name].output_shape}, which featx cannot pool into a "
                "feature vector; choose a conv (4-D) or dense (2-D) layer"
            )
    for info in infos:  # depth order: the first layer that does not fit is named
        problem = info.pool_problem(pool, model_name) if info.name in wanted else None
        if problem:
            raise FeatxError(problem)
    return LayerSelection(",".join(requested), tuple(i.name for i in infos if i.name in wanted))


def _group_hint(infos, group, cached, model_name) -> str:
    if cached is None:
        return f"name layers or another group; run `featx layers {model_name}`"
    if group_members(infos, group):
        return f"cached: {', '.join(cached) or 'none'}; run `featx extract` with --layers {group}"
    return f"{model_name} has no such layer; cached: {', '.join(cached) or 'none'}"


@dataclass(frozen=True, eq=False)
class LayerTable:
    """What `layer_table` returns: the `featx layers` table and what its footer says.

    table : DataFrame with columns layer, kind, output_shape, features, groups; one row per layer in depth order
    family : the backbone's family (FeatureInfo.family)
    groups : {group: member count} over every layer, for each of GROUPS
    group_meaning : {group: what it selects for this backbone's family}
    preprocessing_note : a line about the backbone's input preprocessing, or "" / None
    tokens : for a vision transformer, what its token sequences hold (a line), else None
    """

    table: pd.DataFrame
    family: str
    groups: dict
    group_meaning: dict
    preprocessing_note: str | None
    tokens: str | None = None


def layer_table(backbone, *, pool: str = "avg", every_layer: bool = False) -> LayerTable:
    """The `featx layers` table: one row per layer in depth order, by default only those of the `all` group, with
    the group counts and meanings and the preprocessing note of its footer (LayerTable). A vision transformer's
    table has a tokens column (what each token sequence holds: CLS, registers, the patch grid); features is "-"
    where a layer cannot be pooled, or not with `pool`."""
    import pandas as pd

    tokens = backbone.tokens
    pool = pool_for(pool, tokens is not None)
    infos = describe_layers(backbone)
    columns = ["layer", "kind", "output_shape", *(["tokens"] if tokens else []), "features", "groups"]
    rows = [
        {
            "layer": i.name,
            "kind": i.kind,
            "output_shape": "x".join(str(d) for d in i.output_shape[1:]),
            "tokens": i.tokens.describe() if i.tokens else "-",
            "features": i.feature_size(pool) if i.poolable and not i.pool_problem(pool, backbone.name) else "-",
            "groups": ",".join(i.groups),
        }
        for i in infos
        if every_layer or "all" in i.groups
    ]
    meaning = dict(GROUPS, blocks=backbone.feature_info.doc)
    if backbone.feature_info.every_layer:
        meaning["all"] = "every layer of featx's graph of the model (embedding, blocks, norms, image embedding)"
    if tokens:
        width = next((int(i.output_shape[2]) for i in infos if i.tokens), 0)
        line = (
            f"tokens: {tokens.n_tokens} per image, width {width}: "
            + ("CLS at 0, " if tokens.cls else "no CLS token, ")
            + (f"{tokens.registers} registers at {tokens.cls}-{tokens.prefix - 1}, " if tokens.registers else "")
            + f"{tokens.grid[0]}x{tokens.grid[1]} patches at {tokens.prefix}-{tokens.n_tokens - 1} (row by row); "
            f"token poolings: {', '.join(p for p in TOKEN_POOLS if tokens.cls or 'cls' not in p)}, grid:T"
        )
    return LayerTable(
        pd.DataFrame(rows, columns=columns),
        family=backbone.feature_info.family,
        groups={g: len(group_members(infos, g)) for g in GROUPS},
        group_meaning=meaning,
        preprocessing_note=backbone.preprocessing_note,
        tokens=line if tokens else None,
    )

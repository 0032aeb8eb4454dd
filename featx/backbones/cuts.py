"""Where a backbone can be cut: the layers every path from the input to the final feature layer passes through.

With such a layer's activation map cached (`featx extract --layers CUT --pool none`), the layers above it (the
*tail*) can be trained on the cached maps without ever running the layers below: the same numbers as fine-tuning
the whole network with its bottom frozen. A layer that some path bypasses (a layer inside a residual block, one
branch of an inception module) is no cut: the layers above it also need the other branch's input.

Cuts come from the Keras graph itself, not from a list per family: in a topological order of the layers that lie
on a path from the input to the final layer, a layer is a cut exactly when no edge jumps over it (an edge from a
layer before it to a layer after it would be a path around it); these are the dominators of the final layer.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from featx.errors import FeatxError

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class CutInfo:
    """One cut: the layer, its output map shape (h, w, c), and the trainable parameters of the layers above it up to
    and including the final feature layer (BatchNorm's gamma and beta count, its moving statistics do not)."""

    name: str
    kind: str
    map_shape: tuple[int, ...]
    params_above: int
    layers_above: int


def layer_graph(model) -> tuple[dict[int, list[int]], dict[int, object]]:
    """({operation id: ids of the operations whose outputs it takes}, {id: operation}) for the nodes of `model` (a
    functional Keras model) only: a layer called again in another model (the tail rebuilt from it) adds nodes that
    are not this model's. Operations are layers, and the Keras ops a model may apply between them (ConvNeXt's
    unnamed residual sums): those are nodes of the graph but never cuts, as no layer name can cache their output."""
    inputs: dict[int, list[int]] = {}
    operations: dict[int, object] = {}
    for nodes in model._nodes_by_depth.values():
        for node in nodes:
            operations[id(node.operation)] = node.operation
            feeding = inputs.setdefault(id(node.operation), [])
            for tensor in node.input_tensors:
                source = tensor._keras_history.operation
                operations[id(source)] = source
                feeding.append(id(source))
    return inputs, operations


def final_layer(backbone) -> str:
    """The backbone's final feature layer (the `final` group), or one line when its family names none."""
    from featx.backbones.layers import describe_layers, group_members

    final = group_members(describe_layers(backbone), "final")
    if not final:
        raise FeatxError(
            f"{backbone.name} has no final feature layer featx can find, so it cannot be cut; "
            "name its layers as a keras.applications family does"
        )
    return final[0]


def _path_order(model, final: str) -> tuple[list[int], dict[int, list[int]], dict[int, object]]:
    """(ids of the operations on a path from the input to layer `final`, in a topological order; the graph
    restricted to them; {id: operation})."""
    graph, operations = layer_graph(model)
    sources = {id(tensor._keras_history.operation) for tensor in model.inputs}
    target = id(model.get_layer(final))
    ancestors, stack = set(), [target]
    while stack:
        op = stack.pop()
        if op not in ancestors:
            ancestors.add(op)
            stack += graph.get(op, [])
    order, done, stack = [], set(), [(target, False)]
    while stack:  # iterative depth-first post-order: every operation after the ones it takes inputs from
        op, expanded = stack.pop()
        if op in done:
            continue
        if expanded:
            done.add(op)
            order.append(op)
            continue
        stack.append((op, True))
        stack += [(p, False) for p in reversed(graph.get(op, [])) if p not in done]
    reachable = set(sources)
    for op in order:
        if any(p in reachable for p in graph.get(op, [])):
            reachable.add(op)
    order = [op for op in order if op in reachable and op in ancestors]
    kept = set(order)
    return order, {op: [p for p in graph.get(op, []) if p in kept] for op in order}, operations


def _trainable_size(operation) -> int:
    """Parameters the layer trains once made trainable (the model is frozen, so ask its trainable variables' list),
    its sublayers' included (a transformer block is one layer holding attention and MLP layers)."""
    variables = getattr(operation, "_trainable_variables", None)
    if variables is None:
        variables = [w for w in getattr(operation, "weights", []) if "moving_" not in w.path]
    own = int(sum(int(v.numpy().size) for v in variables))
    return own + sum(_trainable_size(layer) for layer in getattr(operation, "_layers", []))


def find_cuts(backbone) -> list[CutInfo]:
    """Every cut of `backbone` (a featx Backbone) from the input towards the final feature layer, in depth order.

    The final feature layer itself is the last cut (nothing above it: a head on its cached map); layers with no
    spatial map (not 4-D; for a vision transformer, not a (tokens, width) sequence) are left out.
    """
    import keras

    model, final = backbone.model, final_layer(backbone)
    order, graph, operations = _path_order(model, final)
    position = {op: i for i, op in enumerate(order)}
    jumped = [0] * (len(order) + 1)  # difference array: how many edges pass over each position
    for op in order:
        for source in graph[op]:
            if position[op] - position[source] > 1:
                jumped[position[source] + 1] += 1
                jumped[position[op]] -= 1
    sizes = [_trainable_size(operations[op]) for op in order]
    above = [0] * (len(order) + 1)
    for i in range(len(order) - 1, -1, -1):
        above[i] = above[i + 1] + sizes[i]
    sources = {id(tensor._keras_history.operation) for tensor in model.inputs}
    layers = {id(layer) for layer in model.layers}
    cuts, passing = [], 0
    for i, op in enumerate(order):
        passing += jumped[i]
        operation = operations[op]
        if passing or op in sources or op not in layers or not isinstance(operation, keras.layers.Layer):
            continue
        shape = tuple(operation.output.shape)
        if (len(shape) == 4 or (len(shape) == 3 and backbone.tokens is not None)) and None not in shape[1:]:
            cuts.append(
                CutInfo(
                    operation.name,
                    type(operation).__name__,
                    tuple(int(d) for d in shape[1:]),
                    above[i + 1],
                    len(order) - 1 - i,
                )
            )
    return cuts


def check_cut(backbone, layer: str, cuts: list[CutInfo] | None = None) -> CutInfo:
    """The CutInfo of `layer`, or one line naming the nearest cuts below and above it when it is no cut."""
    cuts = find_cuts(backbone) if cuts is None else cuts
    by_name = {c.name: c for c in cuts}
    if layer in by_name:
        return by_name[layer]
    names = [lay.name for lay in backbone.model.layers]
    if layer not in names:
        close = difflib.get_close_matches(layer, list(by_name), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise FeatxError(
            f"layer '{layer}' not in {backbone.name}; {hint}run `featx layers {backbone.name} --cuts` "
            "for the layers it can be cut at"
        )
    at = names.index(layer)
    below = [c.name for c in cuts if names.index(c.name) < at]
    above = [c.name for c in cuts if names.index(c.name) > at]
    near = "; ".join(
        part
        for part in (
            f"nearest cut below: {below[-1]}" if below else "",
            f"nearest cut above: {above[0]}" if above else "",
        )
        if part
    )
    raise FeatxError(
        f"layer '{layer}' is not a cut of {backbone.name}: a path from the input to its final feature "
        f"layer {final_layer(backbone)} bypasses it, so the layers above it need more than its map; "
        f"{near} (`featx layers {backbone.name} --cuts` lists them all)"
    )


@dataclass(frozen=True, eq=False)
class CutTable:
    """What `cut_table` returns: the `featx layers --cuts` table and the final feature layer its cuts lead to.

    table : DataFrame with columns layer, kind, output_shape, block, params_above, layers_above; one row per cut,
        depth order
    final : the backbone's final feature layer (final_layer)
    """

    table: pd.DataFrame
    final: str


def cut_table(backbone) -> CutTable:
    """The `featx layers --cuts` table: one row per cut, depth order (layer, kind, output_shape, block,
    params_above, layers_above), with the final feature layer (CutTable)."""
    import pandas as pd

    from featx.backbones.layers import describe_layers

    blocks = {i.name: i.block or "" for i in describe_layers(backbone)}
    rows = [
        {
            "layer": c.name,
            "kind": c.kind,
            "output_shape": "x".join(map(str, c.map_shape)),
            "block": blocks.get(c.name, ""),
            "params_above": c.params_above,
            "layers_above": c.layers_above,
        }
        for c in find_cuts(backbone)
    ]
    table = pd.DataFrame(rows, columns=["layer", "kind", "output_shape", "block", "params_above", "layers_above"])
    return CutTable(table, final_layer(backbone))


def build_tail(model, cut: str, final: str, name: str = "tail"):
    """A new functional Keras model from the map of layer `cut` to the output of layer `final`, made of `model`'s own
    layers (their weights shared with `model`): the layers above the cut, called again on a new Input in the order
    of `model`'s graph, as Keras's functional model runs itself.

    `cut` must be a cut (check_cut): any layer above it that took another input would make this fail.
    Returns keras.Model taking (batch, h, w, c) maps of `cut` to (batch, h', w', c') maps of `final`.
    """
    import keras

    source = model.get_layer(cut).output
    inputs = keras.Input(shape=tuple(source.shape[1:]), name=f"{cut}_map")
    tensors = {id(source): inputs}
    target = model.get_layer(final).output
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.is_input or id(target) in tensors:
                continue
            if not node.input_tensors or any(id(t) not in tensors for t in node.input_tensors):
                continue
            args, kwargs = node.arguments.fill_in(tensors)
            outputs = node.operation(*args, **kwargs)
            for tensor, value in zip(node.outputs, keras.tree.flatten(outputs)):
                tensors[id(tensor)] = value
    if id(target) not in tensors:
        raise FeatxError(
            f"layer '{final}' cannot be computed from the map of '{cut}' alone; choose a cut (`featx layers --cuts`)"
        )
    return keras.Model(inputs, tensors[id(target)], name=name)

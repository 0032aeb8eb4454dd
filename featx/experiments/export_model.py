"""export-model: a tail run's whole network (frozen bottom + trained tail + head) as one Keras model file.

A tail run (`featx fit --clf tail --cut LAYER`) saves only what it trained: the layers above the cut and the
head, fed the cut's cached maps. `featx export-model RUN_ID -o model.keras` puts the network back together: the
backbone rebuilt from the run's cache entry (refused if its weights changed, as predict refuses), every layer
above the cut given the run's trained weights (BatchNorm statistics included), then the head's pooling, dropout
and softmax after the final feature layer. The bottom and the tail keep the backbone's layer names, so the file
is an ordinary fine-tuned model: it loads in Keras safe mode (no code in it runs), takes images preprocessed as
the backbone's are, gives the class probabilities `featx predict` gives (identity view, no TTA), and works as
`featx extract --backbone model.keras` (featx infers its preprocessing from the layer names) for features of the
tuned network.
"""

from __future__ import annotations

import os
from pathlib import Path

from featx.cache.atomic import fsync_dir, fsync_file
from featx.cache.store import Cache
from featx.errors import FeatxError


def export_model(run_id: str, output, *, cache_dir=None, runs_dir=None, log=print) -> Path:
    """Write run `run_id`'s network (a tail run's: bottom + trained tail + head) to `output` (a .keras path).

    The model maps float32 images (batch, height, width, 3), preprocessed as the backbone's `preprocess`
    does, to class probabilities (batch, n_classes) in the order of the run's classes. Returns the path.
    """
    from featx import runtime
    from featx.backbones import backbone_from_entry
    from featx.experiments.models import load_model

    output = Path(output)
    if output.suffix != ".keras":
        raise FeatxError(f"export-model writes a Keras model file, so -o must end in .keras (got '{output}')")
    if not output.parent.is_dir():
        raise FeatxError(f"folder {output.parent} of -o {output} does not exist; create it or name another")
    cache = Cache(cache_dir, runs_dir=runs_dir)
    pipeline, run = load_model(run_id, cache)
    tail = _tail_of(pipeline, run)
    entry = cache.open(run["cache_entry"])
    if entry.key != run["cache_key"]:
        raise FeatxError(f"cache entry {entry.name} no longer has the key run {run['run_id']} was fitted on; fit again")
    runtime.configure_tensorflow()
    with runtime.compute_dtype(entry.settings.get("mixed_precision", False)):  # the bottom as the maps were made
        backbone = backbone_from_entry(entry)
    model = whole_network(backbone, tail, name=f"{backbone.name}_{run['run_id'][:8]}")
    tmp = output.with_name(f".{output.stem}.{os.getpid()}.tmp.keras")  # Keras wants the .keras suffix
    try:
        model.save(tmp)
        fsync_file(tmp)
        os.replace(tmp, output)
        fsync_dir(output.parent)
    except OSError as exc:
        raise FeatxError(f"cannot write {output}: {exc.strerror or exc}; name a writable folder with -o") from None
    finally:
        tmp.unlink(missing_ok=True)
    names = [entry.class_names[c] for c in tail.classes_]
    log(
        f"exported run {run['run_id']} ({backbone.name} cut at {tail.cut}, tail trained, {len(names)} classes) to "
        f"{output}: input {model.input_shape[1]}x{model.input_shape[2]}x3 images preprocessed as "
        f"'{backbone.preprocessing}'; outputs the probabilities of {', '.join(names)}"
        + ("; its layers are KerasHub's: `import keras_hub` before loading it" if backbone.tokens else "")
    )
    return output


def whole_network(backbone, tail_classifier, name: str = "exported"):
    """A keras.Model from the backbone's image input through its final feature layer, the layers above the
    classifier's cut carrying its trained weights, then the classifier's head (pooling, dropout, softmax).

    backbone : a featx Backbone built for this export (its model's layers above the cut are overwritten).
    tail_classifier : a fitted featx.classifiers.tail.TailClassifier on maps of that backbone.
    Returns float32 (batch, h, w, 3) preprocessed images -> (batch, n_classes) probabilities.
    """
    import keras

    from featx.backbones.cuts import final_layer

    bottom, trained = backbone.model, tail_classifier.model_
    for layer in trained.get_layer("tail").layers:
        if not layer.weights:
            continue
        try:
            target = bottom.get_layer(layer.name)
        except ValueError:
            raise FeatxError(
                f"layer {layer.name} of the run's tail is not in the rebuilt backbone; the run and its "
                "cache entry do not belong together: fit again"
            ) from None
        target.set_weights(layer.get_weights())
    x = bottom.get_layer(final_layer(backbone)).output
    for head in [layer for layer in trained.layers if layer.name.startswith("head_")]:  # pooling, dropout, softmax
        copy = head.__class__.from_config(head.get_config())
        x = copy(x)
        copy.set_weights(head.get_weights())
    model = keras.Model(bottom.input, x, name=name)
    model.trainable = False
    return model


def _tail_of(pipeline, run):
    """The fitted TailClassifier of a run's pipeline (after passthrough transforms only), or a one-line error."""
    from sklearn.pipeline import Pipeline

    from featx.classifiers.tail import TailClassifier

    steps = pipeline.steps if isinstance(pipeline, Pipeline) else [("model", pipeline)]
    estimator = steps[-1][1]
    if not isinstance(estimator, TailClassifier):
        raise FeatxError(
            f"run {run['run_id']} is a {run.get('classifier', type(estimator).__name__)} model on cached "
            "features; export-model exports the network of a tail run: fit one with `featx fit --clf "
            "tail --cut LAYER` on an entry extracted with --pool none"
        )
    transforms = [name for name, step in steps[:-1] if step not in (None, "passthrough")]
    if transforms:
        raise FeatxError(
            f"run {run['run_id']} transforms the maps ({', '.join(transforms)}) before its tail; "
            "export-model exports tails fitted on the maps as cached: fit again without transforms"
        )
    return estimator

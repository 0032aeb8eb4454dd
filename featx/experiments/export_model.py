"""export-model: a run as a model that classifies images without featx, its cache or its runs log.

A run on cached features becomes ONE Keras model where every step has an exact Keras form (featx.classifiers.
portable.keras_form: the linear classifiers and the dense head after any of standardize, PCA, layer normalization
and Head2Toe's selection): image -> the backbone's preprocessing, taps and in-graph pooling, exactly as the
extractor computes them (featx.extractor.LayerExtractor.image_model) -> the run's columns side by side -> the
transforms and the classifier as built-in Keras layers -> class probabilities, or decision scores for a classifier
without probabilities. A run fitted with views and --tta averages its scores over the views inside the graph (the
D4 views; those Pillow resizes have no exact in-graph form). Such a model saves as a .keras file that loads in
Keras safe mode (no Lambda layer, no custom class, no pickle: a process that imports no featx loads it), as a
TensorFlow SavedModel (`--format savedmodel`) or as a TFLite flatbuffer (`--format tflite`, optionally --float16).

A run with a step that compares features with thresholds or stores rows (random forest, kernel and Nystroem SVMs,
k-NN, FNE and kbins discretization) has no exact Keras form: it exports to a folder of the feature model
(features.keras: image -> the run's feature vector), the pipeline as plain scikit-learn objects in a skops file
(pipeline.skops; featx.classifiers.portable.plain_sklearn), the dense head's Keras model where the run has one
(head.keras), and manifest.json (class names, columns, versions, the files' sha256).

A tail run (`featx fit --clf tail --cut LAYER`) exports its network as before (whole_network): the backbone
rebuilt from the run's cache entry, the layers above the cut given the run's trained weights, then the head; it
takes images preprocessed as the backbone's are and works as `featx extract --backbone FILE.keras`.

Every export carries featx.json (in the .keras archive, the SavedModel's assets.extra/, the folder's manifest, the
TFLite file's metadata): class names, what the output is, the input the model expects, and the run's provenance
(run id, cache entry and key, FitSpec hash, featx version). This module is the only writer and the only reader
(load_exported) of that format.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np

from featx.cache.atomic import fsync_dir, fsync_file
from featx.cache.store import Cache
from featx.errors import FeatxError
from featx.progress import silent

FORMATS = ("keras", "savedmodel", "tflite")
EXPORT_VERSION = 1  # featx.json's "featx_export": bump when a reader would misread an export of this version
METADATA = "featx.json"  # the metadata's name in every form
FEATURES_FILE, PIPELINE_FILE, HEAD_FILE, MANIFEST = "features.keras", "pipeline.skops", "head.keras", "manifest.json"
SAVED_MODEL_METADATA = f"assets.extra/{METADATA}"
LAYER_PACKAGES = (
    "keras_hub",
)  # packages (besides keras) whose import registers the layer classes an export may hold  # TF Serving's place for files it does not read


def resize_text(decode: dict) -> str:
    """How featx extract brought each image to the model's size, for featx.json's `input.resize`: decode is the
    backbone's decode_options (featx.sources.decode.load_rgb's interpolation and crop)."""
    crop = "take the largest centred crop of the input's aspect ratio, then " if decode["crop"] else ""
    return (
        "decode the file, apply its EXIF orientation, convert to 8-bit RGB, "
        f"{crop}resize to width x height with Pillow's {decode['interpolation']} filter (as featx extract does; "
        "input.decode); the model takes exactly that size"
    )


def _resized(decode: dict) -> str:
    """The log line's words for decode_options: "resized (Pillow bilinear)", "centre-cropped and resized (...)"."""
    return ("centre-cropped and " if decode["crop"] else "") + f"resized (Pillow {decode['interpolation']})"


def _import_note(imports: list[str]) -> str:
    """The export line's words for the packages a process imports before loading the file (packages())."""
    return "".join(f"; its layers are {p}'s: `import {p}` before loading it" for p in imports)


def _decode_options(metadata: dict, where) -> dict:
    """featx.json's `input.decode` checked before use (the file may come from anyone): load_rgb's keywords. Exports
    without it (before KerasHub backbones) were all resized bilinearly without a crop."""
    from featx.sources.decode import RESAMPLING

    given = metadata.get("input") if isinstance(metadata, dict) else None
    decode = given.get("decode", {"interpolation": "bilinear", "crop": False}) if isinstance(given, dict) else None
    if (
        not isinstance(decode, dict)
        or set(decode) != {"interpolation", "crop"}
        or decode["interpolation"] not in RESAMPLING
        or not isinstance(decode["crop"], bool)
    ):
        raise FeatxError(
            f"{where}: input.decode in its metadata is not {{interpolation: one of {', '.join(RESAMPLING)}, crop: "
            "true|false}; export the run again with featx export-model"
        )
    return decode


def export_model(
    run_id: str,
    output,
    *,
    format: str = "keras",
    float16: bool = False,
    tta: bool | None = None,
    cache=None,
    log=print,
) -> Path:
    """Export run `run_id` (a full id, unique prefix or short id) to `output`; returns the path written.

    format : "keras" -> a .keras file where the run has an exact Keras form (output must end in .keras), else a
        folder (features.keras, pipeline.skops, manifest.json; output must not end in .keras); "savedmodel" -> a
        TensorFlow SavedModel folder (model.export); "tflite" -> a .tflite file. The last two take runs with an
        exact Keras form only.
    float16 : with tflite, store the weights as float16 (half the file; computed in float32 on most CPUs).
    tta : as featx predict: None averages over the views where the run was fitted with --tta, False exports
        the identity view's model, True asks for the average (a run with views only).
    The model takes float32 RGB pixels in [0, 255] of shape (batch, height, width, 3) (uint8 arrays are accepted
    by Keras), resized as its input.resize says, and returns (batch, n_outputs) float32 scores, one column per class in
    featx.json's class_names (binary decision scores: one column, the second class's); a tail run's network
    takes images preprocessed as its backbone's. cache : the Cache (its runs_dir included) or cache folder the run
    is logged in. Nothing is written when anything fails: no file, no folder.
    """
    from featx.classifiers.registry import BASELINES
    from featx.runs.models import load_model

    if format not in FORMATS:
        raise FeatxError(f"unknown --format {format!r}; choose one of {', '.join(FORMATS)}")
    if float16 and format != "tflite":
        raise FeatxError("--float16 applies to --format tflite only (its weights as float16); drop it or add that")
    output = Path(output)
    if not output.parent.is_dir():
        raise FeatxError(f"folder {output.parent} of -o {output} does not exist; create it or name another")
    cache, log = Cache.resolve(cache), log or silent
    pipeline, run = load_model(run_id, cache)
    run_id = run["run_id"]
    if run["classifier"] in BASELINES:
        raise FeatxError(
            f"run {run_id} is the {run['classifier']} baseline, a reference that ignores the images; export a "
            "run of a real classifier (see `featx runs`)"
        )
    if "+" in str(run["cache_entry"]):
        raise FeatxError(
            f"run {run_id} was fitted on several cache entries ({run['cache_entry']}); export-model takes runs "
            "fitted on one entry"
        )
    try:
        entry = cache.open(run["cache_entry"])
    except FeatxError as exc:
        raise FeatxError(
            f"the cache entry of run {run_id} ({run['cache_entry']}) is gone or unreadable ({exc}); export-model "
            "rebuilds the backbone from it: put the entry back, or extract and fit again"
        ) from None
    if entry.key != run["cache_key"]:
        raise FeatxError(f"cache entry {entry.name} no longer has the key run {run_id} was fitted on; fit again")
    if _is_tail(pipeline):
        return _export_tail(pipeline, run, entry, output, format, log)
    return _export_features_run(pipeline, run, entry, output, format, float16, tta, log)


# ---- runs on cached features ---------------------------------------------------------------------------------


def _export_features_run(pipeline, run, entry, output, format, float16, tta, log) -> Path:
    from featx import runtime
    from featx.backbones import backbone_from_entry
    from featx.classifiers.portable import keras_form_problem, n_outputs, output_kind
    from featx.classifiers.views import ViewEnsemble
    from featx.experiments.predict import run_layers, with_tta
    from featx.extractor import LayerExtractor
    from featx.sources.views import graph_views

    run_id = run["run_id"]
    model, views = with_tta(pipeline, run, tta)
    inner = model.estimator_ if isinstance(model, ViewEnsemble) else model
    problem = keras_form_problem(inner)
    folder = problem is not None
    kind, outputs = output_kind(inner), n_outputs(inner)
    if folder and format != "keras":
        raise FeatxError(
            f"run {run_id} cannot be exported as --format {format}: its {problem.step} step has no exact Keras "
            f"form ({problem.reason}); it exports with --format keras, to a folder (a feature model, the "
            "scikit-learn pipeline as skops, a manifest)"
        )
    _check_output(output, format, folder, run_id, problem)
    size = tuple(entry.settings.get("input_size") or ())
    if views is not None:
        reason = graph_views(views, size) if len(size) == 2 else None
        if reason:
            raise FeatxError(
                f"run {run_id} averages over views {', '.join(views)} at prediction (--tta), and {reason}, which "
                "a model file cannot reproduce exactly; export the identity view's model with --no-tta (as "
                "`featx predict --no-tta`)"
            )
    selection = run_layers(entry, run)
    layer_info = entry.layer_info
    metadata = {
        "featx_export": EXPORT_VERSION,
        **_provenance(run, entry),
        "form": "folder" if folder else format,
        "layers": list(selection.names),
        "columns": [[name, int(layer_info[name]["n_features"])] for name in selection.names],
        "pool": entry.settings["pool"],
        "dtype": entry.settings["dtype"],
        "views": list(views) if views is not None else ["id"],
        "tta": views is not None,
        "output": kind,
        "n_outputs": outputs,
        "class_names": [str(entry.class_names[c]) for c in inner.classes_],
    }
    runtime.configure_tensorflow()
    with runtime.compute_dtype(entry.settings.get("mixed_precision", False)):  # as the cached features were made
        backbone = backbone_from_entry(entry)
    extractor = LayerExtractor(backbone, list(selection.names), entry.settings["pool"], entry.settings["dtype"])
    features = extractor.image_model()
    height, width = features.input_shape[1:3]
    metadata["input"] = {
        "shape": [int(height), int(width), 3],
        "dtype": "float32",
        "values": "RGB pixels 0-255 (uint8 images cast to float32)",
        "resize": resize_text(backbone.decode_options),
        "decode": dict(backbone.decode_options),
        "preprocessing": "inside the model",
    }
    name = f"featx_{run_id.replace('-', '_')}"
    metadata["imports"] = packages(features)  # e.g. keras_hub for a KerasHub backbone; [] for Keras' own layers
    if folder:
        path = _write_folder(features, inner, views, metadata, output, name)
    else:
        path = _write(classifier_network(features, inner, views, name=name), metadata, output, format, float16)
    shown = "probabilities" if kind == "probabilities" else "decision scores"
    averaged = f", averaged over {len(views)} views" if views is not None else ""
    log(
        f"exported run {run_id} ({run['classifier']} on {len(selection.names)} layer(s) of {backbone.name}) to "
        f"{path}" + (" (a folder: feature model + scikit-learn pipeline)" if folder else "") + f": input "
        f"{height}x{width}x3 RGB pixels 0-255, {_resized(backbone.decode_options)} as featx extract does; outputs the "
        f"{shown} "
        f"of {', '.join(metadata['class_names'])}{averaged}" + _import_note(metadata["imports"])
    )
    return path


def classifier_network(features, model, views=None, *, name: str = "exported"):
    """ONE Keras model: images -> `features` (a LayerExtractor.image_model) -> fitted `model` as Keras layers.

    model : a fitted Pipeline or classifier with an exact Keras form (featx.classifiers.portable.keras_form).
    views : None, or the view names to average over (test-time augmentation): each batch of images runs through
        the network once per view (keras_view), and the scores are averaged over the views, as ViewEnsemble's tta.
    Returns float32 images (batch, h, w, 3) in [0, 255] -> (batch, n_outputs) scores.
    """
    import keras
    from keras import ops

    from featx.classifiers.portable import keras_form
    from featx.sources.views import keras_view

    image = keras.Input(features.input_shape[1:], name="image")
    if views is None:
        scores, _ = keras_form(model, features(image))
    else:
        batch = ops.concatenate([keras_view(image, v) for v in views], axis=0)  # (V * batch, h, w, 3), view-major
        scores, _ = keras_form(model, features(batch))
        scores = ops.mean(ops.reshape(scores, (len(views), -1, scores.shape[-1])), axis=0)
    network = keras.Model(image, scores, name=name)
    network.trainable = False
    return network


def packages(model) -> list[str]:
    """The top-level packages of every layer and op class in `model` (nested models included), keras aside: what a
    process must import before Keras can load it (KerasHub's layers register themselves when keras_hub is
    imported). Refuses any class outside Keras and LAYER_PACKAGES (featx's own, a user's custom layer): a process
    without that code could not load it."""
    found, stack = set(), [model]
    while stack:
        node = stack.pop()
        for operation in getattr(node, "operations", ()):
            package = type(operation).__module__.split(".")[0]
            if package not in ("keras", *LAYER_PACKAGES):
                raise FeatxError(
                    f"the model holds layer {operation.name} of class {type(operation).__module__}."
                    f"{type(operation).__name__}, which Keras safe mode loads only where that code is imported; "
                    f"export-model exports models of Keras' own layers (and {', '.join(LAYER_PACKAGES)}')"
                )
            found.add(package)
            stack.append(operation)
    return sorted(found - {"keras"})


def view_features(features, views, *, name: str = "features"):
    """The folder form's feature model: `features` alone without views, else images -> (batch, V, n_features),
    the features of each view (keras_view) in the order of `views`."""
    import keras
    from keras import ops

    from featx.sources.views import keras_view

    if views is None:
        return features
    image = keras.Input(features.input_shape[1:], name="image")
    batch = ops.concatenate([keras_view(image, v) for v in views], axis=0)
    rows = ops.reshape(features(batch), (len(views), -1, features.output_shape[-1]))
    return keras.Model(image, ops.transpose(rows, (1, 0, 2)), name=name)


# ---- tail runs -----------------------------------------------------------------------------------------------


def _is_tail(pipeline) -> bool:
    from featx.classifiers.views import final_classifier

    return type(final_classifier(pipeline)).__name__ == "TailClassifier"


def _export_tail(pipeline, run, entry, output, format, log) -> Path:
    from featx import runtime
    from featx.backbones import backbone_from_entry

    tail = _tail_of(pipeline, run)
    if format != "keras":
        raise FeatxError(
            f"run {run['run_id']} is a tail run, whose network takes preprocessed images (it is a fine-tuned "
            f"backbone, for `featx extract --backbone`); it exports with --format keras only, not {format}"
        )
    if output.suffix != ".keras":
        raise FeatxError(f"a tail run exports one Keras model file, so -o must end in .keras (got '{output}')")
    _check_replaceable(output)
    runtime.configure_tensorflow()
    with runtime.compute_dtype(entry.settings.get("mixed_precision", False)):  # the bottom as the maps were made
        backbone = backbone_from_entry(entry)
    model = whole_network(backbone, tail, name=f"{backbone.name}_{run['run_id'][:8]}")
    names = [str(entry.class_names[c]) for c in tail.classes_]
    metadata = {
        "featx_export": EXPORT_VERSION,
        **_provenance(run, entry),
        "form": "keras",
        "cut": tail.cut,
        "views": ["id"],
        "tta": False,
        "output": "probabilities",
        "n_outputs": len(names),
        "class_names": names,
        "input": {
            "shape": [int(d) for d in model.input_shape[1:]],
            "dtype": "float32",
            "values": f"RGB pixels preprocessed as '{backbone.preprocessing}'",
            "resize": resize_text(backbone.decode_options),
            "decode": dict(backbone.decode_options),
            "preprocessing": backbone.preprocessing,
        },
    }
    metadata["imports"] = packages(model)  # e.g. keras_hub for a KerasHub backbone's blocks
    path = _write(model, metadata, output, "keras", False)
    log(
        f"exported run {run['run_id']} ({backbone.name} cut at {tail.cut}, tail trained, {len(names)} classes) to "
        f"{path}: input {model.input_shape[1]}x{model.input_shape[2]}x3 images preprocessed as "
        f"'{backbone.preprocessing}'; outputs the probabilities of {', '.join(names)}"
        + _import_note(metadata["imports"])
    )
    return path


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

    steps = pipeline.steps if isinstance(pipeline, Pipeline) else [("model", pipeline)]
    transforms = [name for name, step in steps[:-1] if step not in (None, "passthrough")]
    if transforms:
        raise FeatxError(
            f"run {run['run_id']} transforms the maps ({', '.join(transforms)}) before its tail; "
            "export-model exports tails fitted on the maps as cached: fit again without transforms"
        )
    return steps[-1][1]


# ---- writing -------------------------------------------------------------------------------------------------


def _provenance(run, entry) -> dict:
    import featx

    spec_hash = run.get("spec_hash")
    return {
        "featx_version": featx.__version__,
        "run_id": str(run["run_id"]),
        "cache_entry": str(entry.name),
        "cache_key": str(entry.key),
        "spec_hash": spec_hash if isinstance(spec_hash, str) and spec_hash else None,
        "classifier": str(run["classifier"]),
        "transforms": str(run.get("transforms") or "none"),
        "backbone": str(entry.settings["backbone"]),
        "weights_id": str(entry.settings["weights_id"]),
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "versions": _versions(),
    }


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("keras", "tensorflow", "scikit-learn", "skops", "numpy"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


def _check_output(output: Path, format: str, folder: bool, run_id: str, problem) -> None:
    """-o fits what is written (a .keras file, a folder, a SavedModel folder, a .tflite file), and an existing
    output is a previous export (replaced) rather than anything else."""
    if format == "keras" and not folder and output.suffix != ".keras":
        raise FeatxError(f"run {run_id} exports as one Keras model file, so -o must end in .keras (got '{output}')")
    if format == "keras" and folder and output.suffix == ".keras":
        raise FeatxError(
            f"run {run_id} exports to a folder, not one .keras file: its {problem.step} step has no exact Keras form "
            f"({problem.reason}); pass -o a folder name without .keras (e.g. {output.with_suffix('')})"
        )
    if format == "tflite" and output.suffix != ".tflite":
        raise FeatxError(f"--format tflite writes a TFLite flatbuffer, so -o must end in .tflite (got '{output}')")
    if format == "savedmodel" and output.suffix in (".keras", ".tflite"):
        raise FeatxError(f"--format savedmodel writes a folder, so -o names a folder, not a {output.suffix} file")
    _check_replaceable(output)


def _check_replaceable(output: Path) -> None:
    if output.is_symlink() or (output.exists() and not _is_export(output)):
        raise FeatxError(f"-o {output} exists and is not a featx export; remove it or name another path")


def _is_export(path: Path) -> bool:
    """Whether `path` is something export-model wrote (so a new export may replace it): a folder with its manifest
    or SavedModel metadata, a .keras archive holding featx.json, a .tflite file holding that metadata."""
    if path.is_dir():
        return (path / MANIFEST).is_file() or (path / SAVED_MODEL_METADATA).is_file()
    if path.suffix == ".tflite" and path.is_file():
        with open(path, "rb") as f:
            return b'"featx_export"' in f.read()
    return is_export_path(path)


def _write(model, metadata: dict, output: Path, format: str, float16: bool) -> Path:
    """`model` as `format` at `output`, built beside it and renamed into place (nothing left if it fails)."""
    if format == "keras":
        with _staged(output, suffix=".keras") as tmp:
            model.save(tmp)
            with zipfile.ZipFile(tmp, "a") as archive:  # Keras reads its own members and ignores this one
                archive.writestr(METADATA, json.dumps(metadata, indent=1))
            fsync_file(tmp)
        return output
    if format == "savedmodel":
        with _staged(output, suffix="") as tmp:
            _saved_model(model, tmp)
            (tmp / "assets.extra").mkdir()
            (tmp / SAVED_MODEL_METADATA).write_text(json.dumps(metadata, indent=1), encoding="utf-8")
        return output
    data = tflite_bytes(model, float16=float16)
    with _staged(output, suffix=".tflite") as tmp:
        tmp.write_bytes(with_tflite_metadata(data, METADATA, json.dumps({**metadata, "float16": float16}).encode()))
        fsync_file(tmp)
    return output


def _write_folder(features, model, views, metadata: dict, output: Path, name: str) -> Path:
    """The folder form: features.keras, pipeline.skops (plain scikit-learn), head.keras (a dense head) and
    manifest.json (the metadata and each file's sha256)."""
    import skops.io

    from featx.classifiers.portable import plain_sklearn

    plain, head = plain_sklearn(model)
    feature_model = view_features(features, views, name=f"{name}_features")
    with _staged(output, suffix="") as tmp:
        tmp.mkdir()
        feature_model.save(tmp / FEATURES_FILE)
        skops.io.dump(plain, tmp / PIPELINE_FILE)
        files = [FEATURES_FILE, PIPELINE_FILE]
        if head is not None:
            head.save(tmp / HEAD_FILE)
            files.append(HEAD_FILE)
        manifest = {
            **metadata,
            "n_features": int(feature_model.output_shape[-1]),
            "files": {f: _sha256(tmp / f) for f in files},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        for f in [*files, MANIFEST]:
            fsync_file(tmp / f)
    return output


class _staged:
    """A temporary path beside `output` to build the export in; on success it replaces `output` (a previous
    export there is removed once the new one is in place), on any failure it is removed."""

    def __init__(self, output: Path, suffix: str):
        self.output = output
        self.tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp{suffix}")

    def __enter__(self) -> Path:
        _remove(self.tmp)
        return self.tmp

    def __exit__(self, kind, exc, tb):
        try:
            if kind is None:
                self._publish()
        except OSError as error:
            raise FeatxError(
                f"cannot write {self.output}: {error.strerror or error}; name a writable folder with -o"
            ) from None
        finally:
            _remove(self.tmp)
        if isinstance(exc, OSError):
            raise FeatxError(
                f"cannot write {self.output}: {exc.strerror or exc}; name a writable folder with -o"
            ) from None
        return False

    def _publish(self) -> None:
        old = None
        if self.output.is_dir() and not self.output.is_symlink():  # a folder cannot be renamed over: set it aside
            old = self.output.with_name(f".{self.output.name}.{os.getpid()}.old")
            _remove(old)
            os.replace(self.output, old)
        os.replace(self.tmp, self.output)
        fsync_dir(self.output.parent)
        if old is not None:
            _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _saved_model(model, path: Path) -> None:
    """A TensorFlow SavedModel of `model` (Keras' model.export: a `serve` signature taking float32 images)."""
    model.export(str(path), format="tf_saved_model", verbose=False)


def tflite_bytes(model, *, float16: bool = False) -> bytes:
    """`model` converted to a TFLite flatbuffer (via a SavedModel, TensorFlow's path for Keras 3 models); float16:
    weights stored as float16. One line when the converter refuses an op."""
    import tempfile

    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        _saved_model(model, Path(tmp) / "saved")
        converter = tf.lite.TFLiteConverter.from_saved_model(str(Path(tmp) / "saved"))
        if float16:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        try:
            return converter.convert()
        except Exception as exc:  # noqa: BLE001  the converter raises many types; one line, with its first line
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise FeatxError(
                f"TensorFlow Lite cannot convert this model ({first}); export it with --format keras or savedmodel"
            ) from None


def with_tflite_metadata(data: bytes, name: str, value: bytes) -> bytes:
    """The TFLite flatbuffer `data` with a metadata entry `name` holding `value` (the flatbuffer schema's own
    Model.metadata list, where TFLite's own metadata lives too; interpreters ignore entries they do not know)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(value, dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = name, len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def tflite_metadata(data: bytes, name: str = METADATA) -> dict | None:
    """The JSON metadata entry `name` of a TFLite flatbuffer (with_tflite_metadata), or None."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(bytearray(data), 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name().decode() == name:
            return json.loads(model.Buffers(entry.Buffer()).DataAsNumpy().tobytes())
    return None


# ---- reading -------------------------------------------------------------------------------------------------


def is_export_path(target) -> bool:
    """Whether `target` names a model export-model wrote (a .keras file with featx metadata, or an export folder)."""
    if not isinstance(target, (str, os.PathLike)):
        return False
    path = Path(target)
    try:
        if path.is_dir():
            return (path / MANIFEST).is_file()
        return path.suffix == ".keras" and path.is_file() and METADATA in zipfile.ZipFile(path).namelist()
    except (OSError, zipfile.BadZipFile):
        return False


class ExportedModel:
    """A model export-model wrote, loaded without the run, its cache or its log (featx.load_model(PATH)).

    metadata : featx.json (class_names, output, input, provenance). class_names : list of str, the columns of the
    scores. output : "probabilities" or "decision_scores". input_size : (height, width).
    """

    def __init__(self, path):
        from featx.runs.models import load_sklearn_pipeline

        self.path = Path(path)
        self.head = self.pipeline = None
        if self.path.is_dir():
            self.metadata = _read_manifest(self.path)
            self.decode = _decode_options(self.metadata, self.path)  # checked before any file is loaded
            _import_layer_packages(self.metadata, self.path)
            self.network = _load_keras(self.path / FEATURES_FILE)
            self.pipeline = load_sklearn_pipeline(self.path / PIPELINE_FILE)
            if (self.path / HEAD_FILE).is_file():
                self.head = _load_keras(self.path / HEAD_FILE)
        else:
            try:
                with zipfile.ZipFile(self.path) as archive:
                    self.metadata = json.loads(archive.read(METADATA))
            except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
                raise FeatxError(f"{self.path} is not a model featx export-model wrote ({exc})") from None
            _check_version(self.metadata, self.path)
            self.decode = _decode_options(self.metadata, self.path)  # checked before the model is loaded
            _import_layer_packages(self.metadata, self.path)
            self.network = _load_keras(self.path)
        self.class_names = list(self.metadata["class_names"])
        self.output = self.metadata["output"]
        self.input_size = tuple(self.metadata["input"]["shape"][:2])
        self._forward = _traced(self.network, self.input_size)

    def scores(self, images, batch_size: int = 32) -> np.ndarray:
        """images : an array (n, height, width, 3) of RGB pixels 0-255 (uint8 or float), or image file paths
        (decoded and resized as featx extract does, in parallel and a chunk ahead of the model) -> float64
        (n, n_outputs) scores (self.output)."""
        if "cut" in self.metadata:  # a tail run's network: its input is preprocessed, which the file only names
            raise FeatxError(
                f"{self.path} is a tail run's fine-tuned network, which takes images preprocessed as "
                f"'{self.metadata['input']['preprocessing']}', not pixels; call its Keras model "
                "(`model.network`) on preprocessed images, or use it as a backbone: featx extract --backbone "
                f"{self.path}"
            )
        if isinstance(images, np.ndarray):
            return self._scores(self._checked(images), batch_size)
        paths = [str(p) for p in images]
        parts = [self._scores(chunk, batch_size) for chunk in self._decoded(paths)]
        return np.concatenate(parts) if parts else np.zeros((0, self.metadata["n_outputs"]))

    def predict(self, images, batch_size: int = 32) -> np.ndarray:
        """The class names of `images` (as in scores): the highest score's class; binary decision scores: the
        second class where the score is positive."""
        scores = self.scores(images, batch_size)
        names = np.asarray(self.class_names, dtype=object)
        if scores.shape[1] == 1:
            return names[(scores[:, 0] > 0).astype(int)]
        return names[np.argmax(scores, axis=1)]

    def _scores(self, x: np.ndarray, batch_size: int) -> np.ndarray:
        outputs = np.concatenate(
            [self._forward(x[i : i + batch_size].astype(np.float32)).numpy() for i in range(0, len(x), batch_size)]
        )
        if self.pipeline is None:
            return outputs.astype(np.float64)
        rows = outputs.reshape(-1, outputs.shape[-1])  # the features: one row per image, or per view
        if self.head is not None:
            out = self.head.predict(self.pipeline.transform(rows), verbose=0)
        elif self.output == "probabilities":
            out = self.pipeline.predict_proba(rows)
        else:
            out = self.pipeline.decision_function(rows)
        return np.asarray(out, dtype=np.float64).reshape(len(x), -1, self.metadata["n_outputs"]).mean(axis=1)

    def _decoded(self, paths: list[str], chunk: int = 64):
        """Chunks of decoded images (uint8 (k, h, w, 3)), decoded by a thread per core while the model runs on the
        previous chunk (Pillow releases the GIL): at most two chunks held."""
        from concurrent.futures import ThreadPoolExecutor

        from featx.sources.decode import load_rgb

        def decode(path):
            try:
                return load_rgb(path, self.input_size, **self.decode)
            except ValueError as exc:
                raise FeatxError(f"cannot decode '{path}': {exc}") from None

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            pending = None
            for start in range(0, len(paths), chunk):
                futures = [pool.submit(decode, p) for p in paths[start : start + chunk]]
                if pending is not None:
                    yield np.stack([f.result() for f in pending])
                pending = futures
            if pending is not None:
                yield np.stack([f.result() for f in pending])

    def _checked(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 4 or tuple(x.shape[1:]) != (*self.input_size, 3):
            raise FeatxError(
                f"images of shape {x.shape}: this model takes (n, {self.input_size[0]}, {self.input_size[1]}, 3) "
                "RGB pixels; resize them as featx extract does (or pass file paths)"
            )
        return x


def _traced(network, size: tuple[int, int]):
    """network(images, training=False) as one tf.function for any batch size: traced once (Keras' predict traces
    again for a last, smaller batch)."""
    import tensorflow as tf

    def forward(images):
        return network(images, training=False)

    spec = tf.TensorSpec([None, *size, 3], tf.float32)
    return tf.function(forward, input_signature=[spec], autograph=False, jit_compile=False)


def load_model(target, cache=None):
    """featx.load_model: an exported model's path (a .keras file or a folder export-model wrote) -> ExportedModel;
    anything else is a run id of `cache` -> (fitted Pipeline, log row), as featx.runs.models.load_model."""
    if is_export_path(target):
        return ExportedModel(target)
    from featx.runs.models import load_model as load_run_model

    return load_run_model(target, cache)


def _check_version(metadata: dict, path: Path) -> None:
    version = metadata.get("featx_export") if isinstance(metadata, dict) else None
    if version != EXPORT_VERSION:
        raise FeatxError(
            f"{path} is a featx export of format version {version}; this featx reads version {EXPORT_VERSION}: "
            "export the run again with this featx"
        )


def _import_layer_packages(metadata: dict, path: Path) -> None:
    """Import the packages the export's metadata says its layers come from (packages()), from LAYER_PACKAGES only:
    a name in a stranger's file never chooses what is imported."""
    import importlib

    for package in metadata.get("imports", []):
        if package not in LAYER_PACKAGES:
            raise FeatxError(
                f"{path} names layers of package {package!r}, which featx never exports; refusing to load it"
            )
        try:
            importlib.import_module(package)
        except ImportError:
            raise FeatxError(
                f"{path} holds layers of {package}: install it (pip install {package}) to load it"
            ) from None


def _read_manifest(folder: Path) -> dict:
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FeatxError(f"{folder / MANIFEST} cannot be read ({exc}); export the run again") from None
    _check_version(manifest, folder)
    for name, digest in manifest.get("files", {}).items():
        if name not in (FEATURES_FILE, PIPELINE_FILE, HEAD_FILE) or _sha256(folder / name) != digest:
            raise FeatxError(
                f"{folder / name} does not match the sha256 in {folder / MANIFEST} (modified or replaced); "
                "refusing to load it: export the run again"
            )
    return manifest


def _load_keras(path: Path):
    import keras

    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except (OSError, ValueError, TypeError) as exc:
        raise FeatxError(
            f"{path} does not load in Keras safe mode ({str(exc).splitlines()[0][:200] if str(exc) else exc}); "
            "export the run again"
        ) from None

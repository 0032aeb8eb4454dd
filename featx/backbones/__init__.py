"""Backbone registry: a name (or a saved model file) -> a frozen Keras model with its preprocessing."""

from __future__ import annotations

import difflib
import hashlib
import numbers
import os
from pathlib import Path

from featx.backbones.base import Backbone
from featx.backbones.efficientnet_lite import VARIANTS as LITE_VARIANTS
from featx.backbones.feature_info import FAMILIES, infer_family
from featx.backbones.keras_apps import KERAS_MODELS
from featx.backbones.layers import LayerInfo, LayerSelection, LayerTable, describe_layers, layer_selection, layer_table
from featx.errors import FeatxError
from featx.runtime import seeded_weight_init
from featx.sources.fingerprint import file_fingerprint

DEFAULT_BACKBONE = "efficientnet_lite0"
SAVED_MODEL_PREPROCESSING = (
    "none",
    "unit",
    "tf",
    "efficientnet_lite",
    *sorted({module for _, module, _ in KERAS_MODELS.values()}),
)

INPUT_SIZES = (32, 4096)  # --input-size bounds: Keras's smallest input; a side beyond 4096 is a typo, not a model

__all__ = [
    "Backbone",
    "LayerInfo",
    "LayerSelection",
    "LayerTable",
    "available_backbones",
    "backbone_file_problem",
    "backbone_files",
    "backbone_catalog",
    "backbone_description",
    "backbone_from_args",
    "backbone_from_entry",
    "check_input_size",
    "describe_layers",
    "file_hashes",
    "get_backbone",
    "layer_selection",
    "layer_table",
    "preprocessing_note",
]


def backbone_catalog() -> dict:
    """What `featx backbones` lists, offline and without TensorFlow: {"registry": the keras.applications and
    EfficientNet-Lite names, "hub": [(family line, [(preset, description)])] of KerasHub's vision presets (empty
    when KerasHub is not installed), "hub_installed": bool}."""
    from featx.backbones.hub import keras_hub_root, listing

    return {
        "registry": available_backbones(),
        "hub": listing(),
        "hub_installed": keras_hub_root() is not None,
    }


def available_backbones() -> list[str]:
    """The registry's own names (keras.applications, EfficientNet-Lite); KerasHub's presets: backbone_catalog."""
    return sorted([*LITE_VARIANTS, *KERAS_MODELS])


def backbone_from_entry(entry, unsafe: bool = False) -> Backbone:
    """Rebuild the backbone a cache entry was made with, refusing one whose weights have changed since.

    The files it would read (a weights .pth, a saved .keras/.h5 model) are hashed and compared with the hashes the
    entry recorded at extract time before any of them is opened by a loader: an entry received from someone else,
    or a weights file swapped since, cannot make featx read a file other than the one the features came from.
    """
    return backbone_from_args(entry.backbone_args, entry.settings["weights_id"], f"cache {entry.name}", unsafe)


def backbone_description(entry) -> dict:
    """What rebuilds an entry's backbone without the entry: its backbone_args (name, weights, input_size, preprocess,
    file_hashes) and weights_id. A model trained on the entry's layers keeps it (the tail estimator's `backbone`)."""
    return {**entry.backbone_args, "weights_id": entry.settings["weights_id"]}


def backbone_from_args(args: dict, weights_id: str, where: str, unsafe: bool = False) -> Backbone:
    """The backbone `args` describe (backbone_args as extract records them), refused before any file is read when
    a file's content hash differs from the recorded one, and after the build when its weights hash is not
    `weights_id`. where : what the description belongs to, for the error line (e.g. "cache lite0-1234")."""
    problem = backbone_file_problem(args)
    if problem:
        raise FeatxError(f"{where}: {problem}")
    backbone = get_backbone(args["name"], args["weights"], args["input_size"], args["preprocess"], unsafe)
    if backbone.weights_id != weights_id:
        raise FeatxError(
            f"backbone '{args['name']}' with weights '{args['weights']}' no longer matches {where} "
            "(weights changed); re-run `featx extract` and fit again"
        )
    return backbone


def backbone_files(name: str, weights: str | None) -> dict[str, str]:
    """{role: path} of the local files `get_backbone(name, weights)` reads: "model" (a saved .keras/.h5 model) or
    "weights" (a weights file given as a path, or the packaged .pth of an EfficientNet-Lite with imagenet weights).

    keras.applications' own imagenet downloads are not listed: Keras reads them as HDF5 arrays, and the weights
    hash (weights_id) checks what they hold.
    """
    if Path(str(name)).suffix in (".keras", ".h5"):
        return {"model": str(name)}
    from featx.backbones.hub import hub_files, is_hub_backbone

    if is_hub_backbone(name):
        return hub_files(name, weights)
    if weights in (None, "none"):
        return {}
    if weights == "imagenet":
        if name in LITE_VARIANTS:
            from featx.backbones.efficientnet_lite import default_weights_path

            return {"weights": default_weights_path(name)}
        return {}
    return {"weights": str(weights)}


def file_hashes(name: str, weights: str | None) -> dict[str, str]:
    """{role: content hash} of `backbone_files(name, weights)`: extract records it in the entry's backbone_args."""
    return {role: file_fingerprint(path) for role, path in backbone_files(name, weights).items()}


def backbone_file_problem(args: dict) -> str | None:
    """Why the files an entry's backbone arguments name cannot be trusted to be the ones it was extracted with
    (None: each has the content hash recorded at extract). Only hashes the files: nothing is unpickled or loaded.

    args : the entry's backbone_args {name, weights, input_size, preprocess, file_hashes}.
    """
    try:
        files = backbone_files(args["name"], args["weights"])
    except (KeyError, TypeError):
        return "its backbone arguments are incomplete; re-run `featx extract` into a new --cache-dir"
    except FeatxError as exc:  # the packaged weights are not installed here
        return str(exc)
    recorded = args.get("file_hashes")
    if recorded is None and not files:
        return None  # nothing is read from a file (weights none, keras' own imagenet download)
    if not isinstance(recorded, dict) or set(recorded) != set(files):
        shown = ", ".join(f"'{p}'" for p in files.values()) or "none"
        return (
            f"no content hash of its backbone files ({shown}) was recorded at extract time (an older featx made "
            "it, or it was edited), so they are not read; re-run `featx extract` into a new --cache-dir"
        )
    for role, path in files.items():
        if file_fingerprint(path) != recorded[role]:
            missing = not Path(path).is_file()
            return (
                f"{role} file '{path}' "
                + (
                    "is missing here"
                    if missing
                    else "is not the file the features were extracted with (its content hash differs)"
                )
                + ", so it is not read; put the original file back at that path, or re-run `featx extract` with "
                "this one and fit again"
            )
    return None


def check_input_size(input_size) -> None:
    """One line unless `input_size` is None (the backbone's own) or a whole number of pixels within INPUT_SIZES."""
    low, high = INPUT_SIZES
    if input_size is None:
        return
    if isinstance(input_size, bool) or not isinstance(input_size, numbers.Integral) or not low <= input_size <= high:
        raise FeatxError(
            f"--input-size {input_size} is not a usable image side; give {low} to {high} pixels "
            "(e.g. 224), or leave it out for the backbone's own size"
        )


@seeded_weight_init(0)  # random init (weights none) must be reproducible, or the cache would never hit
def get_backbone(
    name: str,
    weights: str | None = "imagenet",
    input_size: int | None = None,
    preprocess: str | None = None,
    unsafe: bool = False,
) -> Backbone:
    """Build a backbone by registry name, or load a saved .keras/.h5 model given as a path.

    weights : "imagenet" (downloaded by Keras, or packaged for efficientnet_lite0/1/2; a KerasHub preset's own
        weights), "none" (seeded random init, for timing), or a path to a local weights file.
    name : also a KerasHub preset name, preset folder or hf:// handle (featx.backbones.hub).
    """
    check_input_size(input_size)
    if Path(name).suffix in (".keras", ".h5") and Path(name).exists():
        return _saved_model(Path(name), preprocess, unsafe)
    weights = None if weights in (None, "none") else weights
    if weights not in (None, "imagenet") and not Path(weights).is_file():
        raise FeatxError(
            f"weights file '{weights}' does not exist; pass --weights imagenet, none or a local weights file"
        )
    from featx.backbones.hub import build_hub_backbone, is_hub_backbone

    if is_hub_backbone(name):
        return build_hub_backbone(str(name), weights, input_size, preprocess)
    if name in LITE_VARIANTS:
        from featx.backbones import efficientnet_lite

        size = (input_size or LITE_VARIANTS[name].resolution,) * 2
        model = efficientnet_lite.build_efficientnet_lite(name, weights=weights, input_shape=(*size, 3))
        preprocess_fn, preprocessing = efficientnet_lite.preprocess_input, efficientnet_lite.PREPROCESSING
        family = "efficientnet_lite"
    elif name in KERAS_MODELS:
        from featx.backbones.keras_apps import build_keras_application

        try:
            model, preprocess_fn, preprocessing, size = build_keras_application(name, weights, input_size)
            family = KERAS_MODELS[name][1]
        except Exception as exc:
            if "URL fetch failure" in str(exc) or "fetch" in str(exc).lower():
                raise FeatxError(
                    f"could not download imagenet weights for {name} (no network?); "
                    "pass --weights PATH to a local weights file, or --weights none"
                ) from None
            raise FeatxError(f"could not build {name} with weights '{weights}': {exc}") from None
    else:
        from featx.backbones.hub import preset_names

        if "/" in name or os.sep in name:
            raise FeatxError(
                f"backbone '{name}' is no such file or folder; pass a KerasHub preset folder, a .keras/.h5 model, "
                "or a name from `featx backbones`"
            )

        close = difflib.get_close_matches(name, [*available_backbones(), *preset_names()], n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; run `featx backbones` for the list"
        raise FeatxError(f"unknown backbone '{name}'{hint}")
    model.trainable = False
    return Backbone(name, model, preprocess_fn, preprocessing, size, weights_id(model), feature_info=FAMILIES[family])


def weights_id(model) -> str:
    """Content hash of every weight array: the same name with other weights must never share a cache."""
    digest = hashlib.blake2b(digest_size=16)
    for variable in model.weights:
        value = variable.numpy()
        digest.update(f"{variable.path}:{value.dtype}:{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


# the first bytes of a saved Keras model, by suffix: a .keras file is a zip archive, a .h5 file HDF5 (whose
# signature may follow a user block of 512, 1024, 2048, ... bytes)
SAVED_MODEL_SIGNATURES = {".keras": (b"PK\x03\x04", "a zip archive"), ".h5": (b"\x89HDF\r\n\x1a\n", "an HDF5 file")}


def saved_model_problem(path: Path) -> str | None:
    """Why `path` cannot be a saved Keras model of its suffix (its first bytes are not that format's signature),
    or None; reads a few bytes, before Keras or libhdf5 sees the file."""
    signature, what = SAVED_MODEL_SIGNATURES[path.suffix]
    offsets = [0] + ([512 * 2**k for k in range(12)] if path.suffix == ".h5" else [])
    try:
        with open(path, "rb") as file:
            for offset in offsets:
                file.seek(offset)
                if file.read(len(signature)) == signature:
                    return None
            file.seek(0)
            head = file.read(16)
    except OSError as exc:
        return f"cannot read backbone '{path}': {exc.strerror}"
    text = all(32 <= byte < 127 or byte in b"\t\n\r" for byte in head)
    kind = "empty" if not head else "text" if text else "something else"
    return (
        f"backbone '{path}' is not a Keras model file: a {path.suffix} model is {what}, and this file is {kind}; "
        "pass a model saved by Keras (model.save) or a backbone name (`featx backbones`)"
    )


def _saved_model(path: Path, preprocess: str | None, unsafe: bool) -> Backbone:
    """A fine-tuned model saved by the user; Keras safe mode refuses code (Lambda layers) unless --unsafe.

    Without --preprocess, the family (and so its preprocessing) is inferred from the layer names where they
    are unambiguous; otherwise raw 0-255 pixels are fed, with a note saying so.
    """
    problem = saved_model_problem(path)
    if problem:
        raise FeatxError(problem)
    import keras

    if preprocess is not None and preprocess not in SAVED_MODEL_PREPROCESSING:
        raise FeatxError(f"unknown --preprocess '{preprocess}'; choose one of {', '.join(SAVED_MODEL_PREPROCESSING)}")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=not unsafe)
    except ValueError as exc:
        if "Lambda" in str(exc) or "safe_mode" in str(exc):
            raise FeatxError(
                f"backbone '{path}' contains a Lambda layer, which Keras safe mode refuses because it runs arbitrary "
                "code; pass --unsafe only if you trust the file"
            ) from None
        raise FeatxError(f"cannot load backbone '{path}': {exc}") from None
    except OSError as exc:
        raise FeatxError(f"cannot load backbone '{path}': {exc}") from None
    shape = model.input_shape
    if len(shape) != 4 or shape[-1] != 3 or None in shape[1:3]:
        raise FeatxError(f"backbone '{path}' takes input {shape}; featx needs a fixed-size RGB image input (h, w, 3)")
    family = infer_family(model.layers)
    chosen = preprocess or family or "none"
    model.trainable = False
    return Backbone(
        path.stem,
        model,
        _named_preprocessing(chosen),
        f"saved:{chosen}",
        tuple(shape[1:3]),
        weights_id(model),
        feature_info=FAMILIES[family or "generic"],
        preprocessing_note=preprocessing_note(f"saved:{chosen}", preprocess),
    )


def preprocessing_note(preprocessing: str, given: str | None) -> str | None:
    """Why a saved model gets the preprocessing it gets, when the user did not choose it (shown once by extract and info)."""
    if given is not None or not preprocessing.startswith("saved:"):
        return None
    chosen = preprocessing.removeprefix("saved:")
    if chosen == "none":
        return (
            "warning: the saved model's family is not recognisable from its layer names, so raw 0-255 pixels "
            "were assumed (--preprocess none); if it was trained on other inputs, pass --preprocess with one of "
            f"{', '.join(SAVED_MODEL_PREPROCESSING)}"
        )
    return (
        f"note: preprocessing '{chosen}' inferred from the saved model's layer names; pass --preprocess to override it"
    )


def _named_preprocessing(name: str):
    if name == "none":
        return lambda x: x
    if name == "unit":
        return lambda x: x / 255.0
    if name == "tf":
        return lambda x: x / 127.5 - 1.0
    if name == "efficientnet_lite":
        from featx.backbones.efficientnet_lite import preprocess_input

        return preprocess_input
    import keras

    return getattr(keras.applications, name).preprocess_input

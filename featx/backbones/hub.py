"""KerasHub's vision transformers as frozen backbones: DINOv2 (with and without registers), DINOv3, the CLIP and
SigLIP image encoders, and ViT (`pip install "featx[hub]"`).

A KerasHub backbone is named one of three ways, and each is first resolved to a local preset folder:
- a preset name (`dinov2_small`, `clip_vit_base_patch16`, ...), from KerasHub's own preset tables, which are read
  from its source files without importing it (no TensorFlow: `featx backbones` lists them at once). A preset
  downloaded before is taken from the kagglehub cache (KAGGLEHUB_CACHE, default ~/.cache/kagglehub) with no network;
  one that is not is downloaded through kagglehub, and where that fails (offline) it is one line naming the cache
  folder and how to fill it from a connected machine.
- a local preset folder: config.json and model.weights.h5, as `save_to_preset` or a download leaves them.
- `hf://org/name`: a Hugging Face checkpoint that KerasHub converts (DINOv2, DINOv3 and ViT in KerasHub 0.32), from
  the Hugging Face cache or downloaded.

The folder's config.json is checked before KerasHub reads it: a known vision class (a whole CLIP or SigLIP model
gives its vision tower; a text encoder, or a class featx has no builder for, is one line). KerasHub then builds the
model, and featx rebuilds it as one functional graph of copies of its layers (the same configs and weights),
named alike in every family: `embed`, [`pre_norm`,] `block1`..`blockN`, `norm` (the final norm: what the KerasHub
backbone returns) and, where the family has one, its image embedding (`pooler` and `projection` of CLIP, the
attention-pool `head` of SigLIP). So every block output is a node: the extractor pools any set of them in one
forward pass, and featx.backbones.cuts finds the cuts of the chain, as for a CNN. Preprocessing is the preset's own
image converter (image_converter.json: scale and offset, interpolation, crop to aspect ratio), read as data; a
folder without one gets its family's published defaults, with a note saying so.
"""

from __future__ import annotations

import ast
import difflib
import functools
import importlib.util
import inspect
import json
import os
import socket
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from featx.backbones.base import Backbone, TokenLayout
from featx.backbones.efficientnet_lite import VARIANTS as LITE_VARIANTS
from featx.backbones.feature_info import FAMILIES
from featx.backbones.keras_apps import KERAS_MODELS
from featx.errors import FeatxError

EXTRA = 'pip install "featx[hub]"'
HF_SCHEME = "hf://"
CONFIG, WEIGHTS, SHARDED = "config.json", "model.weights.h5", "model.weights.json"
CONVERTER, PREPROCESSOR, HF_PREPROCESSOR = "image_converter.json", "preprocessor.json", "preprocessor_config.json"
HF_WEIGHTS, HF_INDEX = "model.safetensors", "model.safetensors.index.json"
MAX_JSON = 16 * 2**20  # a config or converter file larger than this is not one
PROBE_SECONDS = 10  # how long a download waits for the first connection before saying it is offline
BUILDER_VERSION = "1"  # bump when featx's graph of a KerasHub model changes its numbers

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
OPENAI_CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


@dataclass(frozen=True)
class HubFamily:
    """One KerasHub vision family, as data.

    presets : the folder under keras_hub/src/models whose <presets>_presets.py holds its preset table.
    encoders : KerasHub classes that are its image encoder; whole : classes that hold one as `vision_encoder` (the
        two-tower CLIP and SigLIP models: featx takes the vision tower); text : its text encoders (refused).
    hf_types : Hugging Face model_type values KerasHub 0.32 converts into it.
    mean, std, interpolation : the preprocessing its papers and Hugging Face processors use, for a preset folder
        without an image converter.
    resizable : --input-size other than the native one works (DINOv2: KerasHub interpolates the position
        embeddings; DINOv3: rotary position embeddings); the others' position embeddings have a fixed length.
    """

    family: str
    presets: str
    encoders: tuple[str, ...]
    whole: tuple[str, ...] = ()
    text: tuple[str, ...] = ()
    hf_types: tuple[str, ...] = ()
    mean: tuple[float, ...] = IMAGENET[0]
    std: tuple[float, ...] = IMAGENET[1]
    interpolation: str = "bicubic"
    resizable: bool = False
    doc: str = ""


HUB_FAMILIES = {
    f.family: f
    for f in (
        HubFamily(
            "dinov2",
            "dinov2",
            ("DINOV2Backbone",),
            hf_types=("dinov2", "dinov2_with_registers"),
            resizable=True,
            doc="DINOv2 (self-supervised ViT; with registers: 4 register tokens after CLS)",
        ),
        HubFamily(
            "dinov3",
            "dinov3",
            ("DINOV3Backbone",),
            hf_types=("dinov3_vit",),
            interpolation="bilinear",
            resizable=True,
            doc="DINOv3 (self-supervised ViT, rotary position embeddings, 4 registers)",
        ),
        HubFamily(
            "clip",
            "clip",
            ("CLIPVisionEncoder",),
            whole=("CLIPBackbone",),
            text=("CLIPTextEncoder",),
            mean=OPENAI_CLIP[0],
            std=OPENAI_CLIP[1],
            doc="CLIP's image encoder (contrastive image-text ViT; embedding = its projection of the CLS token)",
        ),
        HubFamily(
            "siglip",
            "siglip",
            ("SigLIPVisionEncoder",),
            whole=("SigLIPBackbone",),
            text=("SigLIPTextEncoder",),
            mean=HALF[0],
            std=HALF[1],
            doc="SigLIP / SigLIP 2's image encoder (no CLS token; embedding = its attention-pool head)",
        ),
        HubFamily(
            "vit",
            "vit",
            ("ViTBackbone",),
            hf_types=("vit",),
            mean=HALF[0],
            std=HALF[1],
            interpolation="bilinear",
            doc="ViT (supervised ImageNet-21k / 1k)",
        ),
    )
}


# ---------------------------------------------------------------------------------------------------- names
def keras_hub_root() -> Path | None:
    """keras_hub's package folder, found without importing it (None: not installed)."""
    try:
        spec = importlib.util.find_spec("keras_hub")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@functools.lru_cache(maxsize=1)
def hub_presets() -> dict[str, dict[str, dict]]:
    """{family: {preset: {"description", "params", "handle"}}} from KerasHub's own preset tables, offline and without
    importing KerasHub (its `backbone_presets` dicts are literals, read with ast.literal_eval). Empty when KerasHub is
    not installed; a table featx cannot read is taken from the imported class instead."""
    root = keras_hub_root()
    if root is None:
        return {}
    tables = {}
    for family, info in HUB_FAMILIES.items():
        try:
            table = _literal_table(root / "src" / "models" / info.presets / f"{info.presets}_presets.py")
        except (OSError, SyntaxError, ValueError, KeyError):
            table = _imported_table(info)
        tables[family] = {
            name: {
                "description": str(entry.get("metadata", {}).get("description", "")).strip(),
                "params": entry.get("metadata", {}).get("params"),
                "handle": entry.get("kaggle_handle", ""),
            }
            for name, entry in table.items()
        }
    return tables


def _literal_table(path: Path) -> dict:
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "backbone_presets" for t in node.targets):
            return ast.literal_eval(node.value)
    raise KeyError("backbone_presets")


def _imported_table(info: HubFamily) -> dict:
    import keras_hub

    cls = getattr(keras_hub.models, (info.whole or info.encoders)[0])
    return {name: {"metadata": entry.get("metadata", {}), **entry} for name, entry in cls.presets.items()}


def preset_names() -> dict[str, str]:
    """{preset: family} of every KerasHub preset featx can build."""
    return {name: family for family, table in hub_presets().items() for name in table}


def is_hub_backbone(name) -> bool:
    """Whether `name` is a KerasHub backbone (a preset name, an hf:// handle or a folder), decided without importing
    anything heavy: featx's cache key and warm check need it before any model is built."""
    name = str(name)
    if name in KERAS_MODELS or name in LITE_VARIANTS:  # a registry name, even where a folder has that name
        return False
    return name.startswith(HF_SCHEME) or Path(name).is_dir() or name in preset_names() or _looks_like_preset(name)


def _looks_like_preset(name: str) -> bool:
    """A name of a KerasHub family when KerasHub is not installed (so the error names the extra)."""
    return keras_hub_root() is None and name.split("_")[0] in {f.presets for f in HUB_FAMILIES.values()} | {"siglip2"}


def hub_name(name: str) -> str:
    """The backbone's name in cache entry names and tables: a preset's, a folder's or an hf:// repository's last
    part (Path(name).stem, as the warm check reads it)."""
    return Path(str(name).rstrip("/")).stem or str(name)


def listing() -> list[tuple[str, list[tuple[str, str]]]]:
    """[(family line, [(preset, description)])] for `featx backbones`, offline."""
    return [
        (
            f"{family}: {HUB_FAMILIES[family].doc}",
            [(name, _describe(entry)) for name, entry in table.items()],
        )
        for family, table in hub_presets().items()
    ]


def _describe(entry: dict) -> str:
    params = entry.get("params")
    size = f"{params / 1e6:,.0f}M params" if isinstance(params, (int, float)) and params >= 1e6 else ""
    return "; ".join(part for part in (size, entry.get("description", "")) if part)


# ---------------------------------------------------------------------------------------------- local files
def hub_files(name: str, weights) -> dict[str, str]:
    """{role: path} of the files a local preset folder backbone reads (config, weights, image converter), and a
    weights file given as --weights; a preset name's or hf:// handle's downloads are not listed: the weights hash
    (weights_id) checks them instead, as for keras.applications' own downloads."""
    folder = Path(str(name))
    given = {"weights": str(weights)} if weights not in (None, "none", "imagenet") else {}  # a .weights.h5 file
    if str(name).startswith(HF_SCHEME) or not folder.is_dir():
        return given
    files = {"config": folder / CONFIG, **given}
    if weights == "imagenet":
        for role, path in _weights_files(folder).items():
            files[role] = path
    for role, file in (
        ("image_converter", CONVERTER),
        ("preprocessor", PREPROCESSOR),
        ("hf_preprocessor", HF_PREPROCESSOR),
    ):
        if (folder / file).is_file():
            files[role] = folder / file
    return {role: str(path) for role, path in files.items()}


def _weights_files(folder: Path) -> dict[str, Path]:
    """{role: path} of a preset folder's weights: one file, or a shard index and its shards (KerasHub or
    safetensors); {} when it has none."""
    for single, index, shards in (
        (WEIGHTS, SHARDED, "model_*.weights.h5"),
        (HF_WEIGHTS, HF_INDEX, "model-*.safetensors"),
    ):
        if (folder / single).is_file():
            return {"weights": folder / single}
        if (folder / index).is_file():
            return {
                "weights": folder / index,
                **{f"weights_{n}": p for n, p in enumerate(sorted(folder.glob(shards)), 1)},
            }
    return {}


def _read_json(path: Path, what: str) -> dict:
    try:
        if path.stat().st_size > MAX_JSON:
            raise FeatxError(f"{what} '{path}' is larger than {MAX_JSON // 2**20} MB, so it is not a config file")
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FeatxError(f"cannot read {what} '{path}': {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FeatxError(f"{what} '{path}' is not valid JSON ({exc}); copy the preset folder again") from None
    if not isinstance(data, dict):
        raise FeatxError(f"{what} '{path}' is not a JSON object; copy the preset folder again")
    return data


# ---------------------------------------------------------------------------------------------- resolving
def preset_folder(name: str, weights) -> Path:
    """The local preset folder of backbone `name` (a folder, a preset name or hf:// handle), downloading a preset or
    checkpoint that is not cached yet; one line when that cannot be done."""
    if name.startswith(HF_SCHEME):
        return _hf_folder(name)
    folder = Path(name)
    if folder.is_dir():
        return folder
    family = preset_names().get(name)
    if family is None:
        close = difflib.get_close_matches(name, list(preset_names()), n=3)
        raise FeatxError(
            f"unknown KerasHub preset '{name}'"
            + (f"; did you mean {', '.join(close)}?" if close else "; run `featx backbones` for the list")
        )
    return _kaggle_folder(name, hub_presets()[family][name]["handle"], weights)


def _kaggle_folder(name: str, handle: str, weights) -> Path:
    """A preset's folder in the kagglehub cache, downloaded through kagglehub (the whole preset) when the files
    featx needs are not there; offline, one line naming that folder and how to fill it."""
    try:
        import kagglehub
        from kagglehub.cache import Cache, get_cached_path
        from kagglehub.handle import parse_model_handle
    except ImportError:
        raise FeatxError(f"downloading KerasHub presets needs kagglehub; {EXTRA}") from None
    parsed = parse_model_handle(handle.removeprefix("kaggle://"))
    folder, cache = Path(get_cached_path(parsed)), Cache()
    needed = [CONFIG, WEIGHTS] if weights == "imagenet" else [CONFIG]
    if cache.load_from_cache(parsed) or all(cache.load_from_cache(parsed, file) for file in needed):
        return folder
    where = os.environ.get("KAGGLEHUB_CACHE", "~/.cache/kagglehub")
    fix = (
        f"on a machine with internet run `featx layers {name} --weights imagenet` (it downloads the preset), then copy "
        f"its folder {folder} to the same path here (the cache is KAGGLEHUB_CACHE, default ~/.cache/kagglehub), or "
        f"pass the copied folder itself as --backbone FOLDER"
    )
    offline = unreachable("api.kaggle.com", "KAGGLE_API_ENDPOINT")
    if offline:
        raise FeatxError(f"KerasHub preset '{name}' is not downloaded (kagglehub cache {where}) and {offline}; {fix}")
    try:
        return Path(kagglehub.model_download(handle.removeprefix("kaggle://")))
    except Exception as exc:  # noqa: BLE001  kagglehub raises requests', its own and OS errors alike
        raise FeatxError(
            f"KerasHub preset '{name}' is not downloaded (kagglehub cache {where}) and downloading it failed "
            f"({_reason(exc)}); {fix}"
        ) from None


def _hf_folder(handle: str) -> Path:
    """An hf:// checkpoint's snapshot folder in the Hugging Face cache (downloaded when missing): config.json, the
    safetensors weights and the image processor's config. huggingface_hub retries a failed request for about 25 s;
    featx asks for config.json's metadata once without retries first, so offline is one line at once."""
    repo = handle[len(HF_SCHEME) :].strip("/")
    try:
        import huggingface_hub
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:
        raise FeatxError(f"hf:// backbones need huggingface_hub; {EXTRA}") from None
    patterns = [CONFIG, HF_WEIGHTS, HF_INDEX, "model-*.safetensors", HF_PREPROCESSOR]
    try:
        return Path(huggingface_hub.snapshot_download(repo, allow_patterns=patterns, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        pass
    except ValueError as exc:  # a malformed repository id
        raise FeatxError(f"'{handle}' is not a Hugging Face model handle ({_reason(exc)}); use hf://org/name") from None
    cache = huggingface_hub.constants.HF_HUB_CACHE
    fix = (
        f"on a machine with internet run `featx layers {handle} --weights imagenet` (or `hf download {repo}`), then copy "
        f"the Hugging Face cache folder models--{repo.replace('/', '--')} into {cache} here, or pass a folder holding "
        f"its {CONFIG} and {HF_WEIGHTS} as --backbone FOLDER"
    )
    try:
        probe = huggingface_hub.get_hf_file_metadata
        once = {"retry_on_errors": False} if "retry_on_errors" in inspect.signature(probe).parameters else {}
        probe(huggingface_hub.hf_hub_url(repo, CONFIG), timeout=PROBE_SECONDS, **once)
        return Path(huggingface_hub.snapshot_download(repo, allow_patterns=patterns))
    except Exception as exc:  # noqa: BLE001  httpx, huggingface_hub and OS errors alike
        raise FeatxError(
            f"Hugging Face model '{handle}' is not in the Hugging Face cache ({cache}) and cannot be downloaded "
            f"({_reason(exc)}); {fix}"
        ) from None


def unreachable(host: str, endpoint_variable: str) -> str | None:
    """Why `host` cannot be reached (no name resolution, or no connection within PROBE_SECONDS), or None. kagglehub's
    API request has no timeout of its own: on a network that drops packets it would wait for the system's TCP
    timeout (minutes). With a proxy or another endpoint configured the probe says nothing (None)."""
    proxies = urllib.request.getproxies()
    if os.environ.get(endpoint_variable) or proxies.get("https") or proxies.get("all"):
        return None
    try:
        socket.create_connection((host, 443), timeout=PROBE_SECONDS).close()
    except socket.gaierror:
        return f"{host} cannot be resolved (no network?)"
    except OSError as exc:
        return f"{host} cannot be reached ({exc.strerror or type(exc).__name__}; no network?)"
    return None


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    for marker in ("Failed to resolve", "Name or service not known", "Connection refused", "timed out"):
        if marker in text:
            return f"{type(exc).__name__}: {marker.lower()}; no network?"
    return f"{type(exc).__name__}: {text[:160]}" if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------- the config
@dataclass(frozen=True)
class Preset:
    """What a preset folder's config.json says, checked: its family, the KerasHub class and whether it is a whole
    two-tower model (featx takes `vision_encoder`), or a Hugging Face checkpoint KerasHub converts."""

    folder: Path
    family: HubFamily
    class_name: str
    whole: bool = False
    hugging_face: bool = False


def read_preset(folder: Path, where: str) -> Preset:
    """The checked description of preset folder `folder` (`where` names it in errors): config.json must be a KerasHub
    vision class featx builds, or a Hugging Face config of a model_type KerasHub converts into one."""
    config_path = folder / CONFIG
    if not config_path.is_file():
        raise FeatxError(
            f"'{where}' is not a KerasHub preset folder: it has no {CONFIG} (a preset folder holds {CONFIG} and "
            f"{WEIGHTS}, as save_to_preset or a download leave them); pass the whole folder"
        )
    config = _read_json(config_path, "preset config")
    registered = config.get("registered_name")
    if isinstance(registered, str):
        class_name = registered.rpartition(">")[2]
        for family in HUB_FAMILIES.values():
            if class_name in family.encoders:
                return Preset(folder, family, class_name)
            if class_name in family.whole:
                vision = (config.get("config") or {}).get("vision_encoder") or {}
                inner = str(vision.get("registered_name", "")).rpartition(">")[2]
                if inner not in family.encoders:
                    raise FeatxError(
                        f"'{where}' is a {class_name} whose vision_encoder is '{inner or 'missing'}', not one of "
                        f"{', '.join(family.encoders)}; save the model again with save_to_preset"
                    )
                return Preset(folder, family, class_name, whole=True)
            if class_name in family.text:
                tower = family.whole[0] if family.whole else family.encoders[0]
                raise FeatxError(
                    f"'{where}' is a text encoder ({class_name}); featx needs an image encoder: pass the whole "
                    f"{family.family} model's preset (featx takes its vision tower, {family.encoders[0]}), or save "
                    f"its vision tower alone: {tower}.from_preset(...).vision_encoder.save_to_preset(FOLDER)"
                )
        raise FeatxError(
            f"'{where}' holds a KerasHub {class_name}, which featx has no builder for; it builds "
            f"{', '.join(c for f in HUB_FAMILIES.values() for c in (*f.encoders, *f.whole))}"
        )
    model_type = config.get("model_type")
    if isinstance(model_type, str):
        for family in HUB_FAMILIES.values():
            if model_type in family.hf_types:
                return Preset(folder, family, model_type, hugging_face=True)
        convertible = [t for f in HUB_FAMILIES.values() for t in f.hf_types]
        raise FeatxError(
            f"'{where}' is a Hugging Face '{model_type}' model, which KerasHub cannot convert into a vision backbone "
            f"featx builds; KerasHub converts {', '.join(convertible)} (CLIP and SigLIP: use a KerasHub preset)"
        )
    raise FeatxError(
        f"'{where}': {CONFIG} is neither a KerasHub preset config (registered_name) nor a Hugging Face model config "
        "(model_type); pass a folder that save_to_preset or a download wrote"
    )


# ---------------------------------------------------------------------------------------------- building
def build_hub_backbone(name: str, weights, input_size: int | None, preprocess: str | None) -> Backbone:
    """The featx Backbone of KerasHub backbone `name` (preset, folder or hf:// handle).

    weights : "imagenet" for the preset's own pretrained weights (whatever data they were trained on), "none" for
        a random init of its config (seeded by the caller), or a .weights.h5 file of the same architecture.
    input_size : None or the native size; another size where the family allows it (HubFamily.resizable).
    """
    if preprocess is not None:
        raise FeatxError(
            f"--preprocess applies to saved .keras models; KerasHub backbone '{name}' uses its own image converter"
        )
    if keras_hub_root() is None:
        raise FeatxError(f"KerasHub backbone '{name}' needs KerasHub; {EXTRA} (keras-hub >= 0.32)")
    if weights not in (None, "none", "imagenet") and not str(weights).endswith(".weights.h5"):
        raise FeatxError(
            f"--weights '{weights}' for KerasHub backbone '{name}' must be a Keras .weights.h5 file of the same "
            "architecture, imagenet (the preset's own weights) or none"
        )
    folder = preset_folder(name, weights)
    preset = read_preset(folder, name)
    pretrained = weights == "imagenet"
    if pretrained and not _weights_files(folder):
        expected = HF_WEIGHTS if preset.hugging_face else WEIGHTS
        raise FeatxError(
            f"preset folder '{name}' has no weights file ({expected}); copy the whole folder (as save_to_preset or a "
            "download leave it), or pass --weights none for random weights of its config"
        )
    _, vision, whole = _keras_hub_model(preset, name, pretrained, weights, input_size)
    graph, tokens = GRAPHS[preset.family.family](vision, whole)
    graph.trainable = False
    converter = _converter(folder, preset.family)
    height, width = (int(d) for d in graph.input_shape[1:3])
    return Backbone(
        hub_name(name),
        graph,
        converter.preprocess,
        converter.name,
        (height, width),
        hub_weights_id(graph),
        version=f"hub{BUILDER_VERSION}-keras_hub{_keras_hub_version()}",
        feature_info=FAMILIES[preset.family.family],
        preprocessing_note=converter.note,
        tokens=tokens,
        weights_hash=hub_weights_id,
        interpolation=converter.interpolation,
        crop=converter.crop,
    )


def hub_weights_id(graph) -> str:
    """Content hash of every weight array of featx's graph, each named by its featx layer and position in it.

    featx.backbones.weights_id names arrays by their Keras paths, which for KerasHub's layers include sublayer names
    Keras numbers per process (`multi_head_attention_3`): the same weights built twice in one process (an extract,
    then a tail fit) would hash differently. The layer names here are featx's own, the same in every build."""
    import hashlib

    digest = hashlib.blake2b(digest_size=16)
    for layer in graph.layers:
        for number, variable in enumerate(layer.weights):
            value = variable.numpy()
            digest.update(f"{layer.name}/{number}:{value.dtype}:{value.shape}".encode())
            digest.update(value.tobytes())
    return digest.hexdigest()


def _keras_hub_version() -> str:
    import keras_hub

    return keras_hub.__version__


def _keras_hub_model(preset: Preset, name: str, pretrained: bool, weights, input_size):
    """(KerasHub model, its vision encoder, the whole two-tower model or None), built from the checked folder."""
    import keras_hub

    loader = keras_hub.models.Backbone
    options = {}
    try:
        native = _native_size(preset)
    except (KeyError, TypeError, ValueError):
        native = None
    if input_size is not None and input_size != native:
        if not preset.family.resizable:
            raise FeatxError(
                f"{name} ({preset.family.family}) has position embeddings of a fixed length, which KerasHub does not "
                f"interpolate; use its native --input-size {native} (or leave --input-size out)"
            )
        options["image_shape"] = (input_size, input_size, 3)
    try:
        model = loader.from_preset(str(preset.folder), load_weights=pretrained, **options)
        if weights not in (None, "none", "imagenet"):
            model.load_weights(weights)
    except FeatxError:
        raise
    except Exception as exc:  # noqa: BLE001  KerasHub raises ValueError, KeyError, OSError, h5py errors...
        raise FeatxError(f"KerasHub cannot build '{name}' from {preset.folder}: {_reason(exc)}") from None
    vision = model.vision_encoder if preset.whole else model
    return model, vision, (model if preset.whole else None)


def _native_size(preset: Preset) -> int | None:
    """The image side the preset's config declares (its image_shape), read without building it."""
    config = _read_json(preset.folder / CONFIG, "preset config")
    if preset.hugging_face:
        return int(config["image_size"]) if "image_size" in config else None
    inner = config["config"]["vision_encoder"]["config"] if preset.whole else config["config"]
    return int(inner["image_shape"][0])


def _call(layer, name: str, *args, shape=None, **kwargs):
    """Call a copy of KerasHub's `layer` (its config and weights) named `name` on `args`: featx's graph is made of
    layers called there only, since Keras's `layer.output` (what the extractor, cuts and export read) is a layer's
    first call, and KerasHub's layers were first called in KerasHub's own graph. The weights are copied exactly.
    shape : the output shape (batch left out) where the layer declares a wrong one."""
    config = {**layer.get_config(), "name": name}
    try:
        copy = type(layer).from_config(config)
    except (TypeError, ValueError):  # a config with keys its own __init__ refuses (KerasHub 0.32's ViT embedding)
        accepted = set(inspect.signature(type(layer).__init__).parameters) | {"name", "trainable", "dtype"}
        copy = type(layer).from_config({k: v for k, v in config.items() if k in accepted})
    if shape is not None:
        copy.compute_output_shape = lambda input_shape: (input_shape[0], *shape)
    outputs = copy(*args, **kwargs)
    copy.set_weights(layer.get_weights())
    return outputs


def _patch_grid(size: tuple[int, int], patch) -> tuple[int, int]:
    patch = (patch, patch) if isinstance(patch, int) else tuple(patch)
    return size[0] // int(patch[0]), size[1] // int(patch[1])


def _graph(images, outputs, tokens: TokenLayout, name: str):
    """The featx model, checked: its token sequences hold exactly tokens.n_tokens tokens."""
    import keras

    model = keras.Model(images, outputs, name=name)
    found = int(model.get_layer("block1").output.shape[1])
    if found != tokens.n_tokens:
        raise FeatxError(
            f"featx read {tokens.describe()} ({tokens.n_tokens} tokens) from the {name} config, but its blocks output "
            f"{found} tokens; this KerasHub version is not one featx knows (keras-hub 0.32)"
        )
    return model


def _images(vision):
    import keras

    shape = tuple(int(d) for d in vision.image_shape)
    return keras.Input(shape, name="images")


def _dinov2(vision, whole):
    images = _images(vision)
    tokens = TokenLayout(1, int(vision.num_register_tokens), _patch_grid(images.shape[1:3], vision.patch_size))
    x = _call(vision.embeddings, "embed", images)
    for number, block in enumerate(vision.encoder.layers, 1):
        x = _call(block, f"block{number}", x)
    x = _call(vision.layernorm, "norm", x)
    return _graph(images, x, tokens, "dinov2"), tokens


def _dinov3(vision, whole):
    images = _images(vision)
    tokens = TokenLayout(1, int(vision.num_register_tokens), _patch_grid(images.shape[1:3], vision.patch_size))
    x = _call(vision.embeddings, "embed", images)
    rope = _call(vision.rope_embedding, "rope", images)  # rotary position embeddings: from the image size only
    for number, block in enumerate(vision.encoder.layers, 1):
        x = _call(block, f"block{number}", x, position_embeddings=rope, num_prefix_tokens=tokens.prefix)
    x = _call(vision.layernorm, "norm", x)
    return _graph(images, x, tokens, "dinov3"), tokens


def _clip(vision, whole):
    images = _images(vision)
    tokens = TokenLayout(1, 0, _patch_grid(images.shape[1:3], vision.patch_size))
    x = _call(vision.embedding, "embed", images)
    x = _call(vision.pre_layer_norm, "pre_norm", x)
    for number, block in enumerate(vision.encoder_layers, 1):
        x = _call(block, f"block{number}", x)
    x = _call(vision.layer_norm, "norm", x)
    if whole is not None:  # the image embedding: the projection of the final-normed CLS token
        x = _call(whole.vision_pooler, "pooler", x)
        x = _call(whole.vision_projection, "projection", x)
    return _graph(images, x, tokens, "clip"), tokens


def _siglip(vision, whole):
    images = _images(vision)
    tokens = TokenLayout(0, 0, _patch_grid(images.shape[1:3], vision.patch_size))
    # KerasHub 0.32's SigLIP embedding declares one token more than it gives (as if it had a CLS token)
    x = _call(vision.embedding, "embed", images, shape=(tokens.n_tokens, int(vision.hidden_dim)))
    for number, block in enumerate(vision.encoder_layers, 1):
        x = _call(block, f"block{number}", x)
    x = _call(vision.post_layer_norm, "norm", x)
    x = _call(vision.head, "head", x)  # multi-head attention pooling: the image embedding
    return _graph(images, x, tokens, "siglip"), tokens


def _vit(vision, whole):
    images = _images(vision)
    embedding, encoder = vision.layers[1], vision.layers[2]  # ViTPatchingAndEmbedding, ViTEncoder (blocks inside)
    tokens = TokenLayout(int(bool(vision.use_class_token)), 0, _patch_grid(images.shape[1:3], vision.patch_size))
    x = _call(embedding, "embed", images)
    x = _call(encoder.dropout, "embed_dropout", x)
    for number, block in enumerate(encoder.encoder_layers, 1):
        x = _call(block, f"block{number}", x)
    x = _call(encoder.layer_norm, "norm", x)
    return _graph(images, x, tokens, "vit"), tokens


GRAPHS = {"dinov2": _dinov2, "dinov3": _dinov3, "clip": _clip, "siglip": _siglip, "vit": _vit}


# ---------------------------------------------------------------------------------------------- preprocessing
@dataclass(frozen=True)
class Converter:
    """A preset's image preprocessing: resize (interpolation, crop to aspect ratio) when decoding, then
    x * scale + offset on 0-255 pixels, per channel, in the graph. name : its stable description (cache key)."""

    scale: tuple[float, ...]
    offset: tuple[float, ...]
    interpolation: str
    crop: bool
    source: str
    note: str | None = None

    @property
    def name(self) -> str:
        numbers = lambda values: ",".join(f"{v:.7g}" for v in values)
        return (
            f"keras_hub:{self.interpolation}{'+crop' if self.crop else ''}:"
            f"scale={numbers(self.scale)}:offset={numbers(self.offset)}"
        )

    def preprocess(self, images):
        """float32 0-255 RGB images (batch, h, w, 3) -> the model's input."""
        import numpy as np

        return images * np.asarray(self.scale, np.float32) + np.asarray(self.offset, np.float32)


def _converter(folder: Path, family: HubFamily) -> Converter:
    """The folder's image converter (KerasHub's image_converter.json, or the one inside preprocessor.json; a Hugging
    Face checkpoint's preprocessor_config.json), else the family's defaults with a note."""
    from featx.sources.decode import RESAMPLING

    config = None
    if (folder / CONVERTER).is_file():
        config, source = _read_json(folder / CONVERTER, "image converter").get("config"), CONVERTER
    elif (folder / PREPROCESSOR).is_file():
        inner = (_read_json(folder / PREPROCESSOR, "preprocessor").get("config") or {}).get("image_converter")
        config, source = (inner or {}).get("config"), PREPROCESSOR
    if isinstance(config, dict):
        scale, offset = _per_channel(config.get("scale"), 1.0), _per_channel(config.get("offset"), 0.0)
        interpolation = str(config.get("interpolation", "bilinear"))
        if interpolation not in RESAMPLING:
            interpolation = "bilinear"
        return Converter(scale, offset, interpolation, bool(config.get("crop_to_aspect_ratio", True)), source)
    if (folder / HF_PREPROCESSOR).is_file():
        hf = _read_json(folder / HF_PREPROCESSOR, "image processor config")
        mean = _per_channel(hf.get("image_mean"), 0.0)
        std = _per_channel(hf.get("image_std"), 1.0)
        rescale = float(hf.get("rescale_factor", 1 / 255)) if hf.get("do_rescale", True) else 1.0
        if not hf.get("do_normalize", True):
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        interpolation = {0: "nearest", 1: "lanczos3", 2: "bilinear", 3: "bicubic"}.get(hf.get("resample"), "bicubic")
        return Converter(
            tuple(rescale / s for s in std),
            tuple(-m / s for m, s in zip(mean, std)),
            interpolation,
            bool(hf.get("do_center_crop", False)),
            HF_PREPROCESSOR,
        )
    return Converter(
        tuple(1 / 255 / s for s in family.std),
        tuple(-m / s for m, s in zip(family.mean, family.std)),
        family.interpolation,
        True,
        "default",
        note=(
            f"note: preset folder {folder} has no image converter ({CONVERTER}), so {family.family}'s published "
            f"preprocessing is used: mean {list(family.mean)}, std {list(family.std)} of 0-1 pixels, "
            f"{family.interpolation} resize of the centred crop"
        ),
    )


def _per_channel(value, default: float) -> tuple[float, float, float]:
    if value is None:
        return (default,) * 3
    if isinstance(value, (int, float)):
        return (float(value),) * 3
    values = tuple(float(v) for v in value)
    if len(values) == 1:
        return values * 3
    if len(values) != 3:
        raise FeatxError(f"an image converter gives {len(values)} per-channel values; featx feeds RGB images (3)")
    return values

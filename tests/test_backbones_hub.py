"""KerasHub vision transformers as backbones (featx/backbones/hub.py): tiny random models of each family, built from a
config (no download), saved with save_to_preset to a folder once per module and extracted by featx from that folder.

featx's features of every block and pooling must equal the KerasHub model's own outputs pooled in numpy; the token
layout (CLS, registers, patches) must be the config's; bad inputs are one line with nothing written; the download
path is exercised up to the network (an unreachable proxy stands for no network, so the tests behave the same on a
connected machine).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY
from test_backbones_layers import numpy_grid

import featx
from featx.backbones.base import TokenLayout
from featx.backbones.hub import HF_SCHEME, hub_presets
from featx.errors import FeatxError

from helpers import assert_one_line_error, cli, extract

# KerasHub's own models take {"images": x}; the references call them with x (the same tensor), which Keras warns about
pytestmark = pytest.mark.filterwarnings("ignore:The structure of `inputs`:UserWarning")
ROOT = Path(__file__).resolve().parent.parent
SIDE, PATCH, WIDTH, HIDDEN, BLOCKS = 28, 4, 16, 32, 2  # 7 x 7 patches of width 16, 2 blocks
EPS = float(np.finfo(np.float32).eps)
T = 64  # grid:64 on a 7x7x16 patch grid: k = int(sqrt(64 // 16)) = 2, window 3, 2x2 cells (64 columns)
UNREACHABLE = "http://127.0.0.1:9"  # a proxy nobody listens on: every download stops at the network boundary
QUIET = {"log": None, "progress": False}
FAMILIES = ("dinov2", "dinov2_registers", "dinov3", "clip", "siglip", "vit")


# ---- tiny presets, saved once per module ------------------------------------------------------------------------
def _converter(cls, mean, std, interpolation):
    return cls(
        image_size=(SIDE, SIDE),
        scale=[1 / 255 / s for s in std],
        offset=[-m / s for m, s in zip(mean, std)],
        interpolation=interpolation,
    )


@pytest.fixture(scope="module")
def presets(tmp_path_factory):
    """{family: folder} of tiny random KerasHub models saved with save_to_preset (each with its image converter,
    but ViT, whose folder has none: featx then uses ViT's published preprocessing), and "clip_text" (a text
    encoder) for the refusal."""
    import keras_hub

    models, layers = keras_hub.models, keras_hub.layers
    root = tmp_path_factory.mktemp("hub_presets")
    common = {"patch_size": PATCH, "num_layers": BLOCKS, "num_heads": 2, "hidden_dim": WIDTH}
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    clip_text = {"vocabulary_size": 50, "embedding_dim": WIDTH, "hidden_dim": WIDTH, "num_layers": 1, "num_heads": 2}
    clip_text.update(intermediate_dim=HIDDEN, max_sequence_length=8)
    dinov2 = {
        **common,
        "intermediate_dim": HIDDEN,
        "image_shape": (SIDE, SIDE, 3),
        "position_embedding_shape": (32, 32, 3),
    }
    built = {
        "dinov2": (models.DINOV2Backbone(**dinov2), _converter(layers.DINOV2ImageConverter, *imagenet, "bicubic")),
        "dinov2_registers": (
            models.DINOV2Backbone(**dinov2, num_register_tokens=4),
            _converter(layers.DINOV2ImageConverter, *imagenet, "bicubic"),
        ),
        "dinov3": (
            models.DINOV3Backbone(
                **common, intermediate_dim=HIDDEN, num_register_tokens=2, image_shape=(SIDE, SIDE, 3)
            ),
            _converter(layers.DINOV3ImageConverter, *imagenet, "bilinear"),
        ),
        "clip": (
            models.CLIPBackbone(
                vision_encoder=models.CLIPVisionEncoder(**common, intermediate_dim=HIDDEN, image_shape=(SIDE, SIDE, 3)),
                text_encoder=models.CLIPTextEncoder(**clip_text),
                projection_dim=8,
            ),
            _converter(
                layers.CLIPImageConverter,
                (0.48145466, 0.4578275, 0.40821073),
                (0.26862954, 0.26130258, 0.27577711),
                "bicubic",
            ),
        ),
        "siglip": (
            models.SigLIPVisionEncoder(**common, intermediate_dim=HIDDEN, image_shape=(SIDE, SIDE, 3)),
            _converter(layers.SigLIPImageConverter, (0.5,) * 3, (0.5,) * 3, "bicubic"),
        ),
        "vit": (
            models.ViTBackbone(
                image_shape=(SIDE, SIDE, 3),
                patch_size=PATCH,
                num_layers=BLOCKS,
                num_heads=2,
                hidden_dim=WIDTH,
                mlp_dim=HIDDEN,
            ),
            None,
        ),
        "clip_text": (
            models.CLIPTextEncoder(**clip_text),
            None,
        ),
    }
    folders = {}
    for family, (model, converter) in built.items():
        folders[family] = root / family
        model.save_to_preset(str(folders[family]))
        if converter is not None:
            converter.save_to_preset(str(folders[family]))
    return folders


@pytest.fixture(scope="module")
def images(elpv_folder):
    """Paths of 4 real ELPV cells (300 x 300 px, two classes)."""
    return sorted(str(p) for p in elpv_folder.rglob("*.png"))[::5][:4]


# ---- numpy references -----------------------------------------------------------------------------------------
def numpy_pool(tokens: np.ndarray, pool: str, layout: TokenLayout) -> np.ndarray:
    """Reference pooling of (n, tokens, width) outputs, written from the definitions (no featx code)."""
    n, _, width = tokens.shape
    patches = tokens[:, layout.prefix :].astype(np.float64)
    if pool == "none":
        return tokens.reshape(n, -1)
    if pool == "cls":
        return tokens[:, 0]
    if pool == "mean":
        return patches.mean(axis=1)
    if pool == "cls+mean":
        return np.concatenate([tokens[:, 0], patches.mean(axis=1)], axis=1)
    if pool == "max":
        return patches.max(axis=1)
    if pool == "gem":
        return (np.maximum(patches, 1e-6) ** 3).mean(axis=1) ** (1 / 3)
    return numpy_grid(patches.reshape(n, *layout.grid, width), T)  # grid:T


def tolerance(reference: np.ndarray, depth: int, n_tokens: int) -> float:
    """float32 rounding bound: a sum of m products carries at most about m * eps relative error (the usual gamma_m
    bound), so an output after `depth` blocks, each summing over width (projections), tokens (attention) and the
    MLP's hidden units, then pooled over the tokens, differs from another order of the same float32 sums by at most
    eps * (depth * (2 * width + tokens + hidden) + tokens) times the largest magnitude involved."""
    terms = depth * (2 * WIDTH + n_tokens + HIDDEN) + n_tokens
    return EPS * terms * max(1.0, float(np.abs(reference).max()))


def keras_hub_reference(family: str, folder: Path, pixels: np.ndarray) -> dict:
    """{"input", "blocks": [(n, tokens, width) per block], "final", "embedding"}: the KerasHub model's own outputs
    for uint8 images `pixels`, preprocessed by the preset's own image converter (ViT's folder has none: its
    published mean 0.5, std 0.5)."""
    import keras
    import keras_hub

    model = keras_hub.models.Backbone.from_preset(str(folder))
    if (folder / "image_converter.json").is_file():
        converter = keras.saving.deserialize_keras_object(json.loads((folder / "image_converter.json").read_text()))
        x = np.asarray(converter(pixels.astype("float32")))
    else:
        x = pixels.astype("float32") / 127.5 - 1.0
    out = {"input": x, "embedding": None}
    if family.startswith("dino"):  # blocks are pyramid outputs: stage1..stageN
        pyramid = keras.Model(model.inputs, model.pyramid_outputs)(x)
        out["blocks"] = [np.asarray(pyramid[f"stage{i}"]) for i in range(1, BLOCKS + 1)]
        out["final"] = np.asarray(model(x))
    elif family == "vit":  # its blocks live inside one ViTEncoder layer: run them in order, final from the model
        embed, encoder = model.layers[1], model.layers[2]
        h, blocks = encoder.dropout(embed(x)), []
        for block in encoder.encoder_layers:
            h = block(h)
            blocks.append(np.asarray(h))
        out["blocks"], out["final"] = blocks, np.asarray(model(x))
    else:  # CLIP / SigLIP vision encoders call their blocks in their functional graph: each block's output is a node
        vision = model.vision_encoder if family == "clip" else model
        norm = vision.layer_norm if family == "clip" else vision.post_layer_norm
        nodes = keras.Model(vision.inputs, [*(b.output for b in vision.encoder_layers), norm.output])(x)
        out["blocks"], out["final"] = [np.asarray(t) for t in nodes[:-1]], np.asarray(nodes[-1])
        out["embedding"] = np.asarray(model.get_vision_embeddings(x) if family == "clip" else vision(x))
    return out


# ---- every family: features equal KerasHub's own outputs ----------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_features_of_every_block_and_pooling_equal_keras_hub_outputs_pooled_in_numpy(family, presets, images):
    import keras

    from featx.backbones import describe_layers, get_backbone
    from featx.backbones.layers import group_members, layer_selection
    from featx.extractor import LayerExtractor, pool_output
    from featx.sources.decode import load_rgb

    folder = presets[family]
    backbone = get_backbone(str(folder), "imagenet")
    config = json.loads((folder / "config.json").read_text())["config"]
    config = config.get("vision_encoder", {}).get("config", config)
    # the token layout, from the config: CLS unless SigLIP (or a ViT without class token), registers, the patch grid
    layout = backbone.tokens
    assert layout.cls == (0 if family == "siglip" else 1)
    assert (
        layout.registers == config.get("num_register_tokens", 0) == {"dinov2_registers": 4, "dinov3": 2}.get(family, 0)
    )
    assert layout.grid == (SIDE // PATCH, SIDE // PATCH) and layout.prefix == layout.cls + layout.registers
    infos = {i.name: i for i in describe_layers(backbone)}
    blocks = group_members(list(infos.values()), "blocks")
    assert blocks == [f"block{i}" for i in range(1, BLOCKS + 1)] and group_members(list(infos.values()), "final") == [
        "norm"
    ]
    assert all(infos[b].output_shape[1:] == (layout.n_tokens, WIDTH) for b in [*blocks, "norm"])
    assert group_members(list(infos.values()), "embedding") == {"clip": ["projection"], "siglip": ["head"]}.get(
        family, []
    )
    assert (backbone.preprocessing_note is None) == (family != "vit")  # ViT's folder has no converter: said so
    # built again in this process (a tail fit after an extract): the same weights hash, though Keras numbers some
    # KerasHub sublayers per process
    assert get_backbone(str(folder), "imagenet").weights_id == backbone.weights_id

    pixels = np.stack([load_rgb(p, backbone.input_size, **backbone.decode_options) for p in images])
    reference = keras_hub_reference(family, folder, pixels)
    np.testing.assert_allclose(
        np.asarray(backbone.preprocess(pixels.astype("float32"))), reference["input"], rtol=1e-6, atol=1e-5
    )
    outputs = {**{b: reference["blocks"][i] for i, b in enumerate(blocks)}, "norm": reference["final"]}
    # every pooling of every block in one model, pooled by the function LayerExtractor's model pools with
    pools = ["mean", "max", "gem", f"grid:{T}", "none"] + ([] if family == "siglip" else ["cls", "cls+mean"])
    model = backbone.model
    pooled = keras.Model(
        model.inputs,
        {f"{n}|{p}": pool_output(model.get_layer(n).output, p, layout) for n in outputs for p in pools},
    )
    features = {key: np.asarray(value) for key, value in pooled(backbone.preprocess(pixels.astype("float32"))).items()}
    for pool in pools:
        for depth, name in enumerate(outputs, 1):
            expected, got = numpy_pool(outputs[name], pool, layout), features[f"{name}|{pool}"]
            tol = tolerance(outputs[name], min(depth, BLOCKS), layout.n_tokens)
            assert got.shape == expected.shape == (len(images), infos[name].feature_size(pool)), (pool, name)
            np.testing.assert_allclose(got, expected, rtol=0, atol=tol, err_msg=f"{family} {name} {pool}")
    if family != "siglip":  # final with cls (the extractor itself): the first token of what KerasHub's model returns
        final_cls = LayerExtractor(backbone, ["norm"], "cls")(pixels)["norm"]
        np.testing.assert_allclose(
            final_cls, reference["final"][:, 0], rtol=0, atol=tolerance(reference["final"], BLOCKS, 0)
        )
    if reference["embedding"] is not None:  # CLIP's projection of the CLS token, SigLIP's attention-pool head
        name = group_members(list(infos.values()), "embedding")[0]
        embedding = np.asarray(keras.Model(model.inputs, model.get_layer(name).output)(reference["input"]))
        np.testing.assert_allclose(
            embedding,
            reference["embedding"],
            rtol=0,
            atol=tolerance(reference["embedding"], BLOCKS + 1, layout.n_tokens),
        )
    if family == "siglip":  # no CLS token: a CLS pooling is refused, naming what fits
        with pytest.raises(FeatxError, match="has no CLS token"):
            layer_selection(list(infos.values()), "blocks", model_name=backbone.name, pool="cls")


# ---- extraction from a preset folder: cache key, warm re-run, input size, weights' content -----------------------
@pytest.mark.slow
def test_extract_from_a_folder_keys_on_pooling_input_size_and_weights_content(presets, elpv_folder, tmp_path):
    import keras_hub

    from featx.backbones import backbone_from_entry
    from featx.sources.decode import load_rgb

    folder = tmp_path / "dinov2_registers"
    shutil.copytree(presets["dinov2_registers"], folder)  # its weights are changed below
    cache, data = tmp_path / "cache", str(elpv_folder)
    first = extract(data, backbone=str(folder), layers="last4,final", pool="cls+mean", cache_dir=cache, **QUIET)
    entry = first.entry
    assert entry.name.startswith("dinov2_registers-") and entry.settings["pool"] == "cls+mean"
    assert sorted(first.computed_layers) == ["block1", "block2", "norm"]  # last4 of a 2-block model: both blocks
    assert entry.backbone_args["file_hashes"].keys() == {"config", "weights", "image_converter"}
    assert entry.layer_info["norm"]["tokens"] == {"cls": 1, "registers": 4, "grid": [7, 7]}
    # the cached rows are the KerasHub model's own final output, pooled CLS + mean patch token (after 1 + 4 tokens)
    X, _, meta = featx.load(entry, "final", cache=cache)
    model = keras_hub.models.Backbone.from_preset(str(folder))
    converter = keras_hub.layers.DINOV2ImageConverter.from_preset(str(folder))
    pixels = np.stack(
        [load_rgb(str(elpv_folder / p), (SIDE, SIDE), interpolation="bicubic", crop=True) for p in meta["path"]]
    )
    final = np.asarray(model(converter(pixels.astype("float32"))))
    expected = np.concatenate([final[:, 0], final[:, 5:].mean(axis=1)], axis=1)
    np.testing.assert_allclose(X, expected, rtol=0, atol=tolerance(final, BLOCKS, 54))
    # the same request again: nothing to do; --pool avg on a transformer is mean, one entry for both spellings
    assert (
        extract(data, backbone=str(folder), layers="final", pool="cls+mean", cache_dir=cache, **QUIET).computed_layers
        == []
    )
    mean = extract(data, backbone=str(folder), layers="final", pool="avg", cache_dir=cache, **QUIET).entry
    assert mean.settings["pool"] == "mean" and mean.key != entry.key
    assert (
        extract(data, backbone=str(folder), layers="final", pool="mean", cache_dir=cache, **QUIET).entry.path
        == mean.path
    )
    # another input size: KerasHub interpolates the position embeddings (9 x 9 patches), another entry
    big = extract(data, backbone=str(folder), layers="final", pool="cls", input_size=36, cache_dir=cache, **QUIET)
    assert big.entry.key not in (entry.key, mean.key) and big.entry.layer_info["norm"]["tokens"]["grid"] == [9, 9]
    resized = keras_hub.models.Backbone.from_preset(str(folder), image_shape=(36, 36, 3))
    converter.image_size = (36, 36)
    pixels = np.stack(
        [load_rgb(str(elpv_folder / p), (36, 36), interpolation="bicubic", crop=True) for p in meta["path"]]
    )
    reference = np.asarray(resized(converter(pixels.astype("float32"))))[:, 0]
    X_big, _, _ = featx.load(big.entry, "final", cache=cache)
    np.testing.assert_allclose(X_big, reference, rtol=0, atol=tolerance(reference, BLOCKS, 86))
    # other weights in the same folder: another entry, and the first entry's backbone is refused before it is read
    keras_hub.models.DINOV2Backbone.from_config(model.get_config()).save_weights(str(folder / "model.weights.h5"))
    other = extract(data, backbone=str(folder), layers="final", pool="cls+mean", cache_dir=cache, **QUIET).entry
    assert other.settings["weights_id"] != entry.settings["weights_id"] and other.key != entry.key
    with pytest.raises(FeatxError, match="weights file .* is not the file the features were extracted with"):
        backbone_from_entry(entry)


# ---- bad inputs: one line, nothing written -------------------------------------------------------------------------
def _hf_folder(root: Path, model_type: str) -> Path:
    folder = root / f"hf_{model_type}"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": model_type, "image_size": 224}))
    (folder / "model.safetensors").write_bytes(b"")
    return folder


@pytest.mark.slow
def test_bad_backbones_and_poolings_are_one_line_and_write_nothing(presets, elpv_folder, tmp_path):
    no_weights, no_config = tmp_path / "no_weights", tmp_path / "no_config"
    shutil.copytree(presets["dinov2"], no_weights)
    (no_weights / "model.weights.h5").unlink()
    shutil.copytree(presets["dinov2"], no_config)
    (no_config / "config.json").unlink()
    cases = [
        (["--backbone", "dinov2_smal"], r"unknown backbone 'dinov2_smal'; did you mean dinov2_small"),
        (["--backbone", no_weights], r"has no weights file \(model.weights.h5\).*--weights none"),
        (["--backbone", no_config], r"is not a KerasHub preset folder: it has no config.json"),
        (["--backbone", presets["clip_text"]], r"is a text encoder \(CLIPTextEncoder\); featx needs an image encoder"),
        (
            ["--backbone", _hf_folder(tmp_path, "swin")],
            r"'swin' model, which KerasHub cannot convert .* converts dinov2",
        ),
        (["--backbone", presets["siglip"], "--pool", "cls+mean"], r"has no CLS token .* choose one of mean, max, gem"),
        (["--backbone", presets["dinov2"], "--pool", "pyramid"], r"--pool pyramid pools conv maps, and layer 'block1'"),
        (["--backbone", presets["clip"], "--input-size", "56"], r"fixed length, which KerasHub does not interpolate"),
        (
            [*(f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()), "--layers=block_1_project_BN", "--pool=cls"],
            r"--pool cls pools a vision transformer's tokens, and layer 'block_1_project_BN' of mobilenet_v2 is a conv map",
        ),
    ]
    for number, (args, pattern) in enumerate(cases):
        cache = tmp_path / f"cache{number}"
        options = args if any(str(a).startswith("--layers") for a in args) else ["--layers", "blocks", *args]
        rc, _, err = cli("extract", "--data", elpv_folder, *options, "--cache-dir", cache, "--quiet")
        assert_one_line_error(rc, err, pattern)
        assert not cache.exists() or not any(cache.iterdir()), (args, list(cache.rglob("*")))


# ---- names: presets offline, the kagglehub cache, the download path up to the network --------------------------------
def test_preset_tables_are_read_offline_and_listed_by_family():
    names = {family: set(table) for family, table in hub_presets().items()}
    assert set(names) == {"dinov2", "dinov3", "clip", "siglip", "vit"}
    for family, preset in [
        ("dinov2", "dinov2_small"),
        ("dinov2", "dinov2_with_registers_base"),
        ("clip", "clip_vit_base_patch16"),
        ("siglip", "siglip_base_patch16_224"),
        ("vit", "vit_base_patch16_224_imagenet"),
    ]:
        assert preset in names[family]
    assert all(e["handle"].startswith("kaggle://") for table in hub_presets().values() for e in table.values())
    rc, out, _ = cli("backbones")
    assert rc == 0 and "efficientnet_lite0" in out.splitlines()
    assert "dinov2: DINOv2" in out and "  dinov2_small " in out and "  siglip_base_patch16_224 " in out


@pytest.mark.slow
def test_preset_tables_are_keras_hubs_own():
    import keras_hub

    classes = {
        "dinov2": "DINOV2Backbone",
        "dinov3": "DINOV3Backbone",
        "clip": "CLIPBackbone",
        "siglip": "SigLIPBackbone",
        "vit": "ViTBackbone",
    }
    for family, table in hub_presets().items():
        assert set(table) == set(getattr(keras_hub.models, classes[family]).presets), family


def _featx_process(*args, env: dict) -> tuple[int, str, float]:
    """(exit code, stderr, seconds) of `featx ARGS` in a fresh process with `env` added (no network: every request
    goes to a proxy that nobody listens on)."""
    environment = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    environment.update(PYTHONPATH=str(ROOT), HTTPS_PROXY=UNREACHABLE, HTTP_PROXY=UNREACHABLE, **env)
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "featx", *args], capture_output=True, text=True, env=environment, timeout=300
    )
    return done.returncode, done.stderr, time.perf_counter() - began


def test_an_offline_preset_download_is_one_quick_line_naming_the_cache(tmp_path, monkeypatch):
    """kagglehub is asked for the preset (the real download request) and stopped at the network: one line naming the
    kagglehub cache and how to fill it, exit 2, in seconds (no retry loop); nothing downloaded."""
    _offline(monkeypatch)
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path))
    began = time.perf_counter()
    rc, _, err = cli("layers", "dinov2_small", "--weights", "imagenet")
    line = assert_one_line_error(rc, err, r"KerasHub preset 'dinov2_small' is not downloaded \(kagglehub cache ")
    assert str(tmp_path) in line and "downloading it failed" in line and "featx layers dinov2_small" in line
    assert "models/keras/dinov2/keras/dinov2_small/1" in line and time.perf_counter() - began < 60
    assert not list(tmp_path.rglob("*.h5"))


def _offline(monkeypatch) -> None:
    """Every request of this process goes to a proxy that nobody listens on."""
    for variable in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(variable, UNREACHABLE)
    for variable in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(variable, raising=False)


def test_an_offline_hf_checkpoint_is_one_quick_line_naming_the_hf_cache(tmp_path):
    """huggingface_hub retries a failed request for about 25 s; featx asks once without retries first."""
    rc, err, seconds = _featx_process("layers", f"{HF_SCHEME}facebook/dinov2-small", env={"HF_HOME": str(tmp_path)})
    line = assert_one_line_error(
        rc, err, r"Hugging Face model 'hf://facebook/dinov2-small' is not in the Hugging Face cache"
    )
    assert str(tmp_path) in line and "models--facebook--dinov2-small" in line and seconds < 20


def test_unreachable_says_why():
    from featx.backbones.hub import unreachable

    assert "cannot be resolved" in unreachable("featx-test.invalid", "FEATX_TEST_NO_SUCH_VARIABLE")
    assert unreachable("featx-test.invalid", "PATH") is None  # an endpoint configured: kagglehub's own request decides


@pytest.mark.slow
def test_a_preset_name_is_served_from_the_kagglehub_cache_without_network(presets, elpv_folder, tmp_path, monkeypatch):
    """A preset downloaded before (here: the tiny DINOv2 put where kagglehub keeps dinov2_small, with kagglehub's own
    completion markers) is built offline under its name; the weights are those of the folder (same weights hash)."""
    from kagglehub.cache import Cache, get_cached_path
    from kagglehub.handle import parse_model_handle

    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    _offline(monkeypatch)
    handle = parse_model_handle(hub_presets()["dinov2"]["dinov2_small"]["handle"].removeprefix("kaggle://"))
    shutil.copytree(presets["dinov2"], get_cached_path(handle))
    for file in ("config.json", "model.weights.h5", "image_converter.json"):
        Cache().mark_as_complete(handle, file)
    cache = tmp_path / "cache"
    named = extract(
        str(elpv_folder), backbone="dinov2_small", layers="final", pool="cls", cache_dir=cache, **QUIET
    ).entry
    local = extract(
        str(elpv_folder), backbone=str(presets["dinov2"]), layers="final", pool="cls", cache_dir=cache, **QUIET
    ).entry
    assert named.name.startswith("dinov2_small-") and named.backbone_args["file_hashes"] == {}
    assert named.settings["weights_id"] == local.settings["weights_id"]
    np.testing.assert_array_equal(
        featx.load(named, "final", cache=cache)[0], featx.load(local, "final", cache=cache)[0]
    )


# ---- the layers command, training above a cut, export, predict ------------------------------------------------------------
@pytest.mark.slow
def test_layers_command_shows_tokens_width_grid_and_groups(presets):
    rc, out, err = cli("layers", presets["dinov2_registers"], "--pool", "cls+mean")
    assert rc == 0, err
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "54x16" in rows["block2"] and "CLS+4 reg+7x7 patches" in rows["block2"] and "blocks,all" in rows["block2"]
    assert rows["norm"].split()[-2:] == ["32", "final,all"]  # cls+mean: 2 x width 16
    assert "last4 (2)" in out and "final (1)" in out
    assert "tokens: 54 per image, width 16: CLS at 0, 4 registers at 1-4, 7x7 patches at 5-53" in out
    rc, out, err = cli("layers", presets["dinov2"], "--cuts")
    assert rc == 0 and [line.split()[0] for line in out.splitlines()[1:5]] == ["embed", "block1", "block2", "norm"]


@pytest.mark.slow
def test_tail_on_cached_tokens_tunes_the_cut_exports_one_safe_keras_file_and_predicts(
    presets, elpv_folder, tmp_path, monkeypatch
):
    """The blocks above a cut train on cached token maps (--pool none); tune without --cut searches the cached cuts;
    export-model writes embed + blocks + norm + the CLS head as one .keras that loads in safe mode and gives featx
    predict's probabilities."""
    import re

    import keras
    import pandas as pd

    from featx.selection import spaces

    cache = tmp_path / "cache"
    extract(
        str(elpv_folder),
        backbone=str(presets["dinov2_registers"]),
        layers="block1,block2",
        pool="none",
        cache_dir=cache,
        **QUIET,
    )
    fixed = {"warmup_epochs": 1, "batch_size": 4}
    monkeypatch.setitem(spaces.SEARCHES, "tail", spaces.Search({"backbone_lr": (1e-3,)}, fixed={**fixed, "epochs": 2}))
    rc, out, err = cli("tune", "--clf", "tail", "--search", "exact", "--metric", "accuracy", "--cache-dir", cache)
    assert rc == 0, err
    assert re.search(
        r"tune tail: cut (block1|block2) won on val \(accuracy, best per cut: block1 [0-9.]+; block2 [0-9.]+\)", out
    ), out
    run_id = re.search(r"^run (\S+):", out, re.M)[1]
    path = tmp_path / "tuned.keras"
    rc, out, err = cli("export-model", run_id, "-o", path, "--cache-dir", cache)
    assert rc == 0 and "`import keras_hub` before loading it" in out, err
    assert featx.load_model(path).metadata["imports"] == ["keras_hub"]
    model = keras.saving.load_model(path, safe_mode=True, compile=False)
    names = [layer.name for layer in model.layers]
    assert names[:5] == ["images", "embed", "block1", "block2", "norm"] and names[-1] == "head_softmax"
    predicted = featx.predict(run_id, elpv_folder, output=tmp_path / "p.csv", cache=cache, log=lambda *a: None)
    from featx.backbones import get_backbone
    from featx.sources.decode import load_rgb

    backbone = get_backbone(str(presets["dinov2_registers"]))
    pixels = np.stack(
        [
            load_rgb(str(elpv_folder / p) if not os.path.isabs(p) else p, (SIDE, SIDE), **backbone.decode_options)
            for p in predicted["path"]
        ]
    )
    probabilities = np.asarray(model(backbone.preprocess(pixels.astype("float32"))))
    columns = [c for c in predicted.columns if c.startswith("p_")]
    np.testing.assert_allclose(probabilities, predicted[columns].to_numpy(float), atol=2e-4)  # the CSV keeps 4 decimals
    assert isinstance(predicted, pd.DataFrame) and len(predicted) == 18


@pytest.mark.slow
def test_a_pooled_run_exports_with_the_presets_resize_and_classifies_files_as_predict(presets, elpv_folder, tmp_path):
    """A logistic regression on CLS + mean tokens of a DINOv2 preset (bicubic, centre crop: its image converter)
    exports as one .keras file whose metadata records that resize, and the loaded model decodes image files with it:
    its probabilities are featx predict's (the CSV keeps 4 decimals). ELPV cells are square, so the crop is checked
    on a wide copy of one."""
    from PIL import Image

    cache = tmp_path / "cache"
    extract(
        str(elpv_folder), backbone=str(presets["dinov2"]), layers="last4", pool="cls+mean", cache_dir=cache, **QUIET
    )
    result = featx.fit(None, "last4", featx.FitSpec(classifier="logreg"), cache=cache, log=lambda *a: None)
    path = tmp_path / "pooled.keras"
    rc, out, err = cli("export-model", result.run_id, "-o", path, "--cache-dir", cache)
    assert rc == 0 and "centre-cropped and resized (Pillow bicubic)" in out and "`import keras_hub`" in out, err
    files = sorted(str(p) for p in elpv_folder.rglob("*.png"))[:5]
    wide = tmp_path / "wide.png"
    cell = Image.open(files[0]).convert("RGB")
    Image.fromarray(np.concatenate([np.asarray(cell)] * 2, axis=1)).save(wide)  # 300 x 600: cropping matters
    files.append(str(wide))
    model = featx.load_model(path)
    assert model.metadata["input"]["decode"] == {"interpolation": "bicubic", "crop": True}
    predicted = featx.predict(result.run_id, files, output=tmp_path / "p.csv", cache=cache, log=lambda *a: None)
    columns = [c for c in predicted.columns if c.startswith("p_")]
    np.testing.assert_allclose(model.scores(files), predicted[columns].to_numpy(float), atol=2e-4)


# ---- the DINOv2 recipe, views and Dask extraction ------------------------------------------------------------------------
@pytest.mark.slow
def test_dinov2_linear_eval_recipe_runs_on_a_tiny_preset(presets, elpv_folder, tmp_path):
    """pipelines/dinov2_linear_eval.toml with --backbone FOLDER: two entries (CLS; CLS + mean patch token), last block
    vs last 4 blocks x the C grid on each, one model recommended by val, its test read once; the HTML report."""
    result = featx.run_pipeline(
        ROOT / "pipelines" / "dinov2_linear_eval.toml",
        data=str(elpv_folder),
        backbone=str(presets["dinov2"]),
        cache=tmp_path,
        log=None,
    )
    table = result.table
    trained = table[~table["baseline"]]
    assert len(trained) == 2 * 2 * 5  # 2 poolings x 2 layer sets x 5 values of C
    pools = {featx.Cache(tmp_path).open(key).settings["pool"] for key in trained["cache_key"].unique()}
    assert pools == {"cls", "cls+mean"}
    assert set(trained["layers"]) == {"final", "last4"}
    assert result.recommended.startswith("recommended: logreg") and "reported once" in result.recommended
    from featx.report import pipeline_page

    assert pipeline_page(result.folder, cache=tmp_path).is_file()


@pytest.mark.slow
def test_views_on_dask_workers_equal_one_process(presets, elpv_folder, tmp_path):
    """extract_shard rebuilds the backbone from its arguments (here a preset folder) on a Dask worker: flip views
    computed there are bit-identical to one process's."""
    import h5py

    from helpers import assert_same_layers

    options = {
        "backbone": str(presets["clip"]),
        "layers": "blocks,embedding",
        "pool": "cls+mean",
        "views": "flip",
        "batch_size": 4,
    }
    one = extract(str(elpv_folder), cache_dir=tmp_path / "one", **options, **QUIET).entry
    sharded = extract(str(elpv_folder), cache_dir=tmp_path / "dask", cluster="local:1", **options, **QUIET).entry
    assert one.layers == ["block1", "block2", "projection"] and one.view_layers("hflip") == one.layers
    assert_same_layers(one, sharded, 18)
    for name in one.layers:
        with h5py.File(one.layer_file(name, "hflip")) as a, h5py.File(sharded.layer_file(name, "hflip")) as b:
            assert np.array_equal(a["features"][()], b["features"][()]), name


# ---- fast: token poolings and preset configs as data ---------------------------------------------------------------
def test_token_pool_names_sizes_and_misfits():
    from featx.backbones.layers import LayerInfo, check_pool, pool_for

    assert pool_for("avg", tokens=True) == pool_for("mean", tokens=True) == "mean"  # one entry per pooling
    assert pool_for("mean", tokens=False) == pool_for("avg", tokens=False) == "avg"
    assert pool_for("cls+mean", tokens=True) == check_pool("cls+mean") == "cls+mean"
    registers = TokenLayout(cls=1, registers=4, grid=(7, 7))
    block = LayerInfo("block1", "DINOV2Layer", (None, 54, 16), "block1", ("blocks",), registers)
    sizes = {
        pool: block.feature_size(pool) for pool in ("cls", "mean", "avg", "cls+mean", "max", "gem", "none", f"grid:{T}")
    }
    assert sizes == {
        "cls": 16,
        "mean": 16,
        "avg": 16,
        "cls+mean": 32,
        "max": 16,
        "gem": 16,
        "none": 54 * 16,
        f"grid:{T}": 64,
    }
    assert block.poolable and block.metadata("cls")["tokens"] == {"cls": 1, "registers": 4, "grid": [7, 7]}
    assert all(block.pool_problem(p, "m") is None for p in sizes)
    assert "pools conv maps" in block.pool_problem("pyramid", "m") and "pools conv maps" in block.pool_problem(
        "avgmax", "m"
    )
    siglip = LayerInfo("block1", "SigLIPEncoderLayer", (None, 49, 16), "block1", (), TokenLayout(0, 0, (7, 7)))
    problem = siglip.pool_problem("cls+mean", "tiny")
    assert (
        problem.startswith("tiny has no CLS token (its tokens: 7x7 patches)")
        and "mean, max, gem, none or grid:T" in problem
    )
    conv = LayerInfo("conv", "Conv2D", (None, 7, 7, 8), None)
    assert "is a conv map (7x7x8)" in conv.pool_problem("cls", "cnn") and conv.pool_problem("mean", "cnn") is None
    assert conv.feature_size("mean") == 8 and not LayerInfo("x", "Reshape", (None, 5, 8), None).poolable


def _config_folder(root: Path, name: str, config: dict, *files: str) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    for file in files:
        (folder / file).write_bytes(b"0")
    return folder


def test_preset_configs_are_checked_before_keras_hub_reads_them(tmp_path):
    from featx.backbones.hub import hub_files, read_preset

    keras_class = lambda name, **config: {"registered_name": f"keras_hub>{name}", "config": config}
    dinov2 = _config_folder(
        tmp_path, "dinov2", keras_class("DINOV2Backbone"), "model.weights.h5", "image_converter.json"
    )
    assert read_preset(dinov2, "d").family.family == "dinov2"
    assert hub_files(str(dinov2), "imagenet") == {
        "config": str(dinov2 / "config.json"),
        "weights": str(dinov2 / "model.weights.h5"),
        "image_converter": str(dinov2 / "image_converter.json"),
    }
    assert (
        set(hub_files(str(dinov2), "none")) == {"config", "image_converter"}
        and hub_files("dinov2_small", "imagenet") == {}
    )
    clip = _config_folder(
        tmp_path, "clip", keras_class("CLIPBackbone", vision_encoder={"registered_name": "keras_hub>CLIPVisionEncoder"})
    )
    assert read_preset(clip, "c").whole and read_preset(clip, "c").family.family == "clip"
    assert read_preset(_config_folder(tmp_path, "hf", {"model_type": "dinov2_with_registers"}), "h").hugging_face
    refused = {
        "text": (
            keras_class("SigLIPTextEncoder"),
            r"is a text encoder \(SigLIPTextEncoder\); featx needs an image encoder",
        ),
        "bert": (keras_class("BertBackbone"), r"holds a KerasHub BertBackbone, which featx has no builder for"),
        "swin": ({"model_type": "swin"}, r"'swin' model, which KerasHub cannot convert"),
        "other": ({"architecture": "resnet50"}, r"neither a KerasHub preset config .* nor a Hugging Face model config"),
        "clip_text": (
            keras_class("CLIPBackbone", vision_encoder={"registered_name": "keras_hub>CLIPTextEncoder"}),
            r"vision_encoder is 'CLIPTextEncoder'",
        ),
    }
    for name, (config, pattern) in refused.items():
        with pytest.raises(FeatxError, match=pattern):
            read_preset(_config_folder(tmp_path, name, config), name)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(FeatxError, match="is not valid JSON"):
        read_preset(broken, "broken")
    (tmp_path / "text" / "config.json").unlink()
    with pytest.raises(FeatxError, match="has no config.json"):
        read_preset(tmp_path / "text", "text")


def test_without_keras_hub_a_hub_backbone_is_one_line_naming_the_extra(monkeypatch, tmp_path):
    """As on a machine without the hub extra (KerasHub not found): preset names, folders and `featx backbones`."""
    from featx.backbones import hub

    monkeypatch.setattr(hub, "keras_hub_root", lambda: None)
    hub.hub_presets.cache_clear()
    try:
        for backbone in ("dinov2_small", "clip_vit_base_patch16", str(tmp_path)):
            rc, _, err = cli("layers", backbone)
            assert_one_line_error(
                rc, err, rf"KerasHub backbone '{backbone}' needs KerasHub; pip install \"featx\[hub\]\""
            )
        rc, out, _ = cli("backbones")
        assert rc == 0 and out.rstrip().endswith('(DINOv2, DINOv3, CLIP, SigLIP, ViT): pip install "featx[hub]"')
    finally:
        hub.hub_presets.cache_clear()

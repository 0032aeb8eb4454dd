"""EfficientNet-Lite0 rebuilt in Keras from the packaged PyTorch checkpoint, read without torch; Lite1 and Lite2 from
theirs, scaled as the official lite builder scales Lite0, registered with their own input sizes, and right on real
photos."""

import collections
import io
import pickle
import struct
import sys
import types
import zipfile

import numpy as np
import pytest
from PIL import Image

from featx.backbones import available_backbones, describe_layers, get_backbone
from featx.backbones.efficientnet_lite import (
    BLOCKS_ARGS,
    VARIANTS,
    blocks_args,
    build_efficientnet_lite0,
    default_weights_path,
    preprocess_input,
    round_filters,
)
from featx.backbones.layers import group_members
from featx.backbones.torch_pickle import read_torch_state_dict
from featx.errors import FeatxError

CATS = {281, 282, 283, 285}  # tabby, tiger cat, Persian cat, Egyptian cat
COFFEE = {504, 967, 968}  # coffee mug, espresso, cup


@pytest.fixture(scope="module")
def state_dict():
    return read_torch_state_dict(default_weights_path())


@pytest.fixture(scope="module")
def model():
    return build_efficientnet_lite0("imagenet")


def _image(name):
    skdata = pytest.importorskip("skimage.data")
    pixels = getattr(skdata, name)()
    return np.asarray(Image.fromarray(pixels).resize((224, 224), Image.BILINEAR), dtype=np.float32)


@pytest.mark.slow  # builds EfficientNet-Lite0 (Keras)
def test_reader_returns_float32_tensors_in_torch_layout(state_dict, model):
    # 1 stem + 16 blocks + head + fc; BN layers carry 5 entries incl. num_batches_tracked.
    assert len(state_dict) == 296
    floats = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    assert len(floats) == 296 - 49
    assert all(v.dtype == np.float32 for v in floats.values())
    assert state_dict["_conv_stem.weight"].shape == (32, 3, 3, 3)  # (out, in, kh, kw)
    assert state_dict["_blocks.3._depthwise_conv.weight"].shape == (144, 1, 5, 5)
    assert state_dict["_fc.weight"].shape == (1000, 1280)

    # The arrays are what the Keras layers hold, in Keras layout.
    np.testing.assert_array_equal(
        model.get_layer("stem_conv").get_weights()[0],
        state_dict["_conv_stem.weight"].transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(
        model.get_layer("block2a_dwconv").get_weights()[0],
        state_dict["_blocks.1._depthwise_conv.weight"].transpose(2, 3, 0, 1),
    )
    gamma, beta, mean, var = model.get_layer("top_bn").get_weights()
    np.testing.assert_array_equal(var, state_dict["_bn1.running_var"])
    np.testing.assert_array_equal(model.get_layer("predictions").get_weights()[0], state_dict["_fc.weight"].T)


@pytest.mark.slow  # builds EfficientNet-Lite0 (Keras)
def test_layer_names_follow_keras_applications(model):
    names = {layer.name for layer in model.layers}
    for name in [
        "input_layer",
        "stem_conv",
        "stem_bn",
        "stem_activation",
        "block1a_dwconv",
        "block1a_project_bn",
        "block2a_expand_activation",
        "block2b_add",
        "block7a_project_bn",
        "top_conv",
        "top_bn",
        "top_activation",
        "avg_pool",
        "predictions",
    ]:
        assert name in names
    assert "block2a_add" not in names  # stride 2: no residual
    assert not any(n.endswith(("_drop", "_dropout", "top_dropout")) for n in names)  # inference graph


@pytest.mark.slow  # builds EfficientNet-Lite0 (Keras)
def test_classifies_real_photos(model):
    batch = preprocess_input(np.stack([_image("chelsea"), _image("coffee")]))
    probs = model.predict(batch, verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)  # a float32 sum of 1,000: 1000 u = 6e-5
    cat_top5, coffee_top5 = (set(np.argsort(p)[::-1][:5].tolist()) for p in probs)
    assert cat_top5 & CATS, cat_top5
    assert coffee_top5 & COFFEE, coffee_top5
    assert np.argmax(probs[0]) in CATS and np.argmax(probs[1]) in COFFEE


@pytest.mark.slow  # TensorFlow tensors
def test_preprocess_works_on_tf_tensors():
    import tensorflow as tf

    out = preprocess_input(tf.constant([[0.0, 127.0, 255.0]]))
    np.testing.assert_allclose(out.numpy(), [[-127 / 128, 0.0, 1.0]])  # exact: (x - 127) / 128 in binary


@pytest.mark.slow  # builds EfficientNet-Lite0 twice (Keras)
def test_random_init_is_deterministic():
    a = build_efficientnet_lite0(weights=None, input_shape=(64, 64, 3))
    b = build_efficientnet_lite0(weights=None, input_shape=(64, 64, 3))
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


@pytest.mark.slow  # builds EfficientNet-Lite0 (Keras) from each file
def test_malformed_files_raise_featx_error(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 37, dtype=np.uint8)))
    with pytest.raises(FeatxError):
        read_torch_state_dict(junk)
    with pytest.raises(FeatxError):
        build_efficientnet_lite0(weights=junk)

    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(open(default_weights_path(), "rb").read()[:200_000])
    with pytest.raises(FeatxError, match="truncated"):
        read_torch_state_dict(truncated)

    with pytest.raises(FeatxError, match="not found"):
        read_torch_state_dict(tmp_path / "missing.pth")


def test_refuses_pickles_that_are_not_state_dicts(tmp_path):
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        for obj in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
            pickle.dump(obj, f, protocol=2)
        pickle.dump({"x": print}, f, protocol=2)  # a global outside the allow-list
    with pytest.raises(FeatxError, match="not a plain PyTorch state dict"):
        read_torch_state_dict(evil)


# --- files written the way torch.save does, with a stand-in `torch` module (torch is not installed) ---


class _Storage:
    def __init__(self, key, data):
        self.key, self.data = key, np.ascontiguousarray(data, dtype=np.float32).ravel()


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride)

    def __reduce__(self):
        return sys.modules["torch._utils"]._rebuild_tensor_v2, self.args + (False, collections.OrderedDict())


def _fake_torch(monkeypatch):
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch.FloatStorage = type("FloatStorage", (), {"__module__": "torch"})
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


def _pickle_state(obj, storages, torch):
    class P(pickle.Pickler):
        def persistent_id(self, o):
            if isinstance(o, _Storage):
                storages[o.key] = o
                return ("storage", torch.FloatStorage, o.key, "cpu", o.data.size, None)
            return None

    buf = io.BytesIO()
    P(buf, protocol=2).dump(obj)
    return buf.getvalue()


def _strided_example():
    base = np.arange(24, dtype=np.float32)
    storage = _Storage("0", base)
    state = collections.OrderedDict(
        whole=_Tensor(storage, 0, (2, 3, 4), (12, 4, 1)),
        transposed=_Tensor(storage, 0, (4, 6), (1, 4)),  # non-contiguous view
        tail=_Tensor(storage, 20, (2, 2), (2, 1)),  # storage offset
    )
    expected = {
        "whole": base.reshape(2, 3, 4),
        "transposed": base.reshape(6, 4).T,
        "tail": base[20:24].reshape(2, 2),
    }
    return state, expected


def test_legacy_format_offsets_and_strides(tmp_path, monkeypatch):
    torch = _fake_torch(monkeypatch)
    state, expected = _strided_example()
    storages = {}
    body = _pickle_state(state, storages, torch)
    path = tmp_path / "legacy.pth"
    with open(path, "wb") as f:
        for obj in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True, "protocol_version": 1001}):
            pickle.dump(obj, f, protocol=2)
        f.write(body)
        pickle.dump(list(storages), f, protocol=2)
        for s in storages.values():
            f.write(struct.pack("<q", s.data.size) + s.data.tobytes())
    got = read_torch_state_dict(path)
    assert list(got) == list(expected)
    for k, v in expected.items():
        np.testing.assert_array_equal(got[k], v)
        assert got[k].flags.c_contiguous and got[k].flags.writeable


def test_zip_format(tmp_path, monkeypatch):
    torch = _fake_torch(monkeypatch)
    state, expected = _strided_example()
    storages = {}
    body = _pickle_state(state, storages, torch)
    path = tmp_path / "new.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("new/data.pkl", body)
        zf.writestr("new/byteorder", "little")
        for key, s in storages.items():
            zf.writestr(f"new/data/{key}", s.data.tobytes())
        zf.writestr("new/version", "3\n")
    got = read_torch_state_dict(path)
    for k, v in expected.items():
        np.testing.assert_array_equal(got[k], v)


# --- Lite1 and Lite2

LITE = {"efficientnet_lite1": (240, 21, 320), "efficientnet_lite2": (260, 21, 352)}  # size, blocks, last block width


def test_scaling_follows_the_official_builder():
    assert [round_filters(f, 1.1) for f in (16, 24, 40, 80, 112, 192, 320)] == [16, 24, 48, 88, 120, 208, 352]
    assert blocks_args(VARIANTS["efficientnet_lite0"]) == BLOCKS_ARGS
    lite2 = blocks_args(VARIANTS["efficientnet_lite2"])
    assert [a["repeats"] for a in lite2] == [1, 3, 3, 4, 4, 5, 1]  # first and last stage unscaled
    assert lite2[0]["filters_in"] == 32 and lite2[1]["filters_in"] == 16  # stem fixed at 32


@pytest.mark.slow
@pytest.mark.parametrize("name", LITE)
def test_lite1_and_lite2_classify_real_photos(name):
    skdata = pytest.importorskip("skimage.data")
    backbone = get_backbone(name)  # the packaged ImageNet weights; a shape mismatch would raise
    size, n_blocks, width = LITE[name]
    assert name in available_backbones() and backbone.input_size == (size, size)
    assert backbone.feature_info.family == "efficientnet_lite" and backbone.preprocessing == "tf_lite_127_128"
    infos = describe_layers(backbone)
    blocks = group_members(infos, "blocks")
    assert len(blocks) == n_blocks and group_members(infos, "final") == ["top_activation"]
    assert {i.name: i for i in infos}[blocks[-1]].output_shape[-1] == width
    photos = [
        np.asarray(Image.fromarray(getattr(skdata, p)()).resize((size, size), Image.BILINEAR), np.float32)
        for p in ("chelsea", "coffee")
    ]
    probs = backbone.model.predict(preprocess_input(np.stack(photos)), verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)  # a float32 sum of 1,000: 1000 u = 6e-5
    assert np.argmax(probs[0]) in CATS and np.argmax(probs[1]) in COFFEE, np.argsort(probs)[:, -5:]

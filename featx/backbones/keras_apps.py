"""Every keras.applications model by a short name, each with its own preprocess_input."""

from __future__ import annotations

# featx name -> (keras.applications constructor, module holding its preprocess_input, default input size)
KERAS_MODELS = {
    "vgg16": ("VGG16", "vgg16", 224),
    "vgg19": ("VGG19", "vgg19", 224),
    "resnet50": ("ResNet50", "resnet", 224),
    "resnet101": ("ResNet101", "resnet", 224),
    "resnet152": ("ResNet152", "resnet", 224),
    "resnet50_v2": ("ResNet50V2", "resnet_v2", 224),
    "resnet101_v2": ("ResNet101V2", "resnet_v2", 224),
    "resnet152_v2": ("ResNet152V2", "resnet_v2", 224),
    "inception_v3": ("InceptionV3", "inception_v3", 299),
    "inception_resnet_v2": ("InceptionResNetV2", "inception_resnet_v2", 299),
    "xception": ("Xception", "xception", 299),
    "mobilenet": ("MobileNet", "mobilenet", 224),
    "mobilenet_v2": ("MobileNetV2", "mobilenet_v2", 224),
    "mobilenet_v3_small": ("MobileNetV3Small", "mobilenet_v3", 224),
    "mobilenet_v3_large": ("MobileNetV3Large", "mobilenet_v3", 224),
    "densenet121": ("DenseNet121", "densenet", 224),
    "densenet169": ("DenseNet169", "densenet", 224),
    "densenet201": ("DenseNet201", "densenet", 224),
    "nasnet_mobile": ("NASNetMobile", "nasnet", 224),
    "nasnet_large": ("NASNetLarge", "nasnet", 331),
    **{
        f"efficientnet_b{i}": (f"EfficientNetB{i}", "efficientnet", s)
        for i, s in enumerate((224, 240, 260, 300, 380, 456, 528, 600))
    },
    **{
        f"efficientnet_v2{v.lower()}": (f"EfficientNetV2{v}", "efficientnet_v2", s)
        for v, s in (("B0", 224), ("B1", 240), ("B2", 260), ("B3", 300), ("S", 384), ("M", 480), ("L", 480))
    },
    **{
        f"convnext_{v.lower()}": (f"ConvNeXt{v}", "convnext", 224) for v in ("Tiny", "Small", "Base", "Large", "XLarge")
    },
}


def build_keras_application(name: str, weights, input_size: int | None):
    """Build with the 1000-class top (so fc layers are extractable) unless a non-default input size needs it off."""
    import keras

    constructor, module, default_size = KERAS_MODELS[name]
    size = input_size or default_size
    include_top = size == default_size
    model = getattr(keras.applications, constructor)(
        weights=weights, include_top=include_top, input_shape=(size, size, 3)
    )
    preprocess = getattr(keras.applications, module).preprocess_input
    return model, preprocess, f"keras.applications.{module}.preprocess_input", (size, size)

"""What the rest of featx knows about a backbone: a Keras model plus the facts that change its numbers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from featx.backbones.feature_info import FAMILIES, FeatureInfo


@dataclass
class Backbone:
    """A frozen feature extractor.

    model : keras.Model taking float32 RGB images of shape (batch, height, width, 3) that
        `preprocess` has already normalized.
    preprocess : maps raw pixels in [0, 255] (float32, RGB) to the model's input range;
        kept beside the model it belongs to, as keras.applications does.
    preprocessing : a short stable name for `preprocess`, part of the cache key.
    weights_id : content hash of the weights (part of the cache key).
    version : builder version; bump it when a builder's numbers change.
    feature_info : the family's block / final-layer naming, which the layer groups come from.
    preprocessing_note : set when a saved model's preprocessing was inferred or assumed rather than given.
    """

    name: str
    model: object
    preprocess: Callable
    preprocessing: str
    input_size: tuple[int, int]
    weights_id: str
    version: str = "1"
    feature_info: FeatureInfo = field(default_factory=lambda: FAMILIES["generic"])
    preprocessing_note: str | None = None

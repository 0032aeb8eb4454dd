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
    tokens : for a vision transformer, where its token sequences hold the CLS token, registers and patches
        (every 3-D layer output of the model, (batch, tokens, width), is laid out so); None for a CNN.
    weights_hash : the function that computed weights_id from the model (None: featx.backbones.weights_id); a Dask
        worker re-checks the weights it was sent with it.
    interpolation, crop : how images are resized to input_size when decoded (featx.sources.decode.load_rgb):
        the resampling filter, and whether the largest centred crop of input_size's aspect ratio is taken first
        (a KerasHub image converter's crop_to_aspect_ratio) rather than the whole image stretched.
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
    tokens: TokenLayout | None = None
    weights_hash: Callable | None = None
    interpolation: str = "bilinear"
    crop: bool = False

    @property
    def decode_options(self) -> dict:
        """The keywords of featx.sources.decode.load_rgb that resize images for this backbone."""
        return {"interpolation": self.interpolation, "crop": self.crop}


@dataclass(frozen=True)
class TokenLayout:
    """Where a vision transformer's token sequence (batch, tokens, width) keeps what: [CLS, registers, patches].

    cls : 1 when the first token is a CLS token (DINOv2/v3, CLIP, ViT), 0 without one (SigLIP pools its patches
        with an attention head). registers : register tokens after it (DINOv2 with registers, DINOv3).
    grid : (rows, columns) of the patch tokens, row-major, as the patches lie on the image.
    """

    cls: int
    registers: int
    grid: tuple[int, int]

    @property
    def prefix(self) -> int:
        """Tokens before the first patch token (CLS and registers): never part of a patch pool."""
        return self.cls + self.registers

    @property
    def n_tokens(self) -> int:
        return self.prefix + self.grid[0] * self.grid[1]

    def describe(self) -> str:
        parts = ["CLS"] if self.cls else []
        parts += [f"{self.registers} reg"] if self.registers else []
        return "+".join([*parts, f"{self.grid[0]}x{self.grid[1]} patches"])

    def as_dict(self) -> dict:
        """What a cache entry stores (layer metadata "tokens"); from_dict reads it back."""
        return {"cls": self.cls, "registers": self.registers, "grid": list(self.grid)}

    @classmethod
    def from_dict(cls, stored) -> TokenLayout | None:
        if not stored:
            return None
        return cls(int(stored["cls"]), int(stored["registers"]), tuple(int(d) for d in stored["grid"]))

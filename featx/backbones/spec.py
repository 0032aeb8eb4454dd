"""BackboneSpec: the frozen network a cache entry's features come from, and how its layers are pooled, as one value.

Built once at a front door (the command line's --backbone, --weights, --input-size, --preprocess, --pool, --dtype,
--mixed-precision and --unsafe; a pipeline file; a notebook) and handed to extract, which keys the cache on it.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass

from featx.backbones import DEFAULT_BACKBONE, check_input_size, file_hashes
from featx.backbones.layers import check_pool
from featx.errors import FeatxError

DTYPES = ("float32", "float16")  # stored feature dtypes


def check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise FeatxError(f"unknown dtype '{dtype}'; choose one of {', '.join(DTYPES)}")


@dataclass(frozen=True)
class BackboneSpec:
    """A backbone and what its features are made of.

    name : a registry name (`featx backbones`) or a saved .keras/.h5 model file.
    weights : "imagenet" (downloaded by Keras, or packaged for efficientnet_lite0/1/2), "none" (a seeded random
        init, for timing) or a local weights file. input_size : a square input side in pixels (None: the
        backbone's own). preprocess : a saved model's input scaling (None: inferred from its layer names).
    pool : how a conv layer's map becomes columns (featx.backbones.layers.POOLS, grid:T); dtype : the stored
        features' dtype (float32, float16); mixed_precision : float16 compute (for GPUs). All three are part of the
        cache key. unsafe : allow Lambda layers when loading a saved model (runs its code; never from a file).
    """

    name: str = DEFAULT_BACKBONE
    _: KW_ONLY
    weights: str | None = "imagenet"
    input_size: int | None = None
    preprocess: str | None = None
    pool: str = "avg"
    dtype: str = "float32"
    mixed_precision: bool = False
    unsafe: bool = False

    def __post_init__(self):
        object.__setattr__(self, "name", str(self.name))
        object.__setattr__(self, "pool", check_pool(self.pool))  # one spelling per pooling: grid:08192 is grid:8192
        check_dtype(self.dtype)
        check_input_size(self.input_size)

    @property
    def build_args(self) -> tuple:
        """(name, weights, input_size, preprocess, unsafe, mixed_precision): what builds the network."""
        return (self.name, self.weights, self.input_size, self.preprocess, self.unsafe, self.mixed_precision)

    def description(self) -> dict:
        """What the cache entry records to rebuild the network later: name, weights, input size, preprocessing and
        the content hashes of the files it reads (checked before an entry's backbone is rebuilt)."""
        return {
            "name": self.name,
            "weights": self.weights,
            "input_size": self.input_size,
            "preprocess": self.preprocess,
            "file_hashes": file_hashes(self.name, self.weights),
        }

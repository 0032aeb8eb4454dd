#!/usr/bin/env python
"""featx on a KerasHub vision transformer: one command, one machine, the same ELPV images, every number a ratio
measured in the same run.

    python benchmarks/bench_hub.py            # DINOv2-S/14 config (12 blocks, width 384) at 224 px, 512 images
    python benchmarks/bench_hub.py --quick    # CI smoke: the same config cut to 4 blocks at 112 px, 48 images
    python benchmarks/bench_hub.py --json out.json --images 256 --batch-size 32

The backbone is a random DINOv2 with dinov2_small's configuration (patch 14, 12 blocks, width 384, 6 heads, MLP
1536, position embeddings for 518 px; no download: random weights have the same FLOPs), saved with save_to_preset
with DINOv2's image converter and read back from that folder, as `featx extract --backbone FOLDER` does. Every
variant runs in a fresh interpreter (peak RSS per variant, no TensorFlow state shared) and extracts every block
(`blocks`) pooled as CLS + mean patch token (DINOv2's linear-evaluation features):

* bare forward: featx's multi-output model (pooling in the graph, one tf.function) on decoded batches held in memory;
  no decode, no writes; the first (tracing) batch is left out. The ceiling.
* featx extract, steady state: `featx.extract` from the image files to an HDF5 cache, while decode, forward passes
  and writes all run at once: from the first committed batch to the last decoded image. Target >= 0.9 x bare.
* featx extract, end to end (backbone build, fingerprints, tracing, extraction, HDF5) vs the naive per-block script
  people write, timed the same way: every image in RAM through KerasHub's image converter, one keras.Model per
  block (KerasHub's own pyramid outputs), model.predict, CLS + mean pooled in numpy. Target >= 3x.
* peak RSS (VmHWM) of featx.extract at N/4 and N images (4x the images): flat (target <= 1.10x), as featx streams
  batches to disk.

Times leave out the Python and TensorFlow imports, which every variant pays alike. The table has the columns
metric, value, unit, ratio, target, met; `--json PATH` writes it with the details and the machine. With a GPU the
same command runs unchanged (add --mixed-precision and --batch-size 128).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

DINOV2_SMALL = {  # dinov2_small's configuration (ViT-S/14, as KerasHub's preset and facebook/dinov2-small)
    "patch_size": 14,
    "num_layers": 12,
    "hidden_dim": 384,
    "num_heads": 6,
    "intermediate_dim": 1536,
    "layer_scale_init_value": 1.0,
    "position_embedding_shape": (518, 518, 3),
}
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
TARGETS = {"steady": 0.9, "naive": 3.0, "rss": 1.10}
RESULT_PREFIX = "BENCH_RESULT "
POOL, LAYERS = "cls+mean", "blocks"


# ----------------------------------------------------------------------------------------------- workers
def _peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))


def _tensorflow(spec):
    from featx import runtime

    with runtime.tensorflow_environment(verbose=False):
        import keras
        import tensorflow as tf
    runtime.configure_tensorflow()
    if spec["mixed_precision"]:
        keras.mixed_precision.set_global_policy("mixed_float16")
    return tf


def _paths(spec) -> list[str]:
    from featx.sources import resolve_source

    images = resolve_source("elpv")
    return list(images.take(spec["images"], 0).paths)


def work_make(spec) -> dict:
    """The random dinov2_small-configured backbone and DINOv2's image converter, saved as a preset folder."""
    _tensorflow(spec)
    import keras
    import keras_hub

    keras.utils.set_random_seed(0)
    side = spec["size"]
    config = {**DINOV2_SMALL, "num_layers": spec["blocks"], "image_shape": (side, side, 3)}
    keras_hub.models.DINOV2Backbone(**config).save_to_preset(spec["folder"])
    mean, std = IMAGENET
    keras_hub.layers.DINOV2ImageConverter(
        image_size=(side, side),
        scale=[1 / 255 / s for s in std],
        offset=[-m / s for m, s in zip(mean, std)],
        interpolation="bicubic",
    ).save_to_preset(spec["folder"])
    return {"config": {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}}


def work_bare(spec) -> dict:
    tf = _tensorflow(spec)
    import numpy as np

    from featx.backbones import describe_layers, get_backbone, layer_selection
    from featx.extractor import LayerExtractor
    from featx.sources.decode import load_rgb

    backbone = get_backbone(spec["folder"], "imagenet")
    layers = list(layer_selection(describe_layers(backbone), LAYERS, model_name=backbone.name, pool=POOL).names)
    extractor = LayerExtractor(backbone, layers, POOL)
    images = np.stack([load_rgb(p, backbone.input_size, **backbone.decode_options) for p in _paths(spec)])
    size = spec["batch_size"]
    batches = [images[i : i + size] for i in range(0, len(images), size)]
    extractor(batches[0])  # tracing
    began = time.perf_counter()
    for batch in batches[1:]:
        extractor(batch)
    seconds = time.perf_counter() - began
    timed = len(images) - len(batches[0])
    return {"images_per_s": timed / seconds, "seconds": seconds, "layers": layers, "device": _device(tf)}


def work_featx(spec) -> dict:
    _tensorflow(spec)
    import featx

    times = {"decoded": [], "committed": []}
    began = time.perf_counter()
    featx.extract(
        featx.DataSpec("elpv", limit=spec["images"]),
        featx.BackboneSpec(spec["folder"], weights="imagenet", pool=POOL, mixed_precision=spec["mixed_precision"]),
        LAYERS,
        cache=spec["cache_dir"],
        compute=featx.Compute(batch_size=spec["batch_size"], progress=False),
        log=None,
        on_event=lambda name, _: times[name].append(time.perf_counter()),
    )
    seconds = time.perf_counter() - began
    commits, decodes = times["committed"], times["decoded"]
    inside = [t for t in commits if t <= max(decodes)]  # from the first commit (tracing done) to the last decode
    steady = (len(inside) - 1) * spec["batch_size"] / (inside[-1] - inside[0]) if len(inside) >= 3 else None
    return {
        "e2e_images_per_s": spec["images"] / seconds,
        "e2e_seconds": seconds,
        "steady_images_per_s": steady,
        "steady_batches": len(inside) - 1,
        "peak_rss_mb": _peak_rss_mb(),
    }


def work_naive(spec) -> dict:
    """The per-block script: all images in RAM, one model per block, model.predict, numpy pooling."""
    _tensorflow(spec)
    import keras
    import keras_hub
    import numpy as np

    began = time.perf_counter()
    backbone = keras_hub.models.Backbone.from_preset(spec["folder"])
    converter = keras_hub.layers.DINOV2ImageConverter.from_preset(spec["folder"])
    side = spec["size"]
    images = np.stack(
        [
            keras.utils.img_to_array(keras.utils.load_img(p, target_size=(side, side), interpolation="bicubic"))
            for p in _paths(spec)
        ]
    )
    x = np.asarray(converter(images))
    features = {}
    for stage in range(1, spec["blocks"] + 1):
        model = keras.Model(backbone.inputs, backbone.pyramid_outputs[f"stage{stage}"])
        tokens = model.predict({"images": x}, batch_size=spec["batch_size"], verbose=0)
        features[stage] = np.concatenate([tokens[:, 0], tokens[:, 1:].mean(axis=1)], axis=1)
    seconds = time.perf_counter() - began
    return {"images_per_s": spec["images"] / seconds, "seconds": seconds, "peak_rss_mb": _peak_rss_mb()}


def _device(tf) -> str:
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name)
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        name = platform.processor() or "CPU"
    return f"{name} ({os.cpu_count()} cores)"


WORKERS = {"make": work_make, "bare": work_bare, "featx": work_featx, "naive": work_naive}


# ------------------------------------------------------------------------------------------ orchestrator
def run_worker(spec: dict, verbose: bool) -> dict:
    began = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")},
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise RuntimeError(f"benchmark worker {spec['kind']} failed with exit code {proc.returncode}:\n{tail}")
    result = json.loads(lines[-1][len(RESULT_PREFIX) :])
    if verbose:
        print(f"  {spec['kind']:<6} N={spec['images']}: {time.perf_counter() - began:.0f}s wall", file=sys.stderr)
    return result


def _row(key, metric, value, unit, ratio=None, target=None):
    met = None if ratio is None or target is None else (ratio <= target if key == "rss" else ratio >= target)
    return {"id": key, "metric": metric, "value": value, "unit": unit, "ratio": ratio, "target": target, "met": met}


def bench(options) -> dict:
    size, blocks = (112, 4) if options.quick else (224, 12)
    n = options.images or (48 if options.quick else 512)
    spec = {
        "images": n,
        "size": size,
        "blocks": blocks,
        "batch_size": options.batch_size,
        "mixed_precision": options.mixed_precision,
    }
    verbose = not options.quiet
    with tempfile.TemporaryDirectory(prefix="featx-bench-hub-") as root:
        spec["folder"] = os.path.join(root, "dinov2_small_random")
        made = run_worker({**spec, "kind": "make"}, verbose)
        bare = run_worker({**spec, "kind": "bare"}, verbose)
        mine = run_worker({**spec, "kind": "featx", "cache_dir": os.path.join(root, "cache")}, verbose)
        naive = run_worker({**spec, "kind": "naive"}, verbose)
        small = None
        if options.rss:  # a quarter of the images: the main run has 4x as many
            small = run_worker(
                {**spec, "kind": "featx", "images": max(1, n // 4), "cache_dir": os.path.join(root, "small")}, verbose
            )
    steady = mine["steady_images_per_s"]
    rows = [
        _row("bare", f"bare forward ({len(bare['layers'])} blocks, {POOL})", bare["images_per_s"], "img/s"),
        _row(
            "steady",
            "featx extract, steady state / bare forward"
            + ("" if steady else " (not measurable: too few images after tracing)"),
            steady,
            "img/s",
            steady / bare["images_per_s"] if steady else None,
            TARGETS["steady"],
        ),
        _row("naive", "naive per-block script, end to end", naive["images_per_s"], "img/s"),
        _row(
            "e2e",
            "featx extract, end to end / naive per-block script",
            mine["e2e_images_per_s"],
            "img/s",
            mine["e2e_images_per_s"] / naive["images_per_s"],
            TARGETS["naive"],
        ),
    ]
    if small is not None:
        rows.append(
            _row(
                "rss",
                f"featx extract peak RSS, {n} / {max(1, n // 4)} images",
                mine["peak_rss_mb"],
                "MB",
                mine["peak_rss_mb"] / small["peak_rss_mb"],
                TARGETS["rss"],
            )
        )
    return {
        "date": datetime.date.today().isoformat(),
        "machine": f"{bare['device']}, {platform.system()} {platform.release()}",
        "loadavg_1m": os.getloadavg()[0],
        "settings": {**{k: v for k, v in spec.items() if k != "folder"}, "config": made["config"]},
        "rows": rows,
        "details": {"bare": bare, "featx": mine, "naive": naive, "featx_quarter": small},
    }


def print_table(report: dict) -> None:
    print(f"featx KerasHub benchmark, {report['date']}, {report['machine']} (load {report['loadavg_1m']:.1f})")
    s = report["settings"]
    print(f"random DINOv2 ({s['blocks']} blocks, width 384, patch 14) at {s['size']} px, {s['images']} ELPV images")
    for row in report["rows"]:
        value = "-" if row["value"] is None else f"{row['value']:.1f} {row['unit']}"
        ratio = "" if row["ratio"] is None else f"{row['ratio']:.2f}x"
        target = "" if row["target"] is None else (("<= " if row["id"] == "rss" else ">= ") + f"{row['target']}x")
        met = {True: "met", False: "NOT met", None: ""}[row["met"]]
        print(f"  {row['metric']:<60} {value:>14} {ratio:>7} {target:>8} {met}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI smoke: 4 blocks at 112 px, 48 images")
    parser.add_argument("--images", type=int, default=None, help="N (default 512; --quick 48); RSS also at N/4")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--mixed-precision", action="store_true", help="float16 compute (GPU)")
    parser.add_argument("--no-rss", dest="rss", action="store_false", help="skip the N/4 run")
    parser.add_argument("--json", default=None, help="also write the report here")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.worker:
        spec = json.loads(options.worker)
        print(RESULT_PREFIX + json.dumps(WORKERS[spec["kind"]](spec)), flush=True)
        return 0
    report = bench(options)
    print_table(report)
    if options.json:
        with open(options.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Training above a cut: the tail from cached maps vs fine-tuning the same layers from the images; halving vs grid.

    python benchmarks/bench_tail.py                      # 256 ELPV images at 224 px, cut block6d_add
    python benchmarks/bench_tail.py --quick              # CI smoke: 120 images at 96 px, tiny searches
    python benchmarks/bench_tail.py --elpv-cache DIR     # also the all-ELPV accuracy rows (entries already cached)

Rows, one run, one machine:

* speed: per epoch, (a) `TailClassifier` trained on the cut's cached maps (`featx extract --pool none`) vs (b) the
  same network fed the images, every layer below the cut frozen (the tail's own train step, on the whole model),
  same images, batch size, optimizer and head; each in a fresh process, median of the epochs after the first
  (tracing), with that process's peak RSS. The images of (b) are decoded, resized and preprocessed once, before
  the clock starts, so (b) is only the forward pass through the frozen bottom: a real fine-tuning run that decodes
  every epoch is slower still. Target: (b) / (a) >= 5 at EfficientNet-Lite0's block6d_add on 2 cores.
* halving: `tune --search halving` of the dense head on the same images' pooled final-layer features vs the exact
  search of the same grid at the full budget: epochs trained (the ratio), seconds, the chosen configuration, and
  whether its score is within noise of the grid's best (two binomial standard errors of the val accuracy).
* accuracy (with --elpv-cache, an all-ELPV cache folder with the 60/15/25 split, seed 0, holding the cut's --pool
  none maps and the avg-pooled blocks,final features with d4 views; read only, nothing is written there): test
  accuracy of the best linear probe (standardized logistic regression, C by val accuracy, over the layer sets of
  --accuracy-layer-sets: top_activation and blocks,final), of the best views+TTA model (the same with d4 views and TTA), and of the tail chosen on val by
  `tune --clf tail --search halving` (its maps streamed from HDF5; --accuracy-epochs sets the budget, default the
  shipped 18; --accuracy-cuts searches several cached cuts), and which of the three val selects.
* rss (--elpv-cache): peak RSS of one epoch of tail training on >= 10,000 maps, streamed from HDF5 against the
  same maps held in memory, each in a fresh process. The maps are the cut's real all-ELPV maps tiled --rss-tiles
  times (default 4: 10,496 images) into a new cache entry written by the cache's own writer (Cache.create,
  CacheEntry.write_layer) in a temporary folder, each tile keeping its rows' labels and split.

Output: a table (printed; `--json PATH` writes it too).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPLIT = (0.6, 0.15, 0.25)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[1], allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="120 images at 96 px, 3 epochs, tiny searches: CI smoke")
    parser.add_argument("--images", type=int, default=None, help="stratified ELPV subset for speed/halving (256)")
    parser.add_argument("--input-size", type=int, default=None, help="input size (default the backbone's, 224)")
    parser.add_argument("--cut", default="block6d_add")
    parser.add_argument("--epochs", type=int, default=None, help="epochs timed per method (default 4; quick 3)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--elpv-cache", default=None, help="all-ELPV cache folder: adds the accuracy and rss rows")
    parser.add_argument(
        "--parts",
        default="speed,halving,accuracy,rss",
        help="comma-separated parts to run (default all; accuracy and rss need --elpv-cache)",
    )
    parser.add_argument(
        "--accuracy-epochs", type=int, default=None, help="accuracy: the tail search's full budget (default 18)"
    )
    parser.add_argument(
        "--accuracy-cuts", default=None, help="accuracy: cached cuts the tail search chooses from (default --cut)"
    )
    parser.add_argument(
        "--accuracy-layer-sets",
        default="top_activation;blocks,final",
        help="accuracy: the probes' layer sets, ';'-separated (D4 on blocks,final is the slow one: tens of minutes)",
    )
    parser.add_argument("--rss-tiles", type=int, default=4, help="rss: copies of the all-ELPV maps (4: 10,496)")
    parser.add_argument("--json", default=None, help="also write the table here")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("--part", default=None, help=argparse.SUPPRESS)  # internal: one timed method
    parser.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--entry", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.input_size, args.epochs = args.images or 120, args.input_size or 96, args.epochs or 3
    args.images, args.epochs = args.images or 256, args.epochs or 4
    if args.part:
        print(json.dumps(timed_part(args)))
        return 0
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    rows, parts = [], set(args.parts.split(","))
    with tempfile.TemporaryDirectory(prefix="featx-bench-tail-") as tmp:
        cache = Path(tmp) / "cache"
        entry_maps, entry_pooled = extract_subset(args, cache) if parts & {"speed", "halving"} else (None, None)
        speed = {}
        for part in ("tail", "images") if "speed" in parts else ():
            say(f"timing {part} ...")
            speed[part] = run_part(args, part, cache, entry_maps)
        if speed:
            ratio = speed["images"]["epoch_s"] / speed["tail"]["epoch_s"]
            rows.append(
                {
                    "part": "speed",
                    "what": f"tail from cached {args.cut} maps",
                    "epoch_s": speed["tail"]["epoch_s"],
                    "peak_rss_mb": speed["tail"]["peak_rss_mb"],
                    "ratio": 1.0,
                }
            )
            rows.append(
                {
                    "part": "speed",
                    "what": "same layers fine-tuned from the images, bottom frozen",
                    "epoch_s": speed["images"]["epoch_s"],
                    "peak_rss_mb": speed["images"]["peak_rss_mb"],
                    "ratio": round(ratio, 2),
                }
            )
        if "halving" in parts:
            say("halving vs grid ...")
            rows += halving_rows(args, cache, entry_pooled)
        if args.elpv_cache and "rss" in parts:
            say(f"peak RSS at {args.rss_tiles} x all-ELPV maps ...")
            rows += rss_rows(args, Path(args.elpv_cache), Path(tmp) / "tiled", say)
    if args.elpv_cache and "accuracy" in parts:
        say("all-ELPV accuracy ...")
        rows += accuracy_rows(args, Path(args.elpv_cache), say)
    print(table(rows))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "rows": rows,
                    "images": args.images,
                    "cut": args.cut,
                    "input_size": args.input_size,
                    "epochs": args.epochs,
                    "batch_size": args.batch_size,
                    "cpus": os.cpu_count(),
                },
                indent=1,
            )
        )
    return 0


def extract_subset(args, cache: Path) -> tuple[str, str]:
    """The subset's cut maps (--pool none) and pooled final layer, each its own entry; their names."""
    import featx

    data = featx.DataSpec("elpv", split=SPLIT, limit=args.images)
    common = {"cache": cache, "compute": featx.Compute(progress=False), "log": None}
    maps = featx.extract(data, featx.BackboneSpec(input_size=args.input_size, pool="none"), args.cut, **common)
    pooled = featx.extract(data, featx.BackboneSpec(input_size=args.input_size), "final", **common)
    return maps.entry.name, pooled.entry.name


def run_part(args, part: str, cache: Path, entry: str) -> dict:
    """One timed method in a fresh process (its own peak RSS): {epoch_s, peak_rss_mb}."""
    command = [
        sys.executable,
        __file__,
        "--part",
        part,
        "--workdir",
        str(cache),
        "--cut",
        args.cut,
        "--images",
        str(args.images),
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--entry",
        entry,
    ]
    if args.input_size:
        command += ["--input-size", str(args.input_size)]
    done = subprocess.run(
        command, check=False, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    )
    if done.returncode != 0:
        raise SystemExit(f"{part} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def timed_part(args) -> dict:
    """In the fresh process: train for args.epochs epochs by `args.part` and time each epoch.

    tail: TailClassifier.fit on the cached maps (no warm-up: every epoch trains head and tail).
    images: the same classifier's network with the frozen bottom in front, fed preprocessed images, stepped by the
    classifier's own full train step (same optimizers, loss, batch size and minibatch order generator).
    """
    import numpy as np

    import featx
    from featx.backbones import backbone_description, backbone_from_entry
    from featx.cache.store import Cache
    from featx.classifiers.tail import TailClassifier

    entry = Cache(args.workdir).open(args.entry)
    if args.part.startswith("rss-"):
        return _rss_epoch(args, entry)
    X, y, meta = featx.load(entry, args.cut)
    train = meta["split"].to_numpy() != "test"
    clf = TailClassifier(
        cut=args.cut,
        backbone=backbone_description(entry),
        warmup_epochs=0,
        epochs=args.epochs,
        patience=None,
        batch_size=args.batch_size,
    )
    if args.part == "tail":
        clf.fit(X[train], y[train], X_val=X[~train], y_val=y[~train])
        seconds = clf.history_["seconds"].to_numpy()
    else:
        seconds = _images_epochs(args, clf, entry, backbone_from_entry(entry), meta, y, train)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return {
        "epoch_s": round(float(np.median(seconds[1:] if len(seconds) > 1 else seconds)), 3),
        "epochs": [round(float(s), 3) for s in seconds],
        "peak_rss_mb": round(peak, 1),
    }


def _rss_epoch(args, entry) -> dict:
    """rss-stream / rss-memory: one epoch (head and tail) on the entry's train maps, validated on its val maps; the
    maps a CachedMaps read in windows from HDF5, or the same maps read whole into an ndarray first."""
    import numpy as np

    from featx.backbones import backbone_description
    from featx.classifiers.tail import TailClassifier
    from featx.features.maps import load_maps

    X, y, meta = load_maps(entry, layers=args.cut)
    split = meta["split"].to_numpy()
    train, val = split == "train", split == "val"
    X_train, X_val = X[train], X[val]
    if args.part == "rss-memory":
        X_train, X_val = np.asarray(X_train), np.asarray(X_val)
    clf = TailClassifier(
        cut=args.cut,
        backbone=backbone_description(entry),
        warmup_epochs=0,
        epochs=1,
        patience=None,
        batch_size=args.batch_size,
    )
    clf._tail_model()  # the backbone built (and TensorFlow loaded) before the RSS baseline
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    clf.fit(X_train, y[train], X_val=X_val, y_val=y[val])
    return {
        "epoch_s": round(float(clf.history_["seconds"].iloc[0]), 1),
        "train_maps": int(train.sum()),
        "maps_bytes": int(len(y)) * X.d * 4,
        "rss_before_fit_mb": round(before, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def _images_epochs(args, clf, entry, backbone, meta, y, train) -> list[float]:
    import keras
    import numpy as np
    import tensorflow as tf
    from PIL import Image

    from featx.sources import resolve_source

    root, (height, width) = resolve_source("elpv").root, backbone.input_size
    images = np.stack(
        [
            np.asarray(Image.open(os.path.join(root, path)).convert("RGB").resize((width, height)), np.float32)
            for path in meta["path"]
        ]
    )
    images = np.asarray(backbone.preprocess(images), np.float32)
    tail = clf._tail_model()
    classes, encoded = np.unique(y, return_inverse=True)
    clf.classes_ = classes
    bottom = keras.Model(backbone.model.input, backbone.model.get_layer(args.cut).output, name="bottom")
    bottom.trainable = False
    inputs = keras.Input(shape=(height, width, 3))
    x = tail(bottom(inputs))
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    x = keras.layers.Dropout(clf.dropout, seed=0, name="head_dropout")(x)
    outputs = keras.layers.Dense(len(classes), activation="softmax", name="head_softmax")(x)
    model = keras.Model(inputs, outputs)
    _, full_step = clf.train_step_functions(model)
    predict = tf.function(lambda m: model(m, training=False))
    rng, seconds = np.random.default_rng(0), []
    rows, held = np.flatnonzero(train), np.flatnonzero(~train)
    targets = np.eye(len(classes), dtype=np.float32)[encoded]
    for _ in range(args.epochs):  # as the tail's loop: shuffled minibatches, one step each, then val predictions
        began = time.perf_counter()
        order = rng.permutation(rows)
        for start in range(0, len(order), args.batch_size):
            batch = order[start : start + args.batch_size]
            full_step(tf.constant(images[batch]), tf.constant(targets[batch]))
        for start in range(0, len(held), 64):
            predict(tf.constant(images[held[start : start + 64]]))
        seconds.append(time.perf_counter() - began)
    return np.array(seconds)


def halving_rows(args, cache: Path, entry: str) -> list[dict]:
    """tune of the dense head on the subset's pooled features: halving over epochs vs the exact grid."""
    import numpy as np

    import featx
    from featx.selection.search import search
    from featx.selection.spaces import BUDGET_SEARCHES, BudgetSearch
    from featx.selection.spec import FitSpec

    X, y, meta = featx.load(entry, cache=cache)
    split = meta["split"].to_numpy()
    space = (
        BudgetSearch({"lr": (0.0003, 0.003, 0.03)}, max_epochs=4, min_epochs=1, fixed={"optimizer": "adam"})
        if args.quick
        else BUDGET_SEARCHES["dense"]
    )
    dense = FitSpec(classifier="dense", transforms={"standardize": True})
    quiet = {"log": lambda *a: None, "metric": "accuracy"}
    halving = search(X, y, split, dense, space=space, **quiet)
    exact = search(X, y, split, dense, space=space.exact(), **quiet)
    n_configs = len(space.configurations())
    spent = sum(n * e for n, e in space.rungs(n_configs))  # per selection split (halving.schedule)
    grid = exact.curve[exact.curve["stage"] == "coarse"]
    chosen = {k: v for k, v in halving.best_params.items() if k in space.grid}
    mine = grid[np.logical_and.reduce([grid[k].map(repr) == repr(v) for k, v in chosen.items()])]
    n_val = int((split == "val").sum())
    noise = 2 * np.sqrt(0.25 / n_val)
    best_grid = float(grid["accuracy"].max())
    mine_score = float(mine["accuracy"].iloc[0])
    return [
        {
            "part": "halving",
            "what": f"exact grid: {n_configs} configurations x {space.max_epochs} epochs",
            "epochs": space.exact_epochs(),
            "seconds": round(exact.seconds, 1),
            "ratio": 1.0,
            "chosen": _label(exact.best_params, space),
            "val_accuracy": round(best_grid, 4),
            "test_accuracy": round(exact.test["accuracy"], 4),
        },
        {
            "part": "halving",
            "what": "successive halving over epochs",
            "epochs": spent,
            "seconds": round(halving.seconds, 1),
            "ratio": round(space.exact_epochs() / spent, 2),
            "chosen": _label(halving.best_params, space),
            "val_accuracy": round(mine_score, 4),
            "test_accuracy": round(halving.test["accuracy"], 4),
            "within_noise": bool(best_grid - mine_score <= noise),
            "noise": round(noise, 4),
            "seconds_ratio": round(exact.seconds / halving.seconds, 2),
        },
    ]


def _label(params: dict, space) -> str:
    return " ".join(f"{k}={params[k]}" for k in (*space.grid, "epochs") if k in params)


def accuracy_rows(args, root: Path, say) -> list[dict]:
    """All-ELPV test accuracy of the tail chosen on val, the best linear probe and the best views+TTA model (each
    chosen on val; test scored once per model), and the one of them val selects. Reads `root`, writes nothing there."""
    import dataclasses

    import numpy as np

    import featx
    from featx.backbones import backbone_description
    from featx.cache.store import Cache
    from featx.features.maps import load_cut_maps, load_maps
    from featx.selection.search import search
    from featx.selection.spaces import BUDGET_SEARCHES
    from featx.selection.spec import FitSpec
    from featx.sources.views import parse_views

    cache = Cache(root)
    pooled = next(e for e in cache.entries() if e.settings["pool"] == "avg")
    cuts = (args.accuracy_cuts or args.cut).split(",")
    maps = next(e for e in cache.entries() if e.settings["pool"] == "none" and set(cuts) <= set(e.layers))
    space = BUDGET_SEARCHES["tail"]
    if args.accuracy_epochs:
        space = dataclasses.replace(
            space, max_epochs=args.accuracy_epochs, min_epochs=min(space.min_epochs, args.accuracy_epochs)
        )
    params = {"backbone": backbone_description(maps)}
    if len(cuts) == 1:  # streamed from HDF5 as it trains, as featx tune does
        (X, y, meta), params["cut"] = load_maps(maps, layers=cuts[0]), cuts[0]
    else:  # the cut is searched too
        X, y, meta = load_cut_maps([maps], cuts)
    split = meta["split"].to_numpy()
    say(f"tail above {','.join(cuts)}: halving, {space.max_epochs} epochs at most, {len(X)} images ...")
    began = time.perf_counter()
    result = search(
        X,
        y,
        split,
        FitSpec(classifier="tail", params=params),
        metric="accuracy",
        space=space,
        compute=featx.Compute(workers=1, progress=True),
        log=say,
    )
    chosen = {k: v for k, v in result.best_params.items() if k in (*space.grid, "cut", "epochs")}
    rows = [
        {
            "part": "accuracy",
            "what": f"tail chosen by halving on val ({space.max_epochs} epochs at most): "
            + " ".join(f"{k}={v}" for k, v in chosen.items()),
            "val_accuracy": round(result.selection_scores["accuracy_mean"], 4),
            "test_accuracy": round(result.test["accuracy"], 4),
            "test_f1_macro": round(result.test["f1_macro"], 4),
            "seconds": round(time.perf_counter() - began, 1),
        }
    ]
    say(f"  {rows[-1]}")
    quiet = {"log": lambda *a: None, "metric": "accuracy"}
    for label, views, tta in (("linear probe", None, False), ("views + TTA", "d4", True)):
        best, began = None, time.perf_counter()
        for layers in args.accuracy_layer_sets.split(";"):
            X, y, meta = featx.load(pooled, layers, views=views)
            split = meta["split"].to_numpy()
            names = tuple(parse_views(views)) if views else ("id",)
            probe = FitSpec(classifier="logreg", transforms={"standardize": True}, views=names, tta=tta)
            result = search(X, y, split, probe, **quiet)
            score = result.selection_scores["accuracy_mean"]
            say(f"{label} {layers}: val {score:.3f} test {result.test['accuracy']:.3f}")
            if best is None or score > best[0]:
                best = (score, result.test, layers, result.best_params.get("C"))
        rows.append(
            {
                "part": "accuracy",
                "what": f"best {label}: logreg on {best[2]} (C={best[3]:.3g}, by val)",
                "val_accuracy": round(best[0], 4),
                "test_accuracy": round(best[1]["accuracy"], 4),
                "test_f1_macro": round(best[1]["f1_macro"], 4),
                "seconds": round(time.perf_counter() - began, 1),
            }
        )
    top = max(rows, key=lambda r: r["val_accuracy"])
    rows.append(
        {
            "part": "accuracy",
            "what": f"val selects: {top['what'].split(':')[0]}",
            "val_accuracy": top["val_accuracy"],
            "test_accuracy": top["test_accuracy"],
            "test_f1_macro": top["test_f1_macro"],
        }
    )
    assert np.isfinite([r["test_accuracy"] for r in rows]).all()
    return rows


def rss_rows(args, root: Path, work: Path, say) -> list[dict]:
    """Peak RSS of one epoch of the tail on >= 10,000 maps: streamed from HDF5 vs held in memory, fresh processes."""
    import numpy as np

    from featx.classifiers.tail import stream_bytes

    entry = tile_maps(root, args.cut, args.rss_tiles, work)
    say(f"  tiled {len(entry.labels)} images into {entry.path}")
    rows = []
    for part in ("stream", "memory"):
        say(f"  one epoch, maps {part} ...")
        result = run_part(args, f"rss-{part}", work, entry.name)
        rows.append(
            {
                "part": "rss",
                "what": f"tail, one epoch on {result['train_maps']} train maps of {args.cut}, "
                + ("streamed from HDF5" if part == "stream" else "held in memory"),
                "maps_mb": round(result["maps_bytes"] / 2**20, 1),
                "peak_rss_mb": result["peak_rss_mb"],
                "rss_before_fit_mb": result["rss_before_fit_mb"],
                "epoch_s": result["epoch_s"],
            }
        )
    map_shape = tuple(entry.layer_info[args.cut]["output_shape"])
    rows[0]["stream_bound_mb"] = round(stream_bytes(map_shape, args.batch_size) / 2**20, 1)
    assert np.isfinite([r["peak_rss_mb"] for r in rows]).all()
    return rows


def tile_maps(root: Path, cut: str, tiles: int, work: Path):
    """A cache entry (in `work`) of the all-ELPV maps of `cut` repeated `tiles` times, written by the cache's own
    writer: the source entry's settings and layer info, image paths prefixed tile<k>/, labels, split, fingerprints
    and decoded flags repeated; rows copied chunk by chunk (never all in memory)."""
    import numpy as np

    from featx.cache.key import cache_key
    from featx.cache.manifest import EntryManifest
    from featx.cache.store import Cache
    from featx.features.maps import CachedMaps

    source = next(e for e in Cache(root).entries() if e.settings["pool"] == "none" and cut in e.layers)
    n = len(source.labels)
    data = {
        "paths": np.array([f"tile{k}/{p}" for k in range(tiles) for p in source.relpaths]),
        **{
            k: np.tile(np.asarray(source.data[k]), tiles)
            for k in ("labels", "fingerprints", "split", "valid", "errors")
        },
    }
    manifest = EntryManifest(
        key=cache_key(source.settings, list(data["paths"]), list(data["fingerprints"]), data["labels"]),
        settings=source.settings,
        layer_info={cut: source.layer_info[cut]},
        class_names=source.class_names,
        backbone_args=source.backbone_args,
        description=f"bench_tail: {tiles} tiles of {source.name}",
        split_settings=source.split_settings,
    )
    entry = Cache(work).create(manifest, data)
    maps = CachedMaps(source, cut, np.arange(n))
    entry.write_layer(
        cut,
        lambda start, stop: maps.read(np.arange(start, stop) % n),
        n * tiles,
        maps.d,
        source.dtype,
        {k: v for k, v in source.layer_info[cut].items() if k in ("output_shape", "n_features")},
    )
    return Cache(work).open(entry.name)


def table(rows: list[dict]) -> str:
    import pandas as pd

    out = []
    for _part, group in pd.DataFrame(rows).groupby("part", sort=False):
        out.append(group.dropna(axis=1, how="all").drop(columns="part").to_string(index=False))
    return "\n\n".join(out)


if __name__ == "__main__":
    sys.exit(main())

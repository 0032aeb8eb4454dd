#!/usr/bin/env python
"""Beyond plain frozen features, on ELPV: plain vs views vs views+TTA vs each pooling vs Lite1/Lite2, one split, one run.

    python benchmarks/bench_views.py                    # every ELPV image, 25% held out (about 30 minutes on 2 cores)
    python benchmarks/bench_views.py --quick            # CI smoke: 120 images at 96 px (about 2 minutes)
    python benchmarks/bench_views.py --images 800 --json out.json

Every variant is extracted into a fresh cache folder by `featx.extract` (its wall time is the `extract_s`
column; a row that adds views to an existing entry times only the views it adds, as a user would see) and
classified with the same recipe: standardized features -> logistic regression, C chosen from a fixed grid by
validation accuracy (never by test), then test scored once for the selected C. Rows:

* plain: efficientnet_lite0, avg pooling, identity view only;
* flip / d4 (train): trained on every view of the training images, val and test on the identity view;
* flip / d4 + TTA: the same fitted models, predicting the mean probability over an image's views;
* max, avgmax, gem, pyramid: the other poolings, plain;
* efficientnet_lite1 / efficientnet_lite2: their own input sizes (240, 260), avg, plain.

Output: a table (printed; `--json PATH` writes it too) with columns variant, backbone, pool, views, tta,
extract_s, n_features, C, val_accuracy, test_accuracy, test_f1_macro.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

GRID = (0.001, 0.003, 0.01, 0.03, 0.1)
QUICK_GRID = (0.01, 0.1)
SPLIT = (0.6, 0.15, 0.25)  # 25% held out, as in the ELPV paper's protocol; val selects, train+val = 75%
POOLINGS = ("max", "avgmax", "gem", "pyramid")
BIGGER = ("efficientnet_lite1", "efficientnet_lite2")
COLUMNS = (
    "variant",
    "backbone",
    "pool",
    "views",
    "tta",
    "extract_s",
    "n_features",
    "C",
    "val_accuracy",
    "test_accuracy",
    "test_f1_macro",
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[1], formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("--quick", action="store_true", help="120 images at 96 px, two C values: a CI smoke run")
    parser.add_argument("--images", type=int, default=None, help="stratified subset of ELPV (default: all 2,624)")
    parser.add_argument(
        "--input-size", type=int, default=None, help="one input size for every backbone (default: each its own)"
    )
    parser.add_argument("--layers", default="final", help="layers to classify (default final)")
    parser.add_argument("--cache-dir", default=None, help="cache folder (default: a temporary one, removed afterwards)")
    parser.add_argument("--json", default=None, help="also write the table here")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.input_size = args.images or 120, args.input_size or 96
    with tempfile.TemporaryDirectory(prefix="featx-bench-views-") as tmp:
        rows = run(args, Path(args.cache_dir or tmp))
    print(table(rows))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "columns": COLUMNS,
                    "rows": rows,
                    "split": SPLIT,
                    "images": args.images,
                    "layers": args.layers,
                    "cpus": os.cpu_count(),
                },
                indent=1,
            )
        )
    return 0


def run(args, root: Path) -> list[dict]:
    import featx
    from featx.sources.views import parse_views

    grid = QUICK_GRID if args.quick else GRID
    data = featx.DataSpec("elpv", split=SPLIT, limit=args.images)
    compute = featx.Compute(progress=not args.quiet)
    rows = []

    def extract(folder: str, backbone: str, pool: str = "avg", views=None):
        began = time.perf_counter()
        entry = featx.extract(
            data,
            featx.BackboneSpec(backbone, input_size=args.input_size, pool=pool),
            args.layers,
            views=views,
            cache=root / folder,
            compute=compute,
            log=None,
        ).entry
        return entry, time.perf_counter() - began

    plain, seconds = extract("lite0", "efficientnet_lite0")
    rows += score("plain", plain, seconds, args.layers, ("id",), grid)
    for spec in ("flip", "d4"):  # the same entry: adding d4 after flip computes its 6 new views only
        entry, seconds = extract("lite0", "efficientnet_lite0", views=spec)
        rows += score(spec, entry, seconds, args.layers, parse_views(spec), grid)
    for pool in POOLINGS:
        entry, seconds = extract(f"lite0-{pool}", "efficientnet_lite0", pool=pool)
        rows += score(f"pool {pool}", entry, seconds, args.layers, ("id",), grid)
    for backbone in BIGGER:
        entry, seconds = extract(backbone, backbone)
        rows += score(backbone.replace("efficientnet_", ""), entry, seconds, args.layers, ("id",), grid)
    return rows


def score(variant: str, entry, extract_s: float, layers: str, views, grid) -> list[dict]:
    """Logistic regression on standardized features, one model per C of the grid, fitted once.

    Rows: "<variant>" (with views: "<variant> (train)", predicting from the identity view), and with views
    "<variant> + TTA", the same fitted models predicting by the mean over each image's views (tta changes
    prediction only). Each row selects its C by val accuracy and scores test for that C only.
    """
    from featx.features.load import load
    from featx.selection.spec import FitSpec
    from featx.selection.train import train_and_score

    X, y, meta = load(entry, layers, views=tuple(views) if len(views) > 1 else None)
    split = meta["split"].to_numpy()
    models = {
        C: train_and_score(
            X,
            y,
            split,
            FitSpec(
                classifier="logreg",
                params={"C": C, "max_iter": 3000},
                transforms={"standardize": True},
                views=tuple(views),
            ),
            class_names=entry.class_names,
            eval_splits=(),
        ).pipeline
        for C in grid
    }
    base = {
        "backbone": entry.settings["backbone"],
        "pool": entry.settings["pool"],
        "views": ",".join(views),
        "n_features": X.shape[1] // len(views),
    }
    if len(views) == 1:
        return [
            {
                "variant": variant,
                **base,
                "tta": False,
                "extract_s": round(extract_s, 1),
                **_selected(models, X, y, split, entry.class_names),
            }
        ]
    rows = [
        {
            "variant": f"{variant} (train)",
            **base,
            "tta": False,
            "extract_s": round(extract_s, 1),
            **_selected(models, X, y, split, entry.class_names),
        }
    ]
    for model in models.values():
        model.set_params(tta=True)
    rows.append(
        {
            "variant": f"{variant} + TTA",
            **base,
            "tta": True,
            "extract_s": 0.0,
            **_selected(models, X, y, split, entry.class_names),
        }
    )
    return rows


def _selected(models: dict, X, y, split, class_names) -> dict:
    """C by val accuracy (ties: the stronger regularization), then test accuracy and macro-F1 for that C only."""
    from featx.selection.metrics import evaluate

    val, test = split == "val", split == "test"
    accuracy = {C: evaluate(y[val], model.predict(X[val]), class_names)["accuracy"] for C, model in models.items()}
    best = max(models, key=lambda C: (accuracy[C], -C))
    metrics = evaluate(y[test], models[best].predict(X[test]), class_names)
    return {
        "C": best,
        "val_accuracy": round(accuracy[best], 4),
        "test_accuracy": round(metrics["accuracy"], 4),
        "test_f1_macro": round(metrics["f1_macro"], 4),
    }


def table(rows: list[dict]) -> str:
    import pandas as pd

    return pd.DataFrame(rows, columns=list(COLUMNS)).to_string(index=False)


if __name__ == "__main__":
    sys.exit(main())

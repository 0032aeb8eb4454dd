#!/usr/bin/env python
"""featx model-selection benchmark: `tune` of logreg on the largest layer set of a cache, and the FNE recipe.

    python benchmarks/bench_tune.py --cache-dir /tmp/elpv_full               # all ELPV images (extracts if missing)
    python benchmarks/bench_tune.py --cache-dir /tmp/bench_tune --limit 240 --cv 3   # a quick smoke run

Rows (one line each, also as JSON with --json PATH):
* tune logreg: the whole `tune` call (standardized features, C path 1e-6..1e6 then refined, selection by
  --cv K folds or on val, refit on train+val, one test score) on every cached layer at once.
* FNE + linear-svm fit: `featx.fit(entry, layers, featx.fit_spec("linear-svm", discretize="fne"))` on the same
  layers (the FNE paper's recipe), train split, scored on val and test.
Times exclude imports; the machine's other load is not controlled (run it on an idle machine for numbers
to quote).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import featx
from featx.compute import Compute
from featx.experiments.tune import tune
from featx.selection.spec import Evaluation, tune_specs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--cache-dir", default=None, help="cache folder (default: a new temporary one)")
    p.add_argument(
        "--layers",
        default="blocks,top_activation",
        help="layers to extract and tune on (default blocks,top_activation)",
    )
    p.add_argument("--limit", type=int, default=None, help="stratified subset of ELPV images (default: all)")
    p.add_argument("--cv", type=int, default=5, help="selection folds (default 5; 0: on val)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the rows as JSON")
    args = p.parse_args(argv)
    cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="bench_tune-")
    quiet = {"log": lambda *a: None}
    entry = featx.extract(
        featx.DataSpec("elpv", limit=args.limit),
        featx.BackboneSpec(),
        args.layers,
        cache=cache_dir,
        compute=featx.Compute(progress=False),
        **quiet,
    ).entry
    X, y, _ = featx.load(entry, args.layers)
    rows = []
    began = time.perf_counter()
    [result] = tune(
        entry,
        args.layers,
        tune_specs("logreg", standardize=True),
        Evaluation(cv=args.cv or None, fit_on="train+val"),
        cache=cache_dir,
        compute=Compute(workers=-1),
        **quiet,
    )
    rows.append(
        {
            "metric": f"tune logreg on {args.layers} ({X.shape[1]} features, {len(y)} images, "
            f"{len(result.curve)} C points on {result.selection})",
            "value": round(time.perf_counter() - began, 1),
            "unit": "s",
            "note": result.line(),
        }
    )
    began = time.perf_counter()
    fne = featx.fit(entry, args.layers, featx.fit_spec("linear-svm", discretize="fne"), cache=cache_dir, **quiet)
    rows.append(
        {
            "metric": f"fit FNE + linear-svm on {args.layers} ({X.shape[1]} features)",
            "value": round(time.perf_counter() - began, 1),
            "unit": "s",
            "note": f"fit {fne.scores.fit_seconds:.1f}s; val acc {fne.metrics['val']['accuracy']:.3f}",
        }
    )
    for row in rows:
        print(f"{row['metric']}: {row['value']} {row['unit']}  ({row['note']})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

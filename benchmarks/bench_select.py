#!/usr/bin/env python
"""Model selection at real size: the standard comparison as a plain scikit-learn loop vs featx, in one run.

    python benchmarks/bench_select.py                      # every ELPV image through EfficientNet-Lite0
    python benchmarks/bench_select.py --images 600         # a stratified subset (say so when quoting it)
    python benchmarks/bench_select.py --quick              # CI smoke: 200 images at 96 px, --cv 3
    python benchmarks/bench_select.py --cache-dir DIR      # reuse an entry extracted there before (not timed)
    python benchmarks/bench_select.py --cache-dir DIR --entry NAME   # that entry as it is (no extraction, no TF)
    python benchmarks/bench_select.py --scale              # also the MAMe-sized fit line (expensive)
    python benchmarks/bench_select.py --parts scale --scale-classifiers rf,logreg   # only (some of) that line

On ELPV features of efficientnet_lite0 (layers blocks,top_activation), the comparison
`featx compare --layer-sets top_activation blocks each --clf logreg,linear-svm,rf --cv 5 --standardize` is run

* (a) as the loop users write: per row `cross_validate(make_pipeline(StandardScaler(), clf), X, y, cv=folds)` with
  scikit-learn's default estimators (LogisticRegression(), LinearSVC(), RandomForestClassifier(random_state=0)),
  one row after the other, on the same folds featx makes (so the best rows are comparable);
* (b) by featx.compare, exact (every row on every fold, plus each row's train fit scored on val and test and logged);
* (c) by featx.compare --search halving.

The extraction is not timed. Each line: wall seconds, the plain loop's time over it (the speed-up), the best row
and its CV score (balanced accuracy: ELPV's classes are imbalanced). The three are measured in the same run, one
after the other, so their ratios are comparable even on a busy machine; absolute times are not.

--scale adds fits on a MAMe-sized matrix (--scale-rows x --scale-features, default 20,000 x 12,416, --scale-classes
29): real ELPV features (every Lite0 layer avg-pooled, 25,096 columns, 224 px, views d4 + crops:5 of every image:
13 views), one row per (image, view) taken image by image, their first --scale-features columns (tiled only where
narrower), labelled by the (class, view) pair folded to the class count (every label occurs); fit seconds, peak RSS
(the child's VmHWM) and solver iterations of rf(50 trees, leaf 2), linear-svm, logreg, nystroem-svm and the exact
RBF svm (its 20,000 x 20,000 kernel by BLAS: 7.6 GB at its peak as measured, run it alone), each in a fresh process
(--scale-classifiers picks some; --parts scale runs only this line).

Output: the table (printed; --json PATH writes it too).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = "blocks,top_activation"
LAYER_SETS = ("top_activation", "blocks", "each")
CLASSIFIERS = ("logreg", "linear-svm", "rf")
SCALE_VIEWS = "d4,crops:5"  # 8 + 5 views of each image, the identity among them: 13 rows per image
SCALE_CLASSIFIERS = {  # the scale line: classifier -> its parameters
    "rf": {"n_estimators": 50, "min_samples_leaf": 2},
    "linear-svm": {},
    "logreg": {},
    "nystroem-svm": {},
    "svm": {},  # exact RBF SVM, kernel by BLAS (20,000 rows: a 3.2 GB kernel; check free memory first)
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[1], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="200 images at 96 px (or --entry's), --cv 3: a CI smoke run"
    )
    parser.add_argument("--images", type=int, default=None, help="stratified subset of ELPV (default: all 2,624)")
    parser.add_argument("--input-size", type=int, default=None, help="input size (default: Lite0's 224)")
    parser.add_argument("--cv", type=int, default=5, help="folds (default 5)")
    parser.add_argument("--cache-dir", default=None, help="cache folder (default: a temporary one, removed afterwards)")
    parser.add_argument(
        "--entry",
        default=None,
        help="an entry of --cache-dir holding layers blocks,top_activation to use as it is (no extraction), "
        "e.g. the full ELPV Lite0 224 px entry",
    )
    parser.add_argument("--skip-plain", action="store_true", help="no plain loop (its time is then not measured)")
    parser.add_argument("--scale", action="store_true", help="also the MAMe-sized fit line (minutes to hours)")
    parser.add_argument(
        "--parts",
        default=None,
        help="comma-separated parts to run: select (the comparison), scale (the MAMe-sized line); default select, "
        "or select,scale with --scale",
    )
    parser.add_argument(
        "--scale-classifiers",
        default=",".join(SCALE_CLASSIFIERS),
        help=f"the scale line's classifiers (default {','.join(SCALE_CLASSIFIERS)}), each fitted in a fresh process",
    )
    parser.add_argument("--scale-rows", type=int, default=20_000)
    parser.add_argument("--scale-features", type=int, default=12_416)
    parser.add_argument("--scale-classes", type=int, default=29)
    parser.add_argument("--json", default=None, help="also write the table here")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    parts = set((args.parts or ("select,scale" if args.scale else "select")).split(","))
    if not parts or parts - {"select", "scale"}:
        parser.error(f"--parts takes select and/or scale, not {args.parts!r}")
    unknown = set(args.scale_classifiers.split(",")) - set(SCALE_CLASSIFIERS)
    if unknown:
        parser.error(
            f"--scale-classifiers takes some of {','.join(SCALE_CLASSIFIERS)}, not {','.join(sorted(unknown))}"
        )
    if args.quick:
        args.images, args.input_size, args.cv = args.images or 200, args.input_size or 96, 3
    with tempfile.TemporaryDirectory(prefix="featx-bench-select-") as tmp:
        root = Path(args.cache_dir or tmp)
        report = run(args, root, Path(tmp)) if "select" in parts else {}
        if "scale" in parts:
            report["scale"] = scale(args, root)
    print(table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))
    return 0


def run(args, root: Path, scratch: Path) -> dict:
    import featx

    began = time.perf_counter()
    if args.entry:
        from featx.cache.store import Cache

        entry = Cache(root).open(args.entry)
    else:
        entry = featx.extract(
            featx.DataSpec("elpv", limit=args.images),
            featx.BackboneSpec(input_size=args.input_size),
            LAYERS,
            cache=root,
            compute=featx.Compute(progress=not args.quiet),
            log=None,
        ).entry
    extract_s = time.perf_counter() - began
    rows = []
    if not args.skip_plain:
        rows.append(plain_loop(entry, args.cv))
        _say(rows[-1])
    for search in ("exact", "halving"):
        began = time.perf_counter()
        result = featx.compare(
            entry.name,
            LAYER_SETS,
            featx.compare_specs(CLASSIFIERS, standardize=True),
            featx.Evaluation(cv=args.cv, search=search),
            cache=featx.Cache(root, runs_dir=scratch / f"runs-{search}"),
            compute=featx.Compute(progress=not args.quiet),
            log=None,
        )
        seconds = time.perf_counter() - began
        top = result.table.iloc[0]
        rows.append(
            {
                "method": f"featx compare ({search})",
                "seconds": seconds,
                "rows": len(result.table),
                "fits": result.fits,
                "not_converged": result.not_converged,
                "best": f"{top['model']} on {top['layers']}",
                "best_score": float(top[result.score]),
                "metric": result.metric,
                "train_fit_seconds_by_classifier": {
                    clf: round(float(t), 1)
                    for clf, t in result.table.groupby("classifier")["fit_seconds"].sum().items()
                },
            }
        )
        _say(rows[-1])
    plain = rows[0]["seconds"] if not args.skip_plain else None
    for row in rows:
        row["plain_over_this"] = plain / row["seconds"] if plain else None
    from featx.features.load import load

    return {
        "images": len(load(entry, "top_activation")[1]),
        "entry": entry.name,
        "cv": args.cv,
        "extract_seconds": extract_s,
        "cpus": os.cpu_count(),
        "load": os.getloadavg(),
        "rows": rows,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def plain_loop(entry, cv: int) -> dict:
    """The loop a scikit-learn user writes: cross_validate per (layer subset, classifier), default estimators,
    one row after the other; the folds are featx's (same seed), so the best row is comparable."""
    import numpy as np
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_validate
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    from featx.features.load import load
    from featx.selection.cv import make_folds
    from featx.selection.metrics import default_metric

    features = load(entry, LAYERS)
    X, y, meta = features
    split, slices = meta["split"].to_numpy(), features.feature_slices
    metric, _ = default_metric(y[split != "test"])
    folds = make_folds(y, split, cv, 1, 0)
    blocks = [n for n in slices if n != "top_activation"]
    subsets = {"top_activation": ["top_activation"], "blocks": blocks, **{n: [n] for n in slices}}
    estimators = {
        "logreg": LogisticRegression,
        "linear-svm": LinearSVC,
        "rf": lambda: RandomForestClassifier(random_state=0),
    }
    scores, not_converged, by_classifier = {}, 0, dict.fromkeys(estimators, 0.0)
    began = time.perf_counter()
    for name, layers in subsets.items():
        columns = np.concatenate([np.arange(*slices[n]) for n in layers])
        for clf, make in estimators.items():
            started = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = cross_validate(
                    make_pipeline(StandardScaler(), make()), X[:, columns], y, cv=list(folds.splits), scoring=metric
                )
            not_converged += sum("converge" in str(w.message).lower() for w in caught)
            scores[(clf, name)] = float(result["test_score"].mean())
            by_classifier[clf] += time.perf_counter() - started
    seconds = time.perf_counter() - began
    (clf, name), best = max(scores.items(), key=lambda item: item[1])
    return {
        "method": "plain scikit-learn loop",
        "seconds": seconds,
        "rows": len(scores),
        "fits": len(scores) * len(folds),
        "not_converged": not_converged,
        "best": f"{clf} on {name}",
        "best_score": best,
        "metric": metric,
        "seconds_by_classifier": {clf: round(t, 1) for clf, t in by_classifier.items()},
    }


def scale(args, root: Path) -> list[dict]:
    """Fit time and peak RSS of the large-n classifiers on a MAMe-sized matrix of real features."""
    import numpy as np

    import featx
    from featx.features.load import load
    from featx.sources.views import parse_views

    views = parse_views(SCALE_VIEWS)
    entry = featx.extract(
        "elpv",
        "efficientnet_lite0",
        "all",
        views=SCALE_VIEWS,
        cache=root / "scale",
        compute=featx.Compute(progress=not args.quiet),
        log=None,
    ).entry
    X, y, _ = load(entry, "all", views=views)  # (n_images, V * d): each image's views side by side
    width = X.shape[1] // len(views)
    rows = X.reshape(len(X) * len(views), width)  # one row per (image, view), image by image
    # label = the (class, view) pair, folded to the class count; rows are taken image by image, so every pair occurs
    labels = (y[:, None] * len(views) + np.arange(len(views))).ravel() % args.scale_classes
    rows = rows[: args.scale_rows]
    if len(np.unique(labels[: len(rows)])) != args.scale_classes:
        raise SystemExit(
            f"error: the scale matrix's first {len(rows)} rows hold fewer than {args.scale_classes} labels"
        )
    reps = -(-args.scale_features // rows.shape[1])
    matrix = np.tile(rows, (1, reps))[:, : args.scale_features].astype(np.float32)
    path = root / "scale.npz"
    np.savez(path, X=matrix, y=labels[: len(matrix)])
    out = []
    for clf in args.scale_classifiers.split(","):
        params = SCALE_CLASSIFIERS[clf]
        code = (
            "import json,sys,time,numpy as np\nfrom featx.selection.spec import FitSpec\n"
            f"d=np.load({str(path)!r});X,y=d['X'],d['y']\n"
            f"p=FitSpec(classifier={clf!r},params={params!r},transforms={{'standardize':True}},n_jobs=-1).pipeline()\n"
            "b=time.perf_counter();p.fit(X,y);s=time.perf_counter()-b\n"
            # VmHWM: this process's own peak; ru_maxrss would carry the parent's peak across fork and exec
            "hwm=[l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]\n"
            "n=getattr(p[-1],'n_iter_',None);n=None if n is None else int(np.max(n))\n"
            "print(json.dumps({'seconds':s,'rss_mb':int(hwm)/1024,'n_iter':n}))"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
        )
        result = (
            json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else {"error": done.stderr[-300:]}
        )
        out.append({"classifier": clf, "params": params, "shape": list(matrix.shape), **result})
        print(out[-1], file=sys.stderr, flush=True)
    return out


def _say(row: dict) -> None:
    print(
        f"  {row['method']}: {row['seconds']:.1f}s, best {row['best']} {row['best_score']:.3f}"
        + "".join(f", {k} {row[k]}" for k in ("seconds_by_classifier", "train_fit_seconds_by_classifier") if k in row),
        file=sys.stderr,
        flush=True,
    )


def table(report: dict) -> str:
    lines = (
        []
        if "rows" not in report
        else [
            f"ELPV {report['images']} images, efficientnet_lite0 {LAYERS}; --layer-sets {' '.join(LAYER_SETS)} "
            f"--clf {','.join(CLASSIFIERS)} --cv {report['cv']} --standardize; {report['cpus']} CPUs, load "
            f"{report['load'][0]:.1f} at the end, {report['date']}",
            f"{'method':28s} {'seconds':>8s} {'plain/this':>10s} {'fits':>5s} {'not conv.':>9s}  best row (CV mean)",
        ]
    )
    for row in report.get("rows", []):
        ratio = f"{row['plain_over_this']:.2f}x" if row["plain_over_this"] else "-"
        lines.append(
            f"{row['method']:28s} {row['seconds']:8.1f} {ratio:>10s} {row['fits']:5d} "
            f"{row['not_converged']:9d}  {row['best']} {row['metric']} {row['best_score']:.3f}"
        )
    for row in report.get("scale", []):
        lines.append(
            f"scale {row['shape'][0]}x{row['shape'][1]} {row['classifier']} {row['params']}: "
            + (f"{row['seconds']:.1f}s, peak RSS {row['rss_mb']:.0f} MB" if "seconds" in row else row["error"])
            + (f", {row['n_iter']} iterations" if row.get("n_iter") is not None else "")
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

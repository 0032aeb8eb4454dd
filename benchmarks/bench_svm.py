#!/usr/bin/env python
"""The exact RBF SVM with BLAS kernels (featx's `svm`) against scikit-learn's SVC, measured in one run (issue 36).

    python benchmarks/bench_svm.py --cache-dir DIR                 # all ELPV through EfficientNet-Lite0, all layers
    python benchmarks/bench_svm.py --cache-dir DIR --entry NAME    # that entry as it is (no extraction, no TF)
    python benchmarks/bench_svm.py --quick --cache-dir DIR --entry NAME   # CI smoke: --cv 3
    python benchmarks/bench_svm.py --parts pipeline --cache-dir DIR       # pipelines/elpv_best.toml, before/after

Parts (--parts, comma-separated; default fit,tune):

* fit: featx's `svm` (featx.classifiers.svm.BlasSVC, as `--clf svm` builds it) and scikit-learn's `SVC()` on the
  same standardized arrays (every layer of the entry; StandardScaler fitted on the train rows): the fit on train,
  then decision_function on val and on test. Seconds of each step, SVC's total over featx's (the speed-up), whether
  the predictions are identical and the largest difference of the decision values.
* tune: `featx tune --clf svm --layers blocks,top_activation --cv 5 --standardize` (featx.tune: the C x
  gamma_scale grid, refined around its best, refit on train+val, test scored once) against GridSearchCV of
  Pipeline(StandardScaler, SVC with gamma = gamma_scale x "scale") on the same folds over the points featx tried
  (its grid and refinement, in its order), refit on train+val, test scored once. Seconds, the ratio, the chosen
  point of each and the largest difference between their CV scores. featx also fits its default point (C=1,
  gamma="scale"), which GridSearchCV does not.
* pipeline: `featx run pipelines/elpv_best.toml --refit` (RBF SVM C=30 on 8 D4 views of every train cell, TTA) as it
  is and with solver = "libsvm" (scikit-learn's SVC: what `--clf svm` was before), each in a fresh process; the
  entry (8 views of 2,624 images at 300 px) is extracted first if it is missing, untimed (most of an hour).

The extraction is not timed. The parts run one after the other, each pair of methods back to back, so ratios are
comparable on a busy machine; absolute times are not. Output: the table (printed; --json PATH writes it too).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.svm import SVC

ROOT = Path(__file__).resolve().parents[1]
TUNE_LAYERS = "blocks,top_activation"
PIPELINE = ROOT / "pipelines" / "elpv_best.toml"
PARTS = ("fit", "tune", "pipeline")


class ScaledGammaSVC(SVC):
    """SVC whose gamma is `gamma_scale` times "scale" (1 / (n_features * X.var())) of the rows it fits: featx tune's
    svm grid, in plain scikit-learn (the variance of X as passed, as tune computes it)."""

    def __init__(self, *, C=1.0, gamma_scale=1.0):
        super().__init__(C=C)
        self.gamma_scale = gamma_scale

    def fit(self, X, y, sample_weight=None):
        self.gamma = self.gamma_scale / (X.shape[1] * max(float(np.asarray(X).var()), 1e-12))
        return super().fit(X, y, sample_weight=sample_weight)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[1], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="CI smoke: --cv 3 (and 200 images at 96 px unless --entry)"
    )
    parser.add_argument("--cache-dir", default=None, help="cache folder (default: a temporary one, removed afterwards)")
    parser.add_argument("--entry", default=None, help="an entry of --cache-dir to use as it is (no extraction)")
    parser.add_argument("--parts", default="fit,tune", help=f"comma-separated, among {','.join(PARTS)}")
    parser.add_argument("--cv", type=int, default=5, help="tune's folds (default 5)")
    parser.add_argument("--json", default=None, help="also write the report here")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    parts = args.parts.split(",")
    if set(parts) - set(PARTS):
        parser.error(f"--parts takes some of {','.join(PARTS)}, not {args.parts!r}")
    if args.quick:
        args.cv = 3
    with tempfile.TemporaryDirectory(prefix="featx-bench-svm-") as tmp:
        root = Path(args.cache_dir or tmp)
        report = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(), "rows": []}
        if "fit" in parts or "tune" in parts:
            entry = _entry(args, root)
            report["entry"] = entry.name
            if "fit" in parts:
                report["rows"].append(fit_part(entry, args))
            if "tune" in parts:
                report["rows"].append(tune_part(entry, root, Path(tmp), args))
        if "pipeline" in parts:
            report["rows"].append(pipeline_part(root, Path(tmp), args))
        report["load"] = os.getloadavg()
    print(table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))
    return 0


def _entry(args, root: Path):
    import featx
    from featx.cache.store import Cache

    if args.entry:
        return Cache(root).open(args.entry)
    limit, input_size = (200, 96) if args.quick else (None, None)
    return featx.extract(
        featx.DataSpec("elpv", limit=limit),
        featx.BackboneSpec(input_size=input_size),
        "all",
        cache=root,
        compute=featx.Compute(progress=not args.quiet),
        log=None,
    ).entry


def _say(args, text: str) -> None:
    if not args.quiet:
        print(text, file=sys.stderr, flush=True)


def fit_part(entry, args) -> dict:
    """featx's svm vs SVC() on the same standardized rows of every layer: fit on train, decide val and test."""
    from sklearn.preprocessing import StandardScaler

    from featx.classifiers import make_classifier
    from featx.features.load import load

    X, y, meta = load(entry)  # every cached layer
    split = meta["split"].to_numpy()
    scaler = StandardScaler().fit(X[split == "train"])
    parts = {s: (scaler.transform(X[split == s]), y[split == s]) for s in ("train", "val", "test")}
    timings, decisions = {}, {}
    for name, model in (("sklearn", SVC()), ("featx", make_classifier("svm"))):
        _say(args, f"fit: {name} on {parts['train'][0].shape} ...")
        steps = {}
        began = time.perf_counter()
        model.fit(*parts["train"])
        steps["fit"] = time.perf_counter() - began
        for s in ("val", "test"):
            began = time.perf_counter()
            decisions[name, s] = model.decision_function(parts[s][0])
            steps[f"decide_{s}"] = time.perf_counter() - began
        decisions[name, "predict"] = np.concatenate([model.predict(parts[s][0]) for s in ("val", "test")])
        timings[name] = steps
        _say(args, f"fit: {name} {steps}")
    total = {name: sum(steps.values()) for name, steps in timings.items()}
    return {
        "part": "fit",
        "what": f"svm fit + decision on val and test, {parts['train'][0].shape[0]} x {X.shape[1]} standardized",
        "sklearn_s": total["sklearn"],
        "featx_s": total["featx"],
        "ratio": total["sklearn"] / total["featx"],
        "steps": timings,
        "same_predictions": bool(np.array_equal(decisions["sklearn", "predict"], decisions["featx", "predict"])),
        "max_decision_diff": float(
            max(np.abs(decisions["sklearn", s] - decisions["featx", s]).max() for s in ("val", "test"))
        ),
    }


def tune_part(entry, root: Path, scratch: Path, args) -> dict:
    """featx tune --clf svm (C x gamma, K-fold CV) vs GridSearchCV(SVC) on the same folds and points."""
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    import featx
    from featx.features.load import load
    from featx.selection.cv import make_folds
    from featx.selection.metrics import SELECTION_SPLITS, score

    _say(args, f"tune: featx tune --clf svm --layers {TUNE_LAYERS} --cv {args.cv} --standardize ...")
    began = time.perf_counter()
    [result] = featx.tune(
        entry,
        TUNE_LAYERS,
        featx.tune_specs("svm", standardize=True),
        featx.Evaluation(cv=args.cv, fit_on="train+val"),
        cache=featx.Cache(root, runs_dir=scratch / "runs"),  # throwaway runs: never in a shared --cache-dir
        compute=featx.Compute(workers=-1, progress=False),
        log=None,
    )
    featx_s = time.perf_counter() - began
    X, y, meta = load(entry, TUNE_LAYERS)
    split = meta["split"].to_numpy()
    folds = make_folds(y, split, args.cv, 1, 0)
    assert all(
        np.array_equal(a, b) and np.array_equal(c, d)
        for (a, c), (b, d) in zip(folds.splits, result.folds.splits, strict=True)
    ), "the folds are not featx tune's"
    selection = np.flatnonzero(np.isin(split, SELECTION_SPLITS))
    position = np.full(len(y), -1)
    position[selection] = np.arange(len(selection))
    cv = [(position[train], position[held]) for train, held in folds.splits]
    curve = result.curve[result.curve["stage"] != "default"]
    points = [{"svc__C": [float(c)], "svc__gamma_scale": [float(g)]} for c, g in zip(curve["C"], curve["gamma_scale"])]
    _say(args, f"tune: GridSearchCV over {len(points)} points x {len(cv)} folds ...")
    began = time.perf_counter()
    search = GridSearchCV(
        Pipeline([("standardize", StandardScaler()), ("svc", ScaledGammaSVC())]),
        points,
        scoring=result.metric,
        cv=cv,
        n_jobs=-1,
        refit=True,
    ).fit(X[selection], y[selection])
    test = split == "test"
    sklearn_test = score(y[test], search.predict(X[test]))
    sklearn_s = time.perf_counter() - began
    best = curve[curve["best"]].iloc[0]
    return {
        "part": "tune",
        "what": f"tune svm on {TUNE_LAYERS} ({X.shape[1]} features, {len(selection)} train+val rows), "
        f"{len(curve)} points x {len(cv)} folds",
        "sklearn_s": sklearn_s,
        "featx_s": featx_s,
        "ratio": sklearn_s / featx_s,
        "metric": result.metric,
        "featx_best": {"C": float(best["C"]), "gamma_scale": float(best["gamma_scale"])},
        "sklearn_best": {k.split("__")[1]: v for k, v in search.best_params_.items()},
        "same_best": bool(
            float(best["C"]) == search.best_params_["svc__C"]
            and float(best["gamma_scale"]) == search.best_params_["svc__gamma_scale"]
        ),
        "max_cv_score_diff": float(
            np.abs(curve[result.metric].to_numpy() - search.cv_results_["mean_test_score"]).max()
        ),
        "test": {"featx": result.test[result.metric], "sklearn": sklearn_test[result.metric]},
    }


def pipeline_part(root: Path, scratch: Path, args) -> dict:
    """`featx run pipelines/elpv_best.toml --refit`, as it is and with solver=libsvm, each in a fresh process."""

    text = PIPELINE.read_text()
    libsvm_text, n = re.subn(r"params = \{ C = 30\.0 \}", 'params = { C = 30.0, solver = "libsvm" }', text)
    if n != 1:
        raise SystemExit(f"error: {PIPELINE} no longer holds its fit step's params as this benchmark expects")
    variants = {"sklearn": scratch / "elpv_best_libsvm.toml", "featx": scratch / "elpv_best.toml"}
    variants["sklearn"].write_text(libsvm_text)
    variants["featx"].write_text(text)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    _say(args, "pipeline: extracting (or finding) the entry ...")
    subprocess.run(  # the extraction, untimed: a run that finds the entry cached extracts nothing
        [sys.executable, "-m", "featx", "run", str(variants["featx"]), "--cache-dir", str(root)],
        env=env,
        check=True,
        capture_output=True,
    )
    seconds, tests = {}, {}
    for name, path in variants.items():
        _say(args, f"pipeline: {name} ...")
        began = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "featx", "run", str(path), "--cache-dir", str(root), "--refit"],
            env=env,
            check=True,
            capture_output=True,
        )
        seconds[name] = time.perf_counter() - began
        last = _latest_run(root)
        tests[name] = {k: last[k] for k in ("fit_seconds", "predict_seconds", "val_accuracy", "test_accuracy")}
    return {
        "part": "pipeline",
        "what": "featx run pipelines/elpv_best.toml --refit (svm C=30, 8 D4 views, TTA), whole process",
        "sklearn_s": seconds["sklearn"],
        "featx_s": seconds["featx"],
        "ratio": seconds["sklearn"] / seconds["featx"],
        "runs": tests,
        "same_scores": tests["sklearn"]["test_accuracy"] == tests["featx"]["test_accuracy"]
        and tests["sklearn"]["val_accuracy"] == tests["featx"]["val_accuracy"],
    }


def _latest_run(root: Path) -> dict:
    import featx

    runs = featx.list_runs(root)
    return runs.sort_values("run_id").iloc[-1].to_dict()


def table(report: dict) -> str:
    lines = [f"{report['cpus']} CPUs, load {report['load'][0]:.1f} at the end, {report['date']}"]
    for row in report["rows"]:
        same = {
            "fit": lambda r: (
                f"identical predictions {r['same_predictions']}, max |decision diff| {r['max_decision_diff']:.1e}"
            ),
            "tune": lambda r: (
                f"same best {r['same_best']} (featx {r['featx_best']}, GridSearchCV "
                f"{r['sklearn_best']}), max |CV {r['metric']} diff| {r['max_cv_score_diff']:.1e}"
            ),
            "pipeline": lambda r: f"same val/test accuracy {r['same_scores']}",
        }[row["part"]](row)
        lines.append(
            f"{row['what']}: scikit-learn {row['sklearn_s']:.1f}s, featx {row['featx_s']:.1f}s, "
            f"{row['ratio']:.1f}x; {same}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

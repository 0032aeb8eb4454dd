"""Commands about logged runs: runs, report, predict, export-model, rm and prune."""

from __future__ import annotations

import argparse
import sys

from featx.cli.options import add_cache_dir, add_runs_dir, cache_of, compute_of
from featx.selection.spec import METRIC_NAMES


def cmd_runs(args) -> None:
    from featx.runs.listing import RunFilter, export_csv, listing

    if args.csv:
        print(f"saved {export_csv(args.csv, cache_of(args))}")
        return
    where = RunFilter(clf=args.clf, backbone=args.backbone, data=args.data, layers=args.layers, last=args.last)
    text, warnings = listing(
        cache_of(args), sort=args.sort, metric=args.metric, where=where, top=args.top, wide=args.wide
    )
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(text)


def cmd_report(args) -> None:
    from featx.report import report

    print(report(args.sources, cache=cache_of(args), output=args.output, metric=args.metric))


def cmd_predict(args) -> None:
    from featx.experiments.predict import predict

    predict(args.model, args.paths, tta=args.tta, output=args.output, cache=cache_of(args), compute=compute_of(args))


def cmd_export_model(args) -> None:
    from featx.experiments.export_model import export_model

    export_model(args.run, args.output, format=args.format, float16=args.float16, tta=args.tta, cache=cache_of(args))


def cmd_rm(args) -> None:
    from featx.runs.housekeeping import rm

    rm(args.targets, cache=cache_of(args))


def cmd_prune(args) -> None:
    from featx.runs.housekeeping import prune

    prune(args.keep_best, metric=args.metric, cache=cache_of(args))


def add_commands(sub) -> None:
    p = sub.add_parser(
        "runs",
        help="list logged experiments, best first",
        description="Show the experiment log (<cache-dir>/runs/runs.sqlite) sorted best first, filtered, "
        "or export all of it with --csv.",
    )
    add_cache_dir(p)
    add_runs_dir(p)
    p.add_argument("--csv", default=None, metavar="PATH", help="write every logged run, in logged order, to this CSV")
    p.add_argument(
        "--sort",
        default=None,
        help="column to sort by, descending (*_seconds: ascending); default: the "
        "selection score (CV mean where a run has one, else val; never test)",
    )
    p.add_argument(
        "--metric",
        default=None,
        choices=METRIC_NAMES,
        help="metric of the selection score (default: per cache entry, balanced_accuracy when its classes "
        "are imbalanced beyond 1.5:1, else accuracy; printed)",
    )
    p.add_argument("--clf", default=None, help="only these classifiers (comma-separated)")
    p.add_argument("--backbone", default=None, help="only these backbones (comma-separated)")
    p.add_argument(
        "--data", default=None, help="only runs whose data (as `featx ls` shows it) or entry name contains this text"
    )
    p.add_argument("--layers", default=None, help="only runs whose layers contain this text")
    p.add_argument("--last", type=int, default=None, metavar="N", help="only the N most recently logged runs")
    p.add_argument("--top", type=int, default=None, help="show the best N of each protocol (val, CV)")
    p.add_argument(
        "--wide",
        action="store_true",
        help="every column, whole run ids (default: fits the terminal: $COLUMNS, else 120)",
    )
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser(
        "report",
        help="write one self-contained HTML report of a compare, a tune or runs",
        description="Write one HTML file (images inlined, no scripts, no network) with the data and "
        "backbone, the ranking with CIs and baselines, the layer comparison, confusion "
        "matrices and learning curves of the recommended model, tune search curves, t-SNE, "
        "and the commands to reproduce it; prints its path.",
    )
    p.add_argument(
        "sources",
        nargs="*",
        metavar="SOURCE",
        help="compare-<id>, tune-<id> or pipeline-<name>-<id> report folders (or their names), or run ids (default: the most "
        "recent compare or tune report)",
    )
    p.add_argument(
        "-o",
        "--output",
        default=None,
        metavar="FILE",
        help="HTML file to write (default: report.html in the report folder, or <reports>/runs-<id>/)",
    )
    p.add_argument(
        "--metric",
        default=None,
        choices=METRIC_NAMES,
        help="rank by this metric (default: the one compare/tune ranked by, else chosen from the class balance)",
    )
    add_cache_dir(p)
    add_runs_dir(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "export-model",
        help="write a run as a model that classifies images without featx (.keras, SavedModel or TFLite)",
        description="Export a run to run anywhere Keras (or TF Serving, or LiteRT) runs: images in, class "
        "probabilities (or decision scores, for a classifier without probabilities) out. A linear or dense "
        "head, after any of standardize, PCA, layer normalization and Head2Toe selection, becomes ONE Keras "
        "model (the backbone's taps, in-graph pooling, the transforms and the head as built-in layers; the "
        "views averaged inside it for a --tta run) that loads in Keras safe mode; a run with a random "
        "forest, kernel SVM, k-NN, FNE or kbins step becomes a folder (features.keras, the scikit-learn "
        "pipeline as pipeline.skops, manifest.json); a tail run, its fine-tuned network as .keras. Class "
        "names and provenance travel in the file (featx.json). See docs/export.md.",
    )
    p.add_argument("run", metavar="RUN_ID", help="a run's id (whole, a unique prefix, or the short id)")
    p.add_argument(
        "-o", "--output", required=True, help="the .keras file (or folder), SavedModel folder or .tflite file"
    )
    p.add_argument(
        "--format",
        default="keras",
        choices=("keras", "savedmodel", "tflite"),
        help="keras (default: a .keras file, or a folder for runs without an exact Keras form), savedmodel "
        "(TensorFlow SavedModel for TF Serving) or tflite (a TFLite flatbuffer for phones)",
    )
    p.add_argument("--float16", action="store_true", help="with --format tflite: store the weights as float16")
    p.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average over the views the run was fitted on, inside the model (flip and d4 views); --no-tta: "
        "the identity view's model; default: as the run was fitted (--tta at fit), as featx predict",
    )
    add_cache_dir(p)
    add_runs_dir(p)
    p.set_defaults(func=cmd_export_model)

    p = sub.add_parser(
        "rm",
        help="remove runs and cache entries",
        description="Remove logged runs (row, model, run folder) by id or unique prefix, and cache "
        "entries by name, key prefix or folder (never one being written).",
    )
    p.add_argument("targets", nargs="+", metavar="ENTRY|RUN")
    add_cache_dir(p)
    add_runs_dir(p)
    p.set_defaults(func=cmd_rm)

    p = sub.add_parser(
        "prune",
        help="keep only the best runs of each cache entry",
        description="Remove every run but the N best (by --metric) of each cache entry, with its "
        "model, and the compare reports none of whose runs remain.",
    )
    p.add_argument("--keep-best", type=int, required=True, metavar="N", help="runs to keep per cache entry")
    p.add_argument(
        "--metric",
        default=None,
        help="a metric (accuracy, balanced_accuracy, ...) whose selection score "
        "ranks runs, or any runs-log column (default: the selection score of "
        "each entry's default metric, as `featx runs` ranks)",
    )
    add_cache_dir(p)
    add_runs_dir(p)
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser(
        "predict",
        help="classify new images with a logged run's model",
        description="Rebuild the run's backbone, extract its layers from the images, apply its saved "
        "Pipeline (skops/Keras safe loading, sha256-checked), print and save labels and "
        "class probabilities as CSV.",
    )
    p.add_argument("--model", required=True, metavar="RUN_ID", help="run id (or unique prefix) from `featx runs`")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    p.add_argument(
        "--output", default=None, help="CSV to write (default <cache-dir>/runs/<run_id>/predictions-<time>.csv)"
    )
    p.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average over the augmented views the model was fitted on (computed from each image); "
        "--no-tta: the identity view decides; default: as the model was fitted (--tta at fit)",
    )
    add_cache_dir(p)
    add_runs_dir(p)
    p.set_defaults(func=cmd_predict)

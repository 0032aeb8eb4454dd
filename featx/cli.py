"""Command line: parses arguments and calls the package API, nothing more. Exit codes: 0 ok, 1 failed run, 2 bad usage/input."""

from __future__ import annotations

import argparse
import sys

from featx.errors import FeatxError

DEFAULT_DATA = "elpv"


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of numbers, e.g. 0.7,0.15,0.15") from None


def _add_cache_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", default=None, help="cache folder (default: $FEATX_CACHE or ./cache)")


def _add_cache(p: argparse.ArgumentParser) -> None:
    p.add_argument("cache", nargs="?", default=None, help="cache entry name, key prefix or folder (default: most recent)")
    _add_cache_dir(p)


def cmd_backbones(args) -> None:
    from featx.backbones import available_backbones

    print("\n".join(available_backbones()))


def cmd_layers(args) -> None:
    import pandas as pd

    from featx.backbones import describe_layers, get_backbone
    from featx.backbones.layers import group_members

    backbone = get_backbone(args.backbone, args.weights, args.input_size, args.preprocess, args.unsafe)
    infos = describe_layers(backbone)
    groups = {g: set(group_members(infos, g)) for g in ("blocks", "fc", "all")}
    rows = [{"layer": i.name, "kind": i.kind, "output_shape": "x".join(str(d) for d in i.output_shape[1:]),
             "features": i.feature_size(args.pool) if i.poolable else "-",
             "groups": ",".join(g for g in groups if i.name in groups[g])} for i in infos
            if args.all or groups["all"] & {i.name} or groups["blocks"] & {i.name}]
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"\n{len(rows)} layers shown (--all for every layer); groups: " +
          ", ".join(f"{g} ({len(m)})" for g, m in groups.items()))


def cmd_extract(args) -> None:
    from featx.extractor import extract

    extract(args.data, backbone=args.backbone, layers=args.layers, pool=args.pool, weights=args.weights,
            dtype=args.dtype, batch_size=args.batch_size, cache_dir=args.cache_dir, split=args.split, seed=args.seed,
            limit=args.limit, strict=args.strict, input_size=args.input_size, preprocess=args.preprocess,
            unsafe=args.unsafe, mixed_precision=args.mixed_precision, progress=not args.quiet, cluster=args.cluster,
            cluster_config=args.cluster_config)


def cmd_ls(args) -> None:
    import pandas as pd

    from featx.cache.store import list_entries

    entries = list_entries(args.cache_dir)
    if not entries:
        print("no cache entries; run `featx extract`")
        return
    rows = [{"entry": e.name, "backbone": e.settings["backbone"], "images": len(e.labels),
             "layers": len(e.layers), "pool": e.settings["pool"], "dtype": e.settings["dtype"],
             "MB": round(e.size_bytes() / 1e6, 1), "partial": (e.path / "work").exists()} for e in entries]
    print(pd.DataFrame(rows).to_string(index=False))


def cmd_info(args) -> None:
    import numpy as np
    import pandas as pd

    from featx.cache.store import open_entry

    entry = open_entry(args.cache, args.cache_dir)
    print(f"entry: {entry.path}\nkey: {entry.key}\ndata: {entry.attrs['description']}")
    for k, v in entry.settings.items():
        print(f"{k}: {v}")
    splits, counts = np.unique(entry.split[entry.valid], return_counts=True)
    print("split:", ", ".join(f"{s} {c}" for s, c in zip(splits, counts)), f"({entry.split_settings})")
    print("classes:", ", ".join(entry.class_names))
    layers = [{"layer": n, "kind": entry.layer_info[n]["kind"], "features": entry.feature_size(n)} for n in entry.layers]
    print(pd.DataFrame(layers).to_string(index=False) if layers else "no layers cached yet")
    for path, reason in entry.errors.items():
        print(f"bad file: {path}: {reason}")


def cmd_verify(args) -> None:
    from featx.cache.store import open_entry
    from featx.cache.verify import entry_folders, pending_summary, verify
    from featx.errors import RunFailed

    folders = [open_entry(args.cache, args.cache_dir).path] if args.cache else entry_folders(args.cache_dir)
    if not folders:
        print("no cache entries to verify")
        return
    failed = 0
    for folder in folders:
        problems = verify(folder)
        if problems:
            failed += 1
            print(f"FAIL {folder.name}", *(f"  {p}" for p in problems), sep="\n")
        else:
            from featx.cache.store import CacheEntry

            entry = CacheEntry(folder)
            notes = [f"{len(entry.labels)} images", f"{len(entry.layers)} layer(s)", f"{len(entry.errors)} bad file(s)",
                     pending_summary(entry)]
            print(f"ok   {folder.name}: " + ", ".join(n for n in notes if n))
    if failed:
        raise RunFailed(f"{failed} of {len(folders)} cache entries have problems (listed above); "
                        "re-run `featx extract` into a fresh --cache-dir to rebuild them")


def build_parser() -> argparse.ArgumentParser:
    from featx.backbones import DEFAULT_BACKBONE

    parser = argparse.ArgumentParser(
        prog="featx", description="Run a frozen CNN once, cache per-layer features in HDF5, and run fast experiments on them.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("backbones", help="list backbone names", description="List the backbone names featx can build.")
    p.set_defaults(func=cmd_backbones)

    p = sub.add_parser("layers", help="list a backbone's layers and groups",
                       description="Print every extractable layer with output shape, pooled feature size and groups.")
    p.add_argument("backbone", help="registry name or a saved .keras/.h5 model")
    p.add_argument("--all", action="store_true", help="show every layer, not only conv/dense and block outputs")
    _add_backbone_options(p, weights_default="none")
    p.set_defaults(func=cmd_layers)

    p = sub.add_parser("extract", help="run the backbone once and cache layer features",
                       description="Run the backbone once over the images and cache the chosen layers' features.")
    p.add_argument("--data", default=DEFAULT_DATA,
                   help="folder of class subfolders, CSV manifest (path,label[,split]) or built-in 'elpv' (default)")
    p.add_argument("--backbone", default=DEFAULT_BACKBONE, help=f"backbone name or .keras/.h5 file (default {DEFAULT_BACKBONE})")
    p.add_argument("--layers", default="blocks", help="comma-separated layer names and groups all, blocks, fc (default blocks)")
    _add_backbone_options(p, weights_default="imagenet")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16"), help="stored feature dtype")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    p.add_argument("--split", type=_floats, default=(0.7, 0.15, 0.15), help="train,val,test fractions (default 0.7,0.15,0.15)")
    p.add_argument("--seed", type=int, default=0, help="split and subset seed (default 0)")
    p.add_argument("--limit", type=int, default=None, help="use a stratified subset of this many images")
    p.add_argument("--strict", action="store_true", help="fail on the first bad image instead of skipping it")
    p.add_argument("--mixed-precision", action="store_true", help="float16 compute (for GPUs)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_cluster_options(p)
    _add_cache_dir(p)
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("ls", help="list cache entries", description="List cache entries with their layers and sizes.")
    _add_cache_dir(p)
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("info", help="show one cache entry", description="Show a cache entry's settings, split, layers and bad files.")
    _add_cache(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("verify", help="check cache entries for damage",
                       description="Check cache entries: files open, one row per image in every layer, no NaN/Inf, "
                                   "settings hash matches, interrupted passes resumable. Exit 1 if a problem is found.")
    p.add_argument("cache", nargs="?", default=None, help="cache entry name, key prefix or folder (default: every entry)")
    _add_cache_dir(p)
    p.set_defaults(func=cmd_verify)
    _add_experiment_commands(sub)
    return parser


def _add_cluster_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster", default=None, metavar="SPEC",
                   help='run on Dask workers: local:N, tcp://HOST:PORT or slurm[:N] (needs pip install "featx[dask]")')
    p.add_argument("--cluster-config", default=None, metavar="FILE",
                   help="TOML or YAML file of cluster options (dask-jobqueue SLURMCluster arguments for slurm)")


def _add_backbone_options(p: argparse.ArgumentParser, weights_default: str) -> None:
    p.add_argument("--weights", default=weights_default, help=f"imagenet, none or a local weights file (default {weights_default})")
    p.add_argument("--pool", default="avg", choices=("avg", "max", "none"), help="spatial pooling of conv outputs (default avg)")
    p.add_argument("--input-size", type=int, default=None, help="square input size (default: the backbone's own)")
    p.add_argument("--preprocess", default=None, help="preprocessing for a saved model: none, unit, tf or a keras.applications module")
    p.add_argument("--unsafe", action="store_true", help="allow Lambda layers when loading a saved model (runs its code)")


# --- experiments on cached features (featx.experiments); none of these builds a backbone except predict.

CLASSIFIER_FLAGS = (  # --flag VALUE -> the classifier parameter of the same name, value parsed as in --param
    ("--n-estimators", "rf: number of trees"),
    ("--min-samples-leaf", "rf: minimum samples per leaf"),
    ("--max-features", "rf: features tried per split (sqrt, log2, an int or a fraction)"),
    ("--hidden", "dense: hidden layer sizes, e.g. 256,128 (default 256)"),
    ("--activation", "dense: hidden activation (default relu)"),
    ("--dropout", "dense: dropout rate after each hidden layer (default 0)"),
    ("--l2", "dense: L2 penalty on every kernel (default 0)"),
    ("--optimizer", "dense: sgd or adam (default sgd)"),
    ("--lr", "dense: learning rate (default 0.01)"),
    ("--momentum", "dense: SGD momentum (default 0.9)"),
    ("--epochs", "dense: maximum epochs (default 100); the best-val-accuracy epoch is kept"),
    ("--batch-size", "dense: minibatch size (default 32)"),
    ("--patience", "dense: stop after this many epochs without a better val accuracy"),
)


def _number(text: str):
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None


def _add_model_options(p: argparse.ArgumentParser, clf_help: str) -> None:
    """Classifier, its parameters and the feature transforms, shared by fit and compare."""
    p.add_argument("--clf", default="rf", help=clf_help)
    group = p.add_argument_group("classifier parameters (only those given are set; others keep the estimator's defaults)")
    for flag, text in CLASSIFIER_FLAGS:
        group.add_argument(flag, default=argparse.SUPPRESS, metavar="V", help=text)
    group.add_argument("--batch-norm", action="store_const", const=True, default=argparse.SUPPRESS,
                       help="dense: batch normalization in each hidden layer")
    group.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                       help="any other scikit-learn parameter of the classifier, e.g. --param C=10 (repeatable)")
    group = p.add_argument_group("feature transforms (fitted on the train split only, saved with the model)")
    group.add_argument("--standardize", action="store_const", const=True, default=argparse.SUPPRESS,
                       help="zero mean, unit variance per feature")
    group.add_argument("--discretize", choices=("fne", "kbins"), default=argparse.SUPPRESS,
                       help="fne: full-network embedding to {-1,0,1}; kbins: quantile bins")
    group.add_argument("--fne-low", type=float, default=argparse.SUPPRESS, help="FNE: standardized values below become -1 (default -0.25)")
    group.add_argument("--fne-high", type=float, default=argparse.SUPPRESS, help="FNE: standardized values above become 1 (default 0.15)")
    group.add_argument("--kbins", type=int, default=argparse.SUPPRESS, help="kbins: number of bins (default 5)")
    group.add_argument("--pca", type=_number, default=argparse.SUPPRESS,
                       help="PCA to N components (int) or to a fraction of variance (0-1)")
    p.add_argument("--seed", type=int, default=0, help="classifier and transform seed (default 0)")


def _classifier_params(args) -> dict:
    from featx.classifiers import parse_param_values

    dests = [flag[2:].replace("-", "_") for flag, _ in CLASSIFIER_FLAGS] + ["batch_norm"]
    return parse_param_values([f"{d}={getattr(args, d)}" for d in dests if hasattr(args, d)] + args.param)


def _transforms(args) -> dict:
    return {k: getattr(args, k) for k in ("standardize", "discretize", "fne_low", "fne_high", "kbins", "pca") if hasattr(args, k)}


def cmd_fit(args) -> None:
    from featx.experiments import fit

    fit(args.cache, args.layers, args.clf, _classifier_params(args), seed=args.seed, n_jobs=args.n_jobs,
        cache_dir=args.cache_dir, **_transforms(args))


def cmd_compare(args) -> None:
    from featx.experiments import compare, parse_grid

    compare(args.cache, args.layer_sets, args.clf, parse_grid(args.grid), _classifier_params(args), seed=args.seed,
            n_jobs=args.n_jobs, metric=args.metric, plots=args.plots, cache_dir=args.cache_dir, cluster=args.cluster,
            cluster_config=args.cluster_config, **_transforms(args))


def cmd_runs(args) -> None:
    from featx.experiments.runs import format_runs, runs

    print(format_runs(runs(args.cache_dir, args.sort, args.clf, args.backbone, args.layers, args.top)))


def cmd_run(args) -> None:
    from featx.experiments import run_pipeline

    run_pipeline(args.file, cache_dir=args.cache_dir)


def cmd_predict(args) -> None:
    from featx.experiments import predict

    predict(args.model, args.paths, cache_dir=args.cache_dir, batch_size=args.batch_size, output=args.output)


def cmd_plot_tsne(args) -> None:
    from featx.experiments import tsne

    tsne(args.cache, args.layers, args.split, seed=args.seed, max_points=args.max_points, cache_dir=args.cache_dir)


def _add_experiment_commands(sub) -> None:
    p = sub.add_parser("fit", help="fit one classifier on cached features",
                       description="Fit a classifier Pipeline on the train split of cached layers, score it on val and "
                                   "test, save model and reports under <cache-dir>/runs/<run_id>/ and log the run.")
    _add_cache(p)
    p.add_argument("--layers", default=None, help="layer names and groups (all, blocks, fc), comma-separated; "
                                                  "concatenated in depth order (default: every cached layer)")
    _add_model_options(p, "rf, svm, linear-svm, logreg, knn or dense (default rf)")
    p.add_argument("--n-jobs", type=int, default=-1, help="the classifier's parallel jobs (default -1: all cores)")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("compare", help="layer subsets x classifiers x parameter grid",
                       description="Fit every (layer subset, classifier, grid point), print one table, save results.csv "
                                   "and a chart under <cache-dir>/reports/compare-<id>/; every fit is logged as a run.")
    _add_cache(p)
    p.add_argument("--layer-sets", nargs="+", required=True, metavar="SET",
                   help="subsets: a layer, a group (all, blocks, fc), a comma list, or 'each' (every cached layer alone)")
    _add_model_options(p, "comma-separated classifiers, e.g. rf,svm,logreg (default rf)")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="parameter values to sweep, e.g. min_samples_leaf=1,2,5 (repeatable; goes to classifiers having KEY)")
    p.add_argument("--metric", default="val_accuracy", help="column drawn in the chart (default val_accuracy)")
    p.add_argument("--plots", action="store_true", help="also draw each run's confusion PNGs (slower)")
    p.add_argument("--n-jobs", type=int, default=1, help="fits run in parallel (default 1: one at a time, each on all cores)")
    _add_cluster_options(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("runs", help="list logged experiments, best first",
                       description="Show the experiment log (<cache-dir>/runs/runs.csv) sorted best first, filtered.")
    _add_cache_dir(p)
    p.add_argument("--sort", default="val_accuracy", help="column to sort by, descending (*_seconds: ascending); default val_accuracy")
    p.add_argument("--clf", default=None, help="only these classifiers (comma-separated)")
    p.add_argument("--backbone", default=None, help="only these backbones (comma-separated)")
    p.add_argument("--layers", default=None, help="only runs whose layers contain this text")
    p.add_argument("--top", type=int, default=None, help="show the best N")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("run", help="run a pipeline file (pipelines/*.toml)",
                       description="Run a declarative TOML experiment: extract (a no-op when cached), then its fit, "
                                   "compare and tsne steps; ends with a results table and the plot paths.")
    p.add_argument("file", help="pipeline TOML file, e.g. pipelines/quickstart.toml")
    _add_cache_dir(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("predict", help="classify new images with a logged run's model",
                       description="Rebuild the run's backbone, extract its layers from the images, apply its saved "
                                   "Pipeline (sha256-checked), print and save labels and class probabilities as CSV.")
    p.add_argument("--model", required=True, metavar="RUN_ID", help="run id (or unique prefix) from `featx runs`")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    p.add_argument("--output", default=None, help="CSV to write (default <cache-dir>/runs/<run_id>/predictions-<time>.csv)")
    _add_cache_dir(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("plot-tsne", help="t-SNE plot of a layer",
                       description="Save a 2-D t-SNE of cached layer features, colored by class, under <cache-dir>/reports/.")
    _add_cache(p)
    p.add_argument("--layers", default="top_activation", help="layer names or groups (default top_activation)")
    p.add_argument("--split", default=None, choices=("train", "val", "test"), help="only this split (default: all images)")
    p.add_argument("--max-points", type=int, default=2000, help="embed at most this many random images (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="subsample and t-SNE seed (default 0)")
    p.set_defaults(func=cmd_plot_tsne)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except FeatxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; committed work is kept and the same command resumes it", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

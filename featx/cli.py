"""Command line: parses arguments and calls the package API, nothing more. Exit codes: 0 ok, 1 failed run, 2 bad usage/input."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from featx.errors import INTERRUPTED, FeatxError
from featx.experiments.spec import METRIC_NAMES, SEARCHES  # light: the parser is built without importing scikit-learn

DEFAULT_DATA = "elpv"


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a comma-separated list of numbers, e.g. 0.7,0.15,0.15"
        ) from None


def _add_cache_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", default=None, help="cache folder (default: $FEATX_CACHE or ./cache)")


def _add_runs_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--runs-dir",
        default=None,
        help="folder for the runs log, run folders and reports (default <cache-dir>/runs and <cache-dir>/reports)",
    )


def _add_cache(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "cache", nargs="?", default=None, help="cache entry name, key prefix or folder (default: most recent)"
    )
    _add_cache_dir(p)


def _add_entry_pick(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data", default=None, help="use the most recent entry extracted from this data (folder, CSV or elpv)"
    )
    p.add_argument("--backbone", default=None, help="use the most recent entry extracted with this backbone")


def cmd_backbones(args) -> None:
    from featx.backbones import backbone_catalog
    from featx.backbones.hub import EXTRA

    catalog = backbone_catalog()
    print("\n".join(catalog["registry"]))
    if not catalog["hub_installed"]:
        print(f"\nKerasHub vision transformers (DINOv2, DINOv3, CLIP, SigLIP, ViT): {EXTRA}")
        return
    print("\nKerasHub presets (also a preset folder, or hf://org/name for DINOv2, DINOv3 and ViT checkpoints):")
    for family, presets in catalog["hub"]:
        print(f"{family}")
        width = max(len(name) for name, _ in presets)
        for name, description in presets:
            print(f"  {name:<{width}}  {description}")


def cmd_layers(args) -> None:
    from featx.backbones import get_backbone, layer_table

    backbone = get_backbone(args.backbone, args.weights, args.input_size, args.preprocess, args.unsafe)
    if args.cuts:
        from featx.backbones.cuts import cut_table

        cuts = cut_table(backbone)
        print(cuts.table.to_string(index=False))
        print(
            f"\n{len(cuts.table)} cuts: every path from the input to the final feature layer {cuts.final} "
            "passes through each; params_above = trainable parameters of the layers above it (the tail that "
            "`featx fit --clf tail --cut LAYER` trains on its map, cached with `featx extract --layers LAYER "
            "--pool none`)"
        )
        return
    layers = layer_table(backbone, pool=args.pool, every_layer=args.all)
    print(layers.table.to_string(index=False))
    print(
        f"\n{len(layers.table)} layers shown ({'every layer' if args.all else 'the all group; --all for every layer'}); "
        f"family {layers.family}; groups:"
    )
    for group, meaning in layers.group_meaning.items():
        print(f"  {group} ({layers.groups[group]}): {meaning}")
    if layers.tokens:
        print(layers.tokens)
    if layers.preprocessing_note:
        print(layers.preprocessing_note)


def cmd_extract(args) -> None:
    from featx.extractor import extract

    if args.data is None:
        print(
            f"note: no --data given, so the built-in '{DEFAULT_DATA}' example data set is used (2,624 solar-cell "
            "images); pass --data FOLDER or --data FILE.csv for your own images"
        )
    extract(
        args.data or DEFAULT_DATA,
        backbone=args.backbone,
        layers=args.layers,
        pool=args.pool,
        weights=args.weights,
        dtype=args.dtype,
        batch_size=args.batch_size,
        cache_dir=args.cache_dir,
        split=args.split,
        seed=args.seed,
        limit=args.limit,
        strict=args.strict,
        input_size=args.input_size,
        preprocess=args.preprocess,
        unsafe=args.unsafe,
        mixed_precision=args.mixed_precision,
        progress=not args.quiet,
        cluster=args.cluster,
        cluster_config=args.cluster_config,
        cluster_timeout=args.cluster_timeout,
        views=args.views,
        view_seed=args.view_seed,
    )


def cmd_ls(args) -> None:
    from featx.cache.store import Cache
    from featx.cache.tables import entries_table

    table = entries_table(Cache(args.cache_dir))
    print(
        table.astype(object).fillna("").to_string(index=False)
        if len(table)
        else "no cache entries; run `featx extract`"
    )


def cmd_info(args) -> None:
    from featx.cache.store import Cache

    info = Cache(args.cache_dir).open(args.cache).summary()
    print(f"entry: {info['entry']}\nkey: {info['key']}\ndata: {info['data']}")
    for k, v in info["settings"].items():
        print(f"{k}: {v}")
    if info["preprocessing_note"]:
        print(info["preprocessing_note"])
    print("split:", ", ".join(f"{s} {c}" for s, c in info["split"].items()), f"({info['split_settings']})")
    print("classes:", ", ".join(info["classes"]))
    print(info["layers"].to_string(index=False) if len(info["layers"]) else "no layers cached yet")
    if info["views"]:
        print(
            "augmented views:", ", ".join(f"{view} ({len(layers)} layer(s))" for view, layers in info["views"].items())
        )
    for path, reason in info["bad_files"].items():
        print(f"bad file: {path}: {reason}")


def cmd_verify(args) -> None:
    from featx.cache.store import Cache
    from featx.cache.tables import verify_all
    from featx.errors import RunFailed

    table = verify_all(Cache(args.cache_dir), args.cache)
    if table.empty:
        print("no cache entries to verify")
        return
    for row in table.itertuples():
        if row.status == "FAIL":
            print(f"FAIL {row.entry}", *(f"  {p}" for p in row.problems), sep="\n")
        else:
            print(f"ok   {row.entry}: {row.notes}")
    failed = int((table["status"] == "FAIL").sum())
    if failed:
        raise RunFailed(
            f"{failed} of {len(table)} cache entries have problems (listed above); "
            "re-run `featx extract` into a fresh --cache-dir to rebuild them"
        )


def build_parser() -> argparse.ArgumentParser:
    from featx.backbones import DEFAULT_BACKBONE

    parser = argparse.ArgumentParser(
        prog="featx",
        description="Run a frozen CNN once, cache per-layer features in HDF5, and run fast experiments on them.",
    )
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's own log lines (hidden by default)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("backbones", help="list backbone names", description="List the backbone names featx can build.")
    p.set_defaults(func=cmd_backbones)

    p = sub.add_parser(
        "layers",
        help="list a backbone's layers and groups",
        description="Print the layers of the `all` group (conv and dense outputs, block outputs, the final "
        "feature layer) with output shape, pooled feature size and groups, and what each "
        "group means for this backbone's family.",
    )
    p.add_argument(
        "backbone", help="registry name, KerasHub preset name or folder, hf://org/name, or a .keras/.h5 model"
    )
    p.add_argument("--all", action="store_true", help="show every layer, not only those of the all group")
    p.add_argument(
        "--cuts",
        action="store_true",
        help="list the layers the network can be cut at (every path from "
        "the input to the final feature layer passes through them), with the trainable parameters above each",
    )
    _add_backbone_options(p, weights_default="none")
    p.set_defaults(func=cmd_layers)

    p = sub.add_parser(
        "extract",
        help="run the backbone once and cache layer features",
        description="Run the backbone once over the images and cache the chosen layers' features.",
    )
    p.add_argument(
        "--data",
        default=None,
        help="folder of class subfolders, CSV manifest (path,label[,split]) or built-in 'elpv' (default, with a note)",
    )
    p.add_argument(
        "--backbone",
        default=DEFAULT_BACKBONE,
        help=f"backbone name, KerasHub preset name or folder, hf://org/name, or .keras/.h5 file (default {DEFAULT_BACKBONE})",
    )
    p.add_argument(
        "--layers",
        default="blocks",
        help="comma-separated layer names and groups all, blocks, final, fc (default blocks)",
    )
    _add_backbone_options(p, weights_default="imagenet")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16"), help="stored feature dtype")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    p.add_argument(
        "--split", type=_floats, default=(0.7, 0.15, 0.15), help="train,val,test fractions (default 0.7,0.15,0.15)"
    )
    p.add_argument("--seed", type=int, default=0, help="split and subset seed (default 0)")
    p.add_argument("--limit", type=int, default=None, help="use a stratified subset of this many images")
    p.add_argument("--strict", action="store_true", help="fail on the first bad image instead of skipping it")
    from featx.sources.views import SPEC_HELP

    p.add_argument(
        "--views",
        default=None,
        metavar="SPEC",
        help="also cache augmented views of every image: " + SPEC_HELP + "; only views not cached yet are computed",
    )
    p.add_argument("--view-seed", type=int, default=0, metavar="S", help="seed of rand:K views (default 0)")
    p.add_argument("--mixed-precision", action="store_true", help="float16 compute (for GPUs)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_cluster_options(p)
    _add_cache_dir(p)
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("ls", help="list cache entries", description="List cache entries with their layers and sizes.")
    _add_cache_dir(p)
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser(
        "info", help="show one cache entry", description="Show a cache entry's settings, split, layers and bad files."
    )
    _add_cache(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "verify",
        help="check cache entries for damage",
        description="Check cache entries: files open, one row per image in every layer, no NaN/Inf, "
        "settings hash matches, interrupted passes resumable. Exit 1 if a problem is found.",
    )
    p.add_argument(
        "cache", nargs="?", default=None, help="cache entry name, key prefix or folder (default: every entry)"
    )
    _add_cache_dir(p)
    p.set_defaults(func=cmd_verify)
    _add_experiment_commands(sub)
    for command in sub.choices.values():  # also accepted after the command: `featx layers x --verbose`
        command.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        _no_abbreviations(command)
    _no_abbreviations(parser)
    return parser


def _no_abbreviations(p: argparse.ArgumentParser) -> None:
    """Only whole option names (`--cache` never silently means `--cache-dir`); where `--cache` is no option, it
    says which one was meant."""
    p.allow_abbrev = False
    if "--cache-dir" in p._option_string_actions and "--cache" not in p._option_string_actions:
        p.add_argument("--cache", action=_CacheFolderHint, nargs="?", help=argparse.SUPPRESS)


class _CacheFolderHint(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        has_entry = any(a.dest == "cache" and not a.option_strings for a in parser._actions)
        parser.error(
            f"{parser.prog} has no --cache option: pass a cache folder as --cache-dir {values or 'DIR'}"
            + (" (and a cache entry as the positional argument)" if has_entry else "")
        )


def _add_cluster_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cluster",
        default=None,
        metavar="SPEC",
        help='run on Dask workers: local:N, tcp://HOST:PORT or slurm[:N] (needs pip install "featx[dask]")',
    )
    p.add_argument(
        "--cluster-config",
        default=None,
        metavar="FILE",
        help="TOML or YAML file of cluster options (for slurm: partition, account, qos, walltime, memory, "
        "cores, gpus, job_name, log_directory, job_script_prologue, ...; see the README)",
    )
    p.add_argument(
        "--cluster-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop when no SLURM job has started a worker for this long (default 300)",
    )


def _add_backbone_options(p: argparse.ArgumentParser, weights_default: str) -> None:
    p.add_argument(
        "--weights", default=weights_default, help=f"imagenet, none or a local weights file (default {weights_default})"
    )
    from featx.backbones.layers import GRID_HELP, POOLS, TOKEN_POOLS

    p.add_argument(
        "--pool",
        default="avg",
        metavar="{" + ",".join(dict.fromkeys([*POOLS, *TOKEN_POOLS])) + ",grid:T}",
        help="spatial pooling of conv "
        "outputs, part of the cache key: "
        + "; ".join(f"{k}: {v}" for k, v in POOLS.items())
        + "; "
        + GRID_HELP
        + ". A vision transformer's tokens (KerasHub backbones): "
        + "; ".join(f"{k}: {v}" for k, v in TOKEN_POOLS.items() if k not in ("none",))
        + "; avg is mean there (default avg)",
    )
    p.add_argument(
        "--input-size",
        type=int,
        default=None,
        help="square input size, 32 to 4096 pixels (default: the backbone's own)",
    )
    from featx.backbones import SAVED_MODEL_PREPROCESSING

    p.add_argument(
        "--preprocess",
        default=None,
        help="preprocessing for a saved model (default: inferred from its layer "
        f"names): {', '.join(SAVED_MODEL_PREPROCESSING)}",
    )
    p.add_argument(
        "--unsafe", action="store_true", help="allow Lambda layers when loading a saved model (runs its code)"
    )


# --- experiments on cached features (featx.experiments); none of these builds a backbone except predict.

CLASSIFIER_FLAGS = (  # --flag VALUE -> the classifier parameter of the same name, value parsed as in --param
    ("--n-estimators", "rf: number of trees"),
    ("--min-samples-leaf", "rf: minimum samples per leaf"),
    ("--max-features", "rf: features tried per split (sqrt, log2, an int or a fraction)"),
    ("--n-components", "nystroem-svm: landmark rows of the RBF kernel map, its width (default 1000)"),
    ("--gamma", "svm, nystroem-svm: RBF kernel width (default scale: 1 / (n_features * X.var()))"),
    ("--loss", "sgd: log_loss (default; class probabilities) or hinge (a linear SVM), modified_huber, ..."),
    ("--alpha", "sgd: L2 penalty strength (default 0.0001); standardize the features for SGD"),
    ("--hidden", "dense: hidden layer sizes, e.g. 256,128 (default 256)"),
    ("--activation", "dense: hidden activation (default relu)"),
    ("--dropout", "dense: dropout rate after each hidden layer (default 0); tail: before its softmax (default 0.3)"),
    ("--l2", "dense: L2 penalty on every kernel (default 0)"),
    ("--optimizer", "dense: sgd or adam (default sgd)"),
    ("--lr", "dense: learning rate (default 0.01)"),
    ("--momentum", "dense: SGD momentum (default 0.9)"),
    ("--epochs", "dense, tail: maximum epochs (default 100, tail 20); the best-val-accuracy epoch is kept"),
    (
        "--dense-batch-size",
        "dense, tail: minibatch size (default 32); --batch-size is images per forward pass elsewhere",
    ),
    ("--patience", "dense, tail: stop after this many epochs without a better val accuracy (tail default 5)"),
    ("--mixup", "dense: MixUp alpha on training minibatches, features and one-hot labels (default 0: off)"),
    ("--feature-noise", "dense: std of Gaussian noise added to the training features of each minibatch (default 0)"),
    (
        "--cut",
        "tail: the layer whose cached maps (--pool none) the backbone's layers above it train on "
        "(`featx layers BACKBONE --cuts`); tune without --cut searches every cut the entry caches",
    ),
    ("--backbone-lr", "tail: AdamW learning rate of the backbone layers above the cut (default 1e-4)"),
    ("--head-lr", "tail: AdamW learning rate of the softmax head (default 1e-3)"),
    ("--warmup-epochs", "tail: epochs that train the head alone before the tail is unfrozen (default 3)"),
    ("--weight-decay", "tail: AdamW weight decay of the kernels (default 1e-4)"),
    ("--label-smoothing", "tail: label smoothing of the cross-entropy (default 0.1)"),
)
FLAG_PARAMS = {"dense_batch_size": "batch_size"}  # flag dest -> parameter, where the names differ
DENSE_ONLY = ("--mixup", "--feature-noise")  # train-time augmentation: meaningless for any other classifier
AUGMENTED = {"--mixup": ("dense", "tail"), "--feature-noise": ("dense",)}  # the classifiers each one augments


def _typed(parse):
    """An argparse type from a featx.values parser: its FeatxError becomes argparse's one-line usage error."""

    def convert(text: str):
        try:
            return parse(text)
        except FeatxError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert


def _add_model_options(p: argparse.ArgumentParser, clf_help: str) -> None:
    """Classifier, its parameters and the feature transforms, shared by fit and compare; values arrive typed."""
    from featx.features.options import TRANSFORM_OPTIONS
    from featx.values import parse_param, parse_value

    p.add_argument("--clf", default="rf", help=clf_help)
    group = p.add_argument_group(
        "classifier parameters (only those given are set; others keep the estimator's defaults)"
    )
    for flag, text in CLASSIFIER_FLAGS:
        group.add_argument(flag, type=_typed(parse_value), default=argparse.SUPPRESS, metavar="V", help=text)
    group.add_argument(
        "--batch-norm",
        action="store_const",
        const=True,
        default=argparse.SUPPRESS,
        help="dense: batch normalization in each hidden layer",
    )
    group.add_argument(
        "--early-stopping",
        action="store_const",
        const=True,
        default=argparse.SUPPRESS,
        help="sgd: stop when the score on 10%% of the train rows, held out, stops improving",
    )
    group.add_argument(
        "--param",
        type=_typed(parse_param),
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other scikit-learn parameter of the classifier, e.g. --param C=10 (repeatable)",
    )
    group = p.add_argument_group("feature transforms (fitted on the train split only, saved with the model)")
    for option in (o for o in TRANSFORM_OPTIONS if o.cli):
        flag = "--" + option.name.replace("_", "-")
        if option.default is False:
            group.add_argument(flag, action="store_const", const=True, default=argparse.SUPPRESS, help=option.help)
        else:
            group.add_argument(
                flag,
                type=_typed(parse_value),
                choices=option.choices or None,
                default=argparse.SUPPRESS,
                metavar="|".join(option.choices) or "V",
                help=option.help,
            )
    p.add_argument("--seed", type=int, default=0, help="classifier and transform seed (default 0)")


def _classifier_params(args) -> dict:
    from featx.values import params_dict

    for flag in DENSE_ONLY:
        if hasattr(args, flag[2:].replace("-", "_")) and not set(AUGMENTED[flag]) & {
            c.strip() for c in args.clf.split(",")
        }:
            raise FeatxError(
                f"{flag} augments the dense head's training and --clf {args.clf} has no dense head; "
                f"add --clf dense or drop {flag}"
            )
    dests = [flag[2:].replace("-", "_") for flag, _ in CLASSIFIER_FLAGS] + ["batch_norm", "early_stopping"]
    return params_dict([(FLAG_PARAMS.get(d, d), getattr(args, d)) for d in dests if hasattr(args, d)] + args.param)


def _transforms(args) -> dict:
    from featx.features.options import TRANSFORM_KEYS

    return {k: getattr(args, k) for k in TRANSFORM_KEYS if hasattr(args, k)}


def _entry(args):
    """The positional entry, or the most recent one extracted from --data with --backbone."""
    from featx.cache.pick import pick_entry

    if args.data is None and args.backbone is None:
        return args.cache
    if args.cache is not None:
        raise FeatxError(f"name the cache entry ('{args.cache}') or pick it by --data/--backbone, not both")
    return pick_entry(args.cache_dir, data=args.data, backbone=args.backbone)


def _add_selection_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--cv",
        type=int,
        default=None,
        metavar="K",
        help=f"{what} by repeated stratified K-fold over train+val (test never used), mean and 95%% CI",
    )
    p.add_argument(
        "--cv-repeats", type=int, default=1, metavar="R", help="repeat the K folds R times, reshuffled (default 1)"
    )
    p.add_argument(
        "--class-weight",
        default=None,
        choices=("balanced",),
        help="weigh classes inversely to their frequency (classifiers that have class_weight)",
    )
    p.add_argument(
        "--metric",
        default=None,
        choices=METRIC_NAMES,
        help="selection metric (default: balanced_accuracy when classes are imbalanced beyond 1.5:1, "
        "else accuracy; printed)",
    )


def _add_view_options(p: argparse.ArgumentParser) -> None:
    """Augmented views (cached by `featx extract --views`) to train on, and test-time augmentation."""
    p.add_argument(
        "--views",
        default=None,
        metavar="SPEC",
        help="also train on these cached augmented views of each train image (flip, d4, crops:K, rand:K, "
        "comma-separated, as at extract); val and test use the identity view unless --tta",
    )
    p.add_argument(
        "--view-seed", type=int, default=0, metavar="S", help="seed of rand:K views, as at extract (default 0)"
    )
    p.add_argument("--tta", action="store_true", help="predict val and test by averaging over the --views")


def _views(args) -> dict:
    return {"views": args.views, "view_seed": args.view_seed, "tta": args.tta}


def cmd_fit(args) -> None:
    from featx.experiments.fit import fit_run
    from featx.experiments.spec import Evaluation, fit_spec

    if args.like is not None:
        entries, spec, evaluation, layers = _like(args)
    else:
        entry = _entry(args)
        entries = [c for c in (entry, *args.caches) if c is not None] or None  # several: features side by side
        spec = fit_spec(
            args.clf,
            params=_classifier_params(args),
            seed=args.seed,
            n_jobs=args.n_jobs,
            class_weight=args.class_weight,
            **_views(args),
            **_transforms(args),
        )
        evaluation, layers = Evaluation(cv=args.cv, cv_repeats=args.cv_repeats, seed=args.seed), args.layers
    fit_run(entries, spec, evaluation, layers=layers, cache_dir=args.cache_dir, runs_dir=args.runs_dir)


def _like(args):
    """`featx fit --like RUN_ID [flags]`: the entries, FitSpec, Evaluation and layers of a logged run, with the flags
    given on this command line in place of the logged values (the others are not read from their defaults)."""
    from featx.experiments.runlog import find_run, logged_selection
    from featx.experiments.spec import Evaluation, fit_spec, logged_spec

    row = find_run(args.like, args.cache_dir, runs_dir=args.runs_dir)
    spec, evaluation = logged_spec(row)
    given = _given(args)
    clf = args.clf if "clf" in given else spec.classifier
    params = {**(spec.params if clf == spec.classifier else {}), **_classifier_params(args)}
    seed = args.seed if "seed" in given else spec.seed
    views = (
        {"views": args.views, "view_seed": args.view_seed} if given & {"views", "view_seed"} else {"views": spec.views}
    )
    spec = fit_spec(
        clf,
        params=params,
        seed=seed,
        n_jobs=args.n_jobs if "n_jobs" in given else spec.n_jobs,
        class_weight=args.class_weight,
        tta=args.tta if "tta" in given else spec.tta,
        **views,
        **{**spec.transforms, **_transforms(args)},
    )
    evaluation = Evaluation(
        cv=args.cv if "cv" in given else evaluation.cv,
        cv_repeats=args.cv_repeats if "cv_repeats" in given else evaluation.cv_repeats,
        metric=evaluation.metric,
        seed=seed if "seed" in given else evaluation.seed,
    )
    named = args.cache is not None or args.caches or args.data is not None or args.backbone is not None
    entry = _entry(args) if named else None
    entries = [c for c in (entry, *args.caches) if c is not None] if named else str(row["cache_entry"]).split("+")
    return entries, spec, evaluation, args.layers if "layers" in given else logged_selection(row)


def _given(args) -> set[str]:
    """The destinations of the options typed on this command line (not left at their defaults)."""
    typed = {token.split("=", 1)[0] for token in args.argv if token.startswith("--")}
    return {action.dest for action in args.parser._actions if typed & set(action.option_strings)}


def cmd_compare(args) -> None:
    from featx.experiments.compare import compare_run
    from featx.experiments.spec import Evaluation, compare_specs
    from featx.values import params_dict

    grid = params_dict(args.grid)
    specs = compare_specs(
        args.clf,
        grid=grid,
        params=_classifier_params(args),
        seed=args.seed,
        class_weight=args.class_weight,
        **_views(args),
        **_transforms(args),
    )
    evaluation = Evaluation(
        cv=args.cv, cv_repeats=args.cv_repeats, metric=args.metric, seed=args.seed, search=args.search
    )
    compare_run(
        _entry(args),
        specs,
        evaluation,
        layer_sets=args.layer_sets,
        grid=grid,
        n_jobs=args.n_jobs,
        plots=args.plots,
        cache_dir=args.cache_dir,
        runs_dir=args.runs_dir,
        cluster=args.cluster,
        cluster_config=args.cluster_config,
        cluster_timeout=args.cluster_timeout,
        save_models=args.save_models,
        progress=not args.quiet,
        command=_command(args),
    )


def cmd_tune(args) -> None:
    from featx.experiments.spec import Evaluation, tune_specs
    from featx.experiments.tune import selected_line, tune_run

    if str(_transforms(args).get("select") or "").startswith("group-lasso"):  # Head2Toe: featx.experiments.head2toe
        return _tune_head2toe(args)
    if args.caches and args.clf != "tail":
        raise FeatxError(
            "tune's --cache names candidate entries for --select group-lasso or the cuts of --clf tail; tune one "
            "entry (positional) or add --select group-lasso"
        )
    specs = tune_specs(
        args.clf,
        params=_classifier_params(args),
        seed=args.seed,
        class_weight=args.class_weight,
        **_views(args),
        **_transforms(args),
    )
    evaluation = Evaluation(
        cv=args.cv,
        cv_repeats=args.cv_repeats,
        metric=args.metric,
        seed=args.seed,
        search=args.search,
        fit_on="train+val",
    )
    results = tune_run(
        [_entry(args), *args.caches] if args.caches else _entry(args),  # --clf tail: the entries' cuts searched
        specs,
        evaluation,
        layers=args.layers,
        n_jobs=args.n_jobs,
        cache_dir=args.cache_dir,
        runs_dir=args.runs_dir,
        cluster=args.cluster,
        cluster_config=args.cluster_config,
        cluster_timeout=args.cluster_timeout,
        progress=not args.quiet,
        command=_command(args),
    )
    print(selected_line(results))


def _tune_head2toe(args) -> None:
    from featx.experiments.head2toe import tune_head2toe

    transforms, params = _transforms(args), _classifier_params(args)
    if args.clf != "logreg":
        raise FeatxError(
            "tune --select group-lasso tunes Head2Toe's logistic-regression head; drop --clf "
            "(fit takes other classifiers with --select group-lasso:F)"
        )
    result = tune_head2toe(
        [c for c in (_entry(args), *args.caches) if c is not None] or None,
        layers=args.layers,
        cv=args.cv,
        cv_repeats=args.cv_repeats,
        metric=args.metric,
        select=transforms["select"],
        penalties=[transforms["select_penalty"]] if "select_penalty" in transforms else None,
        Cs=[params.pop("C")] if "C" in params else None,
        params=params,
        standardize=bool(transforms.get("standardize")),
        normalize=transforms.get("normalize", "layer"),
        seed=args.seed,
        **_views(args),
        cache_dir=args.cache_dir,
        runs_dir=args.runs_dir,
        command=_command(args),
    )
    print(f"selected: {result.line()}")


def _command(args) -> str:
    """The command line that ran this command, as a shell would take it again (kept in report folders)."""
    import shlex

    return shlex.join(["featx", *args.argv])


def cmd_report(args) -> None:
    from featx.reports.html import report

    print(
        report(args.sources, cache_dir=args.cache_dir, runs_dir=args.runs_dir, output=args.output, metric=args.metric)
    )


def cmd_runs(args) -> None:
    from featx.experiments.runs import export_csv, format_runs, runs_table

    if args.csv:
        print(f"saved {export_csv(args.csv, args.cache_dir, runs_dir=args.runs_dir)}")
        return
    if args.sort is None:  # one ranking rule, per entry, split and protocol (featx.experiments.ranking)
        from featx.experiments.ranking import format_runs_by_entry

        text, warnings = format_runs_by_entry(
            args.cache_dir,
            runs_dir=args.runs_dir,
            metric=args.metric,
            clf=args.clf,
            backbone=args.backbone,
            data=args.data,
            layers=args.layers,
            last=args.last,
            top=args.top,
            wide=args.wide,
        )
    else:
        listed = runs_table(
            args.cache_dir,
            sort=args.sort,
            metric=args.metric or "accuracy",
            clf=args.clf,
            backbone=args.backbone,
            layers=args.layers,
            top=args.top,
            runs_dir=args.runs_dir,
        )
        text, warnings = format_runs(listed), listed.warnings
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(text)


def cmd_run(args) -> None:
    from featx.experiments import run_pipeline

    run_pipeline(args.file, data=args.data, backbone=args.backbone, cache_dir=args.cache_dir, refit=args.refit)


def cmd_export(args) -> None:
    from featx.features.export import export

    export(_entry(args), layers=args.layers, format=args.format, output=args.output, cache_dir=args.cache_dir)


def cmd_export_model(args) -> None:
    from featx.experiments.export_model import export_model

    export_model(args.run, args.output, cache_dir=args.cache_dir, runs_dir=args.runs_dir)


def cmd_rm(args) -> None:
    from featx.experiments.housekeeping import rm

    rm(args.targets, cache_dir=args.cache_dir, runs_dir=args.runs_dir)


def cmd_prune(args) -> None:
    from featx.experiments.housekeeping import prune

    prune(args.keep_best, metric=args.metric, cache_dir=args.cache_dir, runs_dir=args.runs_dir)


def cmd_predict(args) -> None:
    from featx.experiments import predict

    predict(
        args.model,
        args.paths,
        cache_dir=args.cache_dir,
        batch_size=args.batch_size,
        output=args.output,
        runs_dir=args.runs_dir,
        tta=args.tta,
    )


def cmd_plot_tsne(args) -> None:
    from featx.experiments import tsne

    tsne(
        args.cache,
        layers=args.layers,
        split=args.split,
        seed=args.seed,
        max_points=args.max_points,
        cache_dir=args.cache_dir,
        runs_dir=args.runs_dir,
    )


def _add_experiment_commands(sub) -> None:
    from featx.values import parse_grid_item

    p = sub.add_parser(
        "fit",
        help="fit one classifier on cached features",
        description="Fit a classifier Pipeline on the train split of cached layers, score it on val and "
        "test, save model and reports under <cache-dir>/runs/<run_id>/ and log the run.",
    )
    _add_cache(p)
    p.add_argument(
        "--cache",
        dest="caches",
        action="append",
        default=[],
        metavar="ENTRY",
        help="another entry of the same images (repeatable): their features are concatenated, row-aligned "
        "by image, e.g. --cache lite0-entry --cache lite2-entry, or one entry per --pool",
    )
    p.add_argument(
        "--layers",
        default=None,
        help="layer names and groups (all, blocks, final, fc), comma-separated; "
        "concatenated in depth order (default: every cached layer)",
    )
    _add_entry_pick(p)
    _add_model_options(
        p,
        "rf, svm, linear-svm, logreg, knn, dense, tail (the backbone's layers above --cut), "
        "nystroem-svm and sgd (for many rows), or the "
        "baselines majority, stratified (default rf)",
    )
    _add_selection_options(p, "also score it")
    _add_view_options(p)
    p.add_argument(
        "--n-jobs",
        type=int,
        default=-1,
        help="the classifier's parallel jobs, or the folds' with --cv (default -1: all cores)",
    )
    p.add_argument(
        "--like",
        default=None,
        metavar="RUN_ID",
        help="fit a logged run again (id, prefix or short id): its entry, layers, classifier, parameters, "
        "transforms, views, seed and --cv, each flag given here in place of the logged value",
    )
    _add_runs_dir(p)
    p.set_defaults(func=cmd_fit, parser=p)

    p = sub.add_parser(
        "compare",
        help="layer subsets x classifiers x parameter grid",
        description="Fit every (layer subset, classifier, grid point), print one table, save results.csv "
        "and a chart under <cache-dir>/reports/compare-<id>/; every fit is logged as a run.",
    )
    _add_cache(p)
    p.add_argument(
        "--layer-sets",
        nargs="+",
        required=True,
        metavar="SET",
        help="subsets: a layer, a group (all, blocks, final, fc), a comma list, or 'each' (every cached layer alone)",
    )
    _add_entry_pick(p)
    _add_model_options(p, "comma-separated classifiers, e.g. rf,svm,logreg (default rf)")
    p.add_argument(
        "--grid",
        type=_typed(parse_grid_item),
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="parameter values to sweep, e.g. min_samples_leaf=1,2,5 (repeatable; goes to classifiers having KEY)",
    )
    _add_selection_options(p, "rank rows")
    _add_view_options(p)
    p.add_argument("--plots", action="store_true", help="also draw each run's confusion PNGs (slower)")
    p.add_argument(
        "--save-models",
        default="best",
        choices=("best", "all"),
        help="keep the model of the best row only (default; by the selection score: the CV mean, else "
        "val, as `featx runs` ranks), or of every row",
    )
    p.add_argument(
        "--search",
        default="exact",
        choices=SEARCHES,
        help="exact: every row on every fold (default); halving (needs --cv): every row on one fold, the "
        "best third on 3, ... only the contenders on all folds and fitted on train; the table marks "
        "rows stopped early and at how many folds",
    )
    p.add_argument(
        "--n-jobs",
        type=int,
        default=-1,
        help="fits (rows and folds) run in parallel on this many "
        "workers, each on one core (default -1: all cores; 1: one "
        "at a time, each on all cores)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_runs_dir(p)
    _add_cluster_options(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "tune",
        help="search classifier parameters, refit the best, score test once",
        description="Per classifier, search its key parameters on log grids with refinement (logreg/"
        "linear-svm C, svm C x gamma, rf leaf x max_features, dense lr x l2 x hidden), select "
        "on val or --cv, refit on train+val, score test once, log the run and save the "
        "search curve under <cache-dir>/reports/tune-<id>/.",
    )
    _add_cache(p)
    p.add_argument(
        "--cache",
        dest="caches",
        action="append",
        default=[],
        metavar="ENTRY",
        help="with --select group-lasso: another entry of the same images (repeatable), searched as a "
        "candidate, e.g. one per --pool grid:T; with --clf tail and no --cut: another entry whose cached cuts "
        "(--pool none) are searched too",
    )
    p.add_argument(
        "--layers", default=None, help="layer names and groups, comma-separated (default: every cached layer)"
    )
    _add_entry_pick(p)
    _add_model_options(
        p, "comma-separated classifiers among logreg, linear-svm, svm, rf, dense, nystroem-svm, sgd (default logreg)"
    )
    p.set_defaults(clf="logreg")
    _add_selection_options(p, "select")
    _add_view_options(p)
    p.add_argument(
        "--search",
        default="exact",
        choices=("exact", "halving"),
        help="exact: the grid, then a finer one around its best (default); halving (dense, tail): successive "
        "halving with training epochs as the budget: every configuration for a few epochs, the best "
        "third for 3x as many, ... only the contenders for the full budget, which choose",
    )
    p.add_argument("--n-jobs", type=int, default=-1, help="selection splits in parallel (default -1: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_runs_dir(p)
    _add_cluster_options(p)
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser(
        "runs",
        help="list logged experiments, best first",
        description="Show the experiment log (<cache-dir>/runs/runs.sqlite) sorted best first, filtered, "
        "or export all of it with --csv.",
    )
    _add_cache_dir(p)
    _add_runs_dir(p)
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
    p.add_argument("--wide", action="store_true", help="every column, whole run ids (default: fits 120 columns)")
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
    _add_cache_dir(p)
    _add_runs_dir(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "export",
        help="write cached features to a CSV, Parquet or NumPy file",
        description="Write one row per image (path, label, split, then the features of the chosen "
        "layers in depth order) for use outside featx.",
    )
    _add_cache(p)
    _add_entry_pick(p)
    p.add_argument("--layers", default=None, help="layer names and groups (default: every cached layer)")
    p.add_argument(
        "--format",
        default="csv",
        choices=("csv", "parquet", "npy"),
        help="csv (default), parquet (needs pyarrow) or npy (one .npz of arrays)",
    )
    p.add_argument("--output", default=None, help="file to write (default <entry>-<layers>.<ext> here)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "export-model",
        help="write a tail run's whole network (bottom + tail + head) as one .keras file",
        description="Rebuild the backbone of a tail run's cache entry, give the layers above the cut the "
        "run's trained weights, add its head, and save it as one Keras model: it loads in "
        "safe mode, predicts as `featx predict` does (identity view), and works as "
        "`featx extract --backbone FILE.keras`.",
    )
    p.add_argument("run", metavar="RUN_ID", help="a tail run's id (whole, a unique prefix, or the short id)")
    p.add_argument("-o", "--output", required=True, help="the .keras file to write")
    _add_cache_dir(p)
    _add_runs_dir(p)
    p.set_defaults(func=cmd_export_model)

    p = sub.add_parser(
        "rm",
        help="remove runs and cache entries",
        description="Remove logged runs (row, model, run folder) by id or unique prefix, and cache "
        "entries by name, key prefix or folder (never one being written).",
    )
    p.add_argument("targets", nargs="+", metavar="ENTRY|RUN")
    _add_cache_dir(p)
    _add_runs_dir(p)
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
    _add_cache_dir(p)
    _add_runs_dir(p)
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser(
        "run",
        help="run a pipeline file (pipelines/*.toml)",
        description="Run a declarative TOML experiment: extract (a no-op when cached), then its fit, "
        "compare and tsne steps; ends with a results table and the plot paths.",
    )
    p.add_argument("file", help="pipeline TOML file, e.g. pipelines/quickstart.toml")
    p.add_argument(
        "--data",
        default=None,
        help="run the recipe on this data source (folder, CSV manifest or built-in name) instead of the file's data",
    )
    p.add_argument(
        "--backbone",
        default=None,
        help="run the recipe with this backbone (name, KerasHub preset or folder, .keras file) instead of the file's",
    )
    p.add_argument(
        "--refit",
        action="store_true",
        help="fit again steps whose fits are already logged (same entry, layers, classifier, params, "
        "transforms, views, seed); by default they are reused",
    )
    _add_cache_dir(p)
    p.set_defaults(func=cmd_run)

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
    _add_cache_dir(p)
    _add_runs_dir(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "plot-tsne",
        help="t-SNE plot of a layer",
        description="Save a 2-D t-SNE of cached layer features, colored by class, under <cache-dir>/reports/.",
    )
    _add_cache(p)
    p.add_argument("--layers", default="top_activation", help="layer names or groups (default top_activation)")
    p.add_argument(
        "--split", default=None, choices=("train", "val", "test"), help="only this split (default: all images)"
    )
    p.add_argument("--max-points", type=int, default=2000, help="embed at most this many random images (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="subsample and t-SNE seed (default 0)")
    _add_runs_dir(p)
    p.set_defaults(func=cmd_plot_tsne)


def main(argv=None) -> int:
    """Run one command; returns the exit code. Never a traceback for Ctrl-C, a bad input or a closed pipe.

    The first Ctrl-C unwinds (committed work is kept); a second one, while that cleanup or publishing still
    runs, exits at once: as safe as a kill, which the cache is built to survive. Called as the console script
    (argv None), an interrupted run then ends at once too (the interpreter's shutdown, with TensorFlow's, takes
    long and would die silently of a further Ctrl-C), and after a normal run any Ctrl-C exits at once; called
    with argv (tests, notebooks) the caller's handler is back afterwards.
    """
    previous = _handle_interrupts()
    try:
        return _run(argv)
    except KeyboardInterrupt:
        _interrupted()
        if argv is None and previous is not None:
            _exit_now(130)
        return 130
    finally:
        if previous is not None and argv is not None:
            signal.signal(signal.SIGINT, previous)
        _interrupts["seen"] = True  # the command is over: a Ctrl-C now has nothing to unwind


def _run(argv) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    from featx import runtime

    try:
        with runtime.tensorflow_environment(verbose=args.verbose):  # TensorFlow's settings: set here, not at import
            args.func(args)
        sys.stdout.flush()  # a reader gone early (`featx backbones | head -1`) shows here, not at exit
    except FeatxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the flush at exit must not fail again
        return 141  # 128 + SIGPIPE, what a shell reports for a program stopped by a closed pipe
    return 0


_interrupts = {"seen": False, "said": False}


def _handle_interrupts():
    """SIGINT: KeyboardInterrupt the first time, immediate exit 130 after. Returns the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        return None  # signals reach only the main thread; its own handler stays in charge
    _interrupts.update(seen=False, said=False)

    def on_interrupt(signum, frame):
        if _interrupts["seen"]:
            _interrupted()
            _exit_now(130)
        _interrupts["seen"] = True
        raise KeyboardInterrupt

    return signal.signal(signal.SIGINT, on_interrupt)


def _exit_now(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001  a closed pipe: nothing more can be said
            pass
    os._exit(code)


def _interrupted() -> None:
    if not _interrupts["said"]:
        _interrupts["said"] = True
        try:
            print(INTERRUPTED, file=sys.stderr, flush=True)
        except Exception:  # noqa: BLE001  stderr closed or busy (interrupted mid-write): exit 130 regardless
            pass


if __name__ == "__main__":
    sys.exit(main())

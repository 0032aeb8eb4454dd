"""Options shared by several commands, and the values they become: each command parses its flags into featx's values
(Cache, DataSpec, BackboneSpec, FitSpec, Evaluation, Compute) here, then calls the verb and prints.

Light on purpose: building the parser imports neither scikit-learn nor TensorFlow (featx --help starts at once).
"""

from __future__ import annotations

import argparse
import shlex

from featx.errors import FeatxError
from featx.selection.spec import METRIC_NAMES


def floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a comma-separated list of numbers, e.g. 0.7,0.15,0.15"
        ) from None


def typed(parse):
    """An argparse type from a featx.values parser: its FeatxError becomes argparse's one-line usage error."""

    def convert(text: str):
        try:
            return parse(text)
        except FeatxError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert


# --- where: the cache, its runs folder, the entry


def add_cache_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", default=None, help="cache folder (default: $FEATX_CACHE or ./cache)")


def add_runs_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--runs-dir",
        default=None,
        help="folder for the runs log, run folders and reports (default <cache-dir>/runs and <cache-dir>/reports)",
    )


def add_entry(p: argparse.ArgumentParser, *, several: str | None = None, default_help: str = "most recent") -> None:
    """The cache entry: a positional ENTRY, or --entry ENTRY. several : the help of a repeatable --entry (also
    spelled --cache, its name before featx called entries entries) whose entries join the positional one."""
    p.add_argument(
        "entry", nargs="?", default=None, help=f"cache entry name, key prefix or folder (default: {default_help})"
    )
    if several is None:
        p.add_argument("--entry", dest="entry_option", default=None, metavar="ENTRY", help="the cache entry, by name")
    else:
        p.add_argument("--entry", "--cache", dest="entries", action="append", default=[], metavar="ENTRY", help=several)
    add_cache_dir(p)


def add_entry_pick(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data", default=None, help="use the most recent entry extracted from this data (folder, CSV or elpv)"
    )
    p.add_argument("--backbone", default=None, help="use the most recent entry extracted with this backbone")


def cache_of(args):
    """The command's Cache: --cache-dir (else $FEATX_CACHE or ./cache), with --runs-dir where the command has one."""
    from featx.cache.store import Cache

    return Cache(args.cache_dir, runs_dir=getattr(args, "runs_dir", None))


def entry_of(args):
    """The entry named (positionally or by --entry), or the most recent one extracted from --data with --backbone;
    None: the most recent entry."""
    named = [e for e in (args.entry, getattr(args, "entry_option", None)) if e is not None]
    if len(named) > 1:
        raise FeatxError(f"name one cache entry ('{named[0]}' or '{named[1]}'), not two")
    entry = named[0] if named else None
    if getattr(args, "data", None) is None and getattr(args, "backbone", None) is None:
        return entry
    if entry is not None:
        raise FeatxError(f"name the cache entry ('{entry}') or pick it by --data/--backbone, not both")
    from featx.cache.pick import pick_entry

    return pick_entry(cache_of(args), data=args.data, backbone=args.backbone)


def entries_of(args):
    """entry_of, and the entries --entry/--cache add (features side by side); None: the most recent entry."""
    entries = [e for e in (entry_of(args), *args.entries) if e is not None]
    return entries or None


def command_of(args) -> str:
    """The command line that ran this command, as a shell would take it again (kept in report folders)."""
    return shlex.join(["featx", *args.argv])


def given(args) -> set[str]:
    """The destinations of the options typed on this command line (not left at their defaults)."""
    typed_options = {token.split("=", 1)[0] for token in args.argv if token.startswith("--")}
    return {action.dest for action in args.parser._actions if typed_options & set(action.option_strings)}


# --- how wide: Compute


def add_cluster_options(p: argparse.ArgumentParser) -> None:
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
        "cores, gpus, job_name, log_directory, job_script_prologue, ...; see docs/scaling-out.md)",
    )
    p.add_argument(
        "--cluster-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop when no SLURM job has started a worker for this long (default 300)",
    )


def compute_of(args):
    """The command's Compute from --n-jobs, --cluster*, --batch-size and --quiet (those it has)."""
    from featx.compute import Compute

    options = {
        "workers": getattr(args, "n_jobs", None),
        "cluster": getattr(args, "cluster", None),
        "cluster_config": getattr(args, "cluster_config", None),
        "cluster_timeout": getattr(args, "cluster_timeout", None),
        "batch_size": getattr(args, "batch_size", None),
        "progress": not getattr(args, "quiet", False),
    }
    return Compute(**{k: v for k, v in options.items() if v is not None})


# --- what: the backbone


def add_backbone_options(p: argparse.ArgumentParser, weights_default: str) -> None:
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


def backbone_of(args):
    """The BackboneSpec of --backbone, --weights, --input-size, --preprocess, --pool, --dtype, --mixed-precision and
    --unsafe (those the command has)."""
    from featx.backbones.spec import BackboneSpec

    return BackboneSpec(
        args.backbone,
        weights=args.weights,
        input_size=args.input_size,
        preprocess=args.preprocess,
        pool=args.pool,
        dtype=getattr(args, "dtype", "float32"),
        mixed_precision=getattr(args, "mixed_precision", False),
        unsafe=args.unsafe,
    )


# --- what is fitted and how it is judged: FitSpec, Evaluation


def add_model_options(p: argparse.ArgumentParser, clf_help: str) -> None:
    """Classifier, its parameters and the feature transforms, shared by fit, compare and tune; values arrive typed."""
    from featx.classifiers.flags import FLAGS, SWITCHES
    from featx.features.options import TRANSFORM_OPTIONS
    from featx.values import parse_param, parse_value

    p.add_argument("--clf", default="rf", help=clf_help)
    group = p.add_argument_group(
        "classifier parameters (only those given are set; others keep the estimator's defaults)"
    )
    for flag in FLAGS:
        group.add_argument(flag.name, type=typed(parse_value), default=argparse.SUPPRESS, metavar="V", help=flag.help)
    for flag in SWITCHES:
        group.add_argument(flag.name, action="store_const", const=True, default=argparse.SUPPRESS, help=flag.help)
    group.add_argument(
        "--param",
        type=typed(parse_param),
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
                type=typed(parse_value),
                choices=option.choices or None,
                default=argparse.SUPPRESS,
                metavar="|".join(option.choices) or "V",
                help=option.help,
            )
    p.add_argument("--seed", type=int, default=0, help="classifier and transform seed (default 0)")


def classifier_params(args) -> dict:
    """The classifier parameters typed: each flag's (classifiers.flags) and every --param."""
    from featx.classifiers.flags import FLAGS, SWITCHES
    from featx.values import params_dict

    flags = [(f.parameter, getattr(args, f.dest)) for f in (*FLAGS, *SWITCHES) if hasattr(args, f.dest)]
    return params_dict(flags + args.param)


def transforms(args) -> dict:
    """The feature transforms typed (only those given)."""
    from featx.features.options import TRANSFORM_KEYS

    return {k: getattr(args, k) for k in TRANSFORM_KEYS if hasattr(args, k)}


def add_selection_options(p: argparse.ArgumentParser, what: str) -> None:
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


def add_view_options(p: argparse.ArgumentParser) -> None:
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


def spec_options(args) -> dict:
    """The keywords the spec builders (fit_spec, compare_specs, tune_specs) share: params, seed, class_weight,
    views, view_seed, tta and the transforms."""
    return {
        "params": classifier_params(args),
        "seed": args.seed,
        "class_weight": args.class_weight,
        "views": args.views,
        "view_seed": args.view_seed,
        "tta": args.tta,
        **transforms(args),
    }

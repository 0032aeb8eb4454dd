"""Commands that fit on cached features: fit, compare, tune, run (a pipeline file) and plot-tsne. None of them
builds a backbone; each turns its flags into values (featx.cli.options) and calls its verb (featx.experiments)."""

from __future__ import annotations

from featx.cli.options import (
    add_cache_dir,
    add_cluster_options,
    add_entry,
    add_entry_pick,
    add_model_options,
    add_runs_dir,
    add_selection_options,
    add_view_options,
    cache_of,
    classifier_params,
    command_of,
    compute_of,
    entries_of,
    entry_of,
    given,
    spec_options,
    transforms,
    typed,
)
from featx.selection.spec import SEARCHES
from featx.terminal import fit_lines


def cmd_fit(args) -> None:
    from featx.experiments.fit import fit
    from featx.selection.spec import Evaluation, fit_spec

    if args.like is not None:
        entries, spec, evaluation, layers = _like(args)
    else:
        entries = entries_of(args)  # several: features side by side
        spec = fit_spec(args.clf, n_jobs=args.n_jobs, **spec_options(args))
        evaluation, layers = Evaluation(cv=args.cv, cv_repeats=args.cv_repeats, seed=args.seed), args.layers
    fit(entries, layers, spec, evaluation, cache=cache_of(args))


def _like(args):
    """`featx fit --like RUN_ID [flags]`: the entries, FitSpec, Evaluation and layers of a logged run, with the flags
    typed on this command line in place of the logged values (FitSpec.like, Evaluation.like)."""
    from featx.runs.store import find_run, logged_selection
    from featx.selection.spec import logged_spec
    from featx.sources.views import IDENTITY

    row = find_run(args.like, cache_of(args))
    spec, evaluation = logged_spec(row)
    typed_here = given(args)

    def flag(name):
        return getattr(args, name) if name in typed_here else None

    new_views = bool(typed_here & {"views", "view_seed"})  # as typed here (none: the identity view), else the logged
    spec = spec.like(
        classifier=flag("clf"),
        params=classifier_params(args),
        seed=flag("seed"),
        n_jobs=flag("n_jobs"),
        class_weight=args.class_weight,
        views=(args.views or IDENTITY) if new_views else None,
        view_seed=args.view_seed,
        tta=flag("tta"),
        transforms=transforms(args),
    )
    evaluation = evaluation.like(cv=flag("cv"), cv_repeats=flag("cv_repeats"), seed=flag("seed"))
    named = args.entry is not None or args.entries or args.data is not None or args.backbone is not None
    entries = entries_of(args) if named else str(row["cache_entry"]).split("+")
    return entries, spec, evaluation, args.layers if "layers" in typed_here else logged_selection(row)


def cmd_compare(args) -> None:
    from featx.experiments.compare import compare
    from featx.selection.spec import Evaluation, compare_specs
    from featx.values import params_dict

    specs = compare_specs(args.clf, grid=params_dict(args.grid), **spec_options(args))
    evaluation = Evaluation(
        cv=args.cv, cv_repeats=args.cv_repeats, metric=args.metric, seed=args.seed, search=args.search
    )
    compare(
        entry_of(args),
        args.layer_sets,
        specs,
        evaluation,
        save_models=args.save_models,
        plots=args.plots,
        command=command_of(args),
        cache=cache_of(args),
        compute=compute_of(args),
    )


def cmd_tune(args) -> None:
    from featx.experiments.tune import tune
    from featx.selection.search import selected_line
    from featx.selection.spec import Evaluation, Head2ToeSearch, tune_specs

    specs = tune_specs(args.clf, **spec_options(args))
    head2toe = isinstance(specs, Head2ToeSearch)
    evaluation = Evaluation(
        cv=args.cv,
        cv_repeats=args.cv_repeats,
        metric=args.metric,
        seed=args.seed,
        search="exact" if head2toe else args.search,
        fit_on="train" if head2toe else "train+val",
    )
    if head2toe:  # the candidates: one entry per --pool grid:T
        entries = entries_of(args)
    else:  # --clf tail: the entries' cuts searched
        entries = [entry_of(args), *args.entries] if args.entries else entry_of(args)
    results = tune(
        entries,
        args.layers,
        specs,
        evaluation,
        command=command_of(args),
        cache=cache_of(args),
        compute=compute_of(args),
    )
    print(fit_lines(f"selected: {results.line()}" if head2toe else selected_line(results)))


def cmd_run(args) -> None:
    from featx.experiments.pipelines import run_pipeline
    from featx.report import pipeline_page

    cache = cache_of(args)
    result = run_pipeline(
        args.file, data=args.data, backbone=args.backbone, refit=args.refit, unsafe=args.unsafe, cache=cache
    )
    print(f"report: {pipeline_page(result.folder, cache=cache)}")


def cmd_plot_tsne(args) -> None:
    from featx.experiments.tsne import tsne

    tsne(
        entry_of(args),
        args.layers,
        split=args.split,
        seed=args.seed,
        max_points=args.max_points,
        cache=cache_of(args),
    )


def add_commands(sub) -> None:
    from featx.values import parse_grid_item

    p = sub.add_parser(
        "fit",
        help="fit one classifier on cached features",
        description="Fit a classifier Pipeline on the train split of cached layers, score it on val and "
        "test, save model and reports under <cache-dir>/runs/<run_id>/ and log the run.",
    )
    add_entry(
        p,
        several="another entry of the same images (repeatable): their features are concatenated, row-aligned "
        "by image, e.g. --entry lite0-entry --entry lite2-entry, or one entry per --pool",
    )
    p.add_argument(
        "--layers",
        default=None,
        help="layer names and groups (all, blocks, final, fc), comma-separated; "
        "concatenated in depth order (default: every cached layer)",
    )
    add_entry_pick(p)
    add_model_options(
        p,
        "rf, svm, linear-svm, logreg, knn, dense, tail (the backbone's layers above --cut), "
        "nystroem-svm and sgd (for many rows), or the "
        "baselines majority, stratified (default rf)",
    )
    add_selection_options(p, "also score it")
    add_view_options(p)
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
    add_runs_dir(p)
    p.set_defaults(func=cmd_fit, parser=p)

    p = sub.add_parser(
        "compare",
        help="layer subsets x classifiers x parameter grid",
        description="Fit every (layer subset, classifier, grid point), print one table, save results.csv "
        "and a chart under <cache-dir>/reports/compare-<id>/; every fit is logged as a run.",
    )
    add_entry(p)
    p.add_argument(
        "--layer-sets",
        nargs="+",
        required=True,
        metavar="SET",
        help="subsets: a layer, a group (all, blocks, final, fc), a comma list, or 'each' (every cached layer alone)",
    )
    add_entry_pick(p)
    add_model_options(p, "comma-separated classifiers, e.g. rf,svm,logreg (default rf)")
    p.add_argument(
        "--grid",
        type=typed(parse_grid_item),
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="parameter values to sweep, e.g. min_samples_leaf=1,2,5 (repeatable; goes to classifiers having KEY)",
    )
    add_selection_options(p, "rank rows")
    add_view_options(p)
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
    add_runs_dir(p)
    add_cluster_options(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "tune",
        help="search classifier parameters, refit the best, score test once",
        description="Per classifier, search its key parameters on log grids with refinement (logreg/"
        "linear-svm C, svm C x gamma, rf leaf x max_features, dense lr x l2 x hidden), select "
        "on val or --cv, refit on train+val, score test once, log the run and save the "
        "search curve under <cache-dir>/reports/tune-<id>/.",
    )
    add_entry(
        p,
        several="with --select group-lasso: another entry of the same images (repeatable), searched as a "
        "candidate, e.g. one per --pool grid:T; with --clf tail and no --cut: another entry whose cached cuts "
        "(--pool none) are searched too",
    )
    p.add_argument(
        "--layers", default=None, help="layer names and groups, comma-separated (default: every cached layer)"
    )
    add_entry_pick(p)
    add_model_options(
        p, "comma-separated classifiers among logreg, linear-svm, svm, rf, dense, nystroem-svm, sgd (default logreg)"
    )
    p.set_defaults(clf="logreg")
    add_selection_options(p, "select")
    add_view_options(p)
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
    add_runs_dir(p)
    add_cluster_options(p)
    p.set_defaults(func=cmd_tune)

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
    p.add_argument(
        "--unsafe",
        action="store_true",
        help="allow Lambda layers when the extract step loads a saved model (runs its code); a pipeline file "
        "cannot ask for this",
    )
    add_cache_dir(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "plot-tsne",
        help="t-SNE plot of a layer",
        description="Save a 2-D t-SNE of cached layer features, colored by class, under <cache-dir>/reports/.",
    )
    add_entry(p)
    p.add_argument("--layers", default="top_activation", help="layer names or groups (default top_activation)")
    p.add_argument(
        "--split", default=None, choices=("train", "val", "test"), help="only this split (default: all images)"
    )
    p.add_argument("--max-points", type=int, default=2000, help="embed at most this many random images (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="subsample and t-SNE seed (default 0)")
    add_runs_dir(p)
    p.set_defaults(func=cmd_plot_tsne)

"""Commands about backbones and the feature cache: backbones, layers, extract, ls, info, verify, export."""

from __future__ import annotations

from featx.cli.options import (
    add_backbone_options,
    add_cache_dir,
    add_cluster_options,
    add_entry,
    add_entry_pick,
    backbone_of,
    cache_of,
    compute_of,
    entry_of,
    floats,
)
from featx.errors import RunFailed
from featx.terminal import fit_lines, fit_table


def cmd_backbones(args) -> None:
    from featx.backbones import backbone_catalog
    from featx.backbones.hub import EXTRA

    catalog = backbone_catalog()
    print("\n".join(catalog["registry"]))
    if not catalog["hub_installed"]:
        print(f"\nKerasHub vision transformers (DINOv2, DINOv3, CLIP, SigLIP, ViT): {EXTRA}")
        return
    print(
        fit_lines("\nKerasHub presets (also a preset folder, or hf://org/name for DINOv2, DINOv3 and ViT checkpoints):")
    )
    for family, presets in catalog["hub"]:
        print(fit_lines(family))
        width = max(len(name) for name, _ in presets)
        for name, description in presets:  # a long description wraps under itself
            print(fit_lines(f"  {name:<{width}}  {description}", indent=" " * (width + 2)))


def cmd_layers(args) -> None:
    from featx.backbones import layer_table

    backbone = backbone_of(args).build()
    if args.cuts:
        from featx.backbones.cuts import cut_table

        cuts = cut_table(backbone)
        print(fit_table(cuts.table))
        print(
            fit_lines(
                f"\n{len(cuts.table)} cuts: every path from the input to the final feature layer {cuts.final} "
                "passes through each; params_above = trainable parameters of the layers above it (the tail that "
                "`featx fit --clf tail --cut LAYER` trains on its map, cached with `featx extract --layers LAYER "
                "--pool none`)"
            )
        )
        return
    layers = layer_table(backbone, pool=args.pool, every_layer=args.all)
    print(fit_table(layers.table))
    lines = [
        f"\n{len(layers.table)} layers shown ({'every layer' if args.all else 'the all group; --all for every layer'}); "
        f"family {layers.family}; groups:",
        *(f"  {group} ({layers.groups[group]}): {meaning}" for group, meaning in layers.group_meaning.items()),
        *([layers.tokens] if layers.tokens else []),
        *([layers.preprocessing_note] if layers.preprocessing_note else []),
    ]
    print(fit_lines("\n".join(lines)))


def cmd_extract(args) -> None:
    from featx.extractor import extract
    from featx.sources.spec import DEFAULT_DATA, DataSpec

    if args.data is None:
        print(
            f"note: no --data given, so the built-in '{DEFAULT_DATA}' example data set is used (2,624 solar-cell "
            "images); pass --data FOLDER or --data FILE.csv for your own images"
        )
    extract(
        DataSpec(args.data or DEFAULT_DATA, split=args.split, seed=args.seed, limit=args.limit, strict=args.strict),
        backbone_of(args),
        args.layers,
        views=args.views,
        view_seed=args.view_seed,
        cache=cache_of(args),
        compute=compute_of(args),
    )


def cmd_ls(args) -> None:
    from featx.cache.tables import UNREADABLE, entries_table

    table = entries_table(cache_of(args))
    if not len(table):
        print("no cache entries; run `featx extract`")
        return
    unreadable = table["backbone"].astype(str).str.startswith(UNREADABLE)  # said on lines of their own, below
    if (~unreadable).any():
        print(fit_table(table[~unreadable]))
    for _, row in table[unreadable].iterrows():  # the entry's line, then the problem (a path stays whole)
        problem = str(row["backbone"]).removeprefix(UNREADABLE)
        print(f"{row['entry']}  UNREADABLE (`featx verify` reports it too):\n" + fit_lines(f"    {problem}", indent=""))


def cmd_info(args) -> None:
    info = cache_of(args).open(entry_of(args)).summary()
    lines = [f"entry: {info['entry']}", f"key: {info['key']}", f"data: {info['data']}"]
    lines += [f"{k}: {v}" for k, v in info["settings"].items()]
    lines += [info["preprocessing_note"]] if info["preprocessing_note"] else []
    lines.append(f"split: {', '.join(f'{s} {c}' for s, c in info['split'].items())} ({info['split_settings']})")
    lines.append(f"classes: {', '.join(info['classes'])}")
    print(fit_lines("\n".join(lines)))
    print(fit_table(info["layers"]) if len(info["layers"]) else "no layers cached yet")
    lines = [
        *(
            ["augmented views: " + ", ".join(f"{view} ({len(v)} layer(s))" for view, v in info["views"].items())]
            if info["views"]
            else []
        ),
        *(f"bad file: {path}: {reason}" for path, reason in info["bad_files"].items()),
    ]
    if lines:
        print(fit_lines("\n".join(lines)))


def cmd_verify(args) -> None:
    from featx.runs.housekeeping import check

    table, runs = check(cache_of(args), entry_of(args))
    if table.empty and not runs:
        print("no cache entries to verify")
        return
    for row in table.itertuples():
        if row.status == "FAIL":
            print(fit_lines("\n".join([f"FAIL {row.entry}", *(f"  {p}" for p in row.problems)])))
        else:
            print(fit_lines(f"ok   {row.entry}: {row.notes}", indent="     "))
    if runs:
        print(fit_lines("\n".join(["FAIL runs", *(f"  {p}" for p in runs)])))
    failed = int((table["status"] == "FAIL").sum())
    if runs:
        raise RunFailed(
            f"{failed} of {len(table)} cache entries and the runs folder have problems (listed above); "
            "`featx prune` removes orphan run folders"
        )
    if failed:
        raise RunFailed(
            f"{failed} of {len(table)} cache entries have problems (listed above); "
            "re-run `featx extract` into a fresh --cache-dir to rebuild them"
        )


def cmd_export(args) -> None:
    from featx.features.export import export

    export(entry_of(args), args.layers, format=args.format, output=args.output, cache=cache_of(args))


def add_commands(sub) -> None:
    from featx.backbones import DEFAULT_BACKBONE
    from featx.sources.views import SPEC_HELP

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
    add_backbone_options(p, weights_default="none")
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
    add_backbone_options(p, weights_default="imagenet")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16"), help="stored feature dtype")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    p.add_argument(
        "--split", type=floats, default=(0.7, 0.15, 0.15), help="train,val,test fractions (default 0.7,0.15,0.15)"
    )
    p.add_argument("--seed", type=int, default=0, help="split and subset seed (default 0)")
    p.add_argument("--limit", type=int, default=None, help="use a stratified subset of this many images")
    p.add_argument("--strict", action="store_true", help="fail on the first bad image instead of skipping it")
    p.add_argument(
        "--views",
        default=None,
        metavar="SPEC",
        help="also cache augmented views of every image: " + SPEC_HELP + "; only views not cached yet are computed",
    )
    p.add_argument("--view-seed", type=int, default=0, metavar="S", help="seed of rand:K views (default 0)")
    p.add_argument("--mixed-precision", action="store_true", help="float16 compute (for GPUs)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_cluster_options(p)
    add_cache_dir(p)
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("ls", help="list cache entries", description="List cache entries with their layers and sizes.")
    add_cache_dir(p)
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser(
        "info", help="show one cache entry", description="Show a cache entry's settings, split, layers and bad files."
    )
    add_entry(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "verify",
        help="check cache entries for damage",
        description="Check cache entries: files open, one row per image in every layer, no NaN/Inf, "
        "settings hash matches, interrupted passes resumable; and, for the whole cache, run folders no run "
        "in the log lists (a fit killed before it logged its run: `featx prune` removes them). Exit 1 if a "
        "problem is found.",
    )
    add_entry(p, default_help="every entry")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser(
        "export",
        help="write cached features to a CSV, Parquet or NumPy file",
        description="Write one row per image (path, label, split, then the features of the chosen "
        "layers in depth order) for use outside featx.",
    )
    add_entry(p)
    add_entry_pick(p)
    p.add_argument("--layers", default=None, help="layer names and groups (default: every cached layer)")
    p.add_argument(
        "--format",
        default="csv",
        choices=("csv", "parquet", "npy"),
        help="csv (default), parquet (needs pyarrow) or npy (one .npz of arrays)",
    )
    p.add_argument("--output", default=None, help="file to write (default <entry>-<layers>.<ext> here)")
    p.set_defaults(func=cmd_export)

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
            unsafe=args.unsafe, mixed_precision=args.mixed_precision, progress=not args.quiet)


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
    _add_cache_dir(p)
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("ls", help="list cache entries", description="List cache entries with their layers and sizes.")
    _add_cache_dir(p)
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("info", help="show one cache entry", description="Show a cache entry's settings, split, layers and bad files.")
    _add_cache(p)
    p.set_defaults(func=cmd_info)
    return parser


def _add_backbone_options(p: argparse.ArgumentParser, weights_default: str) -> None:
    p.add_argument("--weights", default=weights_default, help=f"imagenet, none or a local weights file (default {weights_default})")
    p.add_argument("--pool", default="avg", choices=("avg", "max", "none"), help="spatial pooling of conv outputs (default avg)")
    p.add_argument("--input-size", type=int, default=None, help="square input size (default: the backbone's own)")
    p.add_argument("--preprocess", default=None, help="preprocessing for a saved model: none, unit, tf or a keras.applications module")
    p.add_argument("--unsafe", action="store_true", help="allow Lambda layers when loading a saved model (runs its code)")


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

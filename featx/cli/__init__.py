"""The command line: `featx COMMAND ...`. It parses flags into featx's values, calls the verb and prints; nothing
here decides what a command does. One module per command group:

    featx.cli.cache         backbones, layers, extract, ls, info, verify, export
    featx.cli.experiments   fit, compare, tune, run (a pipeline file), plot-tsne
    featx.cli.runs          runs, report, predict, export-model, rm, prune
    featx.cli.options       the options several commands share, and the values they become
    featx.cli.signals       exit codes, the one `error:` line, Ctrl-C

Exit codes: 0 ok, 1 failed run, 2 bad usage/input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys

from featx.cli import cache, experiments, runs
from featx.cli.signals import run_command

GROUPS = (cache, experiments, runs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="featx",
        description="Run a frozen CNN once, cache per-layer features in HDF5, and run fast experiments on them.",
    )
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's own log lines (hidden by default)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.add_commands(sub)
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
        has_entry = any(a.dest == "entry" and not a.option_strings for a in parser._actions)
        parser.error(
            f"{parser.prog} has no --cache option: pass a cache folder as --cache-dir {values or 'DIR'}"
            + (" (and a cache entry as the positional argument)" if has_entry else "")
        )


def main(argv=None) -> int:
    """Run one command line (argv; None: this process's); returns the exit code. Never a traceback for Ctrl-C, a
    bad input or a closed pipe (featx.cli.signals)."""
    return run_command(argv, lambda: _run(argv))


def _run(argv) -> None:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    from featx import runtime

    with runtime.tensorflow_environment(verbose=args.verbose):  # TensorFlow's settings: set here, not at import
        args.func(args)


if __name__ == "__main__":
    sys.exit(main())

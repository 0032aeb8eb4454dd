"""The one schema of a pipeline file (`featx run FILE`): every section's keys, what each accepts, as data.

A pipeline file may come from a stranger, so featx checks it whole before anything runs: its size, that it is
UTF-8, its nesting depth, then every key against SCHEMA (types, ranges, choices, the steps' shape). The first
problem is one line naming the key, the value and what the key accepts. SCHEMA is a table per section
(`pipeline` is the top level, `extract` its [extract] table, `fit` / `compare` / `tsne` the [[steps]] of each
kind), each mapping a key to a Rule; refusing one more key is one entry `"key": Refused("why")`. The docs page
docs/pipelines.md embeds schema_markdown(), so it cannot drift from what is checked.

What is checked here is the file's shape. The values it builds are checked again by their own constructors
before any extraction (FitSpec and Evaluation: classifier names, scikit-learn's parameter constraints and featx's
bounds, featx.classifiers.registry.PARAM_BOUNDS).
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field, replace

from featx.backbones import INPUT_SIZES, SAVED_MODEL_PREPROCESSING
from featx.backbones.layers import POOLS, TOKEN_POOLS
from featx.backbones.spec import DTYPES
from featx.classifiers.registry import CLASSIFIERS, PARAM_BOUNDS
from featx.errors import FeatxError
from featx.experiments.tsne import POINTS as TSNE_POINTS
from featx.features.options import TRANSFORM_OPTIONS
from featx.features.transforms import MAX_BINS, MAX_PCA
from featx.selection.spec import MAX_GRID_POINTS, METRIC_NAMES, SEARCHES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MAX_BYTES = 1_000_000  # a pipeline is a short recipe: the shipped ones are 1-4 kB
MAX_DEPTH = 8  # tables and arrays inside each other: the deepest use is a grid of hidden-layer tuples (6)
MAX_TEXT = 4_096  # characters of one string (a path, a description)
MAX_ITEMS = 1_000  # items of one array (steps, layer sets, one parameter's grid values)
SEED_MAX = 2**32 - 1  # numpy's and scikit-learn's seeds are 32-bit
SHOWN = 40  # characters of a refused value quoted in the error line


# --- rules: what one key accepts


@dataclass(frozen=True)
class Rule:
    """What one key accepts. ok(value) says whether it does; accepts is the phrase for the error line and the docs."""

    note: str = field(default="", kw_only=True)  # what the key is for, in a few words (docs, after the error)

    def ok(self, value) -> bool:
        raise NotImplementedError

    @property
    def accepts(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class Text(Rule):
    choices: tuple = ()
    pattern: str = ""  # also accepted: strings matching this regular expression (re.fullmatch)
    pattern_text: str = ""  # the pattern in words

    def ok(self, value) -> bool:
        if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
            return False
        if not self.choices and not self.pattern:
            return True
        return value in self.choices or bool(self.pattern and re.fullmatch(self.pattern, value))

    @property
    def accepts(self) -> str:
        if not self.choices:
            return "a string"
        choices = ", ".join(f'"{c}"' for c in self.choices)
        either = f" or {self.pattern_text}" if self.pattern_text else ""
        return f"one of {choices}{either}" if len(self.choices) > 1 or either else f"only {choices}"


@dataclass(frozen=True)
class Integer(Rule):
    low: int = 0
    high: int = 2**31 - 1

    def ok(self, value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high

    @property
    def accepts(self) -> str:
        return f"a whole number from {self.low:,} to {self.high:,}"


@dataclass(frozen=True)
class Number(Rule):
    low: float = -1e9
    high: float = 1e9
    open_low: bool = False  # the low end itself is refused
    open_high: bool = False

    def ok(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        above = value > self.low if self.open_low else value >= self.low
        below = value < self.high if self.open_high else value <= self.high
        return above and below

    @property
    def accepts(self) -> str:
        low, high = ("above" if self.open_low else "from"), ("below" if self.open_high else "to")
        return f"a number {low} {_number(self.low)} {high} {_number(self.high)}"


@dataclass(frozen=True)
class Flag(Rule):
    def ok(self, value) -> bool:
        return isinstance(value, bool)

    @property
    def accepts(self) -> str:
        return "true or false"


@dataclass(frozen=True)
class ListOf(Rule):
    item: Rule = Text()
    min_items: int = 1
    max_items: int = MAX_ITEMS

    def ok(self, value) -> bool:
        return (
            isinstance(value, list)
            and self.min_items <= len(value) <= self.max_items
            and all(self.item.ok(v) for v in value)
        )

    @property
    def accepts(self) -> str:
        count = f"{self.min_items}" if self.min_items == self.max_items else f"{self.min_items} to {self.max_items:,}"
        return f"an array of {count} items, each {self.item.accepts}"


@dataclass(frozen=True)
class Plain(Rule):
    """Any value a parameter may take: a string, number, boolean, or an array or table of them (how deep is
    bounded for the whole file, MAX_DEPTH); whether it is a good value is the classifier's to say."""

    def ok(self, value) -> bool:
        if isinstance(value, float):
            return math.isfinite(value)
        if isinstance(value, str):
            return len(value) <= MAX_TEXT
        if isinstance(value, list):
            return len(value) <= MAX_ITEMS and all(self.ok(v) for v in value)
        if isinstance(value, dict):
            return all(self.ok(v) for v in value.values())
        return isinstance(value, int)  # bool included

    @property
    def accepts(self) -> str:
        return "a string, a finite number, true/false, or an array or table of them"


@dataclass(frozen=True)
class Either(Rule):
    rules: tuple = ()

    def ok(self, value) -> bool:
        return any(rule.ok(value) for rule in self.rules)

    @property
    def accepts(self) -> str:
        return ", or ".join(rule.accepts for rule in self.rules)


@dataclass(frozen=True)
class Values(Rule):
    """A table of name = value (classifier parameters, a grid): names are identifiers; values are strings, numbers,
    booleans, or arrays and tables of them (their meaning is the classifier's to check)."""

    value: Rule = Plain()  # what each value must be

    def ok(self, value) -> bool:
        return isinstance(value, dict) and all(
            isinstance(k, str) and k.isidentifier() and self.value.ok(v) for k, v in value.items()
        )

    @property
    def accepts(self) -> str:
        return f"a table of name = value, each value {self.value.accepts}"


@dataclass(frozen=True)
class Section(Rule):
    """A table whose keys are checked against SCHEMA[name] ([extract])."""

    name: str = ""

    def ok(self, value) -> bool:
        return isinstance(value, dict)

    @property
    def accepts(self) -> str:
        return f"a table of the keys of section {self.name} (below)"


@dataclass(frozen=True)
class Steps(Rule):
    """[[steps]]: an array of tables, each with `kind` naming its section in SCHEMA."""

    kinds: tuple = ()

    def ok(self, value) -> bool:
        return isinstance(value, list) and 1 <= len(value) <= MAX_ITEMS and all(isinstance(v, dict) for v in value)

    @property
    def accepts(self) -> str:
        return f"an array of 1 to {MAX_ITEMS:,} tables ([[steps]]), each with kind = " + " | ".join(
            f'"{k}"' for k in self.kinds
        )


@dataclass(frozen=True)
class Refused(Rule):
    """A key no pipeline file may set; note says why and what to do instead."""

    def ok(self, value) -> bool:
        return False

    @property
    def accepts(self) -> str:
        return "nothing: a pipeline file may not set it"


# --- the schema

LAYERS = Either(
    (Text(), ListOf(Text())), note="layer names and groups (all, blocks, final, fc): one comma string or an array"
)
POOL = Text(
    choices=tuple(dict.fromkeys([*POOLS, *TOKEN_POOLS])),
    pattern=r"grid:[0-9]+",
    pattern_text='"grid:T"',
    note="pooling of a conv map or a vision transformer's tokens (part of the cache key)",
)
STEP_POOL = replace(POOL, note="this step's features pooled otherwise: another entry of the same images, extracted too")
VIEWS = Text(note="augmented views: flip, d4, crops:K, rand:K, comma-separated (as `featx extract --views`)")
JOBS = PARAM_BOUNDS["n_jobs"][0]
N_JOBS = Either((Integer(1, JOBS), Integer(-JOBS, -1)), note="parallel jobs: -1 all cores, -2 all but one, ...")
CV = Integer(2, 100, note="K of repeated stratified K-fold over train+val; leave it out for the val split")
CV_REPEATS = Integer(1, 100, note="repeats of the K folds, reshuffled")
CLUSTER = {
    "cluster": Text(note="Dask workers: local:N, tcp://HOST:PORT or slurm[:N]"),
    "cluster_config": Text(note="a TOML or YAML file of cluster options"),
    "cluster_timeout": Number(0, 7 * 86_400, open_low=True, note="seconds without a SLURM worker before stopping"),
}
PARAMS = Values(note="classifier parameters, e.g. { n_estimators = 200 }; checked by the classifier's own constraints")
TRANSFORM_RULES = {  # featx.features.options.TRANSFORM_OPTIONS, one rule each (a test holds the two together)
    "standardize": Flag(),
    "discretize": Text(choices=("fne", "kbins")),
    "pca": Either((Integer(1, MAX_PCA), Number(0, 1, open_low=True, open_high=True))),
    "kbins": Integer(2, MAX_BINS),
    "fne_low": Number(-100, 100),
    "fne_high": Number(-100, 100),
    "normalize": Text(choices=("layer",)),
    "select": Text(
        choices=("group-lasso",), pattern=r"group-lasso:[0-9.eE+-]+", pattern_text='"group-lasso:F" (0 < F <= 1)'
    ),
    "select_penalty": Number(0, 1_000, open_low=True),
    "blocks": Refused(note="featx sets it from the layers loaded"),
}
TRANSFORMS = {
    option.name: replace(TRANSFORM_RULES[option.name], note=TRANSFORM_RULES[option.name].note or option.help)
    for option in TRANSFORM_OPTIONS
}
FIT_AND_COMPARE = {
    "params": PARAMS,
    "seed": Integer(0, SEED_MAX, note="the classifier's and transforms' seed (with cv: the folds' too)"),
    "cv": CV,
    "cv_repeats": CV_REPEATS,
    "class_weight": Text(choices=("balanced",), note="weigh classes inversely to their frequency"),
    "views": VIEWS,
    "view_seed": Integer(0, SEED_MAX, note="seed of rand:K views, as at extract"),
    "tta": Flag(note="predict by averaging over the views"),
}

SCHEMA: dict[str, dict[str, Rule]] = {
    "pipeline": {
        "name": Text(note="the pipeline's name (default: the file name)"),
        "description": Text(note="one line on what it does"),
        "data": Text(note="a folder of class folders, a CSV manifest or a built-in name (elpv)"),
        "backbone": Text(
            note="a backbone name (`featx backbones`), a KerasHub preset name or folder, hf://org/name, or a .keras/.h5 "
            "file"
        ),
        "weights": Text(note="imagenet, none or a local weights file"),
        "layers": LAYERS,
        "views": VIEWS,
        "view_seed": Integer(0, SEED_MAX, note="seed of rand:K views"),
        "extract": Section(name="extract", note="any other setting of the extraction"),
        "steps": Steps(kinds=("fit", "compare", "tsne"), note="what to run on the cached features, in order"),
    },
    "extract": {
        "pool": POOL,
        "dtype": Text(choices=DTYPES, note="stored feature dtype"),
        "batch_size": Integer(1, 4_096, note="images per forward pass"),
        "split": ListOf(
            Number(0, 1),
            min_items=3,
            max_items=3,
            note="train, val, test fractions summing to 1, e.g. [0.7, 0.15, 0.15]",
        ),
        "seed": Integer(0, SEED_MAX, note="the split's and the subset's seed"),
        "limit": Integer(1, 10**9, note="a stratified subset of this many images"),
        "strict": Flag(note="fail on the first bad image instead of skipping it"),
        "input_size": Integer(*INPUT_SIZES, note="square input side in pixels (default: the backbone's own)"),
        "preprocess": Text(choices=SAVED_MODEL_PREPROCESSING, note="preprocessing of a saved model"),
        "unsafe": Refused(
            note="a pipeline file may not let a saved model's Lambda layers run code: remove it, and pass --unsafe "
            "to `featx run` yourself if you trust the model"
        ),
        "mixed_precision": Flag(note="float16 compute (for GPUs)"),
        **CLUSTER,
    },
    "fit": {
        "kind": Text(choices=("fit",), note="a fit of one classifier (`featx fit`)"),
        "layers": Either(LAYERS.rules, note="the layers to fit on (default: the pipeline's layers)"),
        "clf": Text(choices=tuple(CLASSIFIERS), note="the classifier"),
        "pool": STEP_POOL,
        **FIT_AND_COMPARE,
        "n_jobs": N_JOBS,
        **TRANSFORMS,
    },
    "compare": {
        "kind": Text(choices=("compare",), note="layer subsets x classifiers x grid (`featx compare`)"),
        "layer_sets": Either(
            (Text(), ListOf(Text())), note="layer subsets: a layer, a group, a comma list, or each (every layer alone)"
        ),
        "classifiers": Either(
            (Text(), ListOf(Text(choices=tuple(CLASSIFIERS)))), note="classifier names (an array, or a comma string)"
        ),
        "grid": Values(
            ListOf(Plain()),
            note="parameter values to sweep, e.g. { C = [0.1, 1, 10] }",
        ),
        **FIT_AND_COMPARE,
        "pool": STEP_POOL,
        "metric": Text(choices=METRIC_NAMES, note="the ranking metric (default: chosen from the class balance)"),
        "search": Text(choices=SEARCHES, note="exact: every row on every fold; halving (with cv): successive halving"),
        "n_jobs": N_JOBS,
        "plots": Flag(note="also draw each run's confusion PNGs"),
        "save_models": Text(choices=("best", "all"), note="keep the model of the best row only, or of every row"),
        "reuse": Flag(note="reuse logged fits of the same spec"),
        **CLUSTER,
        **TRANSFORMS,
    },
    "tsne": {
        "kind": Text(choices=("tsne",), note="a t-SNE plot of a layer subset (`featx plot-tsne`)"),
        "layers": Either(LAYERS.rules, note="the layers to embed"),
        "split": Text(choices=("train", "val", "test"), note="only this split (default: every image)"),
        "pool": STEP_POOL,
        "seed": Integer(0, SEED_MAX, note="subsample and t-SNE seed"),
        "max_points": Integer(*TSNE_POINTS, note="embed at most this many random images; t-SNE is slow beyond"),
    },
}
STEP_KINDS = SCHEMA["pipeline"]["steps"].kinds


# --- reading and checking


def parse_pipeline(data: bytes, path) -> dict:
    """The checked contents of pipeline file `path` (its bytes `data`): one FeatxError line for the first problem."""
    if len(data) > MAX_BYTES:
        raise FeatxError(
            f"pipeline '{path}' is larger than {MAX_BYTES:,} bytes, the most a pipeline file may be; is it the "
            "right file?"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise FeatxError(
            f"pipeline '{path}' is not UTF-8 text: byte 0x{data[exc.start]:02x} on line {line}; save it as UTF-8"
        ) from None
    try:
        spec = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FeatxError(f"pipeline '{path}' is not valid TOML: {exc}") from None
    except RecursionError:
        raise FeatxError(_too_deep(path)) from None
    if _depth(spec) > MAX_DEPTH:
        raise FeatxError(_too_deep(path))
    check_pipeline(spec, path)
    return spec


def check_pipeline(spec: dict, path) -> None:
    """Every key of a parsed pipeline file against SCHEMA (the top level, [extract], each step by its kind)."""
    _check_section(spec, "pipeline", f"pipeline '{path}'")
    _check_section(spec.get("extract", {}), "extract", f"[extract] of '{path}'")
    for number, step in enumerate(spec["steps"], 1):
        kind = step.get("kind")
        if kind is None:
            raise FeatxError(f"step {number} of '{path}' has no kind; add kind = {' | '.join(STEP_KINDS)}")
        if kind not in STEP_KINDS:
            raise FeatxError(
                f"step {number} of '{path}' has kind {_shown(kind)}; choose one of {', '.join(STEP_KINDS)}"
            )
        _check_section(step, kind, f"step {number} ({kind}) of '{path}'")


def _check_section(table, section: str, where: str) -> None:
    rules = SCHEMA[section]
    if not isinstance(table, dict):
        raise FeatxError(f"{where} must be a table of key = value, not {_shown(table)}")
    unknown = [k for k in table if k not in rules]
    if unknown:
        raise FeatxError(f"unknown key '{_one_line(str(unknown[0]))}' in {where}; allowed: {', '.join(rules)}")
    if section == "pipeline" and "steps" not in table:
        raise FeatxError(f"{where} has no [[steps]]; add at least one with kind = {' | '.join(STEP_KINDS)}")
    for key, value in table.items():
        rule = rules[key]
        if isinstance(rule, Refused):
            raise FeatxError(f"{where} sets {key}, which a pipeline file may not set: {rule.note}")
        if not rule.ok(value):
            note = f" — {rule.note}" if rule.note else ""
            raise FeatxError(f"{key} = {_shown(value)} in {where} is refused: {key} takes {rule.accepts}{note}")


def _depth(value) -> int:
    """How deep tables and arrays nest in `value` (a scalar is 0), without recursion."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, level = todo.pop()
        if isinstance(item, (dict, list)):
            if level > MAX_DEPTH:
                return level
            deepest = max(deepest, level)
            todo += [(v, level + 1) for v in (item.values() if isinstance(item, dict) else item)]
    return deepest


def _too_deep(path) -> str:
    return (
        f"pipeline '{path}' nests tables or arrays more than {MAX_DEPTH} deep; a pipeline needs at most 6 "
        "(a grid of hidden-layer sizes)"
    )


def _number(value) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"


def _shown(value) -> str:
    """A value as TOML spells it, cut to SHOWN characters."""
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, str):
        text = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    elif isinstance(value, dict):
        text = "{ " + ", ".join(f"{k} = {_shown(v)}" for k, v in list(value.items())[:4]) + " }"
    elif isinstance(value, list):
        text = "[" + ", ".join(_shown(v) for v in value[:4]) + ("]" if len(value) <= 4 else ", ...]")
    else:
        text = str(value)
    text = _one_line(text)
    return text if len(text) <= SHOWN else text[: SHOWN - 1] + "…"


def _one_line(text: str) -> str:
    """text as one visible ASCII line: control characters escaped (a newline as \\n, NUL as \\x00), other
    non-ASCII characters as backslash escapes, so an error quoting a stranger's file stays one line."""
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
    return text.encode("ascii", "backslashreplace").decode()


# --- the schema as documentation


def schema_markdown() -> str:
    """SCHEMA as Markdown: one table per section (key, what it accepts, what it is for); docs/pipelines.md holds it."""
    titles = {
        "pipeline": "Top level",
        "extract": "`[extract]`",
        "fit": '`[[steps]]` with `kind = "fit"`',
        "compare": '`[[steps]]` with `kind = "compare"`',
        "tsne": '`[[steps]]` with `kind = "tsne"`',
    }
    blocks = [
        f"Limits of the whole file: at most {MAX_BYTES:,} bytes of UTF-8 text, tables and arrays nested at most "
        f"{MAX_DEPTH} deep, strings of at most {MAX_TEXT:,} characters, arrays of at most {MAX_ITEMS:,} items."
    ]
    for section, rules in SCHEMA.items():
        rows = ["| key | accepts | what it is for |", "|---|---|---|"]
        for key, rule in rules.items():
            accepts = rule.accepts.replace("|", "\\|")
            rows.append(f"| `{key}` | {accepts} | {rule.note.replace('|', chr(92) + '|')} |")
        blocks.append(f"### {titles[section]}\n\n" + "\n".join(rows))
    rows = ["| parameter | at most | why |", "|---|---|---|"]
    rows += [f"| `{name}` | {high:,} | {why} |" for name, (high, why) in PARAM_BOUNDS.items()]
    blocks.append(
        "### Classifier parameters\n\nA `params` or `grid` value is checked by the classifier's own scikit-learn "
        "constraints, and, where those set no upper bound, by featx's (the same for `--param` and every flag; "
        f"a grid is at most {MAX_GRID_POINTS:,} points per classifier):\n\n" + "\n".join(rows)
    )
    return "\n\n".join(blocks) + "\n"

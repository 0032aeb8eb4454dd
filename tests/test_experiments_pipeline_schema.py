"""The pipeline file schema (featx.experiments.pipeline_schema): every hostile file is one `error:` line naming the key
and what it accepts, before anything runs; the schema holds every keyword of the API the steps call; the docs page
holds the schema as it is checked; classifier parameters are bounded wherever a FitSpec is made (files and flags)."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import pytest

from featx.backbones.spec import BackboneSpec
from featx.compute import Compute
from featx.errors import FeatxError
from featx.experiments.pipeline_schema import MAX_DEPTH, SCHEMA, STEP_KINDS, Refused, schema_markdown
from featx.experiments.pipelines import (
    EXTRACT_BACKBONE,
    EXTRACT_COMPUTE,
    EXTRACT_DATA,
    STEPS,
    check_steps,
    read_pipeline,
)
from featx.experiments.tsne import tsne
from featx.features.options import TRANSFORM_OPTIONS
from featx.selection.spec import Evaluation, compare_specs, fit_spec
from featx.sources.spec import DataSpec

from helpers import assert_one_line_error, cli

ROOT = Path(__file__).resolve().parents[1]
BASE = """name = "hostile"
data = "elpv"
backbone = "mobilenet_v2"
weights = "none"
layers = "out_relu"
[extract]
limit = 24
input_size = 32
[[steps]]
kind = "fit"
clf = "logreg"
"""
COMPARE = '[[steps]]\nkind = "compare"\nlayer_sets = ["out_relu"]\nclassifiers = ["rf"]\n'
TSNE = '[[steps]]\nkind = "tsne"\nlayers = "out_relu"\n'


def _swap(old: str, new: str) -> str:
    assert old in BASE
    return BASE.replace(old, new)


def _deep(text: str) -> str:
    return text + "\n" + BASE


# (file text or bytes, the error line's pattern): the files of issue 31 first, then neighbours of theirs
HOSTILE = {
    "data = 42": (_swap('data = "elpv"', "data = 42"), r"data = 42 in pipeline '.*' is refused: data takes a string"),
    'limit = "abc"': (
        _swap("limit = 24", 'limit = "abc"'),
        r'limit = "abc" in \[extract\] of .* limit takes a whole number from 1 to',
    ),
    "seed = -1": (_swap("limit = 24", "limit = 24\nseed = -1"), r"seed = -1 in \[extract\] .* from 0 to 4,294,967,295"),
    'split = "abc"': (_swap("limit = 24", 'limit = 24\nsplit = "abc"'), r'split = "abc" in \[extract\] .* array of 3'),
    "layers = 42": (_swap('layers = "out_relu"', "layers = 42"), r"layers = 42 in pipeline .* layers takes a string"),
    "clf = 42": (_swap('clf = "logreg"', "clf = 42"), r'clf = 42 in step 1 \(fit\) .* one of "rf", "svm"'),
    'params = "x"': (
        _swap('clf = "logreg"', 'clf = "logreg"\nparams = "x"'),
        r'params = "x" in step 1 \(fit\) .* params takes a table of name = value',
    ),
    "layer_sets = 42": (BASE + COMPARE.replace('["out_relu"]', "42", 1), r"layer_sets = 42 in step 2 \(compare\)"),
    "max_points = -1": (BASE + TSNE + "max_points = -1\n", r"max_points = -1 in step 2 \(tsne\) .* from 2 to 100,000"),
    'steps = ["fit"]': (
        BASE.split("[extract]")[0] + 'steps = ["fit"]\n',
        r'steps = \["fit"\] in pipeline .* steps takes an array of 1 to 1,000 tables',
    ),
    "mixed steps": (
        BASE.split("[extract]")[0] + 'steps = [{ kind = "fit", clf = "rf" }, "fit"]\n',
        r'steps = \[\{ kind = "fit", clf = "rf" \}, "fit"\] in pipeline',
    ),
    "a Latin-1 byte": (
        _swap('name = "hostile"', 'name = "caf\xe9"').encode("latin-1"),
        r"is not UTF-8 text: byte 0xe9 on line 1; save it as UTF-8",
    ),
    "5,000-deep arrays": (_deep("deep = " + "[" * 5000 + "]" * 5000), rf"nests tables or arrays more than {MAX_DEPTH}"),
    "5,000-deep inline tables": (
        _deep("deep = " + "{ a = " * 5000 + "1" + " }" * 5000),
        rf"nests tables or arrays more than {MAX_DEPTH}",
    ),
    "5,000-deep dotted keys": (_deep("deep" + ".a" * 5000 + " = 1"), rf"nests tables or arrays more than {MAX_DEPTH}"),
    'standardize = "maybe"': (
        _swap('clf = "logreg"', 'clf = "logreg"\nstandardize = "maybe"'),
        r'standardize = "maybe" in step 1 \(fit\) .* standardize takes true or false',
    ),
    'n_jobs = "all"': (
        _swap('clf = "logreg"', 'clf = "logreg"\nn_jobs = "all"'),
        r'n_jobs = "all" in step 1 \(fit\) .* n_jobs takes a whole number from 1 to 1,024',
    ),
    "a forest of 2**63 trees": (
        _swap('clf = "logreg"', 'clf = "rf"\nparams = { n_estimators = 9223372036854775807 }'),
        r"n_estimators = 9223372036854775807 is beyond featx's bound for classifier 'rf': at most 10,000 \(",
    ),
    "a grid of 10**12 points": (
        BASE
        + COMPARE
        + "grid = { "
        + ", ".join(
            f"{k} = [{', '.join(map(str, range(2, 102)))}]"
            for k in (
                "min_samples_leaf",
                "max_depth",
                "n_estimators",
                "min_samples_split",
                "max_leaf_nodes",
                "random_state",
            )
        )
        + " }\n",
        r"the grid has 1,000,000,000,000 points for classifier rf; featx fits at most 10,000",
    ),
    "a kbins of 2**40": (
        _swap('clf = "logreg"', 'clf = "logreg"\ndiscretize = "kbins"\nkbins = 1099511627776'),
        r"kbins = 1099511627776 in step 1 \(fit\) .* from 2 to 1,024",
    ),
    "rand:99999999 views": (
        _swap('layers = "out_relu"', 'layers = "out_relu"\nviews = "rand:99999999"'),
        r"rand:99999999' needs a count from 1 to 64",
    ),
    "cv = 1": (_swap('clf = "logreg"', 'clf = "logreg"\ncv = 1'), r"cv = 1 in step 1 \(fit\) .* from 2 to 100"),
    "a NaN timeout": (
        _swap("limit = 24", "limit = 24\ncluster_timeout = nan"),
        r"cluster_timeout = nan in \[extract\]",
    ),
    "a date as data": (_swap('data = "elpv"', "data = 1979-05-27"), r"data = 1979-05-27 in pipeline"),
    "no kind": (_swap('kind = "fit"\n', ""), r"step 1 of '.*' has no kind; add kind = fit \| compare \| tsne"),
    "blocks set by hand": (
        _swap('clf = "logreg"', 'clf = "logreg"\nblocks = [["a", 3]]'),
        r"step 1 \(fit\) of '.*' sets blocks, which a pipeline file may not set: featx sets it",
    ),
    "control characters in a refused value": (  # found by tests/test_fuzz.py: extract = "\n" printed two lines
        _swap('clf = "logreg"', 'clf = "logreg"\ncv = "\\n\\t\\u0000"'),
        r'cv = "\\n\\t\\x00" in step 1 \(fit\) .* from 2 to 100',
    ),
    "a newline in an unknown key": (
        _swap('clf = "logreg"', 'clf = "logreg"\n"odd\\nkey" = 1'),
        r"unknown key 'odd\\nkey' in step 1 \(fit\)",
    ),
    "a file of 2 MB": (b"# " + b"x" * 2_000_000 + b"\n" + BASE.encode(), r"is larger than 1,000,000 bytes"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_pipeline_file_is_one_line_and_nothing_runs(case, tmp_path):
    text, pattern = HOSTILE[case]
    path = tmp_path / "hostile.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    rc, out, err = cli("run", path, "--cache-dir", tmp_path / "cache")
    assert_one_line_error(rc, err, pattern)
    assert not (tmp_path / "cache").exists() and out == ""  # nothing extracted, logged or drawn


def test_the_base_of_the_hostile_files_passes(tmp_path):
    """Each hostile file is refused for its one change: the file it was made from passes every check."""
    path = tmp_path / "base.toml"
    path.write_text(BASE + COMPARE + TSNE)
    spec = read_pipeline(path)
    check_steps(spec, path)
    assert [step["kind"] for step in spec["steps"]] == ["fit", "compare", "tsne"]


def _keywords(function, drop=()) -> dict:
    """{keyword: default} of `function` (its **transforms: the transform options), but `drop`."""
    parameters = inspect.signature(function).parameters.values()
    names = {p.name: p.default for p in parameters if p.kind is not p.VAR_KEYWORD and p.name not in drop}
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        names.update({option.name: option.default for option in TRANSFORM_OPTIONS})
    return names


def _fields(value) -> dict:
    return {f.name: f.default for f in dataclasses.fields(value) if f.default is not dataclasses.MISSING}


def test_the_schema_has_exactly_the_keys_the_pipeline_builds_its_values_from():
    """Every key of a section becomes a field of a value the pipeline builds (DataSpec, BackboneSpec, Compute, the
    steps' FitSpecs by fit_spec / compare_specs, Evaluation) or an argument of a verb, and every default of those is
    a value the schema accepts."""
    source = {"data", "backbone", "weights", "layers", "views", "view_seed"}  # top level, given to extract
    assert set(SCHEMA["pipeline"]) == {"name", "description", "extract", "steps", *source}
    accepted = {key for key, rule in SCHEMA["extract"].items() if not isinstance(rule, Refused)}
    assert accepted == {*EXTRACT_DATA, *EXTRACT_BACKBONE, *EXTRACT_COMPUTE}
    assert isinstance(SCHEMA["extract"]["unsafe"], Refused)  # code may run only when the person asks: --unsafe
    assert set(EXTRACT_DATA) <= set(_fields(DataSpec)) and set(EXTRACT_BACKBONE) <= set(_fields(BackboneSpec))
    assert set(EXTRACT_COMPUTE) <= set(_fields(Compute))
    assert tuple(STEPS) == STEP_KINDS
    evaluation = {"cv", "cv_repeats", "metric", "seed", "search"}
    fit_keys = {"layers", *_keywords(fit_spec), "cv", "cv_repeats"}
    compare_keys = {"layer_sets", "save_models", "plots", "n_jobs", "cluster", "cluster_config", "cluster_timeout"}
    compare_keys |= {"reuse", *_keywords(compare_specs), *evaluation}
    tsne_keys = set(_keywords(tsne, drop=("entry", "cache", "log")))
    for kind, keys in (("fit", fit_keys), ("compare", compare_keys), ("tsne", tsne_keys)):
        keys |= {"pool"}  # a step's own pooling: the BackboneSpec of the entry it runs on
        assert set(SCHEMA[kind]) - {"kind"} == keys - {"clf"} | ({"clf"} if kind == "fit" else set()), kind
    defaults = {
        "extract": {**_fields(DataSpec), **_fields(BackboneSpec), **_fields(Compute)},
        "fit": _keywords(fit_spec),
        "compare": {**_keywords(compare_specs), **_fields(Evaluation)},
        "tsne": _keywords(tsne),
    }
    for section, values in defaults.items():  # every default is a value the file may spell
        for name, default in values.items():
            rule = SCHEMA[section].get(name)
            if rule is None or isinstance(rule, Refused) or default in (None, inspect.Parameter.empty):
                continue
            default = list(default) if isinstance(default, tuple) else default
            assert rule.ok(default), (section, name, default)


def test_a_refused_key_is_one_line_naming_it(tmp_path, monkeypatch):
    """Refusing a key is one entry in SCHEMA: Refused(note=why)."""
    monkeypatch.setitem(SCHEMA["extract"], "strict", Refused(note="say --strict on the command line"))
    path = tmp_path / "p.toml"
    path.write_text(_swap("limit = 24", "limit = 24\nstrict = true"))
    with pytest.raises(FeatxError, match=r"^\[extract\] of '.*' sets strict, which a pipeline file may not set: say"):
        read_pipeline(path)


def test_the_docs_page_holds_the_schema_and_its_examples_pass(tmp_path):
    page = (ROOT / "docs" / "pipelines.md").read_text()
    assert schema_markdown() in page, (
        "docs/pipelines.md differs from the schema: paste in the output of "
        "python3 -c 'from featx.experiments.pipeline_schema import schema_markdown; print(schema_markdown())'"
    )
    examples = re.findall(r"```toml\n(.*?)```", page, re.S)
    assert examples
    for number, example in enumerate(examples):
        path = tmp_path / f"example{number}.toml"
        path.write_text(example)
        check_steps(read_pipeline(path), path)
    [refused] = re.findall(r"printf '(.*?)' > (\S+)\n", page)  # the refused file, and what featx says of it
    path = tmp_path / "bad.toml"
    path.write_text(refused[0].encode().decode("unicode_escape"))
    rc, out, err = cli("run", path)
    [said] = re.findall(r"```text\n(.*?)```", page, re.S)
    assert f"{err}exit {rc}\n" == said.replace(refused[1], str(path))


def test_every_section_of_the_schema_is_documented_with_what_it_accepts():
    text = schema_markdown()
    for section, rules in SCHEMA.items():
        for key, rule in rules.items():
            assert f"| `{key}` | {rule.accepts.replace('|', chr(92) + '|')} |" in text, (section, key)


@pytest.mark.parametrize(
    "flags, pattern",
    [
        (["fit", "--n-estimators", 2**63 - 1], r"n_estimators = 9223372036854775807 is beyond featx's bound .* 10,000"),
        (["fit", "--clf", "logreg", "--param", "max_iter=10**7"], r"max_iter"),  # a string: scikit-learn's constraint
        (["fit", "--clf", "logreg", "--param", "max_iter=10000000"], r"max_iter = 10000000 is beyond .* 1,000,000"),
        (["fit", "--clf", "knn", "--param", "n_neighbors=1000000"], r"n_neighbors = 1000000 is beyond"),
        (["fit", "--clf", "nystroem-svm", "--n-components", "1000000"], r"n_components = 1000000 is beyond"),
        (["fit", "--clf", "svm", "--param", "cache_size=1e9"], r"cache_size = 1000000000.0 is beyond"),
        (["fit", "--n-jobs", "4096"], r"n_jobs 4096 is not a number of parallel jobs; give -1 \(all cores\), or 1"),
        (["fit", "--clf", "logreg", "--pca", "10000000"], r"pca must be an int from 1 to 100,000"),
        (["compare", "--layer-sets", "x", "--n-estimators", 2**40], r"n_estimators = 1099511627776 is beyond"),
        (["compare", "--layer-sets", "x", "--clf", "rf", "--grid", "n_estimators=10,100000"], r"n_estimators = 100000"),
        (["tune", "--clf", "rf", "--n-estimators", 10**6], r"n_estimators = 1000000 is beyond"),
    ],
)
def test_classifier_parameters_are_bounded_at_every_front_door(flags, pattern, tmp_path):
    """Flags make FitSpecs through the same constructor as pipeline files: the bound is checked before any data."""
    rc, out, err = cli(*flags, "--cache-dir", tmp_path / "cache")
    assert_one_line_error(rc, err, pattern)
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("clf, params", [("dense", {"hidden": (256, 10**6)}), ("dense", {"epochs": 10**6})])
@pytest.mark.slow  # the dense head's constraints live in its class, which imports Keras
def test_the_dense_heads_sizes_are_bounded(clf, params):
    from featx.selection.spec import fit_spec

    with pytest.raises(FeatxError, match=rf"{next(iter(params))} = 1000000 is beyond featx's bound"):
        fit_spec(clf, params=params)


SHIPPED = sorted(p.stem for p in (Path(__file__).parents[1] / "pipelines").glob("*.toml"))


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_pipelines_are_valid(name):
    spec = read_pipeline(Path(__file__).parents[1] / "pipelines" / f"{name}.toml")
    assert spec["steps"] and spec["data"] == "elpv"
    assert {"quickstart", "elpv_best"} <= set(SHIPPED)

"""Start-up: a command imports only what it runs. Building the parser, listing entries and a warm extract
(nothing to do) import neither TensorFlow nor scikit-learn, each in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from featx.selection.spec import METRIC_NAMES
from tests.conftest import ELPV_LAYERS, ELPV_LIMIT

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("tensorflow", "keras", "sklearn")

PROBE = """
import json, sys
from featx.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:  # --help
    code = exc.code
print(json.dumps({"code": code, "modules": sorted(m for m in %r if m in sys.modules)}))
""" % (HEAVY,)


def _featx(*args) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *map(str, args)], capture_output=True, text=True, env=env, timeout=300
    )
    assert "Traceback" not in done.stderr, done.stderr
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "out": done.stdout}


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        ("compare", "--help"),
        ("tune", "--help"),
        ("fit", "--help"),
        ("ls", "--cache-dir", "{tmp}"),
        ("backbones",),  # KerasHub's preset tables too, read from its files without importing it
    ],
)
def test_parser_help_and_ls_import_neither_tensorflow_nor_sklearn(args, tmp_path):
    run = _featx(*(a.format(tmp=tmp_path) for a in args))
    assert run["code"] == 0 and run["modules"] == [], run


@pytest.mark.slow
def test_warm_extract_and_ls_of_a_real_entry_import_neither_tensorflow_nor_sklearn(elpv_cache):
    warm = _featx(
        "extract",
        "--data",
        "elpv",
        "--limit",
        ELPV_LIMIT,
        "--layers",
        ELPV_LAYERS,
        "--cache-dir",
        elpv_cache,
        "--quiet",
    )
    assert warm["code"] == 0 and "nothing to do" in warm["out"], warm["out"]
    assert warm["modules"] == [], warm
    listed = _featx("ls", "--cache-dir", elpv_cache)
    assert listed["code"] == 0 and "efficientnet_lite0" in listed["out"] and listed["modules"] == [], listed


def test_cli_metric_names_are_the_selection_metrics():
    from featx.selection.metrics import METRICS

    assert METRIC_NAMES == tuple(METRICS)


def test_fit_and_compare_from_the_cache_never_import_tensorflow(elpv_cache):
    code = (
        "import sys; from featx.cli import main; d = sys.argv[1]; "
        "assert main(['fit', '--cache-dir', d, '--layers', 'top_activation', '--clf', 'knn']) == 0; "
        "assert main(['compare', '--cache-dir', d, '--layer-sets', 'block6d_add', '--clf', 'knn']) == 0; "
        "assert not {'tensorflow', 'keras'} & set(sys.modules), 'tensorflow imported'"
    )
    done = subprocess.run([sys.executable, "-c", code, str(elpv_cache)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]

"""Shared fixtures: real images (ELPV solar cells, scikit-image photos) and small caches built once; the markers
that keep the fast tier free of TensorFlow, and the check that it stays so."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(autouse=True)
def _columns_120(monkeypatch):
    """featx prints within $COLUMNS, else the terminal's width, else 120 (featx.terminal). A test's output must not
    depend on where the suite runs: an xdist worker finds COLUMNS=80 and LINES=24 in its environment (GNU readline,
    initialised on a pipe with TERM set, writes its default size there), and a developer's shell may export its own.
    So every test starts at 120, the width CI's commands get without a terminal; tests of the width set their own."""
    monkeypatch.setenv("COLUMNS", "120")


@pytest.fixture(scope="session")
def elpv_folder(tmp_path_factory):
    """A small class-folder data set of real ELPV images (3 classes x 6), copied so tests may modify it."""
    from featx.sources import resolve_source

    source = resolve_source("elpv")
    root = tmp_path_factory.mktemp("elpv_folder")
    for label in range(3):
        (root / source.class_names[label]).mkdir()
        for rel in [p for p, l in zip(source.relpaths, source.labels) if l == label][:6]:
            Image.open(os.path.join(source.root, rel)).save(root / source.class_names[label] / os.path.basename(rel))
    return root


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory):
    """Real photos from scikit-image, two classes, for content-dependent checks."""
    from skimage import data

    root = tmp_path_factory.mktemp("photos")
    photos = {
        "animal": [data.chelsea(), data.cat(), data.astronaut()],
        "object": [data.coffee(), data.rocket(), data.immunohistochemistry()],
    }
    for label, images in photos.items():
        (root / label).mkdir()
        for i, img in enumerate(images):
            Image.fromarray(np.asarray(img)).save(root / label / f"{i}.jpg", quality=92)
    return root


# Tests that use one of these fixtures pay for a real extraction (or a killed-and-resumed one) and are marked
# slow here, in one place, rather than one decorator per test; `-m "not slow and not benchmark"` skips them.
SLOW_FIXTURES = {
    "elpv_cache": "extracts 240 ELPV images through EfficientNet-Lite0 (~35 s on 2 cores)",
    "lite_cache": "extracts the ELPV folder through EfficientNet-Lite0",
    "reference": "an uninterrupted extraction in a subprocess, compared bit for bit with killed ones",
    "tiny_cache": "extracts a few images through a small backbone (TensorFlow)",
    "fork_server": "real `featx` processes forked from a server that imported TensorFlow",
}


# Test modules that cannot even be collected without importing Keras (scikit-learn's estimator checks want an
# instance at collection time): every test in them is slow, and a run that leaves out slow tests skips the module.
IMPORTS_TENSORFLOW = {
    "test_classifiers_dense.py": "the Keras dense head (featx.classifiers.dense imports Keras)",
}


def pytest_ignore_collect(collection_path, config):
    if collection_path.name in IMPORTS_TENSORFLOW and _excludes_slow(config):
        return True
    return None


# The suite runs whole test files on xdist workers (pyproject.toml, in this order: --no-loadscope-reorder); the
# files that take minutes are handed out first, longest first, so that no worker starts one of them last while the
# others have run out of work (measured on the idle 2-core VM with two workers: the first two on 2026-12-06, the
# rest on 2026-12-02; test_doc_pages.py as its comment says). Files were renamed to their modules on 2026-12-06
# (tests/README.md): test_runs_store.py then took in test_runlog.py's tests, test_experiments_compare.py the compare
# tests of test_experiments.py and test_selection_cli.py, so their times are a little longer than measured.
LONG_MODULES = (
    "test_benchmark_smoke.py",  # about 215 s
    "test_backbones.py",  # about 175 s
    "test_slurm.py",  # about 150 s
    "test_backbones_hub.py",  # 270 s on the VM shared with 6 other jobs (2026-12-06); not measured idle
    "test_distributed.py",  # about 140 s
    "test_runs_store.py",  # about 130 s
    # README.md and 8 pages of docs/, one test each (SPREAD_BY_TEST), the longest (experiments.md) about a third of
    # the file: in all 1.37x the wall time (1.27x the CPU time) of the 238 s test_readme.py it replaced, the two run
    # one after the other on the loaded VM (2026-12-06)
    "test_doc_pages.py",
    "test_experiments_compare.py",  # about 100 s
    "test_cache_passlog.py",
    "test_classifiers_views.py",
    "test_cache_warm.py",
    "test_cli_signals.py",
    "test_classifiers_dense.py",
)


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES.keys() & set(item.fixturenames) or item.path.name in IMPORTS_TENSORFLOW:
            item.add_marker(pytest.mark.slow)
    first = {name: rank for rank, name in enumerate(LONG_MODULES)}
    items.sort(key=lambda item: first.get(item.path.name, len(first)))  # stable: same order within a file


# Files whose tests are handed out one by one instead of as a whole file: each test runs alone in its own folder
# and takes a minute or more, so whichever worker is free takes the next (each page of the documentation).
SPREAD_BY_TEST = ("test_doc_pages.py",)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """pyproject's `--dist loadfile` hands out whole files; so does this, but for the files of SPREAD_BY_TEST."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class FilesAndSpreadTests(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = nodeid.split("::", 1)[0]
            return nodeid if file.endswith(SPREAD_BY_TEST) else file

    return FilesAndSpreadTests(config, log)


def pytest_collection_finish(session):
    """Start the fork server's TensorFlow import in the background while the first tests run, but only when a
    selected test will use it: a run without such tests (the fast tier, --collect-only) never starts it."""
    _note_tensorflow(session.config, "collection (a test module's imports)")
    state = session.config.stash[TF_FREE]
    state["active"] = state["active"] and not any(item.get_closest_marker("slow") for item in session.items)
    # an xdist worker collects every test but runs only some of them: it starts the server when a test asks
    if not _xdist_worker(session.config) and any("fork_server" in item.fixturenames for item in session.items):
        import forkserver

        forkserver.server()


def _xdist_worker(config) -> bool:
    """Whether this process is a pytest-xdist worker (the suite runs on `-n auto` workers, pyproject.toml)."""
    return hasattr(config, "workerinput")


@pytest.fixture(scope="session")
def fork_server():
    """The session's fork server (tests/forkserver.py): `fork_server.run(argv)` is a fresh `featx` process."""
    import forkserver

    return forkserver.server()


# ---- the fast tier imports no TensorFlow -------------------------------------------------------------------
# A session whose -m expression leaves out tests marked slow (and that selected none) must end without `tensorflow`
# in sys.modules:
# otherwise a test (or a test module's import, or a fixture) that builds a backbone, runs Keras or forks a
# featx process slipped into the fast tier unmarked. The run then fails, naming where TensorFlow came in.

TF_FREE = pytest.StashKey[dict]()


def _excludes_slow(config) -> bool:
    markexpr = config.getoption("markexpr", default="") or ""
    if not markexpr.strip():
        return False
    from _pytest.mark.expression import Expression

    return not Expression.compile(markexpr).evaluate(lambda name: name == "slow")


def pytest_configure(config):
    config.stash[TF_FREE] = {"active": _excludes_slow(config), "imported": "tensorflow" in sys.modules, "by": None}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    yield
    _note_tensorflow(item.config, item.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In an xdist worker the session's end cannot fail the run (the controller, which imported nothing, decides
    the exit status), so the teardown of the test after which TensorFlow is first seen fails instead."""
    outcome = yield
    state = item.config.stash.get(TF_FREE, None)
    if call.when != "teardown" or state is None or not state["active"] or not _xdist_worker(item.config):
        return
    _note_tensorflow(item.config, item.nodeid)
    if state["imported"] and not state.get("reported"):
        state["reported"] = True
        report = outcome.get_result()
        report.outcome, report.longrepr = "failed", _tensorflow_message(state)


def _note_tensorflow(config, where: str) -> None:
    state = config.stash.get(TF_FREE, None)
    if state is not None and not state["imported"] and "tensorflow" in sys.modules:
        state["imported"], state["by"] = True, where


def _tensorflow_message(state: dict) -> str:
    by = f" (first seen after {state['by']})" if state["by"] else " (already before the session started)"
    return (
        f"TensorFlow was imported in a run that leaves out slow tests{by}: mark that test "
        "@pytest.mark.slow (or give it a fixture of conftest.SLOW_FIXTURES), and import Keras/TensorFlow "
        "inside tests, not at module level"
    )


def pytest_sessionfinish(session, exitstatus):
    state = session.config.stash.get(TF_FREE, None)
    if not state or not state["active"]:
        return
    _note_tensorflow(session.config, "the session's end (a fixture's teardown)")
    if "tensorflow" in sys.modules:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = _tensorflow_message(state)
        if reporter is not None:
            reporter.write_line(f"FAILED {message}", red=True, bold=True)
        else:
            sys.stderr.write(f"FAILED {message}\n")
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


# ---- data and caches -------------------------------------------------------------------------------------

ELPV_LIMIT = 240  # stratified ELPV subset: 166 train / 37 val / 37 test images, ~10 s through EfficientNet-Lite0
ELPV_LAYERS = "blocks,top_activation"


@pytest.fixture(scope="session")
def elpv_cache(tmp_path_factory):
    """A cache folder with ELPV features of the embedded default backbone (real packaged ImageNet weights),
    extracted once per session; experiment tests only read it (and log their runs into it)."""
    import featx

    cache_dir = tmp_path_factory.mktemp("elpv_cache")
    featx.extract(
        featx.DataSpec("elpv", limit=ELPV_LIMIT),
        "efficientnet_lite0",
        ELPV_LAYERS,
        cache=cache_dir,
        compute=featx.Compute(progress=False),
        log=lambda *a: None,
    )
    return cache_dir


TINY = {"backbone": "mobilenet_v2", "weights": "none", "input_size": 96}


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    """Factory of small real caches: `tiny_cache(data, layers, **extract_options)` is a cache folder holding
    `featx.extract(data, layers=layers, ...)` through MobileNetV2 at 96 px with random weights unless the options
    say otherwise (the numbers do not matter, the files do). Each distinct request is extracted once per session
    and shared: treat the folder as read-only and copy it (shutil.copytree) before changing or logging into it."""
    made = {}

    def make(data, layers, **options):
        from helpers import extract

        options = {**TINY, **options}
        key = (str(data), layers if isinstance(layers, str) else tuple(layers), tuple(sorted(options.items())))
        if key not in made:
            cache_dir = tmp_path_factory.mktemp("tiny_cache")
            extract(data, layers, cache_dir=cache_dir, progress=False, **options)
            made[key] = cache_dir
        return made[key]

    return make


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's digits scaled to [0, 1] with a stratified train/val/test split array, as a cache entry
    gives its rows: (X of shape (1797, 64), y of shape (1797,), split of shape (1797,))."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    rows = np.arange(len(y))
    rest, test = train_test_split(rows, test_size=0.3, random_state=0, stratify=y)
    train, val = train_test_split(rest, test_size=0.25, random_state=0, stratify=y[rest])
    order = np.concatenate([train, val, test])  # rows grouped by split, each in train_test_split's order
    split = np.repeat(np.array(["train", "val", "test"]), [len(train), len(val), len(test)])
    return X[order] / 16.0, y[order], split


@pytest.fixture(scope="session")
def digits_parts(digits):
    """conftest's digits as X_train, X_val, X_test, y_train, y_val, y_test."""
    X, y, split = digits
    (tr, va, te) = (split == s for s in ("train", "val", "test"))
    return X[tr], X[va], X[te], y[tr], y[va], y[te]


@pytest.fixture(scope="module")
def digits_predictions():
    """A logistic regression's predictions for a 30 % test split of scikit-learn's digits, for the metrics and the
    figures that show them: (X_test, y_test, y_pred). Class names: helpers.CLASS_NAMES."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0)
    model = LogisticRegression(max_iter=2000).fit(X_train / 16, y_train)
    return X_test, y_test, model.predict(X_test / 16)

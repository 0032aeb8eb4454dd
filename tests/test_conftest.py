"""tests/conftest.py's guard of the fast tier, in real pytest runs of a scratch test folder: a run whose -m leaves
out slow tests fails when TensorFlow was imported (naming the test or the collection that imported it), and passes
when it was not; a run that selects slow tests is not checked; a module listed as importing TensorFlow
(conftest.IMPORTS_TENSORFLOW) is not even collected by the fast tier, and its tests are slow in the others. `tensorflow` in sys.modules is what the guard reads: the scratch tests plant a
module of that name rather than pay for the real import."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")
FAST = ["-m", "not slow and not benchmark"]
PLANT = 'sys.modules["tensorflow"] = types.ModuleType("tensorflow")  # what `import tensorflow` leaves behind'

IN_A_TEST = f"""
import sys, types
import pytest

def test_plain():
    assert True

def test_imports_tensorflow():
    {PLANT}
"""

IN_A_SLOW_TEST = IN_A_TEST.replace("def test_imports_tensorflow", "@pytest.mark.slow\ndef test_imports_tensorflow")

AT_IMPORT = f"""
import sys, types
{PLANT}

def test_plain():
    assert True
"""


def pytest_run(folder: Path, files: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    shutil.copy(CONFTEST, folder / "conftest.py")
    for name, text in files.items():
        (folder / name).write_text(text)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_fast_run_that_imports_tensorflow_fails_naming_the_test(tmp_path):
    run = pytest_run(tmp_path, {"test_scratch.py": IN_A_TEST}, *FAST)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "2 passed" in run.stdout
    assert (
        "TensorFlow was imported in a run that leaves out slow tests (first seen after "
        "test_scratch.py::test_imports_tensorflow)"
    ) in run.stdout, run.stdout


def test_fast_run_on_xdist_workers_that_imports_tensorflow_fails_naming_the_test(tmp_path):
    """The suite runs on pytest-xdist workers (pyproject.toml): there the test after which TensorFlow is first seen
    fails at teardown, since a worker's session end cannot fail the run."""
    run = pytest_run(tmp_path, {"test_scratch.py": IN_A_TEST}, *FAST, "-n", "2")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "2 passed, 1 error" in run.stdout and "ERROR test_scratch.py::test_imports_tensorflow" in run.stdout
    assert (
        "TensorFlow was imported in a run that leaves out slow tests (first seen after "
        "test_scratch.py::test_imports_tensorflow)"
    ) in run.stdout, run.stdout


def test_fast_run_on_xdist_workers_without_tensorflow_passes(tmp_path):
    run = pytest_run(tmp_path, {"test_scratch.py": IN_A_SLOW_TEST}, *FAST, "-n", "2")
    assert run.returncode == 0 and "1 passed" in run.stdout, run.stdout + run.stderr  # workers deselect
    assert "TensorFlow was imported" not in run.stdout


def test_fast_run_that_imports_tensorflow_at_collection_fails_naming_the_collection(tmp_path):
    run = pytest_run(tmp_path, {"test_scratch.py": AT_IMPORT}, *FAST)
    assert run.returncode == 1 and "1 passed" in run.stdout, run.stdout + run.stderr
    assert "first seen after collection (a test module's imports)" in run.stdout, run.stdout


def test_fast_run_without_tensorflow_passes_and_leaves_out_a_module_that_imports_it(tmp_path):
    run = pytest_run(tmp_path, {"test_scratch.py": IN_A_SLOW_TEST, "test_classifiers_dense.py": AT_IMPORT}, *FAST)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed, 1 deselected" in run.stdout and "TensorFlow" not in run.stdout


IN_SLOW_AND_SLURM_TESTS = (
    IN_A_SLOW_TEST
    + """
@pytest.mark.slurm
@pytest.mark.slow
def test_on_a_cluster_imports_tensorflow():
    sys.modules["tensorflow"] = types.ModuleType("tensorflow")
"""
)


@pytest.mark.parametrize(
    "args, passed",
    [((), "4 passed"), (("-m", "slow"), "3 passed, 1 deselected"), (("-m", "slurm"), "1 passed, 2 deselected")],
)
def test_runs_that_select_slow_tests_are_not_checked(tmp_path, args, passed):
    """test_classifiers_dense.py's test is marked slow; `-m slurm` leaves out slow tests but selects ones marked slow too."""
    run = pytest_run(
        tmp_path, {"test_scratch.py": IN_SLOW_AND_SLURM_TESTS, "test_classifiers_dense.py": AT_IMPORT}, *args
    )
    assert run.returncode == 0 and passed in run.stdout, run.stdout + run.stderr
    assert "TensorFlow was imported" not in run.stdout

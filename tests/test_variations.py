"""tests/variations.py, the runner of the suite under the variations a machine brings: its list, a real run that
passes and one that fails (each a pytest subprocess on a fast file), and docs/testing.md naming every variation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import variations

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "variations.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT, timeout=600)


def test_list_names_each_variation_with_its_settings():
    listed = run("--list")
    assert listed.returncode == 0, listed.stderr
    for name, (about, env, pytest_args) in variations.VARIATIONS.items():
        line = next(line for line in listed.stdout.splitlines() if line.startswith(f"{name} "))
        assert all(f"{key}={value}" in line for key, value in env.items()) and all(a in line for a in pytest_args)
        assert about in listed.stdout
    assert set(variations.VARIATIONS) >= {"default", "onednn-off", "threads-1", "threads-4", "isa-sse41"}
    assert variations.VARIATIONS["threads-1"][1]["FEATX_THREADS"] == "1"  # featx.runtime's own setting


def test_a_run_prints_pass_and_its_time_and_a_failing_one_fail_and_exits_1():
    passed = run(
        "--only",
        "one-process",
        "--no-probe",
        "--",
        "tests/test_selection_cv.py",
        "-k",
        "hand_counts",
        "-p",
        "no:cacheprovider",
    )
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "-n 0" in passed.stdout and "pass in" in passed.stdout
    assert [line.split()[:2] for line in passed.stdout.splitlines() if line.startswith("one-process ")] == [
        ["one-process", "pass"]
    ]
    failed = run("--only", "one-process", "--no-probe", "--", "tests/test_selection_cv.py", "-k", "no_such_test")
    assert failed.returncode == 1 and "FAIL (exit 5)" in failed.stdout, failed.stdout


def test_unknown_variation_is_refused():
    refused = run("--only", "threads-8")
    assert refused.returncode == 2 and "invalid choice: 'threads-8'" in refused.stderr


def test_variations_joined_by_plus_run_together_and_a_clash_is_refused():
    listed = run("--list", "--only", "openblas-prescott+threads-4", "--only", "one-process+random-order")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    both = next(line for line in lines if line.startswith("openblas-prescott+threads-4 "))
    assert "OPENBLAS_CORETYPE=Prescott" in both and "FEATX_THREADS=4" in both and "OMP_NUM_THREADS=4" in both
    order = next(line for line in lines if line.startswith("one-process+random-order "))
    assert order.split()[1:] == ["-n", "0", "-p", "randomly", "--randomly-seed=35"]
    clash = run("--only", "threads-1+threads-4")
    assert clash.returncode == 2 and "sets FEATX_THREADS twice" in clash.stderr, clash.stderr
    unknown = run("--only", "threads-1+threads-8")
    assert unknown.returncode == 2 and "invalid choice: 'threads-8'" in unknown.stderr, unknown.stderr


def test_docs_say_how_to_run_each_variation():
    text = (ROOT / "docs" / "testing.md").read_text()
    assert "python3 tests/variations.py" in text
    assert all(f"`{name}`" in text for name in variations.VARIATIONS), [
        name for name in variations.VARIATIONS if f"`{name}`" not in text
    ]

"""tests/ mirrors featx/ (tests/README.md): every tests/test_*.py is the test file of one featx module, named after
its path, or one of the few files README.md lists as testing the product as a whole. Files and names only: fast."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
FEATX = TESTS.parent / "featx"
EXCEPTION = re.compile(r"^- `tests/(test_\w+\.py)`: \S")  # README's list: "- `tests/test_x.py`: why"


def module_files() -> dict[str, str]:
    """Test file name -> the module it tests: featx/<pkg>/<mod>.py is test_<pkg>_<mod>.py, featx/<mod>.py is
    test_<mod>.py, featx/<pkg>/__init__.py is test_<pkg>.py (featx/__init__.py and __main__.py have none)."""
    files: dict[str, str] = {}
    for path in sorted(FEATX.rglob("*.py")):
        parts = path.relative_to(FEATX).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        if not parts or parts == ("__main__",):
            continue
        name = "test_" + "_".join(parts) + ".py"
        assert name not in files, f"{files[name]} and {path} would share {name}: rename one, or say here which wins"
        files[name] = str(path.relative_to(FEATX.parent))
    return files


def exceptions() -> set[str]:
    return {m.group(1) for line in (TESTS / "README.md").read_text().splitlines() if (m := EXCEPTION.match(line))}


def test_every_test_file_is_a_modules_or_a_listed_exception():
    modules, listed = module_files(), exceptions()
    strays = sorted(p.name for p in TESTS.glob("test_*.py") if p.name not in modules and p.name not in listed)
    assert not strays, (
        f"{strays}: name a test file after the module it tests (featx/<pkg>/<mod>.py: tests/test_<pkg>_<mod>.py), "
        "or list it in tests/README.md with why it tests the product rather than one module"
    )


def test_the_listed_exceptions_exist_and_name_no_module():
    modules, listed = module_files(), exceptions()
    assert len(listed) >= 10  # README's list was read (its line format is what EXCEPTION expects)
    assert not sorted(listed - {p.name for p in TESTS.glob("test_*.py")}), "README lists a file that is gone"
    assert not sorted(listed & modules.keys()), "a module's own test file needs no exception"


def test_the_rule_maps_real_modules():
    modules = module_files()
    assert modules["test_runs_store.py"] == "featx/runs/store.py"
    assert modules["test_extractor.py"] == "featx/extractor.py"
    assert modules["test_classifiers.py"] == "featx/classifiers/__init__.py"
    assert "test___init__.py" not in modules and "test___main__.py" not in modules

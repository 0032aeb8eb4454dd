"""The fuzz tier (markers `slow` and `fuzz`; `pytest -m fuzz` runs it alone): received files changed byte by byte, run
by featx in a watched process (tests/helpers.py FuzzWorker, tests/fuzz_worker.py). Every run must end with exit 0 or
one `error:` line: never a signal (a crash inside libhdf5), a hang (killed after the watchdog's timeout) or a
traceback.

Layer files (issue 31, part A): every byte of a small layer file flipped, each read the way every command reads a
layer (all bytes outside the rows must be refused before libhdf5 parses them; a flip inside the rows is data, and
served); then hypothesis-chosen changes of one to three bytes of a layer or a view file, each run through
`featx info`, `verify`, `fit` and `export`.

Pipeline files: mutated pipeline files belong here too (issue 31, part B): a test that writes each mutated file and
asks `worker.ask({"op": "cli", "argv": ["run", FILE, ...]})` under the same watchdog (`watched_worker`).
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.tiny_entry import LAYER, OTHER, make_entry

from helpers import FuzzWorker

pytestmark = [pytest.mark.slow, pytest.mark.fuzz]

HANG_S = 180  # no answer to one command for this long is a hang (each answers in well under a second; a shared, busy
# CI machine can stall an fsync for many seconds)
EXAMPLES = 30  # hypothesis examples, each run through the four commands (about 0.3 s each)


@pytest.fixture
def watched_worker():
    """A watched featx process for the test (featx imported once; a hypothesis test's examples share it)."""
    with FuzzWorker(timeout=HANG_S) as worker:
        yield worker


@pytest.fixture(scope="module")
def entry(tmp_path_factory):
    """A small entry (6 images, two layers of 4 and 3 features, a view): layer files of about 7 KB."""
    return make_entry(tmp_path_factory.mktemp("fuzz") / "cache", views=("hflip",))


def _rows(path) -> range:
    """The byte range of a layer file's rows, from its record (read here as plain JSON); empty for a file without
    one (a featx before format 4 wrote none: then only the watchdog's checks apply)."""
    block = path.read_bytes()[:512]
    if not block.startswith(b"featx layer\n"):
        return range(0)
    offset, length = json.loads(block.split(b"\n", 1)[1].rstrip(b"\0"))["rows"]
    return range(offset, offset + length)


def _assert_clean(cases) -> None:
    for mutation, what, rc, n_lines, traceback, last in cases:
        assert not traceback and rc in (0, 1, 2), (mutation, what, rc, last)
        assert rc == 0 or (n_lines == 1 and last.startswith("error: ")), (mutation, what, rc, n_lines, last)


def test_every_byte_of_a_layer_file_flipped_is_refused_before_parsing_or_is_data(entry, watched_worker):
    path = entry.layer_file(LAYER)
    size, rows = path.stat().st_size, _rows(path)
    result = watched_worker.ask(
        {
            "op": "mutate",
            "path": str(path),
            "mutations": [[[offset, 0xFF]] for offset in range(size)],
            "read": [str(entry.path), LAYER],
        }
    )
    cases = result["cases"]
    assert len(cases) == size
    _assert_clean(cases)
    served = {mutation[0][0] for mutation, _, rc, *_ in cases if rc == 0}
    assert served == set(rows)  # every byte outside the rows refused; inside, data (verify's row digest finds it)
    refused = [last for _, _, rc, _, _, last in cases if rc]
    assert all("cannot be read" in line and "run `featx verify`" in line for line in refused), refused[:3]


@settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], database=None
)
@given(data=st.data())
def test_changed_bytes_of_layer_and_view_files_end_every_command_in_one_line(entry, watched_worker, tmp_path, data):
    path = data.draw(st.sampled_from([entry.layer_file(LAYER), entry.layer_file(OTHER, "hflip")]), label="file")
    size = path.stat().st_size
    changes = st.tuples(st.integers(0, size - 1), st.integers(1, 255))
    mutation = data.draw(st.lists(changes, min_size=1, max_size=3, unique_by=lambda c: c[0]), label="bytes")
    cache = str(entry.path.parent)
    layers = f"{LAYER},{OTHER}"
    commands = [
        ["info", "--cache-dir", cache],
        ["verify", "--cache-dir", cache],
        ["fit", "--clf", "logreg", "--layers", layers, "--views", "flip", "--cache-dir", cache],
        ["export", "--layers", layers, "--output", str(tmp_path / "features.npz"), "--cache-dir", cache],
    ]
    result = watched_worker.ask(
        {"op": "mutate", "path": str(path), "mutations": [[list(c) for c in mutation]], "argv": commands}
    )
    _assert_clean(result["cases"])
    rows, identity = _rows(path), path.parent.name == "layers"
    if any(offset not in rows for offset, _ in mutation):  # outside the rows: refused by every command that reads it
        readers = {"verify", "fit", *(("info", "export") if identity else ())}  # info and export read no view file
        assert {what for _, what, rc, *_ in result["cases"] if rc} == readers, result["cases"]

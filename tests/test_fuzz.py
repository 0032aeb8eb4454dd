"""The fuzz tier (markers `slow` and `fuzz`; `pytest -m fuzz` runs it alone): received files changed byte by byte, run
by featx in a watched process (tests/helpers.py FuzzWorker, tests/fuzz_worker.py). Every run must end with exit 0 or
one `error:` line: never a signal (a crash inside libhdf5), a hang (killed after the watchdog's timeout) or a
traceback.

Layer files (issue 31, part A): every byte of a small layer file flipped, each read the way every command reads a
layer (all bytes outside the rows must be refused before libhdf5 parses them; a flip inside the rows is data, and
served); then hypothesis-chosen changes of one to three bytes of a layer or a view file, each run through
`featx info`, `verify`, `fit` and `export`.

Pipeline files (issue 31, part B): mutated copies of the shipped recipes (flipped, inserted and deleted bytes; keys
given random TOML values; keys added) go through everything `featx run` does before it runs anything
(read_pipeline: the schema; check_steps: every FitSpec and Evaluation), `{"op": "pipeline"}` under the same watchdog.
Each must pass or be refused with one `error:` line: no other exception, no crash, no hang (a hang or a crash of
the interpreter fails the example, hypothesis shrinks it, and the next example gets a fresh worker).
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
from pathlib import Path

import pytest
import tomllib
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


# --- pipeline files (issue 31, part B)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = {path.name: path.read_bytes() for path in sorted((ROOT / "pipelines").glob("*.toml"))}
START_S, EXAMPLE_S = 300, 20  # the worker's imports; one file's checks (milliseconds when nothing is wrong)
# imported once when a worker starts, not inside a file's time: the checks, and Keras (the dense and tail recipes' steps)
IMPORTS = ["featx.errors", "featx.experiments.pipelines", "featx.classifiers.dense", "featx.classifiers.tail"]


@pytest.fixture(scope="module")
def pipeline_worker():
    """A watched featx process for the pipeline checks, with Keras imported once here, not inside a file's time."""
    with FuzzWorker(timeout=START_S) as worker:
        worker.ask({"op": "import", "modules": IMPORTS})
        worker.timeout = EXAMPLE_S
        yield worker


def _judge(worker: FuzzWorker, path: Path, data: bytes) -> dict:
    path.write_bytes(data)
    if worker.proc.poll() is not None:  # killed after a hang, or crashed, in an earlier example: a fresh one
        worker.restart()
        worker.ask({"op": "import", "modules": IMPORTS})
    answer = worker.ask({"op": "pipeline", "path": str(path)})
    assert answer["outcome"] != "exception", f"{data[:300]!r}\n{answer['message']}"
    if answer["outcome"] == "refused":
        message = answer["message"]
        assert message and "\n" not in message and "Traceback" not in message, message
    return answer


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_pipeline_passes_every_check(pipeline_worker, tmp_path, name):
    assert _judge(pipeline_worker, tmp_path / name, SHIPPED[name]) == {"outcome": "ok"}


# --- byte mutations of the shipped files

EDITS = st.lists(
    st.tuples(
        st.sampled_from(["flip", "insert", "delete"]),
        st.floats(0, 1, exclude_max=True),
        st.binary(min_size=1, max_size=8),
    ),
    min_size=1,
    max_size=6,
)


def _mutate(data: bytes, edits) -> bytes:
    for kind, where, chunk in edits:
        at = int(where * len(data))
        if kind == "flip":
            data = data[:at] + bytes([data[at] ^ chunk[0] or 1]) + data[at + 1 :]
        elif kind == "insert":
            data = data[:at] + chunk + data[at:]
        else:
            data = data[:at] + data[at + len(chunk) :]
    return data


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(SHIPPED)), edits=EDITS)
def test_a_shipped_pipeline_with_changed_bytes_passes_or_is_one_line(pipeline_worker, tmp_path, name, edits):
    _judge(pipeline_worker, tmp_path / name, _mutate(SHIPPED[name], edits))


# --- values and keys changed in the parsed files

SCALARS = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([0, 1, -1, 2, 3, 10**4, 10**6, 2**31, 2**63 - 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=30),
    st.sampled_from(["", "rf", "svm", "dense", "tail", "fit", "compare", "tsne", "all", "flip", "rand:3", "grid:8"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.from_regex(r"[a-z_]{1,12}", fullmatch=True), inner, max_size=3)
    ),
    max_leaves=12,
)
KEYS = st.sampled_from(
    sorted(
        {
            "kind",
            "clf",
            "params",
            "grid",
            "layers",
            "layer_sets",
            "classifiers",
            "seed",
            "cv",
            "n_jobs",
            "views",
            "standardize",
            "pca",
            "kbins",
            "max_points",
            "split",
            "limit",
            "input_size",
            "hidden",
            "epochs",
            "n_estimators",
            "C",
            "blocks",
            "unsafe",
            "tta",
            "search",
            "metric",
            "select",
            "data",
            "steps",
            "extract",
        }
    )
)


def _toml(value) -> str:
    """`value` as a TOML value (inline tables and arrays)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml, value)) + "]"
    return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"


def _document(spec: dict) -> bytes:
    return "".join(f"{json.dumps(k)} = {_toml(v)}\n" for k, v in spec.items()).encode()


@settings(max_examples=250, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(SHIPPED)), data=st.data())
def test_a_shipped_pipeline_with_changed_values_passes_or_is_one_line(pipeline_worker, tmp_path, name, data):
    spec = tomllib.loads(SHIPPED[name].decode())
    tables = [spec, spec.setdefault("extract", {}), *spec["steps"]]
    for _ in range(data.draw(st.integers(1, 3))):
        table = data.draw(st.sampled_from(tables))
        keys = sorted(table) + [data.draw(KEYS)]  # an existing key changed, or one added
        table[data.draw(st.sampled_from(keys))] = data.draw(VALUES)
    _judge(pipeline_worker, tmp_path / name, _document(spec))


def test_the_watchdog_catches_a_hang_and_a_crash(tmp_path):
    """The watchdog itself: a worker that stops answering, or dies, fails the example; the next example gets a
    fresh worker. (Requests that need no import of featx, so that this test is quick.)"""
    with FuzzWorker(timeout=1) as watchdog:
        os.kill(watchdog.proc.pid, signal.SIGSTOP)  # the worker hangs
        with pytest.raises(pytest.fail.Exception, match="hung"):
            watchdog.ask({"op": "none"})
        watchdog.restart()
        watchdog.timeout = 60
        os.kill(watchdog.proc.pid, signal.SIGSTOP)
        threading.Timer(1, watchdog.proc.kill).start()  # the interpreter dies while the example runs
        with pytest.raises(pytest.fail.Exception, match="killed by signal 9"):
            watchdog.ask({"op": "none"})
        watchdog.restart()
        assert watchdog.ask({"op": "none"}) == {"error": "unknown op 'none'"}  # a fresh worker answers

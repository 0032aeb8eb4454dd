"""Fuzzing pipeline files: mutated copies of the shipped recipes (flipped, inserted and deleted bytes; keys given
random TOML values; keys added) go through everything `featx run` does before it runs anything (read_pipeline: the
schema; check_steps: every FitSpec and Evaluation). Each must pass or be refused with one `error:` line: no other
exception, no crash, no hang. They run in a separate worker process watched by a timeout (a hang or a crash of the
interpreter fails the example, and hypothesis shrinks it), so no mutated file can take the test session down."""

from __future__ import annotations

import json
import math
import os
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import tomllib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.slow  # a worker process that imports Keras (the dense and tail recipes' steps)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = {path.name: path.read_bytes() for path in sorted((ROOT / "pipelines").glob("*.toml"))}
START_S, EXAMPLE_S = 300, 20  # the worker's imports; one file's checks (milliseconds when nothing is wrong)
WORKER = """
import json, sys, traceback
from featx.errors import FeatxError
from featx.experiments.pipelines import check_steps, read_pipeline
import featx.classifiers.dense, featx.classifiers.tail  # Keras, imported once here, not inside an example's time
print("ready", flush=True)
for line in sys.stdin:
    path = line.rstrip("\\n")
    try:
        check_steps(read_pipeline(path), path)
        answer = {"outcome": "ok"}
    except FeatxError as exc:
        answer = {"outcome": "refused", "message": str(exc)}
    except BaseException:
        answer = {"outcome": "exception", "message": traceback.format_exc()}
    print(json.dumps(answer), flush=True)
"""


class Watchdog:
    """The worker process, asked one file at a time; a hang (no answer within EXAMPLE_S) or an exit fails the
    example and starts a fresh worker for the next one."""

    def __init__(self, source: str = WORKER):
        self.source, self.process = source, None

    def start(self):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        self.process = subprocess.Popen(
            [sys.executable, "-c", self.source], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        assert self._line(START_S) == "ready", "the fuzz worker did not start"

    def ask(self, path: Path, timeout: float = EXAMPLE_S) -> dict:
        if self.process is None or self.process.poll() is not None:
            self.start()
        self.process.stdin.write(f"{path}\n")
        self.process.stdin.flush()
        line = self._line(timeout)
        if line is None:
            code = self.process.poll()
            self.stop()
            raise AssertionError(
                f"the checks of {path} {'hung' if code is None else f'crashed the interpreter (exit {code})'}"
            )
        return json.loads(line)

    def _line(self, timeout: float) -> str | None:
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if ready else ""
        return line.rstrip("\n") or None

    def stop(self):
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture(scope="module")
def worker():
    watchdog = Watchdog()
    watchdog.start()
    yield watchdog
    watchdog.stop()


def _judge(worker: Watchdog, path: Path, data: bytes) -> dict:
    path.write_bytes(data)
    answer = worker.ask(path)
    assert answer["outcome"] != "exception", f"{data[:300]!r}\n{answer['message']}"
    if answer["outcome"] == "refused":
        message = answer["message"]
        assert message and "\n" not in message and "Traceback" not in message, message
    return answer


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_pipeline_passes_every_check(worker, tmp_path, name):
    assert _judge(worker, tmp_path / name, SHIPPED[name]) == {"outcome": "ok"}


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
def test_a_shipped_pipeline_with_changed_bytes_passes_or_is_one_line(worker, tmp_path, name, edits):
    _judge(worker, tmp_path / name, _mutate(SHIPPED[name], edits))


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
def test_a_shipped_pipeline_with_changed_values_passes_or_is_one_line(worker, tmp_path, name, data):
    spec = tomllib.loads(SHIPPED[name].decode())
    tables = [spec, spec.setdefault("extract", {}), *spec["steps"]]
    for _ in range(data.draw(st.integers(1, 3))):
        table = data.draw(st.sampled_from(tables))
        keys = sorted(table) + [data.draw(KEYS)]  # an existing key changed, or one added
        table[data.draw(st.sampled_from(keys))] = data.draw(VALUES)
    _judge(worker, tmp_path / name, _document(spec))


ECHO = """
import json, sys
print("ready", flush=True)
for line in sys.stdin:
    print(json.dumps({"outcome": "refused", "message": "x"}), flush=True)
"""


def test_the_watchdog_catches_a_hang_and_a_crash(tmp_path):
    """The watchdog itself: a worker that stops answering, or dies, fails the example; the next example gets a
    fresh worker. (A worker that answers every file at once, so that this test needs no import of featx.)"""
    watchdog = Watchdog(ECHO)
    try:
        watchdog.start()
        os.kill(watchdog.process.pid, signal.SIGSTOP)  # the worker hangs
        with pytest.raises(AssertionError, match="hung"):
            watchdog.ask(tmp_path / "missing.toml", timeout=1)
        watchdog.start()
        os.kill(watchdog.process.pid, signal.SIGSTOP)
        threading.Timer(1, watchdog.process.kill).start()  # the interpreter dies while the example runs
        with pytest.raises(AssertionError, match=r"crashed the interpreter \(exit -9\)"):
            watchdog.ask(tmp_path / "missing.toml", timeout=60)
        assert watchdog.ask(tmp_path / "missing.toml")["outcome"] == "refused"  # a fresh worker answers
    finally:
        watchdog.stop()

"""The command line as users run it, in real processes of the installed `featx` console script: no TensorFlow
log line unless --verbose, Ctrl-C at any instant once featx's main() runs ends in exit 130 and one line, a
closed pipe ends quietly.

stderr is compared whole: nothing is filtered out (only `-X importtime` lines, where a test asks Python for
them to know when featx's own code has started).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

import pytest

from featx.errors import INTERRUPTED

SCRIPT = str(Path(sysconfig.get_path("scripts")) / "featx")  # what `featx` runs (without a version manager's shim)
SMALL = ["--backbone", "mobilenet_v2", "--weights", "none", "--input-size", "96"]
# as in a user's shell: not the TF_* settings conftest puts in os.environ
ENV = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
TF_LOG = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl|To enable the following instructions)", re.M)


def featx(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([SCRIPT, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=ENV)


@pytest.mark.slow
def test_no_tensorflow_log_lines_unless_verbose(tmp_path):
    layers = featx("layers", "mobilenet_v2", "--input-size", 96)
    assert layers.returncode == 0 and "block_1_project_BN" in layers.stdout, layers.stderr
    assert layers.stderr == ""
    extract = featx(
        "extract",
        "--data",
        "elpv",
        "--limit",
        12,
        *SMALL,
        "--layers",
        "block_1_project_BN",
        "--cache-dir",
        tmp_path,
        "--quiet",
    )
    assert extract.returncode == 0 and "cached 1 layer(s) for 12 images" in extract.stdout, extract.stderr
    assert extract.stderr == ""
    verbose = featx("--verbose", "layers", "mobilenet_v2", "--input-size", 96)
    assert verbose.returncode == 0 and TF_LOG.search(verbose.stderr), verbose.stderr  # the mechanism is real
    after = featx("layers", "mobilenet_v2", "--input-size", 96, "--verbose")  # also after the command
    assert after.returncode == 0 and TF_LOG.search(after.stderr), after.stderr


def test_closed_stdout_pipe_exits_quietly():
    reader_gone = subprocess.Popen([SCRIPT, "backbones"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    reader_gone.stdout.close()  # like `featx backbones | head -0`: gone before featx writes
    err = reader_gone.stderr.read().decode()
    assert reader_gone.wait(timeout=60) == 141 and err == "", err


def interrupted_at(args, ready, *, again_after=None, timeout=300) -> tuple[int, str]:
    """Run `featx args` (with -X importtime), SIGINT it as soon as `ready(process, stderr_lines)`; a second SIGINT
    `again_after` seconds later if given. Returns the exit code and stderr without the importtime lines."""
    process = subprocess.Popen(
        [sys.executable, "-X", "importtime", SCRIPT, *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    while not ready(process, lines):
        assert process.poll() is None and time.monotonic() < deadline, "".join(lines)
        time.sleep(0.002)
    process.send_signal(signal.SIGINT)
    if again_after is not None:
        time.sleep(again_after)
        process.send_signal(signal.SIGINT)
    rc = process.wait(timeout=timeout)
    reader.join(timeout=60)
    return rc, "".join(line for line in lines if not line.startswith("import time:"))


def imported(module):
    """Python reports the module imported (featx.cli: featx is parsing the arguments)."""
    pattern = re.compile(rf"^import time:.*\|\s+{re.escape(module)}$")
    return lambda process, lines: any(pattern.match(line.rstrip()) for line in lines)


def importing_after(module):
    """Python reports a module imported after `module`. After featx.console, that import is the first one its
    main() makes: the Ctrl-C handler is set. (Before main() runs, the console script's wrapper is still Python
    code featx does not own, as Python's start-up is: a Ctrl-C there is Python's KeyboardInterrupt.)"""
    pattern = re.compile(rf"^import time:.*\|\s+{re.escape(module)}$")

    def ready(process, lines):
        done = [i for i, line in enumerate(lines) if pattern.match(line.rstrip())]
        return bool(done) and any(line.startswith("import time:") for line in lines[done[0] + 1 :])

    return ready


def loading(library, for_seconds=0.0):
    """A shared library of TensorFlow is mapped (its import has begun), for at least `for_seconds`."""
    since = []

    def ready(process, lines):
        try:
            if library not in Path(f"/proc/{process.pid}/maps").read_text():
                return False
        except OSError:
            return False
        since.append(time.monotonic())
        return since[-1] - since[0] >= for_seconds

    return ready


SMALL_MODEL = ["layers", "mobilenet_v2", "--input-size", 96]
BIG_MODEL = ["layers", "nasnet_large"]  # builds for 10+ s: still busy 4 s after TensorFlow loads, on a fast machine too


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, ready",
    [
        (SMALL_MODEL, importing_after("featx.console")),  # featx's main() has just begun
        (SMALL_MODEL, imported("featx.cli")),  # parsing arguments
        (SMALL_MODEL, loading("libtensorflow_framework")),  # inside `import tensorflow`, its libraries loading
        (BIG_MODEL, loading("libtensorflow_framework", for_seconds=4.0)),  # later: importing Keras, building the model
    ],
    ids=["featx_starting", "parsing", "tensorflow_import", "later"],
)
def test_ctrl_c_at_any_instant_exits_130_in_one_line(args, ready):
    rc, err = interrupted_at(args, ready)
    assert (rc, err) == (130, INTERRUPTED + "\n")


@pytest.mark.slow
def test_second_ctrl_c_while_extracting_or_publishing_exits_130_in_one_line(tmp_path):
    cache_dir = tmp_path / "cache"
    args = [
        "extract",
        "--data",
        "elpv",
        "--limit",
        64,
        *SMALL,
        "--layers",
        "block_1_project_BN,block_3_project_BN",
        "--batch-size",
        8,
        "--cache-dir",
        cache_dir,
        "--quiet",
    ]
    rows_written = lambda process, lines: any(p.is_file() for p in cache_dir.rglob("*") if "work" in p.parts)  # noqa: E731
    rc, err = interrupted_at(args, rows_written, again_after=0.05)
    assert (rc, err) == (130, INTERRUPTED + "\n")
    verify = featx("verify", "--cache-dir", cache_dir)
    assert verify.returncode == 0 and verify.stderr == "", verify.stdout + verify.stderr
    resumed = featx(*args)
    assert resumed.returncode == 0 and resumed.stderr == "", resumed.stderr
    assert "cached 2 layer(s) for 64 images" in resumed.stdout, resumed.stdout

"""No process-wide side effects at import: `import featx` leaves os.environ and the SIGINT handler as they were
(whatever the program is called), and the command line's TensorFlow environment lasts one command. Each check runs
in a fresh interpreter, as a notebook or a script would import featx."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import json, os, signal, sys
before, handler = dict(os.environ), signal.getsignal(signal.SIGINT)
import featx, featx.cli, featx.console, featx.runtime, featx.cache.store, featx.features.load
imported = dict(os.environ)
code = featx.cli.main(["ls", "--cache-dir", sys.argv[1]])
print(json.dumps({"changed_by_import": sorted(k for k in set(before) | set(imported) if before.get(k) != imported.get(k)),
                  "changed_by_command": sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k)),
                  "handler_kept": signal.getsignal(signal.SIGINT) is handler, "code": code,
                  "heavy": sorted(m for m in ("tensorflow", "keras", "sklearn") if m in sys.modules)}))
"""


def _probe(tmp_path, name: str) -> dict:
    """Run PROBE as a script file called `name`, in a user's environment (no TF_* variables)."""
    script = tmp_path / name
    script.write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "cache")], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_featx_changes_no_environment_variable_and_no_signal_handler(tmp_path):
    # named like the console script: featx no longer guesses from argv[0] that it is the command line
    for name in ("featx", "notebook.py"):
        found = _probe(tmp_path, name)
        assert found["changed_by_import"] == [] and found["handler_kept"], (name, found)
        assert found["code"] == 0 and found["changed_by_command"] == [], (name, found)  # main() restores what it set
        assert found["heavy"] == [], found


def test_the_command_line_sets_tensorflows_environment_for_its_command_only(monkeypatch):
    from featx import runtime

    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    with runtime.tensorflow_environment(verbose=False):
        assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "1" and os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
    assert "TF_ENABLE_ONEDNN_OPTS" not in os.environ and "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    with runtime.tensorflow_environment(verbose=True):
        assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ  # every TensorFlow line shows
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    for verbose in (False, True):
        with runtime.tensorflow_environment(verbose=verbose):  # the user's own settings always win
            assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1" and os.environ["TF_ENABLE_ONEDNN_OPTS"] == "0"
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1" and os.environ["TF_ENABLE_ONEDNN_OPTS"] == "0"

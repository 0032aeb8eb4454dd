"""A warm re-run of the same extract decides "nothing to do" from files alone, without importing TensorFlow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["--backbone", "mobilenet_v2", "--weights", "none", "--input-size", "96", "--quiet"]

PROBE = """
import json, sys
from featx.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "tensorflow": "tensorflow" in sys.modules}))
"""


def _extract(*args) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "extract", *ARGS, *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert "Traceback" not in done.stderr, done.stderr
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "out": done.stdout}


@pytest.mark.slow
def test_warm_rerun_is_decided_without_tensorflow_and_a_changed_input_is_not(elpv_folder, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for folder in Path(elpv_folder).iterdir():
        (data / folder.name).mkdir()
        for image in folder.iterdir():
            (data / folder.name / image.name).write_bytes(image.read_bytes())
    common = ["--data", str(data), "--cache-dir", str(tmp_path / "cache")]

    cold = _extract(*common, "--layers", "blocks")
    assert cold["code"] == 0 and cold["tensorflow"] and "cached 17 layer(s)" in cold["out"]

    warm = _extract(*common, "--layers", "blocks")
    assert warm["code"] == 0 and not warm["tensorflow"], warm["out"]
    assert "nothing to do: 17 layer(s) already cached" in warm["out"]
    subset = _extract(*common, "--layers", "block_16_project_BN,blocks")  # a named member of a cached group
    assert subset["code"] == 0 and not subset["tensorflow"]

    more = _extract(*common, "--layers", "final")  # not cached yet: the backbone must run
    assert more["code"] == 0 and more["tensorflow"] and "cached 1 layer(s)" in more["out"]

    image = next((data / sorted(os.listdir(data))[0]).iterdir())
    Image.open(image).rotate(90).save(image)  # same path, new content: a new key, so never the old entry
    changed = _extract(*common, "--layers", "final")
    assert changed["code"] == 0 and changed["tensorflow"] and "cached 1 layer(s)" in changed["out"]
    assert len([p for p in (tmp_path / "cache").iterdir() if p.name.startswith("mobilenet_v2-")]) == 2

    other_split = _extract(*common, "--layers", "final", "--seed", "1")  # split changes: the full path updates it
    assert other_split["code"] == 0 and other_split["tensorflow"] and "split updated" in other_split["out"]

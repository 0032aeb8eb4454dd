"""Every README block meant to run does run, in README order, as a reader would type it.

Shell blocks run line by line in a temporary folder with FEATX_CACHE pointing into it; the few
substitutions below keep them small (each one must still match the README, so they cannot go stale).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from readme_blocks import blocks_to_run

ROOT = Path(__file__).resolve().parent.parent
TF_LOG = re.compile(
    r"^(?:[IWEF]\d{4} [\d:.]+ |WARNING: All log messages before absl)|oneDNN custom operations|cuda drivers", re.M
)


def _small_pipeline(tmp: Path, name: str, edits: dict[str, str]) -> str:
    text = (ROOT / "pipelines" / name).read_text()
    for old, new in edits.items():
        assert old in text, f"{name} no longer contains {old!r}; update tests/test_readme.py"
        text = text.replace(old, new)
    (tmp / name).write_text(text)
    return str(tmp / name)


def _substitutions(tmp: Path, cache: Path) -> dict:
    """README text -> what the test runs instead (a string, or a function called when its line runs)."""
    from PIL import Image

    from featx.sources import resolve_source

    images = tmp / "new_images"
    images.mkdir()
    source = resolve_source("elpv")
    for rel in source.relpaths[:3]:
        Image.open(os.path.join(source.root, rel)).save(images / os.path.basename(rel))

    def newest_run():  # with a model: compare keeps only its best row's
        from featx.runs.store import read_log

        log = read_log(cache)
        return str(log[log["model_path"] != ""].iloc[-1]["run_id"])

    return {
        "python3 -m pip install -e . && ": "",  # the suite already runs in the installed package
        "pipelines/quickstart.toml": _small_pipeline(tmp, "quickstart.toml", {"limit = 1000": "limit = 120"}),
        "pipelines/vgg16_fne_rf_sweep.toml": _small_pipeline(  # random weights: no download; 48 images
            tmp,
            "vgg16_fne_rf_sweep.toml",
            {
                'weights = "imagenet"': 'weights = "none"',
                "[extract]\n": "[extract]\nlimit = 48\n",
                "n_estimators = 500": "n_estimators = 20",
            },
        ),
        "RUN_ID": newest_run,
        "new_images/": str(images),
        "limit=300)": "limit=200)",  # the Python API blocks: 200 images still hold 5 folds of the rarest class
    }


def substitute(text: str, substitutions: dict, used: set) -> str:
    """`text` with every substitution applied (a function's value is computed when its block is prepared)."""
    for old, new in substitutions.items():
        if old in text:
            used.add(old)
            text = text.replace(old, new() if callable(new) else new)
    return text


@pytest.mark.slow
def test_every_runnable_readme_block_runs(tmp_path):
    cache = tmp_path / "cache"
    env = {
        **os.environ,
        "FEATX_CACHE": str(cache),
        "MPLBACKEND": "Agg",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as in a user's shell (conftest sets it for the test process)
    substitutions, used = _substitutions(tmp_path, cache), set()
    blocks = blocks_to_run()
    assert {b.language for b in blocks} == {"python", "sh"}
    for block in blocks:
        if block.language == "python":
            commands = [[sys.executable, "-c", substitute(block.text, substitutions, used)]]
        else:
            commands = [["bash", "-c", substitute(line, substitutions, used)] for line in block.commands]
        for command in commands:
            done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
            where = f"README.md line {block.line}: {command[-1]}"
            assert done.returncode == 0, f"{where}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            assert "Traceback" not in done.stderr + done.stdout, where
            if block.language == "sh":  # a command prints no TensorFlow log line (featx --verbose shows them)
                assert not TF_LOG.search(done.stderr), f"{where}\n{done.stderr[-3000:]}"
    assert used == set(substitutions), f"substitutions no longer in README.md: {set(substitutions) - used}"

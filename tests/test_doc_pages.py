"""Every block of README.md and docs/*.md meant to run does run, page by page, in page order, as a reader types it.

Each page is one test, in a temporary folder of its own with FEATX_CACHE pointing into it, so a page relies on its
own earlier blocks only (its first runnable block makes what the page needs). Shell blocks run line by line; the
few substitutions below keep them small (each one must still match its page, so they cannot go stale).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from doc_blocks import blocks_to_run, page_name, pages

ROOT = Path(__file__).resolve().parent.parent
TF_LOG = re.compile(
    r"^(?:[IWEF]\d{4} [\d:.]+ |WARNING: All log messages before absl)|oneDNN custom operations|cuda drivers", re.M
)


def _small_pipeline(tmp: Path, name: str, edits: dict[str, str]) -> str:
    text = (ROOT / "pipelines" / name).read_text()
    for old, new in edits.items():
        assert old in text, f"{name} no longer contains {old!r}; update tests/test_doc_pages.py"
        text = text.replace(old, new)
    (tmp / name).write_text(text)
    return str(tmp / name)


def _new_images(tmp: Path):
    def make() -> str:  # three ELPV images to predict on
        from PIL import Image

        from featx.sources import resolve_source

        images = tmp / "new_images"
        images.mkdir(exist_ok=True)
        source = resolve_source("elpv")
        for rel in source.relpaths[:3]:
            Image.open(os.path.join(source.root, rel)).save(images / os.path.basename(rel))
        return str(images)

    return make


def _newest_run(cache: Path):
    def newest() -> str:  # with a model: compare keeps only its best row's
        from featx.runs.store import read_log

        log = read_log(cache)
        return str(log[log["model_path"] != ""].iloc[-1]["run_id"])

    return newest


def _entry(cache: Path, pool: str):
    def name() -> str:  # the page's entry extracted with this pooling
        import featx

        return next(e.name for e in featx.Cache(cache).entries() if e.settings["pool"] == pool)

    return name


def _substitutions(page: str, tmp: Path, cache: Path) -> dict:
    """Page text -> what the test runs instead (a string, or a function called when its line runs)."""
    if page == "README.md":
        return {
            "python3 -m pip install -e . && ": "",  # the suite already runs in the installed package
            "pipelines/quickstart.toml": _small_pipeline(tmp, "quickstart.toml", {"limit = 1000": "limit = 120"}),
        }
    if page == "docs/experiments.md":
        return {
            "pipelines/vgg16_fne_rf_sweep.toml": _small_pipeline(  # random weights: no download; 48 images
                tmp,
                "vgg16_fne_rf_sweep.toml",
                {
                    'weights = "imagenet"': 'weights = "none"',
                    "[extract]\n": "[extract]\nlimit = 48\n",
                    "n_estimators = 500": "n_estimators = 20",
                },
            ),
            "RUN_ID": _newest_run(cache),
            "new_images/": _new_images(tmp),
        }
    if page == "docs/views.md":
        return {"RUN_ID": _newest_run(cache), "new_images/": _new_images(tmp)}
    if page == "docs/backbones.md":
        return {"AVG_ENTRY": _entry(cache, "avg"), "GEM_ENTRY": _entry(cache, "gem")}
    if page == "docs/python-api.md":
        return {"limit=300)": "limit=200)"}  # 200 images still hold 5 folds of the rarest class
    return {}


def substitute(text: str, substitutions: dict, used: set) -> str:
    """`text` with every substitution applied (a function's value is computed now)."""
    for old, new in substitutions.items():
        if old in text:
            used.add(old)
            text = text.replace(old, new() if callable(new) else new)
    return text


RUNNABLE_PAGES = [page_name(path) for path in pages() if blocks_to_run(path)]


@pytest.mark.slow
@pytest.mark.parametrize("page", RUNNABLE_PAGES)
def test_every_runnable_block_of_the_page_runs(page, tmp_path):
    cache = tmp_path / "cache"
    env = {
        **os.environ,
        "FEATX_CACHE": str(cache),
        "MPLBACKEND": "Agg",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as in a user's shell (conftest sets it for the test process)
    substitutions, used = _substitutions(page, tmp_path, cache), set()
    for block in blocks_to_run(ROOT / page):
        for text in [block.text] if block.language == "python" else block.commands:
            text = substitute(text, substitutions, used)  # just before it runs: RUN_ID names the newest run
            command = [sys.executable, "-c", text] if block.language == "python" else ["bash", "-c", text]
            done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
            where = f"{page} line {block.line}: {command[-1]}"
            assert done.returncode == 0, f"{where}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            assert "Traceback" not in done.stderr + done.stdout, where
            if block.language == "sh":  # a command prints no TensorFlow log line (featx --verbose shows them)
                assert not TF_LOG.search(done.stderr), f"{where}\n{done.stderr[-3000:]}"
    assert used == set(substitutions), f"substitutions no longer in {page}: {set(substitutions) - used}"

"""Every table featx prints fits the terminal (featx.terminal): $COLUMNS, else 120; long text wraps in its cell or
moves under the table, nothing is lost, numbers stay right-aligned; each command's output checked at 120 and 80."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from tiny_entry import LAYER, OTHER, write_entry

from featx.terminal import FALLBACK, fit_lines, fit_table, terminal_width

from helpers import cli

LONG = (
    "folder /home/someone/projects/solar-cells/electroluminescence/2026-12-06/all-cells-with-labels "
    "(stratified subset of 1000, seed 0)"
)
ENTRIES = pd.DataFrame(
    {
        "entry": ["efficientnet_lite0-abcdef123456", "vgg16-0123456789ab"],
        "backbone": ["efficientnet_lite0", "UNREADABLE: its manifest.json is not JSON; remove the folder"],
        "data": [LONG, "elpv"],
        "images": [1000, 2624],
        "layers": [18, 3],
        "pool": ["avg", "grid:1024"],
        "MB": [12.3, 4.5],
        "score": ["0.812 ± 0.031", "0.790 ± 0.020"],
    }
)


def _words(table: pd.DataFrame) -> list[str]:
    return [word for value in table.astype(str).to_numpy().ravel() for word in value.split()]


@pytest.mark.parametrize("width", [400, 120, 100, 80, 60, 40])
def test_a_table_fits_the_width_and_keeps_every_word(width):
    text = fit_table(ENTRIES, width)
    lines = text.splitlines()
    assert max(map(len, lines)) <= width
    shown, cells = Counter("".join(text.split())), Counter("".join([*ENTRIES.columns, *_words(ENTRIES)]))
    assert not cells - shown  # wrapped cells may split a word over lines, never drop a character
    assert lines[0].startswith("entry")
    if width >= 400:  # wide enough: one line per row, as pandas would print it
        assert len(lines) == 3


def test_long_text_moves_under_its_row_and_numbers_stay_right_aligned():
    lines = fit_table(ENTRIES, 120).splitlines()
    assert lines[2].startswith("    data: folder") and lines[3].startswith("      ")  # under its row, wrapped
    assert " ".join(line.strip() for line in lines[2:4]) == f"data: {LONG}"  # whole
    header = lines[0]
    row = lines[1]
    end = header.index("images") + len("images")
    assert row[:end].endswith("1000")  # right-aligned under its header
    assert "0.812 ± 0.031" in row


def test_the_width_is_columns_else_120(monkeypatch):
    monkeypatch.setenv("COLUMNS", "87")
    assert terminal_width() == 87
    monkeypatch.delenv("COLUMNS")
    assert terminal_width() == FALLBACK == 120  # not a terminal here (pytest captures stdout)


def test_prose_wraps_at_spaces_and_keeps_a_path_whole():
    path = "/a/very/long/path/" + "x" * 90 + "/report.html"
    text = fit_lines(f"selected: logreg C=0.1 accuracy 0.938 on val; test accuracy 0.714 -> {path}", 60)
    assert path in text.splitlines()[-1] and all(len(line) <= 60 for line in text.splitlines()[:-1])
    assert text.splitlines()[1].startswith("  ")  # continuation lines indented


def test_wide_characters_count_twice():
    table = pd.DataFrame({"name": ["写真" * 20], "n": [1]})
    lines = fit_table(table, 40).splitlines()
    assert all(sum(2 if ord(c) > 0x2E80 else 1 for c in line) <= 40 for line in lines)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """An entry with a long data description, a fit, a comparison and a tune logged in it."""
    root = tmp_path_factory.mktemp("terminal") / "cache"
    rng = np.random.default_rng(0)
    labels = np.tile([0, 1], 30)
    layers = {
        LAYER: {"id": rng.normal(size=(60, 4)) + 0.4 * labels[:, None]},
        OTHER: {"id": rng.normal(size=(60, 3)) + labels[:, None]},
    }
    write_entry(root, layers, labels, np.repeat(["train", "val", "test"], [30, 16, 14]), description=LONG)
    return root


COMMANDS = {
    "ls": ["ls"],
    "info": ["info"],
    "verify": ["verify"],
    "compare": ["compare", "--layer-sets", OTHER, LAYER, "--clf", "logreg,knn", "--grid", "C=0.01,1,100", "--cv", 3],
    "tune": ["tune", "--clf", "logreg"],
    "runs": ["runs"],
    "runs --sort": ["runs", "--sort", "val_accuracy"],
}


@pytest.mark.parametrize("columns", [120, 80])
def test_every_table_a_command_prints_fits_columns(cache, columns, monkeypatch):
    monkeypatch.setenv("COLUMNS", str(columns))
    for name, args in COMMANDS.items():
        rc, out, err = cli(
            *args, "--cache-dir", cache, *(["--quiet", "--n-jobs", 1] if name in ("compare", "tune") else [])
        )
        assert rc == 0, (name, err)
        if name == "compare":  # its table; the lines before it report each row as it is fitted
            out = out[out.index("accuracy, best first") :]
        long = [line for line in out.splitlines() if len(line) > columns and not re.search(r"\S{40,}", line)]
        assert not long, (name, long)  # a line may overflow only for a path too long to cut
    rc, out, _ = cli("ls", "--cache-dir", cache)
    under = out.splitlines()[2:]  # the entry's row (one line), then what moved under it
    assert any(line.startswith("    data: folder /home/someone") for line in under), out


@pytest.mark.slow  # layers and predict build a backbone (TensorFlow)
@pytest.mark.parametrize("args", [["layers", "mobilenet_v2", "--input-size", 96], ["backbones"]])
def test_the_backbone_tables_fit_80_columns(args, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    rc, out, err = cli(*args)
    assert rc == 0, err
    assert max(map(len, out.splitlines())) <= 80

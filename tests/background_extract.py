"""A single-process `featx extract` started in the background (while a cluster starts) as the bit-for-bit reference
of distributed runs, and the comparison of two entries' layers; shared by tests/test_dask.py and tests/test_slurm.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import h5py
import numpy as np

import featx


def background_reference(args: list[str], cache_dir: Path):
    """Start `args` (a featx extract into `cache_dir`); yield a function returning its entry once it has finished
    (asserting it succeeded), and kill it if the test session ends first. Use as a fixture's body:
    `yield from background_reference(...)`."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    holder = {}

    def entry():
        if not holder:
            out, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err[-3000:]
            holder["entry"] = featx.open_entry(cache_dir=cache_dir)
        return holder["entry"]

    yield entry
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def assert_same_layers(reference, other, n_rows: int) -> None:
    """Every layer of `reference` is in `other`, (n_rows, width) and bit-identical."""
    for name in reference.layers:
        with h5py.File(reference.layer_file(name), "r") as a, h5py.File(other.layer_file(name), "r") as b:
            assert a["features"].shape == (n_rows, reference.feature_size(name))
            assert np.array_equal(a["features"][()], b["features"][()]), f"{name} differs from the single-process run"

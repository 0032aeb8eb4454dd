"""Crash safety, resume and concurrency of `featx extract`, with real processes killed by SIGKILL.

The harness kills real `featx extract` processes at seeded random points (while starting, between and inside
batch commits, while publishing layer files), checks after every kill that the cache is absent or valid,
resumes, and requires the final features to be bit-identical to an uninterrupted run of the `featx` console
script. Killed processes come from tests/forkserver.py (fresh processes forked from a server that imported
TensorFlow once), so that ten kills cost seconds rather than ten TensorFlow imports; the uninterrupted
reference and the final resume are plain `featx` console-script subprocesses.

Every kill is followed by a run that asks for a different layer set (the same, a superset, a subset or a
disjoint set of layers): an interrupted pass must be finished, never discarded or padded, whatever the next
request is. FEATX_KILL_SEED=<int> replays another kill schedule.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import h5py
import numpy as np
import pytest

import featx
import featx.cli
from featx.cache.store import CacheEntry
from featx.errors import FeatxError
from featx.features.load import select_cached

import imagegen
from helpers import FEATX, extract_command, user_lines

SEED = int(os.environ.get("FEATX_KILL_SEED", "20240611"))
N_GOOD = 56
BATCH = 4


BLOCKS = "blocks"
SUPERSET = "blocks,out_relu"
SUBSET = "block_2_add,block_6_project_BN,block_9_add"
DISJOINT = "Conv1,block_5_depthwise"
REQUESTS = (BLOCKS, SUPERSET, SUBSET, DISJOINT)
UNION = ",".join(REQUESTS)


def extract_args(data: Path, cache_dir: Path, layers: str = BLOCKS) -> list[str]:
    """helpers.extract_command's arguments (without the console script), quiet."""
    return extract_command(data, cache_dir, layers, BATCH, "--quiet")[len(FEATX) :]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """A CSV manifest over real ELPV images (4 classes), one truncated JPEG and one unicode/space file name."""
    root = tmp_path_factory.mktemp("kill_data")
    rows = imagegen.copy_elpv_images(root, N_GOOD)
    (root / "odd names").mkdir()
    imagegen.save_png(root / "odd names" / "çé 太陽 #1.png", imagegen.gray(3))
    rows.insert(17, ("odd names/çé 太陽 #1.png", rows[3][1]))
    imagegen.save_truncated_jpeg(root / "odd names" / "truncated.jpg", imagegen.photo())
    rows.insert(30, ("odd names/truncated.jpg", rows[5][1]))
    csv = root / "images.csv"
    csv.write_text("path,label\n" + "".join(f'"{p}",{label}\n' for p, label in rows), encoding="utf-8")
    return csv


class Reference:
    """The uninterrupted run of every layer any test asks for: the `featx` console script in a subprocess,
    started once in the background."""

    def __init__(self, manifest: Path, cache_dir: Path):
        self.cache_dir = cache_dir
        self.proc = subprocess.Popen(
            [*FEATX, *extract_args(manifest, cache_dir, UNION)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._entry = None

    def entry(self) -> CacheEntry:
        if self._entry is None:
            out, err = self.proc.communicate(timeout=600)
            assert self.proc.returncode == 0, err
            assert "skipped 1 bad file(s)" in out and "truncated.jpg" in out
            self._entry = featx.Cache(self.cache_dir).open(None)
        return self._entry


@pytest.fixture(scope="module")
def reference(manifest, tmp_path_factory) -> Reference:
    return Reference(manifest, tmp_path_factory.mktemp("reference"))


def entry_folders(cache_dir: Path) -> list[Path]:
    return [p for p in cache_dir.iterdir() if not p.name.startswith(".")] if cache_dir.exists() else []


def progress(cache_dir: Path) -> dict | None:
    for folder in entry_folders(cache_dir):
        try:
            return json.loads((folder / "work" / "progress.json").read_text())
        except (OSError, ValueError):
            pass
    return None


def writing_files(cache_dir: Path, pid: int) -> bool:
    """True once process `pid` writes the index or a layer file (its atomic temp files carry its pid)."""
    for folder in entry_folders(cache_dir):
        for sub in (folder, folder / "layers"):
            with contextlib.suppress(OSError):
                if any(name.endswith(f".{pid}.tmp") for name in os.listdir(sub)):
                    return True
    return False


def published_layers(cache_dir: Path) -> int:
    return sum(
        len([n for n in os.listdir(f / "layers") if not n.startswith(".")])
        for f in entry_folders(cache_dir)
        if (f / "layers").is_dir()
    )


def verify_cli(cache_dir: Path) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = featx.cli.main(["verify", "--cache-dir", str(cache_dir)])
    return rc, out.getvalue()


def check_after_kill(cache_dir: Path, snapshots: list) -> dict | None:
    """The cache is absent or valid; committed raw rows are remembered to compare with the reference later."""
    folders = entry_folders(cache_dir)
    assert len(folders) <= 1, folders
    assert [e.path for e in featx.Cache(cache_dir).entries()] == [f for f in folders if (f / "index.h5").exists()]
    if not folders:
        return None
    folder = folders[0]
    assert (folder / "index.h5").exists(), "an entry folder appears only complete (atomic rename)"
    assert featx.verify(folder) == []
    rc, out = verify_cli(cache_dir)
    assert rc == 0 and out.startswith("ok "), out
    entry = CacheEntry(folder)
    state = progress(cache_dir)
    published = [name for name in entry.layer_info if entry.layer_file(name).exists()]
    if state is not None and state["committed_rows"] < state["n_rows"]:
        early = set(published) & {layer["name"] for layer in state["layers"]}
        assert not early, "no layer file may exist before its pass has committed every row"
    for name in published:
        with h5py.File(entry.layer_file(name), "r") as f:
            assert f["features"].shape == (len(entry.labels), entry.layer_info[name]["n_features"])
            assert np.isfinite(f["features"][()]).all()
    if published:
        assert "valid" in entry.data, "bad rows must be marked before any layer is served"
    if state is not None and state["committed_rows"]:
        committed = state["committed_rows"]
        for layer in state["layers"]:
            raw = np.fromfile(folder / "work" / f"{quote(layer['name'], safe='')}.raw", dtype=state["dtype"])
            snapshots.append(
                (layer["name"], committed, raw[: committed * layer["n_features"]].reshape(committed, -1).copy())
            )
    return state


def requested(reference: CacheEntry, layers: str) -> list[str]:
    """The layer names a --layers request means, in depth order."""
    return list(select_cached(reference, layers).names)


def assert_same_cache(reference: CacheEntry, other_dir: Path, layers: str = BLOCKS) -> None:
    """The entry in other_dir holds exactly the `layers` request, bit for bit as the uninterrupted run has them."""
    [folder] = entry_folders(other_dir)
    other = CacheEntry(folder)
    assert other.name == reference.name and other.key == reference.key
    for name in ("paths", "labels", "fingerprints", "split", "valid", "errors"):
        assert np.array_equal(reference.data[name], other.data[name]), name
    assert other.layers == requested(reference, layers) and len(other.layers) >= 2
    for name in other.layers:
        with h5py.File(reference.layer_file(name), "r") as a, h5py.File(other.layer_file(name), "r") as b:
            assert a["features"].dtype == b["features"].dtype == np.float32
            assert np.array_equal(a["features"][()], b["features"][()]), f"{name} differs from the uninterrupted run"
    assert not (folder / "work").exists() and featx.verify(folder) == []
    X1, y1, _ = featx.load(reference, other.layers, split=None)
    X2, y2, _ = featx.load(other, split=None)
    assert np.array_equal(X1, X2) and np.array_equal(y1, y2)


ROUNDS = 3  # each on a fresh cache: once every requested layer is cached, there is nothing left to interrupt
KILLS = 20  # kills the test needs (and at least half as many inside a pass)
TOP_UPS = 6  # at most this many one-kill rounds after them, while fewer than KILLS kills happened


def kill_plan(rng, n_rows: int) -> list[list]:
    """Per round, (mode, threshold, layer request) for each run: kills while starting, inside passes and while
    publishing, each followed by a run that asks for another layer set."""
    plans, layers = [], BLOCKS
    for _ in range(ROUNDS):
        thresholds = rng.choice(np.arange(1, n_rows - BATCH), size=4, replace=False)
        steps = [
            *(("rows", int(t)) for t in thresholds),
            "startup",
            "startup",
            ("finalize", int(rng.integers(0, 8))),
            ("finalize", int(rng.integers(8, 19))),
        ]
        plan = []
        for step in (steps[i] for i in rng.permutation(len(steps))):
            mode, threshold = (step, None) if isinstance(step, str) else step
            plan.append((mode, threshold, layers))
            layers = str(rng.choice([r for r in REQUESTS if r != layers]))
        plans.append(plan)
    return plans


def kill_once(server, cache_dir: Path, args: list[str], mode: str, threshold, rng) -> tuple[int, float]:
    """Start `featx ARGS`, SIGKILL it at the planned point; returns its exit code and seconds it ran."""
    before = progress(cache_dir)
    child = server.start(args)
    started = time.monotonic()
    if mode == "startup":  # fingerprinting, building the model, creating the entry, reading the pass log
        deadline = started + rng.uniform(0.05, 3.0)
        while time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.005)
    elif mode == "rows":  # between or inside batch commits (of the resumed pass or of the new one)
        threshold = max(threshold, (before or {"committed_rows": 0})["committed_rows"] + 1)
        while child.poll() is None and ((progress(cache_dir) or {}).get("committed_rows", 0) < threshold):
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.02))
    else:  # publishing the index and layer files: once `threshold` layers are out, inside the next one's write
        while child.poll() is None and not (
            writing_files(cache_dir, child.pid) and published_layers(cache_dir) >= threshold
        ):
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.01))
    rc = child.kill()
    assert rc in (-signal.SIGKILL, 0), child.err
    return rc, time.monotonic() - started


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_with_other_layers_is_bit_identical(
    manifest, reference, tmp_path, fork_server
):
    server = fork_server
    rng = np.random.default_rng(SEED)
    n_rows = sum(1 for _ in manifest.open(encoding="utf-8")) - 1
    snapshots, history, kills, mid_pass = [], [], 0, 0
    plans = kill_plan(rng, n_rows)
    round_ = 0
    # A planned kill is missed when its run finishes first (a fast machine, or nothing left to compute); top-up
    # rounds on fresh caches each kill inside a pass until enough kills happened (at most TOP_UPS of them).
    while round_ < ROUNDS or (kills < KILLS and round_ < ROUNDS + TOP_UPS):
        if round_ < ROUNDS:
            plan = plans[round_]
        else:
            plan = [("rows", int(rng.integers(1, n_rows - BATCH)), str(rng.choice(REQUESTS)))]
        cache_dir = tmp_path / f"killed{round_}"
        for mode, threshold, layers in plan:
            rc, seconds = kill_once(server, cache_dir, extract_args(manifest, cache_dir, layers), mode, threshold, rng)
            state = check_after_kill(cache_dir, snapshots)
            kills += rc == -signal.SIGKILL
            mid_pass += rc == -signal.SIGKILL and state is not None
            history.append((round_, mode, layers, round(seconds, 2), rc, state and state["committed_rows"]))
        finish_round(server, manifest, cache_dir, reference, last=round_ == ROUNDS - 1)
        round_ += 1
    print(
        f"\nkill schedule (seed {SEED}): round, mode, layers, seconds after start, exit code, committed rows after",
        *history,
        sep="\n  ",
    )
    assert kills >= KILLS and mid_pass >= KILLS // 2
    ref = reference.entry()
    for name, committed, rows in snapshots:  # every batch ever committed held exactly the rows of the uninterrupted run
        with h5py.File(ref.layer_file(name), "r") as f:
            assert np.array_equal(f["features"][:committed], rows), (name, committed)


def finish_round(server, manifest: Path, cache_dir: Path, reference: Reference, last: bool) -> None:
    """Resume asking for every layer (the last round with the real console script): the pending pass continues
    from its last committed batch, then the layers no run has finished are computed; bit-identical to the reference."""
    pending = progress(cache_dir)
    args = extract_args(manifest, cache_dir, UNION)
    if last:
        done = subprocess.run([*FEATX, *args], capture_output=True, text=True, timeout=600)
        rc, out, err = done.returncode, done.stdout, done.stderr
    else:
        child = server.run(args)
        rc, out, err = child.rc, child.out, child.err
    assert rc == 0, err
    if pending is not None:
        assert (
            f"resuming interrupted extraction of {len(pending['layers'])} layer(s) at image "
            f"{pending['committed_rows']}/"
        ) in out
    assert_same_cache(reference.entry(), cache_dir, UNION)


def wait_for_rows(child, cache_dir: Path, rows: int) -> None:
    while child.poll() is None and (progress(cache_dir) or {}).get("committed_rows", 0) < rows:
        time.sleep(0.002)


@pytest.mark.slow
@pytest.mark.parametrize("second", [SUPERSET, SUBSET, DISJOINT])
def test_kill_mid_pass_then_other_layers_is_bit_identical(second, manifest, reference, tmp_path, fork_server):
    """The pending pass is finished by the next run whatever it asks for: never discarded, never zero-filled."""
    server = fork_server
    cache_dir = tmp_path / "c"
    child = server.start(extract_args(manifest, cache_dir, BLOCKS))
    wait_for_rows(child, cache_dir, 5 * BATCH)
    assert child.kill() == -signal.SIGKILL, child.err
    committed = progress(cache_dir)["committed_rows"]
    resumed = server.run(extract_args(manifest, cache_dir, second))
    assert resumed.rc == 0 and len(user_lines(resumed.err)) == 0, resumed.err
    assert re.search(rf"resuming interrupted extraction of \d+ layer\(s\) at image {committed}/", resumed.out), (
        resumed.out
    )
    assert_same_cache(reference.entry(), cache_dir, f"{BLOCKS},{second}")


@pytest.mark.slow
def test_strict_stop_then_other_layers_is_bit_identical(manifest, reference, tmp_path, fork_server):
    """A --strict run that stopped at a bad image leaves a pending pass; a run for other layers finishes it."""
    server = fork_server
    cache_dir = tmp_path / "c"
    strict = server.run([*extract_args(manifest, cache_dir, BLOCKS), "--strict"])
    assert strict.rc == 2 and "truncated.jpg" in strict.err and "--strict" in strict.err, strict.err
    assert progress(cache_dir)["committed_rows"] > 0
    other = server.run(extract_args(manifest, cache_dir, DISJOINT))
    assert other.rc == 0 and len(user_lines(other.err)) == 0, other.err
    assert_same_cache(reference.entry(), cache_dir, f"{BLOCKS},{DISJOINT}")


def test_two_writers_on_one_cache(manifest, reference, tmp_path, fork_server):
    """Two extract processes on one fresh cache: one writes, the other waits its turn or says who holds the lock."""
    server = fork_server
    cache_dir = tmp_path / "shared"
    first, second = server.start(extract_args(manifest, cache_dir)), server.start(extract_args(manifest, cache_dir))
    results = {first.pid: (first.wait(), first.err), second.pid: (second.wait(), second.err)}
    codes = sorted(rc for rc, _ in results.values())
    assert codes in ([0, 0], [0, 2]), results
    for pid, (rc, err) in results.items():
        if rc == 2:
            other = (set(results) - {pid}).pop()
            [line] = user_lines(err)
            assert re.fullmatch(
                rf"error: cache entry \S+ is being written by pid {other} on \S+ since "
                r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d; wait for that run to finish \(a killed run releases "
                r"the lock by itself\)",
                line,
            ), err
    assert_same_cache(reference.entry(), cache_dir)


def test_lock_names_its_holder_and_a_dead_holders_lock_is_taken_over(manifest, reference, tmp_path, fork_server):
    cache_dir = tmp_path / "cache"
    shutil.copytree(reference.cache_dir, cache_dir)
    [folder] = entry_folders(cache_dir)
    CacheEntry(folder).layer_file("out_relu").unlink()  # work for the next extract, which needs the lock
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom featx.cache.lock import EntryLock\n"
            "EntryLock(sys.argv[1]).__enter__()\nprint('held', flush=True)\ntime.sleep(600)",
            str(folder),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        host = re.escape(socket.gethostname())
        with pytest.raises(FeatxError, match=rf"being written by pid {holder.pid} on {host} since \d{{4}}-"):
            with CacheEntry(folder).lock():
                pass
        busy = fork_server.run(extract_args(manifest, cache_dir, UNION))
        assert busy.rc == 2 and f"is being written by pid {holder.pid} on" in busy.err
        assert len(user_lines(busy.err)) == 1, busy.err
        noop = fork_server.run(extract_args(manifest, cache_dir, SUBSET))  # decided without the lock
        assert noop.rc == 0 and "nothing to do: 3 layer(s) already cached" in noop.out, noop.err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert str(holder.pid) in (folder / ".lock").read_text()  # what a dead holder leaves behind
    with CacheEntry(folder).lock():  # the kernel released its flock: taken over at once
        assert json.loads((folder / ".lock").read_text())["pid"] == os.getpid()
    again = fork_server.run(extract_args(manifest, cache_dir, UNION))
    assert again.rc == 0 and "cached 1 layer(s)" in again.out, again.err
    assert_same_cache(reference.entry(), cache_dir, UNION)

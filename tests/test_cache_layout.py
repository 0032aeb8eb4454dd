"""featx.cache.layout, the one owner of names on disk: entry folders, layer and view files and staging names round-trip
through their parsers; every writer spells its host one way (a cache entry being created or removed and a run being
written leave debris one parser and one cleanup recognise, on a host whose name needs escaping too); `featx verify`
walks an entry's files through CacheEntry and still finds a tampered view file. No TensorFlow: the entry is written by
the store itself (Cache.create, CacheEntry.write_layer), as extract writes it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py

import featx
from featx.cache import layout
from featx.sources.views import IDENTITY
from tests.tiny_entry import LAYER, OTHER, make_entry

ROOT = Path(__file__).resolve().parent.parent


def test_entry_layer_and_view_names_round_trip_through_their_parsers(tmp_path):
    entry = make_entry(tmp_path)
    assert entry.name == layout.entry_name("tiny_net", entry.key) == f"tiny_net-{entry.key[:12]}"
    assert layout.parse_entry_name(entry.name) == ("tiny_net", entry.key[:12])
    assert layout.parse_entry_name("my-model-v2-0123456789ab") == ("my-model-v2", "0123456789ab")  # a dashed stem
    assert featx.Cache(tmp_path).open(entry.key[:7]).path == entry.path  # found by the prefix the name tells
    files = entry.stored_files()
    assert [(f.view, f.name) for f in files] == [(v, n) for v in (IDENTITY, "crop2", "hflip") for n in (OTHER, LAYER)]
    for view, name, path in files:
        assert path == entry.layer_file(name, view) == layout.layer_file(entry.path, name, view) and path.is_file()
    assert entry.layer_file(LAYER).relative_to(entry.path).as_posix() == "layers/stem%2Fconv%201.h5"
    assert entry.layer_file(LAYER, "hflip").relative_to(entry.path).as_posix() == "views/hflip/stem%2Fconv%201.h5"
    assert entry.views == [IDENTITY, "hflip", "crop2"] and entry.view_layers("crop2") == [LAYER, OTHER]
    for prefix in (layout.NEW_ENTRY, layout.REMOVED_ENTRY, layout.NEW_RUN, layout.REMOVED_RUN):
        for label in ("0123456789ab", "vgg16-0123456789ab", "20990101-000000-abcdef"):
            name = layout.staging_name(prefix, label, pid=4242)
            assert layout.parse_staging(name, prefix) == (label, 4242, layout.HOST), name
    assert layout.parse_staging(layout.staging_name(layout.REMOVED_RUN, "x"), layout.NEW_RUN).label == "rm-x"
    for not_staging in ("vgg16-0123456789ab", ".new-", ".new-abc-12", ".new-abc-x@host", ".staging-a-1@h"):
        assert layout.parse_staging(not_staging, layout.NEW_ENTRY) is None, not_staging


DEBRIS = r"""
import json, os, signal, socket, sys
from pathlib import Path

socket.gethostname = lambda: sys.argv[2]  # this process runs on host sys.argv[2]
sys.path.insert(0, sys.argv[3])
from tiny_entry import make_entry
from featx.cache import layout
from featx.cache.remove import remove_entry
from featx.cache.store import Cache
from featx.runs.folders import remove_debris
from featx.runs.store import stage_run


def killed_at(event, prefix):  # SIGKILL this process when featx's own code acts on a staging folder of `prefix`
    def hook(name, args):
        if name == event and Path(str(args[0])).name.startswith(prefix):
            os.kill(os.getpid(), signal.SIGKILL)
    sys.addaudithook(hook)


def create(root):  # extract's new entry: killed as its staging folder is renamed into place
    killed_at("os.rename", ".new-")
    make_entry(root)


def remove(root):  # `featx rm`: killed after renaming the entry away, before deleting it
    folder = make_entry(root).path
    killed_at("shutil.rmtree", ".new-rm-")
    remove_entry(folder)


def run(root):  # a fit: killed while its run folder is being written
    with stage_run(Cache(root)):
        os.kill(os.getpid(), signal.SIGKILL)


found = {"host": layout.HOST}
for what in (create, remove, run):  # each in a process of its own (forked: the imports are paid once)
    root = Path(sys.argv[1]) / what.__name__
    pid = os.fork()
    if pid == 0:
        what(root)
        os._exit(0)
    status = os.waitpid(pid, 0)[1]
    found[what.__name__] = {"pid": pid, "status": os.waitstatus_to_exitcode(status),
                            "names": sorted(p.name for p in root.rglob(".*") if p.is_dir())}
    Cache(root).remove_debris()  # what dead processes of this host left: removed by the next extract and fit
    remove_debris(root / "runs")
    found[what.__name__]["left"] = sorted(p.name for p in root.rglob(".*") if p.is_dir())
print(json.dumps(found))
"""


def test_a_new_entry_a_removed_entry_and_a_run_leave_staging_names_one_parser_reads(tmp_path):
    host = "lab pc#1"  # a host name that needs escaping: before layout, entries kept it raw and runs escaped it
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.run(
        [sys.executable, "-c", DEBRIS, str(tmp_path), host, str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert child.returncode == 0, child.stderr
    found = json.loads(child.stdout.strip().splitlines()[-1])
    expected = "lab_pc_1"
    assert found["host"] == expected
    for what, prefix in (("create", layout.NEW_ENTRY), ("remove", layout.REMOVED_ENTRY), ("run", layout.NEW_RUN)):
        assert found[what]["status"] == -9, found  # killed where asked, by its own hook
        [name] = [n for n in found[what]["names"] if n.startswith(prefix)]
        # one parser reads every writer's name, with one spelling of the host
        assert layout.parse_staging(name, prefix) == (
            name[len(prefix) :].rpartition("-")[0],
            found[what]["pid"],
            expected,
        ), name
        assert found[what]["left"] == [], found  # and the cleanup of that host removes it
    assert layout.parse_staging(found["remove"]["names"][0], layout.REMOVED_ENTRY).label.startswith("tiny_net-")


def test_staging_folders_of_live_processes_and_other_hosts_are_not_orphaned(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    names = {
        layout.staging_name(layout.NEW_ENTRY, "aaaaaaaaaaaa", pid=int(dead.stdout)): True,
        layout.staging_name(layout.NEW_ENTRY, "bbbbbbbbbbbb"): False,  # this process: alive
        f".new-cccccccccccc-{int(dead.stdout)}@another-host": False,
    }
    for name in names:
        (tmp_path / name).mkdir()
    assert [path.name for path, _ in layout.orphaned(tmp_path, layout.NEW_ENTRY)] == [
        n for n, gone in names.items() if gone
    ]


def test_verify_walks_the_entry_and_finds_a_tampered_view_file(tmp_path):
    entry = make_entry(tmp_path)
    assert featx.verify(entry.path) == []
    with h5py.File(entry.layer_file(LAYER, "crop2"), "r+") as f:
        f["features"][3, 1] += 1.0  # a changed value, still finite; the header untouched
    assert featx.verify(entry.path) == [
        f"{entry.name}: layer {LAYER} (view crop2): data in views/crop2/stem%2Fconv%201.h5 changed since it was "
        "published (digest mismatch)"
    ]
    (layout.layer_folder(entry.path, "crop2") / ".stem.123.tmp").write_bytes(b"debris")  # a writer's temporary file
    unknown = layout.layer_file(entry.path, LAYER, "warp")
    unknown.parent.mkdir()
    unknown.write_bytes(b"")
    (entry.path / "layers" / "nope.h5").write_bytes(b"")
    problems = featx.verify(entry.path)
    assert problems[0] == f"{entry.name}: layer file nope.h5 is not a layer of tiny_net"
    assert problems[1].endswith("(digest mismatch)") and problems[2:] == [
        f"{entry.name}: folder views/warp is not a view featx knows"
    ]

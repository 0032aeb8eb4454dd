"""Names on disk, one owner: a cache's entry folders, their layer and view files, and the staging names of folders
being written or removed (in the cache and in its runs folder), each with its parser.

    <cache root>/
        <backbone>-<key[:12]>/              entry_name(backbone, key); parse_entry_name(name)
            index.h5                        INDEX (featx.cache.store reads and writes it)
            layers/<layer>.h5               layer_file(entry, layer): the identity view
            views/<view>/<layer>.h5         layer_file(entry, layer, view): an augmented view (featx.sources.views)
            work/                           WORK: an extraction pass in progress (featx.cache.passlog)
        .new-<key[:12]>-<pid>@<host>/       staging_name(NEW_ENTRY, key_prefix(key)): an entry being created
        .new-rm-<entry>-<pid>@<host>/       staging_name(REMOVED_ENTRY, entry): an entry being removed
        runs/.staging-<run_id>-<pid>@<host>/     staging_name(NEW_RUN, run_id): a run being written
        runs/.staging-rm-<run_id>-<pid>@<host>/  staging_name(REMOVED_RUN, run_id): a run being removed

Layer and view names are URL-quoted in file and folder names (a layer name may hold "/"). A staging name ends with
the pid of the process that owns it and its host (HOST: the host name with anything but letters, digits, "_", "."
and "-" replaced by "_", so every writer spells a host the same way); `parse_staging` reads both back, and
`orphaned` lists the staging folders whose owner, a process of this host, is gone (another host's are never
touched: their pids mean nothing here).
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote, unquote

from featx.cache.lock import process_alive
from featx.sources.views import IDENTITY

KEY_CHARS = 12  # an entry folder name ends with this many characters of its key
INDEX, LAYERS, VIEWS, WORK = "index.h5", "layers", "views", "work"
LAYER_SUFFIX = ".h5"
NEW_ENTRY, REMOVED_ENTRY = ".new-", ".new-rm-"  # in the cache root (REMOVED_ENTRY names also start with NEW_ENTRY)
NEW_RUN, REMOVED_RUN = ".staging-", ".staging-rm-"  # in the runs folder (likewise)
HOST = re.sub(r"[^\w.-]", "_", socket.gethostname())
_STAGING = re.compile(r"(?P<label>.+)-(?P<pid>\d+)@(?P<host>[^@/]+)")


# ----------------------------------------------------------------------------------------------- entries
class EntryName(NamedTuple):
    backbone: str
    key_prefix: str


def key_prefix(key: str) -> str:
    """The part of an entry key that its folder name shows."""
    return str(key)[:KEY_CHARS]


def entry_name(backbone: str, key: str) -> str:
    """An entry's folder name: `<backbone>-<key[:12]>` (backbone: the built model's name, a saved model's file stem)."""
    return f"{backbone}-{key_prefix(key)}"


def parse_entry_name(name: str) -> EntryName:
    """(backbone, key prefix) of an entry folder name; a name without "-" is all key prefix (backbone "")."""
    backbone, _, short = str(name).rpartition("-")
    return EntryName(backbone, short)


# ----------------------------------------------------------------------------------------------- layer files
class LayerFile(NamedTuple):
    view: str  # unquoted; for a file under views/ perhaps not a view featx knows (featx.sources.views.is_view)
    name: str  # the layer name, unquoted
    path: Path


def layer_folder(entry: str | Path, view: str = IDENTITY) -> Path:
    """The folder of one view's layer files: layers/ for the identity, views/<view>/ for an augmented view."""
    return Path(entry) / LAYERS if view == IDENTITY else Path(entry) / VIEWS / quote(view, safe="")


def layer_file(entry: str | Path, name: str, view: str = IDENTITY) -> Path:
    """Where layer `name` of `view` of the entry in folder `entry` is published."""
    return layer_folder(entry, view) / f"{quote(name, safe='')}{LAYER_SUFFIX}"


def view_names(entry: str | Path) -> list[str]:
    """The views that have a folder under views/ (unquoted, sorted by folder name; the identity is not one of them)."""
    folder = Path(entry) / VIEWS
    return [unquote(p.name) for p in sorted(folder.iterdir()) if p.is_dir()] if folder.is_dir() else []


def layer_folders(entry: str | Path) -> list[tuple[str, Path]]:
    """(view, folder) of the identity (layers/) and of every folder under views/, whether or not it exists."""
    return [(IDENTITY, layer_folder(entry)), *((view, layer_folder(entry, view)) for view in view_names(entry))]


def layer_files(entry: str | Path) -> list[LayerFile]:
    """Every published layer file of the entry in folder `entry`, identity first, then views/ by folder name, files
    by name. Temporary files of writers (dot names) are not published; names are not checked against the entry."""
    return [
        LayerFile(view, unquote(path.name[: -len(LAYER_SUFFIX)]), path)
        for view, folder in layer_folders(entry)
        if folder.is_dir()
        for path in sorted(folder.glob(f"*{LAYER_SUFFIX}"))
        if not path.name.startswith(".")
    ]


def has_layer_files(entry: str | Path, view: str = IDENTITY) -> bool:
    folder = layer_folder(entry, view)
    return folder.is_dir() and any(not p.name.startswith(".") for p in folder.glob(f"*{LAYER_SUFFIX}"))


# ----------------------------------------------------------------------------------------------- staging names
class Staging(NamedTuple):
    label: str  # what is staged: a key prefix, an entry name or a run id, after the staging prefix
    pid: int
    host: str

    @property
    def orphaned(self) -> bool:
        """Made by a process of this host that is gone (never this process, never another host's)."""
        return self.host == HOST and self.pid != os.getpid() and not process_alive(self.pid)


def staging_name(prefix: str, label: str, pid: int | None = None) -> str:
    """`<prefix><label>-<pid>@<host>`: a folder this process (or `pid`) of this host is writing or removing."""
    return f"{prefix}{label}-{os.getpid() if pid is None else pid}@{HOST}"


def parse_staging(name: str, prefix: str) -> Staging | None:
    """The Staging a name of `prefix` tells (None: not such a staging name)."""
    if not str(name).startswith(prefix):
        return None
    found = _STAGING.fullmatch(str(name)[len(prefix) :])
    return Staging(found["label"], int(found["pid"]), found["host"]) if found else None


def orphaned(folder: Path, prefix: str) -> list[tuple[Path, Staging]]:
    """(path, Staging) of the staging folders of `prefix` in `folder` left by processes of this host that are gone."""
    found = []
    for path in sorted(Path(folder).glob(f"{prefix}*")) if Path(folder).is_dir() else ():
        staging = parse_staging(path.name, prefix)
        if staging is not None and staging.orphaned:
            found.append((path, staging))
    return found

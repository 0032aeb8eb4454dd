"""Paths inside a folder featx writes in (a cache folder, a runs folder), never reached through a link.

A cache or runs folder may come from someone else, and a symbolic link inside it may lead anywhere: a `.lock`
linked to a user's file would be truncated by the next extract, a `runs/` linked elsewhere would have its run
folders deleted by `prune`. So, below the root a user named (which may itself be a link: that is the user's own
choice):

* featx never writes, truncates, renames or deletes through a link: `check_write` refuses any link on the way
  (`lstat` of every component), `open_file` also opens the last component with O_NOFOLLOW and refuses a file that
  is not a plain file or has other hard links, and removing a link (`remove`, `rmtree`) removes the link itself;
* featx reads through a link only where its real path stays inside the root (`check_read`); a link that leads
  out, or to nothing, is refused.

Each refusal is one line naming the link and its target (LinkRefused, a FeatxError: exit code 2).
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from featx.errors import FeatxError


class LinkRefused(FeatxError):
    """A path below a root that is (or passes through) a link featx does not follow."""


def _parts(root: Path, path: Path) -> list[str]:
    """The paths from the first component below `root` down to `path` (inclusive); [] for the root itself.
    `path` must lie lexically below `root`, without '..' components (every path featx builds does)."""
    root, path = os.path.abspath(root), os.path.abspath(path)
    if path == root:
        return []
    if not path.startswith(root.rstrip(os.sep) + os.sep):
        raise LinkRefused(f"'{path}' is not inside '{root}'; featx writes nothing outside the folder it was given")
    found, here = [], root
    for part in path[len(root) :].strip(os.sep).split(os.sep):
        here = os.path.join(here, part)
        found.append(here)
    return found


def _target(link: Path) -> str:
    try:
        return os.readlink(link)
    except OSError:
        return "?"


def check_write(root: str | Path, path: str | Path) -> Path:
    """`path`, after checking that no component of it below `root` (itself included) is a symbolic link; a
    component that does not exist ends the check (what featx then creates is no link). Call before writing,
    truncating, renaming or deleting anything at or under `path`."""
    path = Path(path)
    for here in _parts(root, path):
        try:
            info = os.lstat(here)
        except FileNotFoundError:
            break
        except OSError:
            break  # not a folder on the way (ENOTDIR): the operation itself fails with its own error
        if stat.S_ISLNK(info.st_mode):
            raise LinkRefused(
                f"'{here}' is a symbolic link (to {_target(here)}); featx never writes, truncates or deletes "
                f"through a link inside '{root}': remove the link (it is not featx's) and run again"
            )
    return path


def check_read(root: str | Path, path: str | Path) -> Path:
    """`path`, after checking that every link on its way below `root` stays inside the real path of `root`: a
    link that leads out, or to nothing, is refused naming it. Call before reading at `path`."""
    path, real_root = Path(path), Path(os.path.realpath(root))
    for here in _parts(root, path):
        if not os.path.islink(here):
            continue
        if not os.path.exists(here):
            raise LinkRefused(
                f"'{here}' is a symbolic link to a missing file ({_target(here)}); remove the link (it is not "
                "featx's) and run again"
            )
        if not Path(os.path.realpath(here)).is_relative_to(real_root):
            raise LinkRefused(
                f"'{here}' is a symbolic link leading out of '{root}' (to {_target(here)}); featx reads nothing "
                "outside the folder it was given: remove the link, or copy what it points to in its place"
            )
    return path


def open_file(root: str | Path, path: str | Path, flags: int, mode: int = 0o644) -> int:
    """os.open of `path` below `root` for writing (flags such as os.O_RDWR | os.O_CREAT), never through a link:
    the folders on the way are checked (check_write), the file itself is opened with O_NOFOLLOW, and a file that
    is not a plain file, or that has other hard links (writing it would change them too), is refused."""
    path = Path(path)
    check_write(root, path.parent)
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError:
        if os.path.islink(path):  # ELOOP (or EMLINK on some systems): the file is a link
            check_write(root, path)
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        os.close(fd)
        _not_own(root, path, info)
    return fd


def check_own_file(root: str | Path, path: str | Path) -> Path:
    """`path`, after check_write and, where it exists, checking that it is a plain file without other hard links:
    for files changed in place by a library that opens them itself (SQLite)."""
    check_write(root, path)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return Path(path)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        _not_own(root, path, info)
    return Path(path)


def _not_own(root, path, info: os.stat_result):
    what = "not a plain file" if not stat.S_ISREG(info.st_mode) else f"a file with {info.st_nlink} hard links"
    raise LinkRefused(
        f"'{path}' is {what}; featx writes only files it owns alone inside '{root}': remove it and run again"
    )


def makedirs(root: str | Path, path: str | Path) -> Path:
    """Create `path` and its missing parents below `root` (the root too), no link on the way."""
    check_write(root, path)
    Path(path).mkdir(parents=True, exist_ok=True)
    return check_write(root, path)  # a link put there meanwhile (nothing featx made) is refused now


def remove(root: str | Path, path: str | Path, missing_ok: bool = True) -> None:
    """Delete the file (or link: the link itself, never what it points to) `path` below `root`."""
    path = Path(path)
    check_write(root, path.parent)
    try:
        os.unlink(path)
    except FileNotFoundError:
        if not missing_ok:
            raise


def rmtree(root: str | Path, path: str | Path, ignore_errors: bool = False) -> None:
    """Delete the folder `path` below `root` and everything in it; a link there is removed itself (never
    followed), links inside the folder are removed as links (shutil.rmtree does not follow them)."""
    path = Path(path)
    check_write(root, path.parent)
    try:
        if os.path.islink(path):
            os.unlink(path)
        elif os.path.lexists(path):
            shutil.rmtree(path)
    except OSError:
        if not ignore_errors:
            raise


def rename(root: str | Path, source: str | Path, target: str | Path) -> None:
    """os.rename of `source` to `target`, both below `root`, with no link on the way to either (a link as
    `source` itself is moved as a link, a link as `target` replaced: rename follows neither)."""
    check_write(root, Path(source).parent)
    check_write(root, Path(target).parent)
    os.rename(source, target)


def is_link(path: str | Path) -> bool:
    """Whether `path` itself is a symbolic link (lstat; a missing path is not)."""
    return os.path.islink(path)

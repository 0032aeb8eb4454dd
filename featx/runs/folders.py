"""Run folders: their ids, staging, publishing, deleting, and the debris killed processes leave.

    <runs>/<run_id>/            a logged run: model.skops (+ head.keras), metrics.json, confusion_*, history.csv
    <runs>/.staging-<run_id>-<pid>@<host>/      a run being written; renamed to <run_id>/ by `publish`, inside
                                the log's transaction (featx.runs.store.append_run)
    <runs>/.staging-rm-<run_id>-<pid>@<host>/   a removed run's folder being deleted (`discard`)

This module touches folders only; the runs log (featx.runs.store) decides when. Run ids are read only
in new_run_id's format and every run folder is checked to be a folder right inside the runs folder, so a log
received from someone else cannot make featx delete or write anywhere else; a link among the staging folders
is removed itself, never followed (featx.cache.safepath).
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from featx.cache import safepath
from featx.cache.atomic import fsync_dir, fsync_file
from featx.cache.layout import NEW_RUN, REMOVED_RUN, orphaned, parse_staging, staging_name
from featx.errors import FeatxError, RunFailed

STAGING, STAGING_RM = NEW_RUN, REMOVED_RUN  # .staging-[rm-]<run_id>-<pid>@<host>: removed once that process is gone
RUN_ID = re.compile(r"\d{8}-\d{6}-[0-9a-f]{6}")  # new_run_id's format: the only run ids featx reads or acts on
KILL_AT = "FEATX_TEST_KILL_AT"  # test hook: SIGKILL this process at that step (1, 2, ...) of removing or logging runs


def new_run_id() -> str:
    """Sortable by time, unique across concurrent processes; matches RUN_ID."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def valid_run_id(run_id) -> bool:
    """Whether `run_id` has new_run_id's format (no path separators, no '..': safe as a folder name)."""
    return isinstance(run_id, str) and RUN_ID.fullmatch(run_id) is not None


def run_folder(runs_folder: Path, run_id: str) -> Path:
    """<runs_folder>/<run_id>, checked before anything renames, deletes or writes there: the id has RUN_ID's
    format, and the path (if it exists) is a real folder right inside runs_folder, not a link elsewhere."""
    if not valid_run_id(run_id):
        raise FeatxError(
            f"run id {str(run_id)[:80]!r} is not a featx run id (YYYYMMDD-HHMMSS-xxxxxx); refusing to "
            "act on it: the runs log was edited or not written by featx"
        )
    path = runs_folder / run_id
    if path.is_symlink() or (path.exists() and (not path.is_dir() or path.resolve().parent != runs_folder.resolve())):
        raise FeatxError(
            f"run folder {path} is not a folder inside {runs_folder} (a link or a file); refusing to "
            "act on it: remove it by hand"
        )
    return path


def kill_point() -> None:
    """Test hook on the real code paths of removing and logging runs: with $FEATX_TEST_KILL_AT=k, SIGKILL at the
    k-th step."""
    at = os.environ.get(KILL_AT)
    if at:
        _steps[0] += 1
        if _steps[0] == int(at):
            os.kill(os.getpid(), signal.SIGKILL)


_steps = [0]


def writable_folder(
    folder: Path,
    what: str,
    fix: str = "pass --runs-dir (API: runs_dir=) naming a writable folder, or make this one writable",
) -> Path:
    """Create `folder` if needed and check it accepts files; else one line naming the `fix`."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe(folder)
    except OSError as exc:
        raise FeatxError(f"cannot write {what} in {folder} ({os_reason(exc)}); {fix}") from None
    return folder


def probe(folder: Path) -> None:
    """Create and remove a file: the only test that also holds for root without its permission override."""
    path = folder / f".probe-{os.getpid()}-{secrets.token_hex(3)}"
    path.touch()
    path.unlink()


def os_reason(exc: OSError) -> str:
    """An OSError as the few words a user line gives it ("No space left on device")."""
    return os.strerror(exc.errno) if exc.errno else str(exc)


@dataclass
class StagedRun:
    run_id: str
    folder: Path  # temporary: <runs>/.staging-<run_id>-<pid>@<host>/, renamed to <runs>/<run_id>/ by publish
    final: Path


@contextmanager
def staged_folder(folder: Path, run_id: str):
    """Yield a StagedRun for `run_id` in the runs `folder`, its staging folder created. If the block fails, or
    ends without publishing the run, the staging folder is removed: no half run is ever left. A write error
    (disk full, file size limit, permissions) becomes one line."""
    staged = StagedRun(run_id, folder / staging_name(STAGING, run_id), folder / run_id)
    try:
        staged.folder.mkdir()
        yield staged
    except OSError as exc:
        raise RunFailed(
            f"writing run {run_id} in {folder} failed ({os_reason(exc)}); nothing was logged: "
            "free disk space (or fix permissions, or pass --runs-dir) and fit again"
        ) from None
    finally:
        safepath.rmtree(folder, staged.folder, ignore_errors=True)


def sync_staged(staged: StagedRun) -> None:
    """Every file of the staged folder on disk, before it is published."""
    for path in staged.folder.iterdir():
        fsync_file(path)
    fsync_dir(staged.folder)


def publish(staged: StagedRun) -> None:
    """Rename the staged folder to its run's name (inside the log's transaction that records the run)."""
    os.rename(staged.folder, staged.final)


def unpublish(staged: StagedRun) -> None:
    """Undo publish when the transaction that records the run rolls back: the folder goes with its row."""
    if staged.final.exists() and not staged.folder.exists():
        os.rename(staged.final, staged.folder)


def remove_debris(folder: Path, is_logged=None) -> None:
    """Delete the staging folders of processes killed on this host (their pid is gone); never another host's.

    is_logged : run_id -> whether the log still holds that run. With it, a run folder that an older featx's rm or
    prune renamed to .staging-rm-<run_id>-... and was killed before its row was deleted (the row is still
    logged) is renamed back, not deleted.
    """
    for staging, _ in orphaned(folder, STAGING):  # STAGING_RM's too
        removed = parse_staging(staging.name, STAGING_RM)
        run_id = removed.label if removed else ""
        if (
            is_logged is not None
            and removed
            and valid_run_id(run_id)
            and not safepath.is_link(staging)
            and not os.path.lexists(folder / run_id)
            and is_logged(run_id)
        ):
            os.rename(staging, folder / run_id)
        else:
            safepath.rmtree(folder, staging, ignore_errors=True)  # a link: the link itself


def rename_run(folder: Path, path: Path, target: Path) -> None:
    """Rename the run folder `path` (checked by run_folder) to `target`, both in the runs `folder`."""
    safepath.rename(folder, run_folder(folder, path.name), target)


def discard(folder: Path, run_id: str) -> None:
    """Delete the folder of a removed run (if any): renamed to a staging name first, so a half-deleted folder is
    never left under the run's name."""
    path = run_folder(folder, run_id)
    trash = folder / staging_name(STAGING_RM, run_id)
    if os.path.lexists(trash):  # left by a dead process that had this pid
        safepath.rmtree(folder, trash)
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return  # no folder (compare's rows without a model have one; a run removed meanwhile has not)
    kill_point()
    safepath.rmtree(folder, trash, ignore_errors=True)  # what stays is debris of a dead process: remove_debris's
    kill_point()

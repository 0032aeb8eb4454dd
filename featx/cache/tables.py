"""A cache's contents and health as DataFrames (`featx ls`, `featx verify`): the CLI only prints them."""

from __future__ import annotations

import pandas as pd

from featx.backbones import backbone_file_problem
from featx.cache.passlog import PassLog
from featx.cache.store import Cache, CacheEntry
from featx.cache.verify import verify
from featx.errors import FeatxError

ENTRY_COLUMNS = ("entry", "backbone", "size", "data", "images", "layers", "views", "pool", "dtype", "MB", "partial")
VERIFY_COLUMNS = ("entry", "status", "problems", "notes")
UNREADABLE = "UNREADABLE: "  # how an entry folder that cannot be read shows in `backbone`, before the reason


def entries_table(cache: Cache) -> pd.DataFrame:
    """One row per entry folder, most recent first (ENTRY_COLUMNS); an unreadable one says why in `backbone`.

    size : the model input side in pixels ("HxW" if not square), so entries of one backbone at several
    `--input-size` tell apart. views : augmented views stored (beyond the identity). partial : True while an interrupted extraction pass waits to be resumed ("unreadable" if its record is).
    """
    rows = []
    for folder, entry, problem in cache.scan():
        if entry is None:
            rows.append({"entry": folder.name, "backbone": f"{UNREADABLE}{problem}"})
            continue
        try:
            partial = PassLog.summary(entry) is not None
        except FeatxError:
            partial = "unreadable"
        rows.append(
            {
                "entry": entry.name,
                "backbone": entry.settings["backbone"],
                "size": _input_size(entry.settings.get("input_size")),
                "data": entry.data_label,
                "images": len(entry.labels),
                "layers": len(entry.layers),
                "views": max(0, len(entry.views) - 1),
                "pool": entry.settings["pool"],
                "dtype": entry.settings["dtype"],
                "MB": round(entry.size_bytes() / 1e6, 1),
                "partial": partial,
            }
        )
    return pd.DataFrame(rows, columns=list(ENTRY_COLUMNS))


def _input_size(size) -> str:
    """An entry's input_size [height, width] as "300" (square) or "240x320"; "" where the entry has none."""
    if not size:
        return ""
    height, width = size
    return str(height) if height == width else f"{height}x{width}"


def verify_all(cache: Cache, spec=None) -> pd.DataFrame:
    """`verify` every entry folder of the cache (or the one `spec` names): one row each (VERIFY_COLUMNS).

    status : "ok" or "FAIL"; problems : a list of lines (empty when ok); notes : images, layers, bad files,
    any interrupted pass of a sound entry, and why `predict` would refuse to rebuild its backbone here (a weights
    or model file that is missing or not the one extracted with: it lies outside the cache, so it is no FAIL).
    """
    rows = []
    for folder in [cache.find(spec)] if spec else cache.folders():
        problems = verify(folder)
        notes = "" if problems else _notes(CacheEntry(folder, cache))
        rows.append(
            {"entry": folder.name, "status": "FAIL" if problems else "ok", "problems": problems, "notes": notes}
        )
    return pd.DataFrame(rows, columns=list(VERIFY_COLUMNS))


def _notes(entry: CacheEntry) -> str:
    views = entry.views
    notes = [
        f"{len(entry.labels)} images",
        f"{len(entry.layers)} layer(s)",
        f"{len(views) - 1} augmented view(s)" if len(views) > 1 else "",
        f"{len(entry.errors)} bad file(s)",
        PassLog.summary(entry),
    ]
    problem = backbone_file_problem(entry.backbone_args)
    if problem:
        notes.append(f"predict would refuse it here: {problem}")
    return ", ".join(str(n) for n in notes if n)

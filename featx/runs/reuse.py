"""Fits already in the runs log: a pipeline re-run reuses them instead of fitting and logging them again.

A logged run stands for a new fit when it was made on the same cache entry (its key: the same features)
with the same split (its split_fingerprint: the same train/val/test rows; a run logged before featx recorded
splits never stands for one), the same resolved layers, and the same spec_hash: the content hash of its FitSpec and
Evaluation (featx.selection.spec.spec_hash), which the log stores beside them. Training is deterministic given
those, so refitting would only append a duplicate row and model. Whichever front door built a spec (a pipeline
step, `featx fit`, featx.fit), the same fit has the same hash; a run logged before featx kept hashes never matches.
"""

from __future__ import annotations

import pandas as pd

from featx.selection.spec import Evaluation, FitSpec, spec_hash


def logged_runs(
    table: pd.DataFrame,
    key: str,
    jobs: list[tuple[list[str], FitSpec]],
    evaluation: Evaluation | None = None,
    *,
    split: str,
) -> list[str] | None:
    """The run ids logged for every (layer names, spec) of `jobs`, judged by `evaluation`, on the entry with cache key
    `key`, in job order (the most recent one where a fit was logged twice); None as soon as one job has no logged run.
    split : the entry's split_fingerprint now, which a logged run must have been made on."""
    if "spec_hash" not in table:
        return None
    same_entry = table[(table["cache_key"] == key) & (table["split_fingerprint"] == split)]
    found = []
    for names, spec in jobs:
        rows = same_entry[
            (same_entry["layer_names"] == ",".join(names)) & (same_entry["spec_hash"] == spec_hash(spec, evaluation))
        ]
        if rows.empty:
            return None
        found.append(str(rows["run_id"].iloc[-1]))
    return found

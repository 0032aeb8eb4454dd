"""Fits already in the runs log: a pipeline re-run reuses them instead of fitting and logging them again.

A logged run stands for a new fit when it was made on the same cache entry (its key: the same features)
with the same split (its split_fingerprint: the same train/val/test rows; a run logged before featx recorded
splits never stands for one), the same resolved layers, and the same FitSpec (classifier, parameters, transforms,
views, tta, seed);
training is deterministic given those, so refitting would only append a duplicate row and model. A plain
run never stands for a views run, nor the other way round.
"""

from __future__ import annotations

import pandas as pd

from featx.experiments.fit import FitSpec


def logged_runs(table: pd.DataFrame, key: str, jobs: list[tuple[list[str], FitSpec]],
                cv: str | None = None, *, split: str) -> list[str] | None:
    """The run ids logged for every (layer names, spec) of `jobs` on the entry with cache key `key`, in job
    order (the most recent one where a fit was logged twice); None as soon as one job has no logged run.
    cv : the cross-validation the step asks for ("cv5x1"), which a logged run must have (None: none).
    split : the entry's split_fingerprint now, which a logged run must have been made on."""
    same_entry = table[(table["cache_key"] == key) & (table["split_fingerprint"] == split)]
    same_entry = same_entry[same_entry["cv"] == cv] if cv else same_entry[same_entry["cv"].isna()]
    found = []
    for names, spec in jobs:
        rows = same_entry[(same_entry["layer_names"] == ",".join(names)) & (same_entry["classifier"] == spec.classifier)
                          & (same_entry["params"] == spec.params_json())
                          & (same_entry["transforms"] == spec.transforms_label())
                          & (same_entry["views"] == spec.views_label())
                          & (pd.to_numeric(same_entry["tta"], errors="coerce") == int(spec.tta))
                          & (pd.to_numeric(same_entry["seed"], errors="coerce") == spec.seed)]
        if rows.empty:
            return None
        found.append(str(rows["run_id"].iloc[-1]))
    return found

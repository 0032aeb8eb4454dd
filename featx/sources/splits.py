"""Seeded, stratified splits: every later experiment must train and test on the same rows."""

from __future__ import annotations

import numpy as np

from featx.errors import FeatxError

SPLITS = ("train", "val", "test")
MIN_PER_CLASS = 3  # one image each for train, val and test


def stratified_split(labels: np.ndarray, class_names, fractions=(0.7, 0.15, 0.15), seed: int = 0) -> np.ndarray:
    """Assign each row to train/val/test, per class, with at least one image of each class in val and test.

    labels : int ndarray of shape (n,). Returns a str ndarray of shape (n,).
    """
    fractions = np.asarray(fractions, dtype=float)
    if fractions.shape != (3,) or np.any(fractions < 0) or not np.isclose(fractions.sum(), 1.0):
        raise FeatxError(
            f"split fractions {list(fractions)} must be three non-negative numbers summing to 1, e.g. 0.7,0.15,0.15"
        )
    needed = 1 + int(np.count_nonzero(fractions[1:] > 0))
    rng = np.random.default_rng(seed)
    split = np.empty(len(labels), dtype="<U5")
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        if len(rows) < needed:
            raise FeatxError(
                f"class '{class_names[label]}' has {len(rows)} image(s); a stratified train/val/test split needs at "
                f"least {needed} per class: add images, remove the class, or give a split column in a CSV manifest"
            )
        n_val, n_test = (max(int(f > 0), int(round(f * len(rows)))) for f in fractions[1:])
        split[rows] = "train"
        split[rows[:n_val]] = "val"
        split[rows[n_val : n_val + n_test]] = "test"
    return split


def subsample(labels: np.ndarray, limit: int, seed: int = 0) -> np.ndarray:
    """Sorted row indices of a stratified sample of exactly `limit` rows.

    Proportional per class, but at least MIN_PER_CLASS of each class (or all it has), so that the subset still
    takes a stratified train/val/test split; a `limit` below that sum is refused, naming the smallest that works.
    """
    if limit <= 0:
        raise FeatxError(f"--limit {limit} must be a positive number of images")
    if limit >= len(labels):
        return np.arange(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    floor = np.minimum(counts, MIN_PER_CLASS)
    if limit < floor.sum():
        raise FeatxError(
            f"--limit {limit} is too small for {len(classes)} classes: a stratified split needs "
            f"{MIN_PER_CLASS} images of each; use --limit {floor.sum()} or more"
        )
    quota = _quotas(counts, floor, limit)
    rng = np.random.default_rng(seed)
    rows = [rng.choice(np.flatnonzero(labels == c), size=q, replace=False) for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(rows))


def _quotas(counts: np.ndarray, floor: np.ndarray, limit: int) -> np.ndarray:
    """Per-class sizes summing to `limit`: in proportion to the class sizes, except that a class whose share is
    below its floor gets the floor and the others share what is left (then largest remainders round)."""
    lifted = np.zeros(len(counts), dtype=bool)
    while True:
        share = counts * (limit - floor[lifted].sum()) / counts[~lifted].sum()
        below = ~lifted & (share < floor)
        if not below.any():
            break
        lifted |= below
    share = np.where(lifted, floor, np.minimum(share, counts))
    quota = np.floor(share).astype(int)
    while quota.sum() < limit:  # fewer rows than classes: the largest remainders (never past a class size)
        quota[np.argmax(np.where(quota < counts, share - quota, -np.inf))] += 1
    return quota

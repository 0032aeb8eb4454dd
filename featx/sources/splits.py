"""Seeded, stratified splits: every later experiment must train and test on the same rows."""

from __future__ import annotations

import numpy as np

from featx.errors import FeatxError

SPLITS = ("train", "val", "test")


def stratified_split(labels: np.ndarray, class_names, fractions=(0.7, 0.15, 0.15), seed: int = 0) -> np.ndarray:
    """Assign each row to train/val/test, per class, with at least one image of each class in val and test.

    labels : int ndarray of shape (n,). Returns a str ndarray of shape (n,).
    """
    fractions = np.asarray(fractions, dtype=float)
    if fractions.shape != (3,) or np.any(fractions < 0) or not np.isclose(fractions.sum(), 1.0):
        raise FeatxError(f"split fractions {list(fractions)} must be three non-negative numbers summing to 1, e.g. 0.7,0.15,0.15")
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
    """Sorted row indices of a stratified sample of `limit` rows (proportional per class, at least 3 per class)."""
    if limit <= 0:
        raise FeatxError(f"--limit {limit} must be a positive number of images")
    if limit >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    share = counts * limit / len(labels)
    quota = np.floor(share).astype(int)
    quota[np.argsort(quota - share)[: limit - quota.sum()]] += 1  # largest remainders get the leftover rows
    quota = np.maximum(np.minimum(counts, 3), quota)
    rows = [rng.choice(np.flatnonzero(labels == c), size=q, replace=False) for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(rows))

"""An ImageSet is the ordered image list every later stage agrees on, whatever the data came from."""

from __future__ import annotations

import csv
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featx.errors import FeatxError
from featx.sources.splits import SPLITS, stratified_split, subsample

BUILTIN_SOURCES = ("elpv",)
ELPV_CLASSES = {0.0: "functional", 1 / 3: "possibly_defective", 2 / 3: "likely_defective", 1.0: "defective"}


@dataclass
class ImageSet:
    """Files, labels and split of a data set.

    root : folder that `relpaths` are relative to (stored paths stay valid if the data moves).
    relpaths : list of n paths relative to root, in row order.
    labels : int ndarray of shape (n,), indexes into class_names.
    split : str ndarray of shape (n,) with "train"/"val"/"test", or None until a split is made.
    """

    root: str
    relpaths: list[str]
    labels: np.ndarray
    class_names: list[str]
    description: str
    split: np.ndarray | None = None
    split_settings: dict = field(default_factory=dict)

    @property
    def paths(self) -> list[str]:
        return [os.path.join(self.root, p) for p in self.relpaths]

    def __len__(self) -> int:
        return len(self.relpaths)

    def ensure_split(self, fractions=(0.7, 0.15, 0.15), seed=0) -> None:
        """Make the seeded stratified split unless the source gave one."""
        if self.split is None:
            self.split = stratified_split(self.labels, self.class_names, fractions, seed)
            self.split_settings = {"kind": "stratified", "fractions": list(fractions), "seed": seed}

    def take(self, limit: int, seed: int = 0) -> ImageSet:
        """A stratified subsample of `limit` images (row order kept), for quick runs."""
        rows = subsample(self.labels, limit, seed)
        return ImageSet(
            root=self.root,
            relpaths=[self.relpaths[i] for i in rows],
            labels=self.labels[rows],
            class_names=self.class_names,
            description=f"{self.description} (stratified subset of {len(rows)}, seed {seed})",
            split=None if self.split is None else self.split[rows],
            split_settings=self.split_settings,
        )


def resolve_source(spec: str) -> ImageSet:
    """`spec` is a built-in name (elpv), a CSV manifest, or a folder with one subfolder per class."""
    if spec in BUILTIN_SOURCES:
        return elpv_source()
    path = Path(spec)
    if path.is_dir():
        return folder_source(path)
    if path.suffix.lower() == ".csv" and path.is_file():
        return manifest_source(path)
    hint = difflib.get_close_matches(spec, BUILTIN_SOURCES, n=1)
    extra = f"; did you mean {hint[0]}?" if hint else ""
    raise FeatxError(
        f"data '{spec}' is not a folder, a .csv manifest or a built-in source ({', '.join(BUILTIN_SOURCES)}){extra}"
    )


def folder_source(root: Path) -> ImageSet:
    """One subfolder per class; every non-hidden file in it is an image (bad ones are caught at decode)."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise FeatxError(f"data folder '{root}' has no class subfolders; put each class's images in its own subfolder")
    relpaths, labels = [], []
    for label, name in enumerate(classes):
        for dirpath, dirnames, filenames in os.walk(root / name):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fname in sorted(filenames):
                if not fname.startswith("."):
                    relpaths.append(os.path.relpath(os.path.join(dirpath, fname), root))
                    labels.append(label)
    _check_not_empty(relpaths, root)
    for rel in relpaths:
        try:
            rel.encode("utf-8")
        except UnicodeEncodeError:  # bytes from another encoding: no stored path could name it
            shown = os.fsencode(rel).decode("utf-8", "backslashreplace")
            raise FeatxError(f"file name '{shown}' in '{root}' is not valid UTF-8; rename it (e.g. convmv -f latin1 -t utf8)") from None
    return ImageSet(str(root.resolve()), relpaths, np.asarray(labels, dtype=np.int64), classes, f"folder {root}")


def manifest_source(csv_path: Path) -> ImageSet:
    """CSV with columns path,label[,split]; paths are relative to the CSV's folder and must stay inside it."""
    root = csv_path.resolve().parent
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in ("path", "label") if c not in columns]
        if missing:
            raise FeatxError(
                f"manifest '{csv_path}' lacks column(s) {', '.join(missing)} (has: {', '.join(columns) or 'none'}); "
                "the header must be path,label[,split]"
            )
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    _check_not_empty(rows, csv_path)
    relpaths = []
    for line, row in enumerate(rows, start=2):
        full = (root / row["path"]).resolve()
        if not full.is_relative_to(root):
            raise FeatxError(
                f"manifest '{csv_path}' line {line}: path '{row['path']}' is outside the manifest's folder; "
                "put the images under the CSV's folder and use relative paths"
            )
        relpaths.append(os.path.relpath(full, root))
    class_names = sorted({row["label"] for row in rows})
    labels = np.asarray([class_names.index(row["label"]) for row in rows], dtype=np.int64)
    image_set = ImageSet(str(root), relpaths, labels, class_names, f"manifest {csv_path}")
    if "split" in columns:
        split = np.asarray([row["split"] for row in rows])
        bad = sorted(str(v) for v in set(split) - set(SPLITS))
        if bad:
            raise FeatxError(f"manifest '{csv_path}' has split value(s) {bad}; use only {', '.join(SPLITS)}")
        image_set.split, image_set.split_settings = split, {"kind": "manifest"}
    return image_set


def elpv_source() -> ImageSet:
    """The ELPV solar-cell set (2,624 real 300x300 electroluminescence images, 4 defect classes) from its PyPI package."""
    try:
        import elpv_dataset
    except ImportError:
        raise FeatxError("built-in data 'elpv' needs its package: pip install elpv-dataset") from None
    root = Path(elpv_dataset.__file__).parent / "data"
    names = list(ELPV_CLASSES.values())
    probabilities = np.asarray(list(ELPV_CLASSES))
    relpaths, labels = [], []
    with open(root / "labels.csv", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                path, probability, _cell_type = line.split()
                relpaths.append(path)
                labels.append(int(np.argmin(np.abs(probabilities - float(probability)))))
    return ImageSet(str(root), relpaths, np.asarray(labels, dtype=np.int64), names, "built-in elpv (elpv-dataset)")


def _check_not_empty(items, where) -> None:
    if not items:
        raise FeatxError(f"no images found in '{where}'; point --data at a folder of class subfolders or a CSV manifest")

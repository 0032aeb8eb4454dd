"""An ImageSet is the ordered image list every later stage agrees on, whatever the data came from."""

from __future__ import annotations

import csv
import difflib
import io
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
        """A stratified subsample of `limit` images (row order kept), for quick runs; this set itself when `limit` is
        at least its size (the caller says so: see featx.extractor)."""
        if limit >= len(self):
            return self
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
            raise FeatxError(
                f"file name '{shown}' in '{root}' is not valid UTF-8; rename it (e.g. convmv -f latin1 -t utf8)"
            ) from None
    return ImageSet(str(root.resolve()), relpaths, np.asarray(labels, dtype=np.int64), classes, f"folder {root}")


def manifest_source(csv_path: Path) -> ImageSet:
    """CSV with columns path,label[,split]; paths are relative to the CSV's folder and must stay inside it."""
    root = csv_path.resolve().parent
    rows, lines, columns = _read_manifest(csv_path)
    _check_not_empty(rows, csv_path)
    for column in ("path", "label") + (("split",) if "split" in columns else ()):
        empty = [line for line, row in zip(lines, rows) if not row.get(column)]
        if empty:
            raise FeatxError(
                f"manifest '{csv_path}' {_name_lines(empty)}: empty {column}; give every row a {column}"
                + (" or drop the split column" if column == "split" else "")
            )
    relpaths = []
    for line, row in zip(lines, rows):
        full = (root / row["path"]).resolve()
        if not full.is_relative_to(root):
            raise FeatxError(
                f"manifest '{csv_path}' line {line}: path '{row['path']}' is outside the manifest's folder; "
                "put the images under the CSV's folder and use relative paths"
            )
        relpaths.append(os.path.relpath(full, root))
    _check_unique(csv_path, relpaths, [row["label"] for row in rows], lines)
    class_names = sorted({row["label"] for row in rows})
    labels = np.asarray([class_names.index(row["label"]) for row in rows], dtype=np.int64)
    image_set = ImageSet(str(root), relpaths, labels, class_names, f"manifest {csv_path}")
    if "split" in columns:
        split = np.asarray([row["split"] for row in rows])
        bad = [line for line, value in zip(lines, split) if value not in SPLITS]
        if bad:
            values = sorted({str(v) for v in split} - set(SPLITS))
            raise FeatxError(
                f"manifest '{csv_path}' {_name_lines(bad)}: split value(s) {values}; use only {', '.join(SPLITS)}"
            )
        image_set.split, image_set.split_settings = split, {"kind": "manifest"}
    return image_set


def _read_manifest(csv_path: Path) -> tuple[list[dict], list[int], list[str]]:
    """Rows (stripped fields), each row's line number, and the header's columns; malformed text names its line."""
    raw = csv_path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # a BOM, as Excel writes "CSV UTF-8", is not part of the first column's name
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise FeatxError(
            f"manifest '{csv_path}' line {line} is not UTF-8 text (byte 0x{raw[exc.start]:02x}); "
            "save the manifest as UTF-8"
        ) from None
    if "\0" in text:
        line = text.count("\n", 0, text.index("\0")) + 1
        raise FeatxError(
            f"manifest '{csv_path}' line {line} contains a NUL byte (a binary file?); "
            "give a plain-text CSV with columns path,label[,split]"
        )
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows, lines = [], []
    try:
        columns = [c.strip() for c in (reader.fieldnames or [])]
        repeated = [c for c in ("path", "label", "split") if columns.count(c) > 1]
        if repeated:  # csv would silently keep the last one
            raise FeatxError(
                f"manifest '{csv_path}' has {columns.count(repeated[0])} '{repeated[0]}' columns in its "
                f"header; keep one '{repeated[0]}' column (rename or delete the others)"
            )
        missing = [c for c in ("path", "label") if c not in columns]
        if missing:
            raise FeatxError(
                f"manifest '{csv_path}' lacks column(s) {', '.join(missing)} (has: {', '.join(columns) or 'none'}); "
                "the header must be path,label[,split]"
            )
        for row in reader:
            rows.append({k.strip(): (v or "").strip() for k, v in row.items() if k})
            lines.append(reader.line_num)
    except csv.Error as exc:  # e.g. a field over csv's size limit: a binary or mangled file
        raise FeatxError(
            f"manifest '{csv_path}' line {reader.line_num + 1}: {exc}; "  # line_num: lines completed
            "give a plain-text CSV with columns path,label[,split]"
        ) from None
    return rows, lines, columns


def _check_unique(csv_path: Path, relpaths: list[str], labels: list[str], lines: list[int]) -> None:
    """One row per image: a file listed twice could land in train and in test (leakage), or carry two labels."""
    rows_of: dict[str, list[int]] = {}
    for i, rel in enumerate(relpaths):
        rows_of.setdefault(rel, []).append(i)
    repeated = {rel: rows for rel, rows in rows_of.items() if len(rows) > 1}
    if not repeated:
        return
    others = f" (and {len(repeated) - 1} more repeated path(s))" if len(repeated) > 1 else ""
    conflicts = {rel: rows for rel, rows in repeated.items() if len({labels[i] for i in rows}) > 1}
    if conflicts:
        rel, rows = next(iter(conflicts.items()))
        given = ", ".join(f"line {lines[i]}: '{labels[i]}'" for i in rows)
        raise FeatxError(
            f"manifest '{csv_path}' gives '{rel}' different labels ({given}){others}; "
            "keep one row per image with its correct label"
        )
    rel, rows = next(iter(repeated.items()))
    raise FeatxError(
        f"manifest '{csv_path}' lists '{rel}' more than once ({_name_lines([lines[i] for i in rows])}){others}; "
        "keep one row per image, or one image could land in both train and test"
    )


def _name_lines(lines: list[int], shown: int = 5) -> str:
    more = f" and {len(lines) - shown} more" if len(lines) > shown else ""
    return ("line " if len(lines) == 1 else "lines ") + ", ".join(str(n) for n in lines[:shown]) + more


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
        raise FeatxError(
            f"no images found in '{where}'; point --data at a folder of class subfolders or a CSV manifest"
        )

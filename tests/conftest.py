"""Shared fixtures: real images (ELPV solar cells, scikit-image photos) and small caches built once."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def elpv_folder(tmp_path_factory):
    """A small class-folder data set of real ELPV images (3 classes x 6), copied so tests may modify it."""
    from featx.sources import resolve_source

    source = resolve_source("elpv")
    root = tmp_path_factory.mktemp("elpv_folder")
    for label in range(3):
        (root / source.class_names[label]).mkdir()
        for rel in [p for p, l in zip(source.relpaths, source.labels) if l == label][:6]:
            Image.open(os.path.join(source.root, rel)).save(root / source.class_names[label] / os.path.basename(rel))
    return root


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory):
    """Real photos from scikit-image, two classes, for content-dependent checks."""
    from skimage import data

    root = tmp_path_factory.mktemp("photos")
    photos = {"animal": [data.chelsea(), data.cat(), data.astronaut()], "object": [data.coffee(), data.rocket(), data.immunohistochemistry()]}
    for label, images in photos.items():
        (root / label).mkdir()
        for i, img in enumerate(images):
            Image.fromarray(np.asarray(img)).save(root / label / f"{i}.jpg", quality=92)
    return root


# Tests that use one of these fixtures pay for a real extraction (or a killed-and-resumed one) and are marked
# slow here, in one place, rather than one decorator per test; `-m "not slow and not benchmark"` skips them.
SLOW_FIXTURES = {
    "elpv_cache": "extracts 240 ELPV images through EfficientNet-Lite0 (~35 s on 2 cores)",
    "lite_cache": "extracts the ELPV folder through EfficientNet-Lite0",
    "reference": "an uninterrupted extraction in a subprocess, compared bit for bit with killed ones",
}


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES.keys() & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)


ELPV_LIMIT = 240  # stratified ELPV subset: 166 train / 37 val / 37 test images, ~10 s through EfficientNet-Lite0
ELPV_LAYERS = "blocks,top_activation"


@pytest.fixture(scope="session")
def elpv_cache(tmp_path_factory):
    """A cache folder with ELPV features of the embedded default backbone (real packaged ImageNet weights),
    extracted once per session; experiment tests only read it (and log their runs into it)."""
    import featx

    cache_dir = tmp_path_factory.mktemp("elpv_cache")
    featx.extract("elpv", layers=ELPV_LAYERS, limit=ELPV_LIMIT, cache_dir=cache_dir, progress=False, log=lambda *a: None)
    return cache_dir


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's digits scaled to [0, 1] with a stratified train/val/test split array, as a cache entry
    gives its rows: (X of shape (1797, 64), y of shape (1797,), split of shape (1797,))."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    rows = np.arange(len(y))
    rest, test = train_test_split(rows, test_size=0.3, random_state=0, stratify=y)
    train, val = train_test_split(rest, test_size=0.25, random_state=0, stratify=y[rest])
    order = np.concatenate([train, val, test])  # rows grouped by split, each in train_test_split's order
    split = np.repeat(np.array(["train", "val", "test"]), [len(train), len(val), len(test)])
    return X[order] / 16.0, y[order], split

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

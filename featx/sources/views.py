"""Views: deterministic augmentations of one decoded image, cached as extra rows of an entry.

Augmentation is lost the moment features are cached, unless the augmented images are cached too. A view is
named by everything that decides its pixels, so a name is its definition:

    id                        the image as decoded
    hflip vflip rot90 rot180 rot270 transpose transverse     the other 7 elements of the dihedral group D4
    crop<k>                   fixed crop k (k = 1..9): side CROP_SIDE of the image, at the centre, then the
                              corners, then the edge midpoints; resized back to the input size (crops:K = crop1..K)
    rand<k>s<S>               seeded random view k with seed S: random-resized crop (area RAND_AREA, aspect
                              RAND_RATIO), horizontal flip with probability 1/2, brightness and contrast jitter
                              RAND_JITTER; drawn from (S, k, a digest of the image's pixels), so the same image
                              gets the same view in any entry, batch or process

Views are computed from the decoded, resized image (one decode per image whatever the number of views), and
the view pipeline is versioned by VIEWS_VERSION, stored with every view's layer file.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
from PIL import Image

from featx.errors import FeatxError

VIEWS_VERSION = 1  # bump whenever a view name may give other pixels
IDENTITY = "id"
D4 = ("id", "rot90", "rot180", "rot270", "hflip", "vflip", "transpose", "transverse")
FAMILIES = {"flip": ("id", "hflip"), "d4": D4}
MAX_CROPS = 9
MAX_RAND = 64  # rand:K: each view is one more forward pass over every image and one more copy of every layer
CROP_SIDE = 0.8
RAND_AREA, RAND_RATIO, RAND_JITTER = (0.5, 1.0), (3 / 4, 4 / 3), 0.1
SPEC_HELP = (
    "flip (2 views), d4 (the 8 rotations/flips), crops:K (K fixed crops, K <= 9), rand:K (K seeded random "
    "crops+flip+jitter, K <= 64); comma-separated to combine, e.g. flip,crops:5; the identity view is always included"
)

_CROP = re.compile(r"crop([1-9])")
_RAND = re.compile(r"rand([1-9][0-9]*)s([0-9]+)")


def parse_views(spec: str | None, seed: int = 0) -> tuple[str, ...]:
    """View names of a spec, identity first, each once, in the spec's order.

    spec : None, "none" or "id" (identity only), or a comma list of flip, d4, crops:K, rand:K and view names.
    seed : the seed of rand:K views (view names carry it: rand1s<seed>), 0 or more.
    """
    if int(seed) < 0:
        raise FeatxError(f"--view-seed {seed} must be 0 or more")
    names = [IDENTITY]
    for part in filter(None, (p.strip() for p in str(spec or IDENTITY).split(","))):
        family, _, count = part.partition(":")
        if part in ("none", IDENTITY):
            continue
        if family in FAMILIES and not count:
            names += FAMILIES[family]
        elif family in ("crops", "rand") and count:
            k = _count(part, count, MAX_CROPS if family == "crops" else MAX_RAND)
            names += [f"crop{i}" if family == "crops" else f"rand{i}s{int(seed)}" for i in range(1, k + 1)]
        elif is_view(part):
            names.append(part)
        else:
            raise FeatxError(f"unknown views '{part}'; use {SPEC_HELP}")
    return tuple(dict.fromkeys(names))


def _count(part: str, count: str, limit: int) -> int:
    if not (count.isascii() and count.isdigit()) or len(count) > 6 or not 1 <= int(count) <= limit:
        raise FeatxError(f"views '{part}' needs a count from 1 to {limit}; e.g. {part.partition(':')[0]}:5")
    return int(count)


def is_view(name: str) -> bool:
    return name in D4 or bool(_CROP.fullmatch(name)) or bool(_RAND.fullmatch(name))


def sort_views(names) -> list[str]:
    """Views in a stable order: identity, D4, crops by k, random views by seed and k."""

    def rank(name):
        if name in D4:
            return (0, D4.index(name), 0)
        crop, rand = _CROP.fullmatch(name), _RAND.fullmatch(name)
        return (1, 0, int(crop[1])) if crop else (2, int(rand[2]), int(rand[1]))

    return sorted(names, key=rank)


def apply_views(image: np.ndarray, views) -> np.ndarray:
    """image : uint8 (h, w, 3) -> uint8 (V, h, w, 3), one slice per view name, in the order given."""
    key = int.from_bytes(hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=8).digest(), "little")
    return np.stack([view_of(image, name, key) for name in views])


def view_of(image: np.ndarray, name: str, key: int) -> np.ndarray:
    """One view of `image` (uint8, (h, w, 3)); key : the image's pixel digest (apply_views computes it)."""
    if name == IDENTITY:
        return image
    if name in D4:
        return _fit(_D4_OPS[name](image), image.shape)
    crop = _CROP.fullmatch(name)
    if crop:
        return _crop_fixed(image, int(crop[1]) - 1)
    rand = _RAND.fullmatch(name)
    if rand:
        return _random_view(image, np.random.default_rng([int(rand[2]), int(rand[1]), key]))
    raise FeatxError(f"unknown view '{name}'; use {SPEC_HELP}")


_D4_OPS = {
    "rot90": lambda a: np.rot90(a, 1),
    "rot180": lambda a: np.rot90(a, 2),
    "rot270": lambda a: np.rot90(a, 3),
    "hflip": lambda a: a[:, ::-1],
    "vflip": lambda a: a[::-1],
    "transpose": lambda a: a.transpose(1, 0, 2),
    "transverse": lambda a: np.rot90(a, 2).transpose(1, 0, 2),
}


# The D4 views of a batch (batch, h, w, c) as index operations, for a Keras graph (keras_view): (whether to swap rows
# and columns first, then the axes to flip: 1 the rows, 2 the columns), the same pixels as _D4_OPS on one image
_D4_GRAPH = {
    "hflip": (False, (2,)),
    "vflip": (False, (1,)),
    "rot90": (True, (1,)),
    "rot180": (False, (1, 2)),
    "rot270": (True, (2,)),
    "transpose": (True, ()),
    "transverse": (True, (1, 2)),  # rot180 then transpose: the flips commute with the transpose
}


def graph_views(views, size: tuple[int, int]) -> str | None:
    """Why `views` cannot be computed inside a Keras graph exactly as view_of computes them, or None when they can.

    The identity and the D4 views on a square input are index operations (keras_view); a rotation of a non-square
    image, a crop and a random view are resized back by Pillow, whose interpolation a graph does not reproduce.
    """
    for name in views:
        if name == IDENTITY or (name in _D4_GRAPH and (not _D4_GRAPH[name][0] or size[0] == size[1])):
            continue
        if name in D4:
            return f"view {name} of a {size[0]}x{size[1]} (non-square) input is resized by Pillow"
        return f"view {name} is resized by Pillow"
    return None


def keras_view(images, name: str):
    """View `name` of a batch of images (a Keras tensor (batch, h, w, c)) with keras.ops, pixel for pixel as
    view_of; only the views graph_views accepts."""
    from keras import ops

    if name == IDENTITY:
        return images
    if name not in _D4_GRAPH:
        raise FeatxError(f"view {name} has no exact in-graph form (see graph_views)")
    swap, flips = _D4_GRAPH[name]
    if swap:
        images = ops.transpose(images, (0, 2, 1, 3))
    for axis in flips:
        images = ops.flip(images, axis=axis)
    return images


def _fit(array: np.ndarray, shape) -> np.ndarray:
    """A rotated non-square image resized back to the input size (square inputs are unchanged)."""
    array = np.ascontiguousarray(array)
    if array.shape == tuple(shape):
        return array
    return np.asarray(Image.fromarray(array).resize((shape[1], shape[0]), Image.BILINEAR))


def _resized_crop(image: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    h, w = image.shape[:2]
    box = Image.fromarray(np.ascontiguousarray(image[top : top + height, left : left + width]))
    return np.asarray(box.resize((w, h), Image.BILINEAR))


def _crop_fixed(image: np.ndarray, index: int) -> np.ndarray:
    """Crop `index` of: centre, top-left, top-right, bottom-left, bottom-right, top, bottom, left, right."""
    h, w = image.shape[:2]
    ch, cw = max(1, round(h * CROP_SIDE)), max(1, round(w * CROP_SIDE))
    rows = {"t": 0, "m": (h - ch) // 2, "b": h - ch}
    cols = {"l": 0, "m": (w - cw) // 2, "r": w - cw}
    where = ("mm", "tl", "tr", "bl", "br", "tm", "bm", "ml", "mr")[index]
    return _resized_crop(image, rows[where[0]], cols[where[1]], ch, cw)


def _random_view(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = image.shape[:2]
    area = rng.uniform(*RAND_AREA) * h * w
    ratio = np.exp(rng.uniform(np.log(RAND_RATIO[0]), np.log(RAND_RATIO[1])))
    ch = int(np.clip(round(np.sqrt(area / ratio)), 1, h))
    cw = int(np.clip(round(np.sqrt(area * ratio)), 1, w))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    flip, brightness, contrast = rng.random() < 0.5, *rng.uniform(1 - RAND_JITTER, 1 + RAND_JITTER, size=2)
    out = _resized_crop(image, top, left, ch, cw)
    out = out[:, ::-1] if flip else out
    values = out.astype(np.float32) * np.float32(brightness)
    values = (values - values.mean(dtype=np.float32)) * np.float32(contrast) + values.mean(dtype=np.float32)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)

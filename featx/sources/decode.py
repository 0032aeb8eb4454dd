"""Decode any image file a user may have into a fixed-size RGB array, or say exactly why it cannot be.

Pillow rather than tf.io.decode_image: it names the problem with a bad file (truncated, not an image,
CMYK, 16-bit, palette) instead of failing the whole tf.data pipeline, and its JPEG draft mode decodes a
huge photo at reduced scale. tf.data runs this in parallel (see featx.extractor).
"""

from __future__ import annotations

import os
import stat
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_PIXELS = 250_000_000  # a 15,000 x 15,000 image; larger is refused rather than risking memory
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


def load_rgb(path: str, size: tuple[int, int]) -> np.ndarray:
    """Return a uint8 array of shape (height, width, 3). Raises ValueError with a short reason."""
    height, width = size
    try:
        info = os.stat(path)
    except OSError as exc:  # vanished, dangling link, no permission on a folder
        raise ValueError(f"cannot read file: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):  # a folder, FIFO or device: opening a FIFO would block forever
        raise ValueError("not a regular file")
    if info.st_size == 0:
        raise ValueError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # refuse, don't just warn, above MAX_PIXELS
            with Image.open(path) as img:
                img.draft("RGB", (width, height))  # JPEG only: decode at >= the target size, much faster
                img.load()
                # resize before widening gray to RGB: a third of the pixels to interpolate, the same result
                small = _to_8bit(img).resize((width, height), Image.BILINEAR)
                return np.asarray(small if small.mode == "RGB" else small.convert("RGB"), dtype=np.uint8)
    except UnidentifiedImageError:
        raise ValueError("not an image file Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ValueError(f"image larger than {MAX_PIXELS:,} pixels") from None
    except OSError as exc:
        if exc.errno is not None:  # the file itself: permission denied, vanished, I/O error
            raise ValueError(f"cannot read file: {exc.strerror}") from None
        raise ValueError(f"cannot decode: {exc}") from None  # truncated data, broken headers
    except Exception as exc:  # noqa: BLE001  Pillow plugins raise many types on malformed files; one bad file must not stop a run
        raise ValueError(f"cannot decode: {type(exc).__name__}: {exc}") from None


def _to_8bit(img: Image.Image) -> Image.Image:
    """Gray ("L") or RGB: alpha and palette transparency dropped, 16/32-bit and float scaled to 8 bits."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(img, dtype=np.float32)
        scale = 257.0 if img.mode.startswith("I;16") or values.max(initial=0) > 255 else 1.0  # a dark 16-bit image is still 16-bit
        img = Image.fromarray(np.clip(values / scale, 0, 255).astype(np.uint8), mode="L")
    elif img.mode in ("P", "PA", "LA"):
        img = img.convert("RGBA")
    return img if img.mode in ("L", "RGB") else img.convert("RGB")

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
from PIL import Image, ImageOps, UnidentifiedImageError

# Larger is refused rather than risking memory: about 13,400 x 13,400, where Pillow's default limit refuses too
# (twice its MAX_IMAGE_PIXELS; below, it only warns). featx checks the header itself, so its limit holds
# whatever a host program set Pillow's to, and no Pillow global is changed.
MAX_PIXELS = 178_956_970
# part of the cache key: bump whenever the same file may decode to other pixels (2: EXIF orientation; 3: float
# images in [0, 1] scaled to 0-255)
DECODER_VERSION = 3
EXIF_ORIENTATION = 0x0112  # 1 is upright; 2-8 mirror and/or rotate


RESAMPLING = {  # a KerasHub image converter's interpolation names -> Pillow's filters (antialiased when shrinking)
    "nearest": Image.NEAREST,
    "bilinear": Image.BILINEAR,
    "bicubic": Image.BICUBIC,
    "lanczos3": Image.LANCZOS,
    "lanczos5": Image.LANCZOS,
    "area": Image.BOX,
}


def load_rgb(path: str, size: tuple[int, int], *, interpolation: str = "bilinear", crop: bool = False) -> np.ndarray:
    """Return a uint8 array of shape (height, width, 3). Raises ValueError with a short reason.

    interpolation : a RESAMPLING name, the filter that resizes the image to `size`. crop : first take the largest
    centred crop with the aspect ratio of `size` (as keras.layers.Resizing's crop_to_aspect_ratio), instead of
    stretching the whole image to it. The backbone says which (featx.backbones.Backbone.decode_options).
    """
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
            warnings.simplefilter("ignore")  # Pillow's own size warnings: featx checks the size itself, below
            with Image.open(path) as img:
                if img.width * img.height > MAX_PIXELS:  # from the header, before any pixel is decoded
                    raise ValueError(f"image larger than {MAX_PIXELS:,} pixels ({img.width} x {img.height})")
                img.draft("RGB", (width, height))  # JPEG only: decode at >= the target size, much faster
                img.load()
                # resize before widening gray to RGB: a third of the pixels to interpolate, the same result
                img = _upright(img)
                box = _centred_crop(img.width, img.height, width, height) if crop else None
                small = _to_8bit(img).resize((width, height), RESAMPLING[interpolation], box=box)
                return np.asarray(small if small.mode == "RGB" else small.convert("RGB"), dtype=np.uint8)
    except ValueError:
        raise
    except UnidentifiedImageError:
        raise ValueError("not an image file Pillow can read") from None
    except Image.DecompressionBombError:  # Pillow refuses twice its MAX_IMAGE_PIXELS before featx sees the header
        raise ValueError(f"image larger than {MAX_PIXELS:,} pixels") from None
    except OSError as exc:
        if exc.errno is not None:  # the file itself: permission denied, vanished, I/O error
            raise ValueError(f"cannot read file: {exc.strerror}") from None
        raise ValueError(f"cannot decode: {exc}") from None  # truncated data, broken headers
    except Exception as exc:  # noqa: BLE001  Pillow plugins raise many types on malformed files; one bad file must not stop a run
        raise ValueError(f"cannot decode: {type(exc).__name__}: {exc}") from None


def _centred_crop(img_width: int, img_height: int, width: int, height: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the largest box with the aspect ratio width:height centred in the image."""
    crop_width = min(img_width, round(img_height * width / height))
    crop_height = min(img_height, round(img_width * height / width))
    left, top = (img_width - crop_width) // 2, (img_height - crop_height) // 2
    return left, top, left + crop_width, top + crop_height


def _upright(img: Image.Image) -> Image.Image:
    """The image as a viewer shows it: camera JPEGs store pixels sideways plus an EXIF orientation tag."""
    if img.getexif().get(EXIF_ORIENTATION, 1) in (1, None):
        return img  # the common case: no tag, or upright; exif_transpose would copy the pixels
    return ImageOps.exif_transpose(img)


def _to_8bit(img: Image.Image) -> Image.Image:
    """Gray ("L") or RGB: alpha and palette transparency dropped, 16/32-bit and float scaled to 8 bits.

    A float image ("F", e.g. a 32-bit float TIFF) whose values all lie in [0, 1] is taken as 0-1 intensities (the
    common convention for float images) and scaled by 255; other float and 32-bit integer images as 0-255, or as
    16-bit where a value exceeds 255. NaN counts as 0.
    """
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.nan_to_num(np.asarray(img, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        top = values.max(initial=0)
        if img.mode == "F" and values.min(initial=0) >= 0 and top <= 1.0:
            values = np.rint(values * 255.0)  # 0-1 intensities
        else:
            # a dark 16-bit image is still 16-bit
            values = values / (257.0 if img.mode.startswith("I;16") or top > 255 else 1.0)
        img = Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), mode="L")
    elif img.mode in ("P", "PA", "LA"):
        img = img.convert("RGBA")
    return img if img.mode in ("L", "RGB") else img.convert("RGB")

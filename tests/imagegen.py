"""Image files of every kind a user's folder may hold, made from real pictures (ELPV cells, scikit-image photos).

GOOD kinds decode to a known RGB picture; BAD kinds are what a crashed download, a stray file or a full disk
leaves behind. Each writer takes the target path and returns it.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def elpv_images(n: int, n_classes: int = 4) -> list[tuple[str, str, int]]:
    """(absolute path, class name, label) of n real ELPV images, round-robin over the first n_classes classes."""
    from featx.sources import resolve_source

    source = resolve_source("elpv")
    by_class = [
        [
            (os.path.join(source.root, p), source.class_names[l], int(l))
            for p, l in zip(source.relpaths, source.labels)
            if l == label
        ]
        for label in range(n_classes)
    ]
    chosen = []
    for i in range(n):
        group = by_class[i % len(by_class)]
        chosen.append(group[i // len(by_class)])
    return chosen


def copy_elpv_images(root, n: int, n_classes: int = 4) -> list[tuple[str, str]]:
    """Copy n real ELPV images (of the first n_classes classes) into root/<class>/; returns (path relative to root,
    class name) rows."""
    import shutil

    rows = []
    for i, (path, class_name, _) in enumerate(elpv_images(n, n_classes)):
        rel = f"{class_name}/{i:03d}_{os.path.basename(path)}"
        (root / class_name).mkdir(exist_ok=True)
        shutil.copyfile(path, root / rel)
        rows.append((rel, class_name))
    return rows


def photo(name: str = "chelsea") -> np.ndarray:
    """A real RGB photo from scikit-image, uint8 of shape (h, w, 3)."""
    from skimage import data

    return np.asarray(getattr(data, name)())[..., :3]


def gray(index: int = 0) -> np.ndarray:
    """A real grayscale picture (an ELPV cell), uint8 of shape (300, 300)."""
    return np.asarray(Image.open(elpv_images(index + 1)[index][0]).convert("L"))


# ---- GOOD kinds ---------------------------------------------------------------------------------------------


def save_png(path, pixels: np.ndarray) -> Path:
    Image.fromarray(pixels).save(path)
    return Path(path)


def save_cmyk_jpeg(path, rgb: np.ndarray) -> Path:
    Image.fromarray(rgb).convert("CMYK").save(path, "JPEG", quality=95)
    return Path(path)


def save_png16_gray(path, gray8: np.ndarray) -> Path:
    """16-bit grayscale PNG (Pillow mode I;16) holding gray8 * 257: decodes back to gray8 exactly."""
    Image.fromarray(gray8.astype(np.uint16) * 257).save(path)
    return Path(path)


def save_png16_rgb(path, rgb8: np.ndarray) -> Path:
    """48-bit RGB PNG (16 bits per channel) holding rgb8 * 257, written by hand: Pillow cannot write one."""
    height, width, _ = rgb8.shape
    rows = (rgb8.astype(">u2") * 257).reshape(height, width * 3)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)
    Path(path).write_bytes(_png(width, height, bit_depth=16, color_type=2, idat=zlib.compress(raw)))
    return Path(path)


def save_rgba_png(path, rgb: np.ndarray, seed: int = 0) -> Path:
    """RGB plus a random alpha channel: featx drops alpha, so this decodes to `rgb`."""
    alpha = np.random.default_rng(seed).integers(0, 256, rgb.shape[:2], dtype=np.uint8)
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(path)
    return Path(path)


def save_palette_gif(path, rgb: np.ndarray) -> tuple[Path, np.ndarray]:
    """A 256-colour palette GIF; returns it with the RGB picture it decodes to."""
    paletted = Image.fromarray(rgb).quantize(256, dither=Image.Dither.NONE)
    paletted.save(path)
    return Path(path), np.asarray(paletted.convert("RGB"))


def save_huge_jpeg(path, rgb: np.ndarray, side: int = 10_000) -> Path:
    """A side x side photo (100 megapixels at 10,000)."""
    Image.fromarray(rgb).resize((side, side), Image.NEAREST).save(path, "JPEG", quality=75)
    return Path(path)


# ---- BAD kinds ----------------------------------------------------------------------------------------------


def jpeg_bytes(rgb: np.ndarray, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def save_corrupt_jpeg(path, rgb: np.ndarray) -> Path:
    """Valid JPEG markers, garbage Huffman table: Pillow opens it and fails decoding ('broken data stream')."""
    data = bytearray(jpeg_bytes(rgb))
    dht = data.index(b"\xff\xc4")
    data[dht + 4 : dht + 30] = b"\xff" * 26
    Path(path).write_bytes(bytes(data))
    return Path(path)


def save_truncated_jpeg(path, rgb: np.ndarray) -> Path:
    """The first half of a JPEG, as an interrupted download leaves it."""
    data = jpeg_bytes(rgb)
    Path(path).write_bytes(data[: len(data) // 2])
    return Path(path)


def save_empty(path) -> Path:
    Path(path).write_bytes(b"")
    return Path(path)


def save_not_an_image(path) -> Path:
    """An HTML error page saved under an image name, the usual result of a failed download."""
    Path(path).write_text("<!DOCTYPE html><html><body><h1>403 Forbidden</h1></body></html>\n")
    return Path(path)


def save_decompression_bomb(path, side: int = 20_000) -> Path:
    """A few hundred bytes claiming side x side pixels (400 megapixels at 20,000)."""
    idat = zlib.compress(b"\x00" * (side + 1) * 4)  # a few rows; the size check fires before any decoding
    Path(path).write_bytes(_png(side, side, bit_depth=8, color_type=0, idat=idat))
    return Path(path)


def _png(width: int, height: int, bit_depth: int, color_type: int, idat: bytes) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")

"""featx.sources.decode: a float TIFF of 0-1 intensities decodes as its 8-bit original (real ELPV images)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featx.sources import resolve_source
from featx.sources.decode import load_rgb

import imagegen


def test_a_float_tiff_of_0_to_1_intensities_decodes_as_its_8_bit_original(tmp_path):
    path = os.path.join(resolve_source("elpv").root, resolve_source("elpv").relpaths[0])
    gray = np.asarray(Image.open(path).convert("L"))
    assert gray.mean() > 40  # a real, not near-black cell image
    tiff = tmp_path / "cell.tif"
    Image.fromarray((gray / 255.0).astype(np.float32), mode="F").save(tiff)
    assert Image.open(tiff).mode == "F"
    size = gray.shape
    np.testing.assert_array_equal(load_rgb(str(tiff), size), load_rgb(path, size))

    brighter = tmp_path / "wide.tif"  # float values beyond 1 stay 0-255 intensities, as before
    Image.fromarray(gray.astype(np.float32), mode="F").save(brighter)
    np.testing.assert_array_equal(load_rgb(str(brighter), size), load_rgb(path, size))


def test_decode_reasons_and_pixels():
    """Decoding details a run cannot show: dark 16-bit images stay dark; any Pillow failure is one reason."""
    folder = Path(tempfile.mkdtemp())
    dark = np.arange(100, dtype=np.uint16).reshape(10, 10)  # 16-bit values 0..99: nearly black
    Image.fromarray(dark).save(folder / "dark16.png")
    assert load_rgb(str(folder / "dark16.png"), (10, 10)).max() == 0
    path = imagegen.save_png(folder / "ok.png", imagegen.gray(0))
    struct_error = type("error", (Exception,), {})  # like struct.error, which some Pillow plugins let through

    def broken(*args, **kwargs):
        raise struct_error("unpack requires a buffer of 4 bytes")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Image, "open", broken)
        with pytest.raises(ValueError, match=r"^cannot decode: error: unpack requires a buffer of 4 bytes$"):
            load_rgb(str(path), (96, 96))
    shutil.rmtree(folder)

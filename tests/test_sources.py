"""Inputs read without TensorFlow: manifests (encodings, duplicates, empty fields), exact --limit subsets, EXIF
orientation and the pixel limit, on real files. Fast: nothing here builds a model."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from featx.errors import FeatxError
from featx.sources import resolve_source
from featx.sources.decode import EXIF_ORIENTATION, MAX_PIXELS, load_rgb
from featx.sources.splits import stratified_split, subsample


def manifest(tmp_path, content: bytes | str):
    path = tmp_path / "list.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def refused(path) -> str:
    with pytest.raises(FeatxError) as info:
        resolve_source(str(path))
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"manifest '{path}' "), message
    return message


def test_manifest_with_utf8_bom_reads_its_header(tmp_path):
    source = resolve_source(str(manifest(tmp_path, "\ufeffpath,label,split\na.png,cat,train\nb.png,dog,test\n")))
    assert source.relpaths == ["a.png", "b.png"] and source.class_names == ["cat", "dog"]
    assert list(source.split) == ["train", "test"]


@pytest.mark.parametrize(
    "content, pattern",
    [
        (
            "path,label\na.png,cat\nb.png,caf\xe9\n".encode("latin-1"),
            r"line 3 is not UTF-8 text \(byte 0xe9\); save the manifest as UTF-8",
        ),
        (b"path,label\na.png,cat\nb.png,d\x00g\n", r"line 3 contains a NUL byte"),
        (b"path,label\na.png,cat\nb.png," + b"x" * 200_000 + b"\n", r"line 3: field larger than field limit"),
        ("path,label\na.png,cat\nb.png,\nc.png,  \n", r"lines 3, 4: empty label; give every row a label$"),
        ("path,label\na.png,cat\n,dog\n", r"line 3: empty path; give every row a path$"),
        (
            "path,label,split\na.png,cat,train\nb.png,dog,\n",
            r"line 3: empty split; give every row a split or drop the split column",
        ),
        (
            "path,label,split\na.png,cat,train\nb.png,dog,Train\n",
            r"line 3: split value\(s\) \['Train'\]; use only train, val, test",
        ),
        (
            "path,label\na.png,cat\nb.png,dog\nsub/../a.png,cat\n",
            r"lists 'a.png' more than once \(lines 2, 4\); keep one row per image, or one image could land in both train and test",
        ),
        (
            "path,label\na.png,cat\nb.png,dog\na.png,dog\nb.png,dog\n",
            r"gives 'a.png' different labels \(line 2: 'cat', line 4: 'dog'\) \(and 1 more repeated path\(s\)\); keep one row per image",
        ),
    ],
    ids=[
        "latin1",
        "nul",
        "huge_field",
        "empty_label",
        "empty_path",
        "empty_split",
        "bad_split",
        "duplicate",
        "conflicting_labels",
    ],
)
def test_bad_manifest_names_its_lines(tmp_path, content, pattern):  # ids: the huge field would flood reports
    message = refused(manifest(tmp_path, content))
    assert re.search(pattern, message), message


def test_many_bad_rows_are_counted_not_listed(tmp_path):
    rows = "".join(f"{i}.png,\n" for i in range(9))
    message = refused(manifest(tmp_path, "path,label\n" + rows))
    assert message.endswith("lines 2, 3, 4, 5, 6 and 4 more: empty label; give every row a label"), message


def test_manifest_line_numbers_count_quoted_newlines(tmp_path):
    message = refused(manifest(tmp_path, 'path,label\n"a\nb.png",cat\nc.png,\n'))
    assert "line 4: empty label" in message, message


# ---- --limit --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [12, 13, 25, 40, 41, 100, 2623])
def test_limit_gives_exactly_that_many_images_with_every_class_splittable(limit):
    elpv = resolve_source("elpv")
    subset = elpv.take(limit)
    assert len(subset) == limit and len(set(subset.relpaths)) == limit
    counts = np.bincount(subset.labels, minlength=len(elpv.class_names))
    assert counts.min() >= 3, counts
    split = stratified_split(subset.labels, subset.class_names)
    for label in range(len(elpv.class_names)):
        assert set(split[subset.labels == label]) == {"train", "val", "test"}
    share = np.bincount(elpv.labels) * limit / len(elpv)
    lifted = counts == 3
    assert np.all(counts[~lifted] <= np.ceil(share[~lifted])), (counts, share)  # proportional, minus what lifting took
    assert np.all(counts[~lifted] >= np.floor(share[~lifted]) - (3 - share[lifted]).sum() - 1), (counts, share)


def test_limit_too_small_names_the_smallest_that_works():
    elpv = resolve_source("elpv")
    with pytest.raises(
        FeatxError,
        match=r"^--limit 11 is too small for 4 classes: a stratified split needs 3 images "
        r"of each; use --limit 12 or more$",
    ):
        elpv.take(11)


def test_limit_keeps_a_small_class_whole():
    labels = np.array([0] * 50 + [1] * 2)
    rows = subsample(labels, 10)
    assert len(rows) == 10 and np.count_nonzero(labels[rows] == 1) == 2


# ---- decoding ----------------------------------------------------------------------------------------------


def photo() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut()).resize((64, 48))  # not square: a rotation changes the shape


@pytest.mark.parametrize(
    "orientation, upright",
    [
        (1, lambda im: im),
        (3, lambda im: im.transpose(Image.Transpose.ROTATE_180)),
        (6, lambda im: im.transpose(Image.Transpose.ROTATE_270)),
        (8, lambda im: im.transpose(Image.Transpose.ROTATE_90)),
        (2, lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
    ],
)
def test_exif_orientation_is_honored(tmp_path, orientation, upright):
    """A camera JPEG stores pixels sideways plus a tag; featx sees what a viewer shows."""
    stored = photo()
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    tagged = tmp_path / "tagged.jpg"
    stored.save(tagged, quality=95, exif=exif)
    with Image.open(tagged) as check:
        assert check.getexif()[EXIF_ORIENTATION] == orientation and check.size == (64, 48)
    decoded_stored = np.asarray(Image.open(tagged).convert("RGB"))
    manual = tmp_path / "manual.png"  # the same decoded JPEG pixels, turned by hand, losslessly
    upright(Image.fromarray(decoded_stored)).save(manual)
    expected = load_rgb(str(manual), (40, 40))
    got = load_rgb(str(tagged), (40, 40))
    np.testing.assert_array_equal(got, expected)
    if orientation != 1:
        assert not np.array_equal(got, load_rgb(str(_untagged(tmp_path, stored)), (40, 40)))


def _untagged(tmp_path, image):
    path = tmp_path / "untagged.jpg"
    image.save(path, quality=95)
    return path


def test_decoder_version_is_in_the_cache_key_settings():
    import inspect

    import featx.extractor

    assert '"decoder_version": DECODER_VERSION' in inspect.getsource(featx.extractor)


def test_pixel_limit_is_checked_without_changing_pillow(tmp_path, monkeypatch):
    import imagegen

    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # Pillow's default: importing featx did not raise it
    huge = imagegen.save_decompression_bomb(tmp_path / "huge.png", side=14_000)  # 196 MP
    with pytest.raises(ValueError, match=rf"^image larger than {MAX_PIXELS:,} pixels$"):
        load_rgb(str(huge), (32, 32))  # refused by Pillow's own default limit at open
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # a host program that switched Pillow's check off
    with pytest.raises(ValueError, match=rf"^image larger than {MAX_PIXELS:,} pixels \(14000 x 14000\)$"):
        load_rgb(str(huge), (32, 32))  # featx's own check, from the header, before decoding

"""Bad images and bad requests: every one ends in a skipped, recorded file or a clear one-line error, and the
cache stays valid (`featx verify` clean, a layer cached before reads back identically).

Most runs call `featx.cli.main` in this process (the backbone is built once per module to save time); runs
that need a fresh process with a file-size limit (full disk) or without root's file-permission override
(unreadable files, read-only folders even when the tests run as root) come from tests/forkserver.py.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

import featx
import featx.extractor
from featx.cache.store import CacheEntry
from featx.sources.decode import load_rgb

import imagegen
from helpers import assert_float32_close, assert_one_line_error, backbones_built_once, cli, extract_cli, feature_terms

BACKBONE = ["--backbone", "mobilenet_v2", "--weights", "none", "--input-size", "96"]
BASE_LAYERS = "block_1_project_BN,block_3_project_BN"


@pytest.fixture(scope="module", autouse=True)
def backbone_built_once():
    """Every in-process run here uses the same few backbones: build each once (the numbers do not change)."""
    with backbones_built_once(8):
        yield


def extract(data, cache_dir, *extra, layers=BASE_LAYERS) -> tuple[int, str, str]:
    return extract_cli(data, cache_dir, *extra, backbone=BACKBONE, layers=layers)


# ---- a base data set and a cache made from it, copied for each test ----------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bad_inputs")


@pytest.fixture(scope="module")
def base_data(workdir) -> Path:
    """3 classes x 3 real ELPV cells."""
    root = workdir / "base_data"
    for path, class_name, _ in imagegen.elpv_images(9, n_classes=3):
        (root / class_name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, root / class_name / os.path.basename(path))
    return root


class Base:
    def __init__(self, cache_dir: Path):
        self.cache_dir = cache_dir
        self.entry = featx.Cache(cache_dir).open(None)
        self.name = self.entry.name
        self.layers = {n: self.entry.read([n])[0] for n in self.entry.layers}

    def copy(self, to: Path) -> Path:
        shutil.copytree(self.cache_dir, to)
        return to

    def assert_intact(self, cache_dir: Path) -> None:
        """`featx verify` finds nothing wrong and the base layers read back bit for bit."""
        rc, out, err = cli("verify", "--cache-dir", cache_dir)
        assert rc == 0, out + err
        entry = CacheEntry(cache_dir / self.name)
        assert [name for name in entry.layers if name in self.layers] == list(self.layers)  # later runs may add layers
        for name, X in self.layers.items():
            assert np.array_equal(entry.read([name])[0], X)


@pytest.fixture(scope="module")
def base(base_data, tiny_cache) -> Base:
    return Base(tiny_cache(base_data, BASE_LAYERS, batch_size=4))


# ---- 4. bad images: skipped and recorded by default; --strict names the file --------------------------------

BAD_KINDS = {  # kind: (file name, writer, reason in the report)
    "corrupt_jpeg": (
        "corrupt.jpg",
        lambda p: imagegen.save_corrupt_jpeg(p, imagegen.photo()),
        r"cannot decode: broken data stream",
    ),
    "truncated": (
        "truncated.jpg",
        lambda p: imagegen.save_truncated_jpeg(p, imagegen.photo()),
        r"cannot decode: image file is truncated",
    ),
    "zero_bytes": ("empty.png", imagegen.save_empty, r"empty file \(0 bytes\)"),
    "not_an_image": ("notes.txt", imagegen.save_not_an_image, r"not an image file Pillow can read"),
    "html_as_jpeg": ("download.jpg", imagegen.save_not_an_image, r"not an image file Pillow can read"),
    "decompression_bomb": ("bomb.png", imagegen.save_decompression_bomb, r"image larger than 178,956,970 pixels"),
    "dangling_symlink": (
        "gone.png",
        lambda p: os.symlink(p.parent / "nowhere.png", p),
        r"cannot read file: No such file or directory",
    ),
    "fifo": ("pipe.png", os.mkfifo, r"not a regular file"),  # opening it would block forever
}


@pytest.fixture(scope="module")
def mixed(base_data, base, workdir):
    """One run over a folder that mixes every bad kind and every good kind with the base images.

    Class folders and file names carry spaces and non-ASCII letters. Good kinds sit beside a twin that must
    decode to the same pixels (grayscale vs its RGB copy, 16-bit vs 8-bit, RGBA vs RGB, GIF vs its RGB).
    """
    root = workdir / "mixed data"
    classes = {}
    for class_name, new in zip(sorted(os.listdir(base_data)), ["class A", "clâsse B ü", "クラス C 太陽"]):
        shutil.copytree(base_data / class_name, root / new)
        classes[class_name] = root / new
    a, b, c = (root / n for n in ["class A", "clâsse B ü", "クラス C 太陽"])
    for kind, (name, write, _) in BAD_KINDS.items():
        write(a / f"bad {kind} {name}")
    rgb, gray = imagegen.photo("coffee"), imagegen.gray(5)
    gray_rgb = np.dstack([gray] * 3)
    imagegen.save_png(b / "gray.png", gray)
    imagegen.save_png(b / "gray twin rgb.png", gray_rgb)
    imagegen.save_png16_gray(b / "gray 16-bit.png", gray)
    imagegen.save_png(c / "photo.png", rgb)
    imagegen.save_png16_rgb(c / "photo 16-bit rgb.png", rgb)
    imagegen.save_rgba_png(c / "photo alpha.png", rgb)
    _, paletted = imagegen.save_palette_gif(c / "palette.gif", rgb)
    imagegen.save_png(c / "palette twin rgb.png", paletted)
    imagegen.save_cmyk_jpeg(c / "photo cmyk.jpg", rgb)
    imagegen.save_huge_jpeg(c / "huge 10000x10000.jpg", rgb)
    first = sorted(os.listdir(base_data / sorted(os.listdir(base_data))[0]))[0]
    shutil.copyfile(a / first, a / f"çé 太陽 #1 (copy of {first})")
    cache_dir = base.copy(workdir / "mixed_cache")
    rc, out, err = extract(root, cache_dir)
    assert rc == 0, err
    entry = featx.Cache(cache_dir).open(None)
    X, meta = entry.read(entry.layers)[0], {p: i for i, p in enumerate(entry.relpaths)}
    from featx.backbones import get_backbone

    model = get_backbone("mobilenet_v2", "none", 96).model  # BACKBONE
    terms = max(feature_terms(model, layer) for layer in BASE_LAYERS.split(","))  # for helpers.roundoff
    return {
        "root": root,
        "cache_dir": cache_dir,
        "entry": entry,
        "out": out,
        "X": X,
        "row": meta,
        "twin_of": first,
        "terms": terms,
    }


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_image_is_skipped_and_recorded(kind, mixed, base):
    name, _, reason = BAD_KINDS[kind]
    rel = f"class A/bad {kind} {name}"
    entry = mixed["entry"]
    assert re.fullmatch(reason + ".*", entry.errors[rel]), entry.errors[rel]
    assert f"skipped {len(BAD_KINDS)} bad file(s)" in mixed["out"]
    assert re.search(rf"^  {re.escape(rel)}: {reason}", mixed["out"], re.M)  # the report printed at the end
    assert not entry.valid[mixed["row"][rel]]
    X, y, meta = featx.load(entry, split=None)
    assert rel not in set(meta["path"]) and len(X) == len(entry.labels) - len(BAD_KINDS)
    base.assert_intact(mixed["cache_dir"])
    assert featx.verify(entry) == []


def test_bad_files_do_not_poison_their_batches(mixed, base):
    """Good images that shared a batch with bad ones get the features they get in a clean run."""
    entry = mixed["entry"]
    X_base, _ = base.entry.read(base.entry.layers)
    renamed = {
        old: new.name
        for old, new in zip(
            sorted(set(p.split("/")[0] for p in base.entry.relpaths)),
            [Path("class A"), Path("clâsse B ü"), Path("クラス C 太陽")],
        )
    }
    for i, rel in enumerate(base.entry.relpaths):
        cls, fname = rel.split("/", 1)
        row = mixed["row"][f"{renamed[cls]}/{fname}"]
        # the same image in another batch of another run: float32 round-off of MobileNetV2 (helpers.roundoff)
        assert_float32_close(mixed["X"][row], X_base[i], mixed["terms"])
    assert np.isfinite(mixed["X"][entry.valid]).all()


GOOD_TWINS = {  # good kind: (file, twin that decodes to the same pixels)
    "grayscale": ("clâsse B ü/gray.png", "clâsse B ü/gray twin rgb.png"),
    "16_bit_gray_png": ("clâsse B ü/gray 16-bit.png", "clâsse B ü/gray twin rgb.png"),
    "16_bit_rgb_png": ("クラス C 太陽/photo 16-bit rgb.png", "クラス C 太陽/photo.png"),
    "png_with_alpha": ("クラス C 太陽/photo alpha.png", "クラス C 太陽/photo.png"),
    "palette_gif": ("クラス C 太陽/palette.gif", "クラス C 太陽/palette twin rgb.png"),
    "unicode_and_spaces": (None, None),
}


@pytest.mark.parametrize("kind", GOOD_TWINS)
def test_good_image_kind_decodes_like_its_twin(kind, mixed):
    rel, twin = GOOD_TWINS[kind]
    if kind == "unicode_and_spaces":
        rel, twin = f"class A/çé 太陽 #1 (copy of {mixed['twin_of']})", f"class A/{mixed['twin_of']}"
    entry, X, row = mixed["entry"], mixed["X"], mixed["row"]
    assert rel not in entry.errors and entry.valid[row[rel]] and entry.valid[row[twin]]
    assert np.isfinite(X[row[rel]]).all() and np.abs(X[row[rel]]).sum() > 0
    assert_float32_close(X[row[rel]], X[row[twin]], mixed["terms"])  # the same pixels, maybe another batch


@pytest.mark.parametrize("rel", ["クラス C 太陽/photo cmyk.jpg", "クラス C 太陽/huge 10000x10000.jpg"])
def test_cmyk_and_huge_jpeg_give_features_close_to_the_photo(rel, mixed):
    """Lossy (JPEG, CMYK round trip, draft-mode downscale): close to the RGB photo, not equal."""
    entry, X, row = mixed["entry"], mixed["X"], mixed["row"]
    photo = X[row["クラス C 太陽/photo.png"]]
    assert entry.valid[row[rel]] and np.isfinite(X[row[rel]]).all()
    assert np.corrcoef(X[row[rel]], photo)[0, 1] > 0.99  # lossy pixels (integer decoders), not round-off
    pixels = load_rgb(str(mixed["root"] / rel), (96, 96)).astype(int)
    assert np.abs(pixels - load_rgb(str(mixed["root"] / "クラス C 太陽/photo.png"), (96, 96))).mean() < 4


def test_stored_unicode_paths_round_trip(mixed):
    entry = CacheEntry(mixed["entry"].path)
    assert "クラス C 太陽" in entry.class_names and "clâsse B ü" in entry.class_names
    for rel in entry.relpaths:
        assert os.path.lexists(mixed["root"] / rel), rel
    rc, out, _ = cli("info", entry.path)
    assert rc == 0 and "bad file: class A/bad corrupt_jpeg corrupt.jpg: cannot decode" in out


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_strict_fails_fast_naming_the_file(kind, base_data, base, tmp_path):
    name, write, reason = BAD_KINDS[kind]
    data = tmp_path / "data"
    shutil.copytree(base_data, data)
    first_class = sorted(os.listdir(data))[0]
    bad = data / first_class / f"000 {name}"  # row 0: the first batch fails
    write(bad)
    cache_dir = base.copy(tmp_path / "cache")
    rc, out, err = extract(data, cache_dir, "--strict")
    assert_one_line_error(
        rc,
        err,
        rf"^error: bad image '{re.escape(str(bad))}': {reason}.* \(--strict\); "
        r"fix or remove it, or drop --strict$",
    )
    base.assert_intact(cache_dir)
    # without --strict the same command resumes the pass and skips the file
    rc, out, err = extract(data, cache_dir)
    assert rc == 0 and "resuming interrupted extraction" in out and f"{first_class}/000 {name}: " in out, out + err
    base.assert_intact(cache_dir)


def test_unreadable_files_via_manifest(base_data, base, tmp_path):
    """A manifest row naming a folder, a missing file, or a file this user may not read."""
    data = tmp_path / "data"
    shutil.copytree(base_data, data)
    (data / "a folder.png").mkdir()
    rows = [f"{p.relative_to(data)},{p.parent.name}" for p in sorted(data.glob("*/*.png"))]
    rows[1:1] = ["a folder.png,functional", "missing.png,functional"]
    (data / "list.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    cache_dir = base.copy(tmp_path / "cache")
    rc, out, err = extract(data / "list.csv", cache_dir)
    assert rc == 0, err
    entry = featx.Cache(cache_dir).open(None)
    assert entry.errors == {
        "a folder.png": "not a regular file",
        "missing.png": "cannot read file: No such file or directory",
    }
    assert "  missing.png: cannot read file: No such file or directory" in out
    base.assert_intact(cache_dir)


def test_file_without_read_permission(base_data, base, workdir, fork_server):
    """chmod 000, run without root's permission override: skipped with 'Permission denied'; --strict names it."""
    data = workdir / "unreadable_data"
    shutil.copytree(base_data, data)
    secret = data / sorted(os.listdir(data))[0] / "000 secret.png"
    imagegen.save_png(secret, imagegen.gray(7))
    secret.chmod(0)
    cache_dir = base.copy(workdir / "unreadable_cache")
    args = [
        "extract",
        "--data",
        data,
        *BACKBONE,
        "--layers",
        BASE_LAYERS,
        "--batch-size",
        4,
        "--cache-dir",
        cache_dir,
        "--quiet",
    ]
    strict = fork_server.run([*args, "--strict"], unprivileged=True)
    assert_one_line_error(
        strict.rc, strict.err, rf"bad image '{re.escape(str(secret))}': cannot read file: Permission denied"
    )
    skip = fork_server.run(args, unprivileged=True)
    assert skip.rc == 0 and "000 secret.png: cannot read file: Permission denied" in skip.out, skip.err
    [new] = [p for p in cache_dir.iterdir() if p.name not in (base.name, ".lock")]
    assert list(CacheEntry(new).errors.values()) == ["cannot read file: Permission denied"]
    assert CacheEntry(new).data["fingerprints"][0] == "unreadable:13"  # EACCES is part of the key: fixed later, re-run
    base.assert_intact(cache_dir)


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


# ---- 5. bad requests: one line, non-zero exit, the cache untouched ------------------------------------------


def test_unknown_backbone_lists_close_names(base_data, base, tmp_path):
    cache_dir = base.copy(tmp_path / "c")
    rc, _, err = cli("extract", "--data", base_data, "--backbone", "mobilenet_v9", "--cache-dir", cache_dir, "--quiet")
    assert_one_line_error(rc, err, r"unknown backbone 'mobilenet_v9'; did you mean mobilenet_v2, ")
    base.assert_intact(cache_dir)


def test_unknown_layer_lists_close_names(base_data, base, tmp_path):
    cache_dir = base.copy(tmp_path / "c")
    rc, _, err = extract(base_data, cache_dir, layers="block_1_project_BN,block_16_projct_BN")
    assert_one_line_error(rc, err, r"layer 'block_16_projct_BN' not in mobilenet_v2; did you mean block_16_project_BN")
    base.assert_intact(cache_dir)


@pytest.fixture(scope="module")
def tiny_models(workdir) -> dict[str, Path]:
    """Small saved Keras models: one with a Reshape layer (3-D output), one with a Lambda layer."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, name="conv")(inputs)
    shaped = keras.layers.Reshape((15 * 15, 4), name="tokens")(x)
    pooled = keras.layers.GlobalAveragePooling1D(name="pooled")(shaped)
    reshape = keras.Model(inputs, keras.layers.Dense(3, name="head")(pooled))
    reshape.save(workdir / "reshape.keras")
    doubled = keras.layers.Lambda(lambda t: t * 2.0, name="doubled")(x)
    out = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D(name="gap")(doubled))
    keras.Model(inputs, out).save(workdir / "lambda.keras")
    return {"reshape": workdir / "reshape.keras", "lambda": workdir / "lambda.keras"}


def test_layer_without_poolable_output(base_data, base, tiny_models, tmp_path):
    cache_dir = base.copy(tmp_path / "c")
    rc, _, err = cli(
        "extract",
        "--data",
        base_data,
        "--backbone",
        tiny_models["reshape"],
        "--layers",
        "tokens",
        "--cache-dir",
        cache_dir,
        "--quiet",
    )
    assert_one_line_error(
        rc,
        err,
        r"layer 'tokens' has output shape \(None, 225, 4\), which featx cannot pool into a "
        r"feature vector; choose a conv \(4-D\) or dense \(2-D\) layer",
    )
    base.assert_intact(cache_dir)


def test_lambda_layer_refused_unless_unsafe(base_data, base, tiny_models, tmp_path):
    """Keras safe mode: a .keras file with a Lambda layer (arbitrary code) loads only with --unsafe."""
    model = tiny_models["lambda"]
    refused = r"backbone '.*lambda\.keras' contains a Lambda layer, which Keras safe mode refuses .*; pass --unsafe"
    assert_one_line_error(*cli("layers", model)[::2], refused)
    cache_dir = base.copy(tmp_path / "c")
    rc, _, err = cli(
        "extract", "--data", base_data, "--backbone", model, "--layers", "doubled", "--cache-dir", cache_dir, "--quiet"
    )
    assert_one_line_error(rc, err, refused)
    base.assert_intact(cache_dir)
    rc, out, err = cli("layers", model, "--unsafe", "--all")
    assert rc == 0 and re.search(r"doubled\s+Lambda", out), err
    rc, out, err = cli(
        "extract",
        "--data",
        base_data,
        "--backbone",
        model,
        "--layers",
        "doubled,conv",
        "--unsafe",
        "--cache-dir",
        cache_dir,
        "--quiet",
    )
    assert rc == 0, err
    loaded = featx.load("lambda", "doubled,conv", cache=cache_dir)
    X = loaded.X
    start, stop = loaded.feature_slices["doubled"]
    c0, c1 = loaded.feature_slices["conv"]
    # the Lambda really ran: doubling is exact in binary, so the two pooled layers differ by pooling round-off only
    np.testing.assert_allclose(X[:, start:stop], 2 * X[:, c0:c1], rtol=1e-5)
    base.assert_intact(cache_dir)


def test_empty_dataset(base, tmp_path):
    cache_dir = base.copy(tmp_path / "c")
    (tmp_path / "empty" / "cats").mkdir(parents=True)
    (tmp_path / "empty" / "dogs").mkdir()
    assert_one_line_error(
        *cli("extract", "--data", tmp_path / "empty", "--cache-dir", cache_dir)[::2],
        r"no images found in '.*empty'; point --data at a folder of class subfolders or a CSV manifest",
    )
    (tmp_path / "header_only.csv").write_text("path,label\n")
    assert_one_line_error(
        *cli("extract", "--data", tmp_path / "header_only.csv", "--cache-dir", cache_dir)[::2],
        r"no images found in '.*header_only.csv'",
    )
    (tmp_path / "no_classes").mkdir()
    assert_one_line_error(
        *cli("extract", "--data", tmp_path / "no_classes", "--cache-dir", cache_dir)[::2], r"has no class subfolders"
    )
    base.assert_intact(cache_dir)


def test_class_with_one_image(base_data, base, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(base_data, data)
    (data / "lonely").mkdir()
    shutil.copyfile(next(data.glob("*/*.png")), data / "lonely" / "only.png")
    cache_dir = base.copy(tmp_path / "c")
    assert_one_line_error(
        *extract(data, cache_dir)[::2],
        r"class 'lonely' has 1 image\(s\); a stratified train/val/test split needs at least 3 per class: "
        r"add images, remove the class, or give a split column in a CSV manifest",
    )
    base.assert_intact(cache_dir)


@pytest.mark.parametrize(
    "csv, message",
    [
        (
            "file,class\na.png,x\n",
            r"lacks column\(s\) path, label \(has: file, class\); the header must be path,label\[,split\]",
        ),
        ("path\na.png\n", r"lacks column\(s\) label \(has: path\)"),
        ("path,label\n../outside.png,x\n", r"line 2: path '\.\./outside\.png' is outside the manifest's folder"),
        ("path,label\n/etc/hostname,x\n", r"line 2: path '/etc/hostname' is outside the manifest's folder"),
        ("path,label,split\na.png,x,training\n", r"split value\(s\) \['training'\]; use only train, val, test"),
    ],
)
def test_bad_manifest(csv, message, base, tmp_path):
    (tmp_path / "list.csv").write_text(csv)
    cache_dir = base.copy(tmp_path / "c")
    assert_one_line_error(*cli("extract", "--data", tmp_path / "list.csv", "--cache-dir", cache_dir)[::2], message)
    base.assert_intact(cache_dir)


@pytest.mark.slow  # extract configures TensorFlow before it looks at the cache folder
def test_cache_directory_is_a_file(base_data, tmp_path):
    (tmp_path / "cache").write_text("not a folder")
    assert_one_line_error(
        *extract(base_data, tmp_path / "cache")[::2],
        r"cache directory '.*cache' is not a folder; pass --cache-dir to a writable folder",
    )
    assert_one_line_error(*extract(base_data, tmp_path / "cache" / "sub")[::2], r"is not a folder")


def test_cache_directory_not_writable(base_data, base, workdir, fork_server):
    """Read-only cache: a new entry and a new layer of an existing entry both fail in one line; data intact."""
    cache_dir = base.copy(workdir / "readonly_cache")
    for path in [cache_dir, *cache_dir.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    data = workdir / "readonly_data"
    shutil.copytree(base_data, data)
    shutil.copyfile(next(data.glob("*/*.png")), next(data.glob("*/")) / "extra.png")
    args = [*BACKBONE, "--batch-size", 4, "--cache-dir", cache_dir, "--quiet"]
    try:
        new_entry = fork_server.run(["extract", "--data", data, "--layers", BASE_LAYERS, *args], unprivileged=True)
        assert_one_line_error(
            new_entry.rc,
            new_entry.err,
            rf"^error: cache directory '{re.escape(str(cache_dir))}' is not writable; pass --cache-dir",
        )
        new_layer = fork_server.run(
            ["extract", "--data", base_data, "--layers", "block_2_add", *args], unprivileged=True
        )
        assert_one_line_error(
            new_layer.rc,
            new_layer.err,
            rf"cannot lock cache entry {re.escape(str(cache_dir / base.name))} \(Permission denied\): "
            "the cache is not writable; pass --cache-dir to a writable folder",
        )
    finally:
        for path in [cache_dir, *cache_dir.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    base.assert_intact(cache_dir)


@pytest.fixture
def fsize_run(fork_server):
    """`fsize_run(argv, cache_dir, limit)`: a fresh `featx` process whose files may not grow beyond `limit` bytes."""
    return lambda argv, cache_dir, limit: fork_server.run([str(a) for a in argv], fsize=limit)


def _extract_with_out_relu(base_data, cache_dir) -> list:
    """The disk-full tests' extract: the base layers plus out_relu, whose 5 kB rows fill a small file limit."""
    return [
        "extract",
        "--data",
        base_data,
        *BACKBONE,
        "--layers",
        f"{BASE_LAYERS},out_relu",
        "--batch-size",
        4,
        "--cache-dir",
        cache_dir,
        "--quiet",
    ]


def test_disk_full_while_appending_batches(base_data, base, tmp_path, fsize_run):
    """A write fails mid-pass (EFBIG under RLIMIT_FSIZE, as ENOSPC on a full disk): one line, exit 1, resumable."""
    cache_dir = base.copy(tmp_path / "cache")
    args = _extract_with_out_relu(base_data, cache_dir)
    full = fsize_run(args, cache_dir, limit=6 * 1280 * 4)  # out_relu rows are 5 kB: the second batch does not fit
    assert_one_line_error(
        full.rc,
        full.err,
        r"^error: writing features failed \(File too large\); committed batches are "
        r"kept: free disk space and re-run the same command to resume$",
        code=1,
    )
    base.assert_intact(cache_dir)
    rc, out, err = cli(*args)  # the same command, disk space back (in this process: faster)
    assert rc == 0 and "resuming interrupted extraction of 1 layer(s) at image 4/9" in out, err
    base.assert_intact(cache_dir)
    assert np.isfinite(featx.load(None, "out_relu", cache=cache_dir)[0]).all()


def test_disk_full_while_publishing_a_layer(base_data, base, tmp_path, fsize_run):
    cache_dir = base.copy(tmp_path / "cache")
    args = _extract_with_out_relu(base_data, cache_dir)
    full = fsize_run(args, cache_dir, limit=9 * 1280 * 4 + 512)  # the raw rows fit, the HDF5 file does not
    assert_one_line_error(
        full.rc,
        full.err,
        rf"^error: writing the cache in {re.escape(str(cache_dir / base.name))} "
        r"failed \(File too large\); committed work is kept: free disk space",
        code=1,
    )
    base.assert_intact(cache_dir)
    assert not list((cache_dir / base.name / "layers").glob(".*.tmp"))  # the partial HDF5 file was removed
    rc, out, err = cli(*args)
    assert rc == 0 and "resuming interrupted extraction of 1 layer(s) at image 9/9" in out, err
    base.assert_intact(cache_dir)


def test_disk_full_while_creating_an_entry(base_data, base, tmp_path, fsize_run):
    cache_dir = base.copy(tmp_path / "cache")
    data = tmp_path / "data"
    shutil.copytree(base_data, data)
    shutil.copyfile(next(data.glob("*/*.png")), next(data.glob("*/")) / "extra.png")
    full = fsize_run(
        ["extract", "--data", data, *BACKBONE, "--layers", BASE_LAYERS, "--cache-dir", cache_dir, "--quiet"],
        cache_dir,
        limit=1024,
    )
    assert_one_line_error(
        full.rc, full.err, r"cannot create a cache entry in '.*' \(File too large\); free disk space", code=1
    )
    assert [p.name for p in cache_dir.iterdir() if not p.name.startswith(".")] == [base.name]
    base.assert_intact(cache_dir)


# ---- 6. featx verify finds damage ---------------------------------------------------------------------------


def _nan_row(entry):
    with h5py.File(entry.layer_file(entry.layers[0]), "r+") as f:
        f["features"][2, 3] = np.nan


def _short_layer(entry):
    name = entry.layers[0]
    with h5py.File(entry.layer_file(name), "r") as f:
        rows = f["features"][:-1]
    entry.layer_file(name).unlink()
    entry.write_layer(name, lambda a, b: rows[a:b], len(rows), rows.shape[1], rows.dtype, {})  # a row short


def _edited_settings(entry):
    import json

    with h5py.File(entry.path / "index.h5", "r+") as f:
        settings = json.loads(f.attrs["settings"])
        f.attrs["settings"] = json.dumps({**settings, "input_size": [224, 224]})


def _garbage_layer(entry):
    entry.layer_file(entry.layers[0]).write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)


def _garbage_index(entry):
    (entry.path / "index.h5").write_bytes(b"not hdf5")


def _lost_raw_rows(entry):
    import json

    from featx.cache.manifest import FORMAT_VERSION

    work = entry.path / "work"
    work.mkdir()
    state = {
        "format_version": FORMAT_VERSION,
        "layers": [{"name": "block_2_add", "n_features": 24}],
        "n_rows": 9,
        "batch_size": 4,
        "dtype": "float32",
        "committed_rows": 8,
        "errors": {},
    }
    (work / "progress.json").write_text(json.dumps(state))
    (work / "block_2_add.raw").write_bytes(np.zeros((4, 24), np.float32).tobytes())


DAMAGE = {
    "nan": (_nan_row, r"layer block_1_project_BN: NaN/Inf in 1 row\(s\), first rows \[2\]"),
    "row_count": (
        _short_layer,
        r"layer block_1_project_BN: shape \(8, (\d+)\), expected \(9, \1\) \(one row per image\)",
    ),
    "settings_hash": (_edited_settings, r"index.h5 changed since it was written \(digest mismatch\)"),
    "unopenable_layer": (_garbage_layer, r"layer block_1_project_BN: file cannot be read \(its first bytes are no"),
    "unopenable_index": (_garbage_index, r"index.h5 cannot be read"),
    "work_vs_index": (_lost_raw_rows, r"raw rows of block_2_add hold 4 of 8 committed rows"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_verify_reports_damage(damage, base, tmp_path):
    cache_dir = base.copy(tmp_path / "c")
    assert featx.verify(cache_dir / base.name) == []
    harm, message = DAMAGE[damage]
    harm(CacheEntry(cache_dir / base.name))
    problems = featx.verify(cache_dir / base.name)
    assert len(problems) == 1 and re.search(message, problems[0]), problems
    rc, out, err = cli("verify", "--cache-dir", cache_dir)
    assert rc == 1 and f"FAIL {base.name}" in out and re.search(message, out)
    assert re.fullmatch(r"error: 1 of 1 cache entries have problems \(listed above\); .*\n", err)

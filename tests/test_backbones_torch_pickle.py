"""Weights files never run code: every pickle of a .pth is read by a restricted unpickler, and an entry's backbone
files are hashed and compared with what extract recorded before any of them is opened by a loader.

The attacks are real files (the packaged EfficientNet-Lite0 .pth with one of its pickles replaced by a payload whose
`__reduce__` would create a marker file) run by real `featx` processes (tests/forkserver.py): the marker must not
appear, and the command must end in one `error:` line with exit code 2.
"""

from __future__ import annotations

import io
import json
import pickle
import pickletools
import re
import shutil
from pathlib import Path

import h5py
import pytest

from featx.backbones.efficientnet_lite import default_weights_path
from featx.backbones.torch_pickle import read_torch_state_dict
from featx.errors import FeatxError
from featx.sources.fingerprint import file_fingerprint

from helpers import cli

PICKLES = ("magic number", "protocol", "sys info", "state dict", "storage keys")  # a legacy .pth, in file order


class Payload:
    """Unpickling this opens (creates) `marker` for writing: code run by merely reading the file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def pickle_spans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of the five pickles at the head of a legacy .pth, found by walking opcodes (nothing is loaded)."""
    spans, pos = [], 0
    stream = io.BytesIO(data)
    for _ in PICKLES:
        stream.seek(pos)
        end = pos
        for op, _, at in pickletools.genops(stream):
            if op.name == "STOP":
                end = at + 1
        spans.append((pos, end))
        pos = end
    return spans


def poisoned_pth(path: Path, which: str, marker: Path) -> Path:
    """The real packaged .pth (legacy format) with its pickle `which` (one of PICKLES) replaced by a payload."""
    data = Path(default_weights_path()).read_bytes()
    start, end = pickle_spans(data)[PICKLES.index(which)]
    path.write_bytes(data[:start] + pickle.dumps(Payload(marker), protocol=2) + data[end:])
    return path


def assert_refused(child_or_result, marker: Path, pattern: str = "") -> str:
    """One `error:` line on stderr (TensorFlow's C++ log lines aside), exit code 2, and the payload never ran."""
    rc, err = (child_or_result.rc, child_or_result.err) if hasattr(child_or_result, "rc") else child_or_result
    lines = [
        line
        for line in err.splitlines()
        if line.strip() and not re.match(r"[IWEF]\d{4} |WARNING: All log messages before absl", line)
    ]
    assert not marker.exists(), "the payload ran"
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


def test_the_real_file_is_legacy_and_its_pickles_are_found():
    data = Path(default_weights_path()).read_bytes()
    spans = pickle_spans(data)
    assert data[:1] == b"\x80" and spans[-1][1] < len(data)  # pickles first, storage bytes after
    assert pickle.loads(data[slice(*spans[0])]) == 0x1950A86A20F9469CFC6C  # plain ints: safe to load in the test
    assert pickle.loads(data[slice(*spans[1])]) == 1001


@pytest.mark.parametrize("which", PICKLES)
def test_a_payload_in_any_pickle_is_refused_unrun(tmp_path, which):
    marker = tmp_path / "marker"
    path = poisoned_pth(tmp_path / "evil.pth", which, marker)
    with pytest.raises(FeatxError, match="not a plain PyTorch state dict"):
        read_torch_state_dict(path)
    assert not marker.exists()


def test_header_pickles_take_no_globals_at_all(tmp_path):
    """Even a harmless global (collections.OrderedDict, allowed in the state dict) is refused in the header."""
    import collections

    data = Path(default_weights_path()).read_bytes()
    start, end = pickle_spans(data)[PICKLES.index("sys info")]
    path = tmp_path / "odict.pth"
    path.write_bytes(data[:start] + pickle.dumps(collections.OrderedDict(little_endian=True), protocol=2) + data[end:])
    with pytest.raises(FeatxError, match="header pickle references collections.OrderedDict"):
        read_torch_state_dict(path)


@pytest.mark.slow  # four fresh featx processes
def test_extract_and_layers_refuse_a_payload_weights_file(tmp_path, elpv_folder, fork_server):
    server = fork_server
    for which in ("magic number", "storage keys"):
        marker = tmp_path / f"marker-{which.replace(' ', '-')}"
        weights = poisoned_pth(tmp_path / f"{which.replace(' ', '-')}.pth", which, marker)
        extract = server.run(
            [
                "extract",
                "--data",
                elpv_folder,
                "--weights",
                weights,
                "--input-size",
                96,
                "--layers",
                "top_activation",
                "--cache-dir",
                tmp_path / "cache",
                "--quiet",
            ]
        )
        assert_refused(extract, marker, re.escape(str(weights)) + ": not a plain PyTorch state dict")
        layers = server.run(["layers", "efficientnet_lite0", "--weights", weights])
        assert_refused(layers, marker, "not a plain PyTorch state dict")
    assert not any((tmp_path / "cache").glob("efficientnet_lite0-*"))  # refused before any entry was made


# ---- a cache made with a weights file that is then swapped, or whose recorded path is edited -------------------


@pytest.fixture(scope="module")
def lite_run(tmp_path_factory, elpv_folder):
    """(cache dir, weights file, run id): EfficientNet-Lite0 features of the ELPV folder extracted with a copy of the
    packaged weights, and a logistic regression fitted on them."""
    import featx

    root = tmp_path_factory.mktemp("weights_files")
    weights = root / "lite0.pth"
    shutil.copyfile(default_weights_path(), weights)
    cache_dir = root / "cache"
    featx.extract(
        str(elpv_folder),
        featx.BackboneSpec(featx.backbones.DEFAULT_BACKBONE, weights=str(weights), input_size=96),
        "top_activation",
        cache=cache_dir,
        compute=featx.Compute(progress=False),
        log=None,
    )
    run = featx.fit(None, None, featx.fit_spec("logreg"), cache=cache_dir, log=None)
    return cache_dir, weights, run.run_id


def _index(cache_dir: Path) -> Path:
    (index,) = cache_dir.glob("efficientnet_lite0-*/index.h5")
    return index


def _edit_backbone_args(cache_dir: Path, changes: dict, drop: tuple = ()) -> None:
    """Edit the entry's recorded backbone arguments as a crafted cache would: with h5py, then the index's digest
    record recomputed (featx's digests catch damage and plain edits, they are no signature; tests/
    test_cache_verify.py shows an unsealed edit is refused on open), so the checks behind the digest are the
    ones tested here."""
    from featx.cache.manifest import FORMAT_VERSION
    from featx.cache.store import INDEX_MAGIC, USER_BLOCK, _index_digest

    index = _index(cache_dir)
    with h5py.File(index, "r+") as f:
        args = json.loads(f.attrs["backbone_args"]) | changes
        f.attrs["backbone_args"] = json.dumps({k: v for k, v in args.items() if k not in drop})
    body = index.read_bytes()[USER_BLOCK:]
    record = INDEX_MAGIC + json.dumps({"format_version": FORMAT_VERSION, "digest": _index_digest(body)}).encode()
    index.write_bytes(record.ljust(USER_BLOCK, b"\0") + body)


@pytest.mark.slow  # builds EfficientNet-Lite0 with its real weights
def test_extract_records_the_weights_files_hash(lite_run):
    cache_dir, weights, _ = lite_run
    with h5py.File(_index(cache_dir), "r") as f:
        args = json.loads(f.attrs["backbone_args"])
    assert args["weights"] == str(weights) and args["file_hashes"] == {"weights": file_fingerprint(str(weights))}


@pytest.mark.slow  # builds EfficientNet-Lite0 with its real weights
def test_predict_checks_the_weights_file_before_reading_it(lite_run, elpv_folder, tmp_path, fork_server):
    cache_dir, weights, run_id = lite_run
    images = next(p for p in elpv_folder.iterdir() if p.is_dir())
    original = tmp_path / "original.h5"
    shutil.copyfile(_index(cache_dir), original)
    server = fork_server

    rc, out, _ = cli("predict", "--model", run_id, images, "--cache-dir", cache_dir, "--output", tmp_path / "ok.csv")
    assert rc == 0 and (tmp_path / "ok.csv").is_file()  # the untouched file passes the check

    marker = tmp_path / "marker"
    saved = weights.read_bytes()
    try:  # the weights file swapped for a payload after extraction
        poisoned_pth(weights, "magic number", marker)
        swapped = server.run(
            ["predict", "--model", run_id, images, "--cache-dir", cache_dir, "--output", tmp_path / "p.csv"]
        )
        assert_refused(
            swapped,
            marker,
            rf"weights file '{re.escape(str(weights))}' is not the file the features were "
            r"extracted with \(its content hash differs\)",
        )
        rc, out, _ = cli("verify", "--cache-dir", cache_dir)  # the cache itself is intact, but verify says it
        assert rc == 0 and "predict would refuse it here: weights file" in out, out
    finally:
        weights.write_bytes(saved)

    elsewhere = poisoned_pth(tmp_path / "elsewhere.pth", "storage keys", marker)
    edits = [
        ({"weights": str(elsewhere)}, ()),  # the recorded path pointed at another file
        ({"weights": str(elsewhere)}, ("file_hashes",)),  # ... in an entry that records no hash
        (
            {
                "weights": str(elsewhere),  # a fully crafted received cache: the hash matches, the unpickler refuses
                "file_hashes": {"weights": file_fingerprint(str(elsewhere))},
            },
            (),
        ),
    ]
    for change, drop in edits:
        _edit_backbone_args(cache_dir, change, drop)
        try:
            child = server.run(
                ["predict", "--model", run_id, images, "--cache-dir", cache_dir, "--output", tmp_path / "p.csv"]
            )
            assert_refused(child, marker)
        finally:
            shutil.copyfile(original, _index(cache_dir))
    assert not (tmp_path / "p.csv").exists()


def _tiny_model(path: Path, seed: int) -> Path:
    """A small saved Keras backbone (random weights from `seed`), as a user's fine-tuned model file."""
    import keras

    init = keras.initializers.GlorotUniform(seed=seed)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, name="stem", kernel_initializer=init)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, name="deeper", kernel_initializer=init)(x)
    head = keras.layers.Dense(2, name="head", kernel_initializer=init)
    keras.Model(inputs, head(keras.layers.GlobalAveragePooling2D()(x))).save(path)
    return path


@pytest.mark.slow  # saves a Keras model
def test_predict_checks_a_saved_model_backbone_before_loading_it(elpv_folder, tmp_path):
    model, cache_dir = _tiny_model(tmp_path / "mine.keras", 0), tmp_path / "cache"
    rc, _, err = cli(
        "extract",
        "--data",
        elpv_folder,
        "--backbone",
        model,
        "--layers",
        "deeper",
        "--preprocess",
        "unit",
        "--cache-dir",
        cache_dir,
        "--quiet",
    )
    assert rc == 0, err
    with h5py.File(next(cache_dir.glob("mine-*/index.h5")), "r") as f:
        assert json.loads(f.attrs["backbone_args"])["file_hashes"] == {"model": file_fingerprint(str(model))}
    import featx

    run_id = featx.fit(None, None, featx.fit_spec("logreg"), cache=cache_dir, log=None).run_id
    images = next(p for p in elpv_folder.iterdir() if p.is_dir())
    predict = ("predict", "--model", run_id, images, "--cache-dir", cache_dir, "--output", tmp_path / "p.csv")
    rc, _, err = cli(*predict)
    assert rc == 0, err

    _tiny_model(model, 1)  # another model at the same path: never loaded
    rc, _, err = cli(*predict)
    assert rc == 2 and err.count("\n") == 1, err
    assert f"model file '{model}' is not the file the features were extracted with" in err, err
    rc, out, _ = cli("verify", "--cache-dir", cache_dir)
    assert rc == 0 and "predict would refuse it here: model file" in out, out

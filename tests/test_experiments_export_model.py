"""featx export-model (featx/experiments/export_model.py): every kind of run as a model that classifies images
without featx, checked against featx's own numbers on real ELPV images.

One small extraction serves the module: the 18 ELPV images of conftest's elpv_folder through EfficientNet-Lite0
(its packaged ImageNet weights) at 96 px, two layers pooled avg+max, with their flip view. Eight runs on it cover
each kind (linear heads and the dense head after every transform with a Keras form, a --tta run, and folder runs:
a forest on FNE with --tta, a Nystroem SVM on kbins, the dense head on FNE); each is exported, then ONE fresh
Python process that imports no featx runs the docs' snippets and loads every export with Keras, skops, TensorFlow
and LiteRT alone. Its scores must be the run's own (its pipeline on the cached features of the same images) to the
float32 bound of tests/helpers.py, and `featx predict`'s (to its CSV's 4 decimals). The tail run's export (the
fine-tuned network) keeps its own, older tests at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import featx
from featx.errors import FeatxError
from featx.experiments.export_model import export_model

from doc_blocks import page_blocks
from helpers import U32, assert_one_line_error, assert_same_classes, cli, extract, magnitude

pytestmark = pytest.mark.slow  # TensorFlow: a real extraction, fits, exports and a fresh process
ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "export.md"
LAYERS = "block3b_add,top_activation"
CSV_ROUNDING = 5e-5  # featx predict's CSV keeps 4 decimals
TFLITE_TOLERANCE = 1e-3  # TFLite's own float32 kernels (XNNPACK) against Keras': measured 1e-5 (2026-12-06)

# run -> (fit keywords, the export's name); a name without a suffix is a folder
RUNS = {
    "logreg": ({"clf": "logreg", "layers": LAYERS, "standardize": True, "pca": 8}, "model.keras"),
    "linear_svm": (
        {"clf": "linear-svm", "layers": LAYERS, "normalize": "layer", "standardize": True, "select": "group-lasso:0.2"},
        "svm.keras",
    ),
    "sgd": ({"clf": "sgd", "layers": "top_activation", "standardize": True}, "sgd.keras"),
    "dense": (
        {"clf": "dense", "layers": "top_activation", "standardize": True, "params": {"hidden": [16], "epochs": 3}},
        "dense.keras",
    ),
    "tta": ({"clf": "logreg", "layers": "top_activation", "views": "flip", "tta": True}, "tta.keras"),
    "rf_tta": (
        {
            "clf": "rf",
            "layers": "top_activation",
            "discretize": "fne",
            "views": "flip",
            "tta": True,
            "params": {"n_estimators": 25},
        },
        "rf_model",
    ),
    "nystroem": ({"clf": "nystroem-svm", "layers": LAYERS, "discretize": "kbins"}, "nystroem_model"),
    "dense_fne": (
        {"clf": "dense", "layers": "top_activation", "discretize": "fne", "params": {"hidden": [8], "epochs": 2}},
        "dense_fne_model",
    ),
}
SAVED_MODEL, TFLITE = ("linear_svm", "model_savedmodel"), ("dense", "model.tflite")


def fitted(cache_dir, clf, layers, **keywords):
    """featx.fit of one of RUNS's keyword sets (the classifier, layers and fit_spec's keywords)."""
    return featx.fit(None, layers, featx.fit_spec(clf, **keywords), cache=cache_dir, log=None)


@pytest.fixture(scope="module")
def study(elpv_folder, tmp_path_factory):
    """(cache folder, {run: run id}, exports folder, {run: export path}): the runs fitted and exported."""
    cache_dir = tmp_path_factory.mktemp("export_cache")
    extract(elpv_folder, LAYERS, pool="avgmax", input_size=96, views="flip", cache_dir=cache_dir, progress=False)
    runs = {name: fitted(cache_dir, **keywords).run_id for name, (keywords, _) in RUNS.items()}
    out = tmp_path_factory.mktemp("exports")
    paths = {}
    for name, (_, file) in RUNS.items():
        if name == "logreg":  # the command line, once
            rc, stdout, err = cli("export-model", runs[name], "-o", out / file, "--cache-dir", cache_dir)
            assert rc == 0 and f"exported run {runs[name]}" in stdout and "probabilities" in stdout, err
        else:
            export_model(runs[name], out / file, cache=cache_dir, log=None)
        paths[name] = out / file
    for (name, file), format in ((SAVED_MODEL, "savedmodel"), (TFLITE, "tflite")):
        export_model(runs[name], out / file, format=format, cache=cache_dir, log=None)
        paths[f"{name}:{format}"] = out / file
    return cache_dir, runs, out, paths


def images_of(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.png"))


# What the fresh process runs after the docs' snippets: every export on every image, by Keras, skops, TensorFlow
# and LiteRT alone; then it proves that featx was never imported.
SCORE_ALL = """
import json, sys, pathlib, zipfile
import keras, numpy as np, skops.io, tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from PIL import Image, ImageOps

job = json.loads(sys.argv[1])
def decode(path, height, width):
    return np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB").resize((width, height), Image.BILINEAR))
def load(path):
    return keras.saving.load_model(path, safe_mode=True, compile=False)
results = {}
for name, path in job["exports"].items():
    path = pathlib.Path(path)
    if path.suffix == ".keras":
        meta = json.loads(zipfile.ZipFile(path).read("featx.json"))
    elif path.suffix == ".tflite":
        meta = json.loads(zipfile.ZipFile(job["exports"][name.split(":")[0]]).read("featx.json"))
    elif (path / "manifest.json").exists():
        meta = json.loads((path / "manifest.json").read_text())
    else:
        meta = json.loads((path / "assets.extra" / "featx.json").read_text())
    height, width, _ = meta["input"]["shape"]
    images = np.stack([decode(p, height, width) for p in job["images"]]).astype(np.float32)
    results["images"] = images
    if path.suffix == ".keras":
        model = load(path)
        results[name] = model.predict(images, verbose=0)
        results[name + ":uint8"] = model.predict(images.astype(np.uint8), verbose=0)
    elif path.suffix == ".tflite":
        interpreter = Interpreter(model_path=str(path))
        source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        interpreter.resize_tensor_input(source["index"], images.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(source["index"], images)
        interpreter.invoke()
        results[name] = interpreter.get_tensor(target["index"])
    elif (path / "manifest.json").exists():
        file = path / "pipeline.skops"
        pipeline = skops.io.load(file, trusted=[t for t in skops.io.get_untrusted_types(file=file) if t.startswith("sklearn.")])
        features = load(path / "features.keras").predict(images, verbose=0)
        results[name + ":features"] = features
        rows = features.reshape(-1, features.shape[-1])
        if (path / "head.keras").exists():
            out = load(path / "head.keras").predict(pipeline.transform(rows), verbose=0)
        else:
            out = pipeline.predict_proba(rows) if meta["output"] == "probabilities" else pipeline.decision_function(rows)
        results[name] = np.reshape(out, (len(images), -1, meta["n_outputs"])).mean(axis=1)
    else:
        served = tf.saved_model.load(str(path))  # held: its functions need the loaded variables alive
        results[name] = served.serve(tf.constant(images)).numpy()
assert "featx" not in sys.modules, "a featx module was imported"
np.savez(job["out"], **results)
print("featx imported:", "featx" in sys.modules)
"""


@pytest.fixture(scope="module")
def fresh_process(study, elpv_folder, tmp_path_factory):
    """(scores {export: (n, n_outputs)} and the decoded images, the docs' snippets' stdout) of one fresh process
    that imports no featx: the docs' snippets as written, in a folder holding the files they name, then SCORE_ALL."""
    cache_dir, runs, out, paths = study
    work = tmp_path_factory.mktemp("snippets")
    for link, name in (
        ("model.keras", "logreg"),
        ("rf_model", "rf_tta"),
        ("model_savedmodel", "linear_svm:savedmodel"),
    ):
        os.symlink(paths[name], work / link)
    os.symlink(paths["dense:tflite"], work / "model.tflite")
    shutil.copy(images_of(elpv_folder)[0], work / "cell.png")
    snippets = [
        b.text for b in page_blocks(DOCS) if b.language == "python"
    ]  # the docs mark them not run by test_doc_pages
    featx_free = [text for text in snippets if "import featx" not in text]
    assert len(featx_free) == 4  # .keras, folder, SavedModel, TFLite
    job = {
        "exports": {name: str(path) for name, path in paths.items()},
        "images": [str(p) for p in images_of(elpv_folder)],
        "out": str(work / "scores.npz"),
    }
    program = "\n".join(
        f"print('--- snippet {i}')\nexec(compile({text!r}, 'snippet {i}', 'exec'), {{}})"
        for i, text in enumerate(featx_free)
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # featx must not even be importable from here
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    done = subprocess.run(
        [sys.executable, "-c", program + "\n" + SCORE_ALL, json.dumps(job)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "featx imported: False" in done.stdout
    with np.load(work / "scores.npz") as data:
        return {k: data[k] for k in data.files}, done.stdout


def reference(cache_dir: Path, run_id: str, files: list[Path]):
    """The run on `files` as featx fitted and scored it, from the cached features of those images: (its scores,
    the fitted model, the model's input rows X (n, V * d), its class names in score order)."""
    from featx.cache.store import Cache
    from featx.experiments.predict import with_tta
    from featx.runs.models import load_model

    pipeline, run = load_model(run_id, Cache(cache_dir))
    model, views = with_tta(pipeline, run, None)
    X, _, meta = featx.load(None, run["layer_names"], views=views, cache=cache_dir)
    by_name = {Path(p).name: i for i, p in enumerate(meta["path"])}
    X = X[[by_name[f.name] for f in files]]
    expected = scores_of(model, X)
    names = np.asarray(featx.Cache(cache_dir).open(run["cache_entry"]).class_names, dtype=object)
    return expected, model, X, names[np.asarray(model.classes_)]


@pytest.fixture(scope="module")
def predictions(study, elpv_folder, tmp_path_factory):
    """{run: `featx predict`'s table of the run on the ELPV folder (every image, in file order)}."""
    cache_dir, runs, _, _ = study
    out = tmp_path_factory.mktemp("predictions")
    return {
        name: featx.predict(run_id, elpv_folder, output=out / f"{name}.csv", cache=cache_dir, log=lambda *a: None)
        for name, run_id in runs.items()
    }


def scores_of(model, X) -> np.ndarray:
    """The fitted model's scores on X (n, n_outputs): predict_proba, or decision_function where it has none."""
    from featx.classifiers.portable import output_kind

    method = "predict_proba" if output_kind(model) == "probabilities" else "decision_function"
    return np.asarray(getattr(model, method)(X), dtype=np.float64).reshape(len(X), -1)


def float32_tolerance(model, X) -> float:
    """Higham's bound for float32 dot products, n u max sum|w_i z_i| (n the features, u = 2^-24), of the model's
    pipeline on its rows (a ViewEnsemble's: one row per view)."""
    inner = getattr(model, "estimator_", model)
    rows = X.reshape(-1, getattr(model, "n_view_features_", X.shape[1]))
    return rows.shape[1] * U32 * magnitude(inner, rows.astype(np.float32))


@pytest.mark.parametrize("name", RUNS)
def test_each_export_gives_the_run_s_scores_and_featx_predict_s_in_a_process_without_featx(
    name, study, fresh_process, predictions, elpv_folder
):
    cache_dir, runs, _, paths = study
    scores, _ = fresh_process
    files = images_of(elpv_folder)
    expected, model, X, classes = reference(cache_dir, runs[name], files)
    got = scores[name].astype(np.float64)
    if paths[name].suffix == ".keras":  # transforms and classifier in float32: Higham's bound
        tolerance = float32_tolerance(model, X)
        np.testing.assert_allclose(got, expected, rtol=0, atol=tolerance)
        np.testing.assert_array_equal(scores[f"{name}:uint8"], scores[name])  # the same model fed uint8 pixels
    else:  # a folder: the feature model, then the run's own scikit-learn arithmetic on its features
        tolerance = 0.0
        features = scores[f"{name}:features"].reshape(len(files), -1)
        np.testing.assert_allclose(features, X, rtol=0, atol=features.shape[1] * U32 * np.abs(X).max())
        np.testing.assert_array_equal(got, scores_of(model, features))
        if np.array_equal(features, X):  # the very floats the cache holds (so here): the very scores
            np.testing.assert_array_equal(got, expected)
    table = predictions[name]
    assert [Path(p).name for p in table["path"]] == [f.name for f in files]
    columns = [f"p_{c}" for c in classes]
    if all(c in table for c in columns):
        np.testing.assert_allclose(got, table[columns].to_numpy(float), rtol=0, atol=CSV_ROUNDING + tolerance)
    assert_same_classes(got, expected, tolerance, classes, table["label"].to_numpy())


def test_the_decoded_pixels_are_featx_s(fresh_process, elpv_folder):
    from featx.sources.decode import load_rgb

    scores, _ = fresh_process
    pixels = np.stack([load_rgb(str(p), (96, 96)) for p in images_of(elpv_folder)])
    np.testing.assert_array_equal(scores["images"], pixels)


def test_savedmodel_and_tflite_give_the_keras_model_s_scores(study, fresh_process, elpv_folder):
    from featx.experiments.export_model import tflite_metadata

    cache_dir, runs, _, paths = study
    scores, _ = fresh_process
    np.testing.assert_allclose(scores["linear_svm:savedmodel"], scores["linear_svm"], rtol=0, atol=1e-5)
    assert (paths["linear_svm:savedmodel"] / "saved_model.pb").is_file()
    # TFLite runs its own kernels: a stated tolerance on the probabilities, and the same class on the test split
    np.testing.assert_allclose(scores["dense:tflite"], scores["dense"], rtol=0, atol=TFLITE_TOLERANCE)
    entry = featx.Cache(cache_dir).open(None)
    test = {Path(p).name for p, split in zip(entry.relpaths, entry.split) if split == "test"}
    rows = [i for i, f in enumerate(images_of(elpv_folder)) if f.name in test]
    assert rows and (scores["dense:tflite"][rows].argmax(1) == scores["dense"][rows].argmax(1)).all()
    metadata = tflite_metadata(paths["dense:tflite"].read_bytes())
    assert metadata["run_id"] == runs["dense"] and metadata["output"] == "probabilities" and not metadata["float16"]


def test_the_docs_snippets_print_featx_predict_s_class(study, fresh_process, predictions, elpv_folder):
    _, stdout = fresh_process
    cell = images_of(elpv_folder)[0].name
    printed = [part.strip().splitlines() for part in stdout.split("--- snippet ")[1:]]
    assert len(printed) == 4, stdout
    class_names = featx.Cache(study[0]).open(None).class_names
    # .keras (the logreg run), folder (rf_tta), SavedModel (linear_svm) print "class ..."; TFLite (dense) its scores
    for i, (name, lines) in enumerate(zip(("logreg", "rf_tta", "linear_svm", "dense"), printed)):
        table = predictions[name]
        label = table.loc[table["path"].map(lambda p: Path(p).name) == cell, "label"].iloc[0]
        assert lines[0] == str(i), stdout
        if i < 3:
            shown = lines[1].split()[0]
        else:
            values = np.array(" ".join(lines[1:]).replace("[", " ").replace("]", " ").split()[:3], dtype=float)
            shown = str(class_names[int(np.argmax(values))])
        assert shown == label, (name, stdout)


def test_featx_load_model_loads_either_form_and_the_docs_block_runs(study, elpv_folder, tmp_path, monkeypatch):
    cache_dir, runs, _, paths = study
    files = images_of(elpv_folder)
    for name in ("logreg", "rf_tta", "dense_fne"):  # a .keras file, a folder with views, a folder with a head
        exported = featx.load_model(paths[name])
        expected, model, X, classes = reference(cache_dir, runs[name], files)
        tolerance = float32_tolerance(model, X) if paths[name].suffix == ".keras" else 0.0  # a folder: exact
        np.testing.assert_allclose(exported.scores(files), expected, rtol=0, atol=tolerance)
        assert exported.class_names == list(classes) and list(exported.predict(files[:2])) == list(
            classes[np.argmax(expected[:2], axis=1)]
        )
    [block] = [b for b in page_blocks(DOCS) if b.language == "python" and "import featx" in b.text]
    monkeypatch.chdir(tmp_path)
    os.symlink(paths["logreg"], tmp_path / "model.keras")
    shutil.copy(files[0], tmp_path / "cell.png")
    exec(compile(block.text, str(DOCS), "exec"), {})
    # a run id still gives the run's pipeline and log row
    pipeline, row = featx.load_model(runs["logreg"], cache_dir)
    assert row["run_id"] == runs["logreg"] and hasattr(pipeline, "predict_proba")


def test_the_files_carry_class_names_provenance_and_what_the_output_is(study):
    cache_dir, runs, _, paths = study
    from featx.runs.store import find_run

    entry = featx.Cache(cache_dir).open(None)
    for name, output in (("logreg", "probabilities"), ("linear_svm", "decision_scores"), ("nystroem", None)):
        path, run = paths[name], find_run(runs[name], cache_dir)
        if path.suffix == ".keras":
            metadata = json.loads(zipfile.ZipFile(path).read("featx.json"))
        else:
            metadata = json.loads((path / "manifest.json").read_text())
            assert set(metadata["files"]) == {"features.keras", "pipeline.skops"}
        assert metadata["run_id"] == runs[name] and metadata["spec_hash"] == run["spec_hash"]
        assert metadata["cache_key"] == entry.key and metadata["featx_version"] == featx.__version__
        assert metadata["class_names"] == list(entry.class_names) and metadata["input"]["shape"] == [96, 96, 3]
        assert metadata["output"] == (output or "decision_scores")
        assert metadata["layers"] == run["layer_names"].split(",") and metadata["views"] == ["id"]
        assert metadata["imports"] == []  # Keras' own layers and ops only
    saved = json.loads((paths["linear_svm:savedmodel"] / "assets.extra" / "featx.json").read_text())
    assert saved["run_id"] == runs["linear_svm"] and saved["form"] == "savedmodel"
    tta = json.loads(zipfile.ZipFile(paths["tta"]).read("featx.json"))
    assert tta["views"] == ["id", "hflip"] and tta["tta"] is True


def test_a_folder_whose_file_changed_is_refused(study, tmp_path):
    _, _, _, paths = study
    folder = tmp_path / "copy"
    shutil.copytree(paths["nystroem"], folder)
    with open(folder / "pipeline.skops", "ab") as f:
        f.write(b"\0")
    with pytest.raises(featx.errors.FeatxError, match="does not match the sha256"):
        featx.load_model(folder)


def test_the_exported_network_is_the_extractor_s_graph_and_its_steps_are_named(study):
    import keras

    _, _, _, paths = study
    model = keras.saving.load_model(paths["linear_svm"], safe_mode=True, compile=False)
    assert [layer.name for layer in model.layers[1:]] == ["features", "layernorm", "standardize", "select", "clf"]
    with pytest.raises(ValueError, match="incompatible"):  # a fixed input size: other sizes are refused
        model(np.zeros((1, 64, 64, 3), np.float32))


def test_every_d4_view_in_the_graph_is_view_of_s_pixels_and_the_others_say_why_not(elpv_folder):
    from keras import ops

    from featx.sources.decode import load_rgb
    from featx.sources.views import D4, graph_views, keras_view, view_of

    image = load_rgb(str(images_of(elpv_folder)[0]), (96, 96)).copy()
    image[10:20, 60:90] = [255, 0, 0]  # an asymmetric mark, so every view differs from every other
    batch = ops.convert_to_tensor(np.stack([image, image[::-1]]))
    for name in D4:
        got = np.asarray(keras_view(batch, name))
        assert np.array_equal(got[0], view_of(image, name, 0)) and np.array_equal(got[1], view_of(image[::-1], name, 0))
    assert graph_views(D4, (96, 96)) is None
    assert "non-square" in graph_views(("id", "rot90"), (96, 128)) and graph_views(("id", "hflip"), (96, 128)) is None
    assert "crop1 is resized by Pillow" in graph_views(("id", "crop1"), (96, 96))
    assert "rand1s0 is resized by Pillow" in graph_views(("id", "rand1s0"), (96, 96))


def test_a_layer_class_from_outside_keras_is_refused_at_export():
    import keras

    from featx.experiments.export_model import packages

    class Doubling(keras.layers.Layer):  # a user's custom layer: its code lives in this test module
        def call(self, x):
            return x * 2

    inputs = keras.Input((4,))
    plain = keras.Model(inputs, keras.layers.Dense(2)(keras.ops.mean(inputs, axis=1, keepdims=True)))
    assert packages(plain) == []
    with pytest.raises(featx.errors.FeatxError, match="Doubling.*safe mode"):
        packages(keras.Model(inputs, plain(Doubling()(inputs))))


@pytest.mark.parametrize("pool", ["pyramid", "grid:64"])
def test_image_model_gives_the_extractor_s_features(pool, elpv_folder):
    """LayerExtractor.image_model is the extraction as one Keras model: the pooling in the graph, the column order
    and the float16 rounding of the cache (MobileNetV2 at 96 px, random weights)."""
    from featx.backbones import get_backbone
    from featx.extractor import LayerExtractor
    from featx.sources.decode import load_rgb

    backbone = get_backbone("mobilenet_v2", "none", 96)
    layers = ["block_2_add", "block_16_project_BN", "out_relu"]
    extractor = LayerExtractor(backbone, layers, pool, "float16")
    images = np.stack([load_rgb(str(p), (96, 96)) for p in images_of(elpv_folder)[:6]])
    expected = np.concatenate([v.astype(np.float32) for v in extractor(images).values()], axis=1)
    got = extractor.image_model().predict(images.astype(np.float32), batch_size=len(images), verbose=0)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_array_equal(got.astype(np.float16).astype(np.float32), got)  # float16 values, as cached
    # the same float32 graph, rounded to float16: where the two executions' kernels differ by float32 rounding,
    # a value may round to the neighbouring float16 (2^-10 relative); measured: 1 of 48,720 values differs
    np.testing.assert_allclose(got, expected, rtol=2.0**-10, atol=2.0**-24)
    assert (got == expected).mean() > 0.99


# ---- bad input: one line, nothing written --------------------------------------------------------------------


def assert_nothing_written(folder: Path, before: set[str]) -> None:
    assert {p.name for p in folder.iterdir()} == before, "export-model left a file behind"


def test_bad_exports_are_one_line_each_and_write_nothing(study, tmp_path):
    cache_dir, runs, _, _ = study
    before = set()
    baseline = featx.fit(None, "top_activation", featx.fit_spec("majority"), cache=cache_dir, log=None).run_id
    cases = [
        ((baseline, "-o", tmp_path / "m.keras"), "majority baseline"),
        ((runs["rf_tta"], "-o", tmp_path / "m.keras"), "exports to a folder.*fne step.*pass -o a folder name"),
        ((runs["rf_tta"], "-o", tmp_path / "m.tflite", "--format", "tflite"), "cannot be exported as --format tflite"),
        ((runs["nystroem"], "-o", tmp_path / "sm", "--format", "savedmodel"), "with --format keras, to a folder"),
        ((runs["logreg"], "-o", tmp_path / "m.h5"), "must end in .keras"),
        ((runs["logreg"], "-o", tmp_path / "m.keras", "--float16"), "--float16 applies to --format tflite"),
        ((runs["logreg"], "-o", tmp_path / "m.pb", "--format", "tflite"), "must end in .tflite"),
        ((runs["logreg"], "-o", tmp_path / "no" / "m.keras"), "does not exist"),
        (("20990101-000000-abcdef", "-o", tmp_path / "m.keras"), "is not in"),
    ]
    for args, pattern in cases:
        rc, _, err = cli("export-model", *args, "--cache-dir", cache_dir)
        assert_one_line_error(rc, err, pattern)
        assert_nothing_written(tmp_path, before)
    (tmp_path / "notes.keras").write_text("mine")  # never overwritten: not an export
    rc, _, err = cli("export-model", runs["logreg"], "-o", tmp_path / "notes.keras", "--cache-dir", cache_dir)
    assert_one_line_error(rc, err, "exists and is not a featx export")
    assert (tmp_path / "notes.keras").read_text() == "mine"


def test_a_run_whose_model_file_or_entry_is_gone_or_changed_is_refused(study, tmp_path):
    cache_dir, runs, _, _ = study
    copy = tmp_path / "cache"
    shutil.copytree(cache_dir, copy)
    out = tmp_path / "out"
    out.mkdir()
    run_folder = next((copy / "runs").glob(f"{runs['sgd']}*"))
    with open(run_folder / "model.skops", "ab") as f:
        f.write(b"\0")
    rc, _, err = cli("export-model", runs["sgd"], "-o", out / "m.keras", "--cache-dir", copy)
    assert_one_line_error(rc, err, "does not match the sha256 recorded")
    (next((copy / "runs").glob(f"{runs['logreg']}*")) / "model.skops").unlink()
    rc, _, err = cli("export-model", runs["logreg"], "-o", out / "m.keras", "--cache-dir", copy)
    assert_one_line_error(rc, err, "is not a file inside")
    entry = featx.Cache(copy).open(None)
    shutil.rmtree(entry.path)
    rc, _, err = cli("export-model", runs["tta"], "-o", out / "m.keras", "--cache-dir", copy)
    assert_one_line_error(rc, err, f"cache entry of run {runs['tta']} .*is gone")
    assert not any(out.iterdir())


def test_a_new_export_replaces_an_old_one(study, tmp_path):
    cache_dir, runs, _, paths = study
    folder = tmp_path / "rf"
    shutil.copytree(paths["nystroem"], folder)  # another run's export at that path
    rc, out, err = cli("export-model", runs["rf_tta"], "-o", folder, "--cache-dir", cache_dir)
    assert rc == 0, err
    assert json.loads((folder / "manifest.json").read_text())["run_id"] == runs["rf_tta"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rf"]  # no staging folder left behind


# ---- tail runs: the fine-tuned network -----------------------------------------------------------------------

CUT = "block6d_add"


@pytest.fixture(scope="module")
def tail_run(elpv_folder, tmp_path_factory):
    """(cache folder, run id) of a tail fitted on the cut's maps of the ELPV folder (18 images, 96 px)."""
    from featx.backbones import backbone_description
    from featx.cache.store import Cache

    cache_dir = tmp_path_factory.mktemp("tail_cache")
    extract(elpv_folder, CUT, pool="none", input_size=96, cache_dir=cache_dir, progress=False)
    entry = Cache(cache_dir).open()
    result = featx.fit(
        None,
        CUT,
        featx.fit_spec(
            "tail", params={"cut": CUT, "backbone": backbone_description(entry), "epochs": 2, "warmup_epochs": 1}
        ),
        cache=cache_dir,
        log=None,
    )
    return cache_dir, result.run_id


def test_the_exported_network_loads_safely_predicts_as_featx_predict_and_extracts_as_a_backbone(
    tail_run, elpv_folder, tmp_path
):
    import keras

    cache_dir, run_id = tail_run
    path = tmp_path / "tuned.keras"
    rc, out, err = cli("export-model", run_id[:8], "-o", path, "--cache-dir", cache_dir)
    assert rc == 0, err
    assert f"exported run {run_id}" in out and str(path) in out
    model = keras.saving.load_model(path, safe_mode=True, compile=False)
    assert model.input_shape == (None, 96, 96, 3) and model.output_shape == (None, 3)
    names = [layer.name for layer in model.layers]
    assert CUT in names and "top_activation" in names and names[-1] == "head_softmax"  # one flat network
    metadata = json.loads(zipfile.ZipFile(path).read("featx.json"))
    assert metadata["run_id"] == run_id and metadata["cut"] == CUT
    assert metadata["input"]["preprocessing"] == "tf_lite_127_128"
    assert metadata["imports"] == []  # Keras' own layers: a process imports nothing else to load it
    with pytest.raises(FeatxError, match="tail run's fine-tuned network, which takes images preprocessed as "):
        featx.load_model(path).scores([str(p) for p in sorted(elpv_folder.rglob("*.png"))[:2]])  # not pixels

    predicted = featx.predict(run_id, elpv_folder, output=tmp_path / "p.csv", cache=cache_dir, log=lambda *a: None)
    # the exported file as a backbone: featx decodes, resizes and preprocesses the images itself (preprocessing
    # inferred from the layer names), and its last layer's outputs are the class probabilities
    again = tmp_path / "again"
    extract(elpv_folder, "head_softmax,top_activation", backbone=str(path), cache_dir=again, progress=False)
    X, _, meta = featx.load(None, "head_softmax", cache=again)
    assert X.shape == (len(predicted), 3)
    by_path = dict(zip(meta["path"].map(lambda p: p.split("/")[-1]), X))
    columns = [c for c in predicted.columns if c.startswith("p_")]
    for _, row in predicted.iterrows():
        mine = by_path[row["path"].split("/")[-1]]
        # predict's CSV keeps 4 decimals (5e-5); the exported network recomputes probabilities <= 1 in float32
        # in another graph (1,280 u = 7.6e-5, helpers.roundoff)
        assert np.allclose(mine, row[columns].to_numpy(float), atol=2e-4)
    assert np.allclose(X.sum(axis=1), 1, atol=1e-5)  # a softmax over 3 classes: a few u
    tuned, _, _ = featx.load(None, "top_activation", cache=again)
    assert tuned.shape[1] == 1280 and np.isfinite(tuned).all()


def test_a_tail_run_exports_as_keras_only_and_to_a_keras_path(tail_run, tmp_path):
    cache_dir, run_id = tail_run
    rc, _, err = cli("export-model", run_id, "-o", tmp_path / "model.h5", "--cache-dir", cache_dir)
    assert_one_line_error(rc, err, "must end in .keras")
    rc, _, err = cli(
        "export-model", run_id, "-o", tmp_path / "m.tflite", "--format", "tflite", "--cache-dir", cache_dir
    )
    assert_one_line_error(rc, err, "tail run.*exports with --format keras only")
    assert not any(tmp_path.iterdir())

"""Saved models: every pipeline featx fits round-trips through skops (+ .keras for the dense head), and a model
file that would run code when loaded (a pickle, an untrusted type, a Keras Lambda layer) is refused without
running it, even when its sha256 in the runs log was edited to match. Real files, a real SQLite log, real
`featx predict` processes (tests/forkserver.py)."""

from __future__ import annotations

import os
import pickle
import re
import shutil
import sqlite3
from pathlib import Path

import joblib
import numpy as np
import pytest
import skops.io
from sklearn.datasets import load_digits
from sklearn.pipeline import Pipeline

from featx.classifiers import CLASSIFIERS, make_pipeline
from featx.errors import FeatxError
from featx.experiments.fit import fit
from featx.experiments.predict import predict
from featx.features.transforms import build_feature_pipeline
from featx.runs.models import HEAD_FILE, MODEL_FILE, load_model, model_sha256, save_model
from featx.runs.store import COLUMNS, LOG_FILE, append_run, stage_run
from featx.selection.spec import fit_spec

from helpers import roundoff


class Payload:
    """Unpickling this runs a shell command that creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class Trap:
    """Any construction of this on load creates the marker file."""

    def __init__(self, marker=None):
        self.marker = marker

    def __setstate__(self, state):
        Path(state["marker"]).touch()


@pytest.fixture(scope="module")
def small_digits():
    X, y = load_digits(return_X_y=True)
    return X[:400].astype(np.float32) / 16, y[:400]


def save_run(cache_dir: Path, pipeline) -> str:
    """Save and log a fitted pipeline as featx's fit does; returns the run id."""
    with stage_run(cache_dir) as staged:
        sha = save_model(pipeline, staged.folder / MODEL_FILE)
        row = dict.fromkeys(COLUMNS) | {
            "run_id": staged.run_id,
            "model_path": f"{staged.run_id}/{MODEL_FILE}",
            "model_sha256": sha,
        }
        append_run(cache_dir, row, staged=staged)
    return staged.run_id


def plant(cache_dir: Path, run_id: str, payload: bytes, name: str = MODEL_FILE) -> None:
    """Replace a run's model file and 'fix' its checksum in the log, as an attacker with write access would."""
    model = cache_dir / "runs" / run_id / MODEL_FILE
    (model.parent / name).write_bytes(payload)
    with sqlite3.connect(cache_dir / "runs" / LOG_FILE) as db:
        db.execute(
            "UPDATE runs SET model_path = ?, model_sha256 = ? WHERE run_id = ?",
            (f"{run_id}/{name}", model_sha256(model.parent / name), run_id),
        )


@pytest.mark.parametrize(
    "transforms", [{}, {"standardize": True, "discretize": "fne", "pca": 10}, {"discretize": "kbins"}]
)
@pytest.mark.parametrize(
    "clf", [c for c in CLASSIFIERS if c not in ("dense", "tail")] + ["knn-manhattan"]
)  # Keras: test_dense, test_tail
def test_every_pipeline_round_trips_through_skops(small_digits, tmp_path, clf, transforms):
    X, y = small_digits
    params = {"metric": "manhattan", "algorithm": "ball_tree"} if clf == "knn-manhattan" else None
    pipeline = make_pipeline(clf.split("-manhattan")[0], params, build_feature_pipeline(**transforms), 0, 1).fit(X, y)
    run_id = save_run(tmp_path, pipeline)
    assert (tmp_path / "runs" / run_id / MODEL_FILE).read_bytes()[:2] == b"PK"  # a skops zip, not a pickle
    loaded, row = load_model(run_id, tmp_path)
    np.testing.assert_array_equal(loaded.predict(X), pipeline.predict(X))


def test_head2toe_pipeline_round_trips_through_skops(small_digits, tmp_path):
    """A model with --normalize layer and --select group-lasso:F (featx's own steps) loads back and predicts alike."""
    X, y = small_digits
    blocks = [["top_rows", 16], ["middle_rows", 32], ["bottom_rows", 16]]
    steps = build_feature_pipeline(normalize="layer", select="group-lasso:0.3", blocks=blocks)
    pipeline = make_pipeline("logreg", {"max_iter": 2000}, steps, 0, 1).fit(X, y)
    loaded, _ = load_model(save_run(tmp_path, pipeline), tmp_path)
    np.testing.assert_array_equal(loaded["select"].support_, pipeline["select"].support_)
    np.testing.assert_array_equal(loaded.predict(X), pipeline.predict(X))


@pytest.mark.slow
def test_dense_head_round_trips_as_skops_plus_keras_and_refuses_a_lambda_head(small_digits, tmp_path):
    import keras

    X, y = small_digits
    pipeline = make_pipeline("dense", {"hidden": (16,), "epochs": 3}, build_feature_pipeline(standardize=True)).fit(
        X, y
    )
    run_id = save_run(tmp_path, pipeline)
    folder = tmp_path / "runs" / run_id
    assert {p.name for p in folder.iterdir()} == {MODEL_FILE, HEAD_FILE}
    assert hasattr(pipeline[-1], "model_")  # saving did not strip the caller's head
    loaded, _ = load_model(run_id, tmp_path)
    # the saved weights in a rebuilt graph: probabilities <= 1 through sums of at most 64 terms (helpers.roundoff)
    np.testing.assert_allclose(loaded.predict_proba(X), pipeline.predict_proba(X), rtol=0, atol=roundoff(1.0, 64))

    marker = tmp_path / "lambda-ran"
    inputs = keras.Input((X.shape[1],))
    code = eval(f"lambda t: t + 0 * __import__('os').system('touch {marker}')")  # the path as a constant in the code
    outputs = keras.layers.Lambda(code)(inputs)
    keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(outputs)).save(folder / HEAD_FILE)
    marker.unlink(missing_ok=True)  # building the model above ran the lambda once
    with sqlite3.connect(tmp_path / "runs" / LOG_FILE) as db:
        db.execute("UPDATE runs SET model_sha256 = ?", (model_sha256(folder / MODEL_FILE),))
    with pytest.raises(FeatxError, match=r"head.keras of run .* does not load in Keras safe mode.*fit the model again"):
        load_model(run_id, tmp_path)
    assert not marker.exists()


def test_pickle_or_untrusted_model_file_never_runs(small_digits, tmp_path, fork_server):
    X, y = small_digits
    run_id = save_run(tmp_path, make_pipeline("logreg").fit(X, y))
    marker = tmp_path / "payload-ran"

    plant(tmp_path, run_id, pickle.dumps(Payload(marker)))
    with pytest.raises(
        FeatxError, match=rf"model file .*{MODEL_FILE} of run {run_id} is not a skops model featx wrote"
    ):
        load_model(run_id, tmp_path)
    child = fork_server.run(["predict", "--model", run_id, str(tmp_path), "--cache-dir", str(tmp_path)])
    lines = [l for l in child.err.splitlines() if l.strip() and not re.match(r"[IWEF]\d{4} |WARNING: All log", l)]
    assert child.rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "not a skops model" in lines[0], (
        child.err
    )

    trap = tmp_path / "trap.skops"
    skops.io.dump(Pipeline([("clf", Trap(str(marker)))]), trap)
    plant(tmp_path, run_id, trap.read_bytes())
    with pytest.raises(FeatxError, match=r"holds types featx never saves.*Trap"):
        load_model(run_id, tmp_path)

    old = tmp_path / "old.joblib"
    joblib.dump(Payload(marker), old)
    plant(tmp_path, run_id, old.read_bytes(), name="model.joblib")
    with pytest.raises(FeatxError, match=r"as a pickle \(model.joblib\), which featx no longer loads.*fit it again"):
        load_model(run_id, tmp_path)
    assert not marker.exists()


def test_tampered_or_foreign_model_is_refused(elpv_cache):
    result = fit(None, "top_activation", fit_spec("knn"), cache=elpv_cache, log=lambda *a: None)
    outside = elpv_cache / "outside.skops"  # intact copy, right sha256, but not in the runs folder
    shutil.copy(result.folder / "model.skops", outside)
    append_run(elpv_cache, {**result.row, "run_id": "20990101-000000-f0e1d2", "model_path": "../outside.skops"})
    with pytest.raises(FeatxError, match="not a file inside"):
        load_model("20990101-000000-f0e1d2", elpv_cache)
    with open(result.folder / "model.skops", "ab") as f:
        f.write(b"\0")
    with pytest.raises(FeatxError, match="sha256"):
        load_model(result.run_id, elpv_cache)
    with pytest.raises(FeatxError, match="sha256"):
        predict(result.run_id, [result.folder], cache=elpv_cache, log=lambda *a: None)

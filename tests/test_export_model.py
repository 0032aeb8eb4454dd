"""featx export-model: a tail run's whole network as one .keras file (featx/experiments/export_model.py).

One small real run: ELPV images at 96 px through EfficientNet-Lite0, block6d_add cached with --pool none, the tail
trained for two epochs, then exported; the file must load in Keras safe mode, give featx predict's probabilities,
and work as `featx extract --backbone FILE.keras`.
"""

from __future__ import annotations

import numpy as np
import pytest

import featx

from helpers import assert_one_line_error, cli

pytestmark = pytest.mark.slow  # TensorFlow: a real extraction, fit and export
CUT = "block6d_add"
QUIET = {"log": None}


@pytest.fixture(scope="module")
def tail_run(elpv_folder, tmp_path_factory):
    """(cache folder, run id) of a tail fitted on the cut's maps of the ELPV folder (18 images, 96 px)."""
    from featx.backbones import backbone_description
    from featx.cache.store import Cache

    cache_dir = tmp_path_factory.mktemp("tail_cache")
    featx.extract(
        str(elpv_folder), layers=CUT, pool="none", input_size=96, cache_dir=cache_dir, progress=False, **QUIET
    )
    entry = Cache(cache_dir).open()
    result = featx.fit(
        cache_dir=cache_dir,
        layers=CUT,
        clf="tail",
        **QUIET,
        params={"cut": CUT, "backbone": backbone_description(entry), "epochs": 2, "warmup_epochs": 1},
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

    predicted = featx.predict(run_id, elpv_folder, cache_dir=cache_dir, output=tmp_path / "p.csv", log=lambda *a: None)
    # the exported file as a backbone: featx decodes, resizes and preprocesses the images itself (preprocessing
    # inferred from the layer names), and its last layer's outputs are the class probabilities
    again = tmp_path / "again"
    featx.extract(
        str(elpv_folder),
        backbone=str(path),
        layers="head_softmax,top_activation",
        cache_dir=again,
        progress=False,
        **QUIET,
    )
    X, _, meta = featx.load(cache_dir=again, layers="head_softmax")
    assert X.shape == (len(predicted), 3)
    by_path = dict(zip(meta["path"].map(lambda p: p.split("/")[-1]), X))
    columns = [c for c in predicted.columns if c.startswith("p_")]
    for _, row in predicted.iterrows():
        mine = by_path[row["path"].split("/")[-1]]
        # predict's CSV keeps 4 decimals (5e-5); the exported network recomputes probabilities <= 1 in float32
        # in another graph (1,280 u = 7.6e-5, helpers.roundoff)
        assert np.allclose(mine, row[columns].to_numpy(float), atol=2e-4)
    assert np.allclose(X.sum(axis=1), 1, atol=1e-5)  # a softmax over 3 classes: a few u
    tuned, _, _ = featx.load(cache_dir=again, layers="top_activation")
    assert tuned.shape[1] == 1280 and np.isfinite(tuned).all()


def test_export_model_refuses_a_run_that_is_not_a_tail_and_a_path_that_is_not_keras(tail_run, tmp_path):
    cache_dir, run_id = tail_run
    rc, _, err = cli("export-model", run_id, "-o", tmp_path / "model.h5", "--cache-dir", cache_dir)
    assert_one_line_error(rc, err, "must end in .keras")
    other = featx.fit(cache_dir=cache_dir, layers=CUT, clf="logreg", **QUIET).run_id
    rc, _, err = cli("export-model", other, "-o", tmp_path / "model.keras", "--cache-dir", cache_dir)
    assert_one_line_error(rc, err, "logreg model on cached features; export-model exports the network of a tail run")
    assert not (tmp_path / "model.keras").exists()

"""featx.experiments.predict: predictions on image files match the cached features (conftest.elpv_cache)."""

import shutil

import numpy as np
import pandas as pd

from featx.cache.store import Cache
from featx.compute import Compute
from featx.experiments.fit import fit
from featx.experiments.predict import predict
from featx.features.load import load
from featx.selection.spec import fit_spec

from helpers import assert_float32_close, feature_terms, split_rows


def test_predict_on_image_files_matches_the_cached_features(elpv_cache, tmp_path):
    result = fit(
        None, "block6d_add,top_activation", fit_spec("logreg", standardize=True), cache=elpv_cache, log=lambda *a: None
    )
    X_test, _, meta = split_rows(elpv_cache, "block6d_add,top_activation", "test")
    root = Cache(elpv_cache).open(None).attrs["root"]
    files = [f"{root}/{p}" for p in meta["path"][:4]]
    folder = tmp_path / "more"
    folder.mkdir()
    shutil.copy(files[3], folder / "cell.png")
    (folder / "notes.txt").write_text("not an image")
    # an id prefix as users type it; not just the timestamp, which other runs in the same second share
    table = predict(
        result.run_id[:-2],
        files[:3] + [str(folder)],
        output=tmp_path / "out.csv",
        cache=elpv_cache,
        compute=Compute(batch_size=2),
        log=lambda *a: None,
    )
    assert list(table["path"]) == files[:3] + [str(folder / "cell.png"), str(folder / "notes.txt")]
    # predict re-extracts the images, in its batches of 2: the same extractor here gives the same features, which
    # lie within float32 round-off of the cached ones (another batch layout; helpers.roundoff, per layer), and the
    # table holds the pipeline's labels and probabilities for them, the latter to the CSV's 4 decimals (5e-5).
    # (Bounding the probabilities by the cached features' instead would carry their round-off through 1,300
    # logistic-regression coefficients: a worst case near 1, whatever the measured difference.)
    from featx.backbones import backbone_from_entry
    from featx.extractor import LayerExtractor

    entry, layers = Cache(elpv_cache).open(None), ["block6d_add", "top_activation"]
    backbone = backbone_from_entry(entry)
    extractor = LayerExtractor(backbone, layers, entry.settings["pool"], entry.settings["dtype"])
    batches = extractor.batches(files[:3] + [str(folder / "cell.png")], 0, 2)
    features = np.concatenate([np.concatenate([out[n] for n in layers], axis=-1) for _, out, _ in batches])
    for layer, (start, stop) in load(entry, ",".join(layers)).feature_slices.items():
        terms = feature_terms(backbone.model, layer)
        assert_float32_close(features[:, start:stop], X_test[:4, start:stop], terms, err_msg=layer)
    expected = np.asarray(entry.class_names)[result.pipeline.predict(features)]
    assert list(table["label"][:4]) == list(expected)
    probabilities = table.filter(like="p_").to_numpy()[:4].astype(float)
    np.testing.assert_allclose(probabilities, result.pipeline.predict_proba(features), rtol=0, atol=5e-5 + 1e-12)
    assert table["error"].iloc[4] and table["label"].iloc[4] == ""
    assert pd.read_csv(tmp_path / "out.csv")["label"].iloc[:4].tolist() == list(expected)

"""Augmented views in the cache, on real ELPV solar-cell images and a real EfficientNet-Lite0: view names and
pixels, bit-stable features, adding views computes only the new ones, resume and verify cover views."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

import featx
from featx.cache.store import Cache
from featx.cache.tables import entries_table, verify_all
from featx.cache.verify import verify
from featx.errors import FeatxError, RunFailed
from featx.extractor import plan_passes
from featx.sources import resolve_source
from featx.sources.decode import load_rgb
from featx.sources.views import D4, apply_views, parse_views, sort_views

from helpers import assert_float32_close, feature_terms, reseal_layer

SIZE = 96
LAYERS = ["block5c_add", "top_activation"]


def quiet(*_):
    pass


@pytest.fixture(scope="module")
def elpv_image():
    source = resolve_source("elpv")
    return load_rgb(f"{source.root}/{source.relpaths[0]}", (SIZE, SIZE))


def extract(folder, cache_dir, views=None, layers=LAYERS, view_seed=0, on_event=None, cluster=None):
    return featx.extract(
        str(folder),
        featx.BackboneSpec("efficientnet_lite0", input_size=SIZE),
        layers,
        views=views,
        view_seed=view_seed,
        cache=cache_dir,
        compute=featx.Compute(batch_size=8, progress=False, cluster=cluster),
        log=quiet,
        on_event=on_event,
    )


def stored(entry, view, layer="top_activation"):
    return entry.read([layer], view=view)[0]


def test_view_specs_name_every_view_once_identity_first():
    assert parse_views(None) == ("id",) == parse_views("none")
    assert parse_views("flip") == ("id", "hflip")
    assert parse_views("d4") == D4 and len(set(D4)) == 8
    assert parse_views("flip,crops:3") == ("id", "hflip", "crop1", "crop2", "crop3")
    assert parse_views("crops:2,crops:3") == ("id", "crop1", "crop2", "crop3")  # a crop is the same in any K
    assert parse_views("rand:2", seed=7) == ("id", "rand1s7", "rand2s7")
    assert parse_views("d4,flip") == D4  # a union: each view once
    assert sort_views(["rand1s0", "crop2", "hflip", "id"]) == ["id", "hflip", "crop2", "rand1s0"]
    for bad in ("flop", "crops:0", "crops:10", "rand:x", "crop0", "crop10"):
        with pytest.raises(FeatxError, match="views"):
            parse_views(bad)
    with pytest.raises(FeatxError, match="--view-seed -1 must be 0 or more"):
        parse_views("rand:2", seed=-1)


def test_views_are_the_d4_group_crops_and_seeded_random_crops(elpv_image):
    image = elpv_image
    d4 = apply_views(image, D4)
    assert d4.shape == (8, SIZE, SIZE, 3) and d4.dtype == np.uint8
    np.testing.assert_array_equal(d4[0], image)
    np.testing.assert_array_equal(d4[D4.index("hflip")], image[:, ::-1])
    np.testing.assert_array_equal(d4[D4.index("rot180")], image[::-1, ::-1])
    assert len({v.tobytes() for v in d4}) == 8  # a real cell image has no symmetry: 8 distinct views
    crops = apply_views(image, parse_views("crops:5")[1:])
    assert crops.shape == (5, SIZE, SIZE, 3) and len({c.tobytes() for c in crops}) == 5
    rand = parse_views("rand:3", seed=1)
    again = apply_views(image.copy(), rand)  # seeded by the pixels, not by the array object or a global RNG
    state = np.random.get_state()[1].copy()
    np.testing.assert_array_equal(apply_views(image, rand), again)
    np.testing.assert_array_equal(np.random.get_state()[1], state)
    assert not np.array_equal(apply_views(image, rand)[1:], apply_views(image, parse_views("rand:3", seed=2))[1:])
    assert not np.array_equal(again[1], again[2])


@pytest.mark.slow  # real extractions
def test_passes_compute_only_missing_layer_view_pairs(elpv_folder, tmp_path):
    entry = extract(elpv_folder, tmp_path, views="flip", layers=["top_activation"]).entry
    assert entry.views == ["id", "hflip"]
    assert plan_passes(entry, LAYERS, parse_views("flip")) == [(["block5c_add"], ("id", "hflip"))]
    assert plan_passes(entry, ["top_activation"], D4) == [(["top_activation"], D4[1:4] + D4[5:])]
    assert plan_passes(entry, ["top_activation"], parse_views("flip")) == []
    listed = entries_table(Cache(tmp_path)).iloc[0]
    assert (listed["layers"], listed["views"]) == (1, 1)  # `featx ls`: one augmented view beyond the identity
    assert "1 augmented view(s)" in verify_all(Cache(tmp_path))["notes"].iloc[0]


@pytest.mark.slow
def test_views_are_bit_stable_and_adding_views_computes_only_new_ones(elpv_folder, tmp_path):
    first = extract(elpv_folder, tmp_path / "a", views="flip")
    assert first.computed_layers == LAYERS and first.entry.views == ["id", "hflip"]
    hflip_file = first.entry.layer_file("top_activation", "hflip")
    before = (hflip_file.stat().st_ino, hflip_file.stat().st_mtime_ns)
    grown = extract(elpv_folder, tmp_path / "a", views="d4,rand:2", view_seed=5, layers=["top_activation"]).entry
    assert grown.views == [*D4, "rand1s5", "rand2s5"]
    assert (hflip_file.stat().st_ino, hflip_file.stat().st_mtime_ns) == before  # untouched, not recomputed
    assert grown.view_layers("rot90") == ["top_activation"] and grown.view_layers("hflip") == LAYERS
    assert extract(elpv_folder, tmp_path / "a", views="d4").computed_layers == ["block5c_add"]  # its 6 new views
    assert extract(elpv_folder, tmp_path / "a", views="d4").computed_layers == []

    other = extract(elpv_folder, tmp_path / "b", views="d4,rand:2", view_seed=5, layers=["top_activation"]).entry
    from featx.backbones import get_backbone

    lite = get_backbone("efficientnet_lite0", "imagenet", SIZE).model
    # same images, views and seed, another cache and batch layout: the same bits with oneDNN's kernels (TensorFlow's
    # default on x86); TensorFlow's own convolutions (TF_ENABLE_ONEDNN_OPTS=0) depend on the batch: float32 round-off
    # TensorFlow's own answer, not the variable: it reads "0" and "false" alike, and oneDNN is off by default off x86
    from tensorflow.python.framework.test_util import IsMklEnabled

    onednn = IsMklEnabled()
    for view in grown.views:
        if onednn:
            np.testing.assert_array_equal(stored(grown, view), stored(other, view))
        else:
            assert_float32_close(stored(grown, view), stored(other, view), feature_terms(lite, "top_activation"))
    plain = extract(elpv_folder, tmp_path / "c", layers=["top_activation"]).entry
    # an entry without views batches the images otherwise: equal up to float32 round-off (helpers.roundoff)
    assert_float32_close(stored(plain, "id"), stored(grown, "id"), feature_terms(lite, "top_activation"))
    assert not np.allclose(stored(grown, "id"), stored(grown, "hflip"), atol=1e-3)  # apart by far more than that
    reseeded = extract(elpv_folder, tmp_path / "b", views="rand:2", view_seed=6, layers=["top_activation"]).entry
    assert not np.allclose(stored(reseeded, "rand1s5"), stored(reseeded, "rand1s6"), atol=1e-3)  # other crops


def test_bad_view_spec_is_one_line_before_any_work(elpv_folder, tmp_path):
    with pytest.raises(FeatxError, match="unknown views 'd8'"):
        extract(elpv_folder, tmp_path, views="d8")
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


@pytest.mark.slow
def test_an_interrupted_views_pass_resumes_bit_identical_and_verify_covers_views(elpv_folder, tmp_path):
    reference = extract(elpv_folder, tmp_path / "ref", views="flip,crops:2").entry
    commits = []

    def stop_after_two_batches(event, n):
        if event == "committed":
            commits.append(n)
            if len(commits) == 2:
                raise OSError(5, "simulated I/O error")

    with pytest.raises(RunFailed, match="committed batches are kept"):
        extract(elpv_folder, tmp_path / "cut", views="flip,crops:2", on_event=stop_after_two_batches)
    cut = Cache(tmp_path / "cut").entries()[0]
    assert cut.views == [] and verify(cut) == []  # nothing published, a resumable pass pending
    resumed = extract(elpv_folder, tmp_path / "cut", views="flip,crops:2")
    assert resumed.entry.views == ["id", "hflip", "crop1", "crop2"]
    for view in resumed.entry.views:
        for layer in LAYERS:
            np.testing.assert_array_equal(stored(resumed.entry, view, layer), stored(reference, view, layer))
    assert verify(resumed.entry) == []

    path = resumed.entry.layer_file("top_activation", "crop2")
    with h5py.File(path, "r+") as f:
        f["features"][3, 7] += 1.0
    problems = verify(resumed.entry)
    assert len(problems) == 1 and "views/crop2/top_activation.h5 changed" in problems[0]
    with h5py.File(path, "r+") as f:
        f["features"].attrs["view"] = "crop1"
    with pytest.raises(RunFailed, match=r"\(it is \d+ bytes long, not the \d+ it was written with\)"):  # an edit
        resumed.entry.read(["top_activation"], view="crop2")
    reseal_layer(path)  # crafted with its digest recomputed: the header check refuses it
    with pytest.raises(RunFailed, match="holds view crop1"):
        resumed.entry.read(["top_activation"], view="crop2")
    with h5py.File(path, "r+") as f:
        f["features"].attrs["view"] = "crop2"
        del f["features"].attrs["views_version"]
    reseal_layer(path)
    with pytest.raises(RunFailed, match="holds view crop2 of no views version"):
        resumed.entry.read(["top_activation"], view="crop2")
    with pytest.raises(FeatxError, match="not cached for view rot90.*--views"):
        resumed.entry.read(["top_activation"], view="rot90")


@pytest.mark.slow
def test_views_on_dask_workers_match_one_process_bit_for_bit(elpv_folder, tmp_path):
    local = extract(elpv_folder, tmp_path / "local", views="flip", layers=["top_activation"]).entry
    remote = extract(elpv_folder, tmp_path / "dask", views="flip", layers=["top_activation"], cluster="local:2").entry
    assert remote.views == local.views == ["id", "hflip"]
    for view in local.views:
        np.testing.assert_array_equal(stored(remote, view), stored(local, view))

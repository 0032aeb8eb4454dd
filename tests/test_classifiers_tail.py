"""The tail estimator (featx.classifiers.tail, `--clf tail --cut LAYER`): the backbone's own layers above a cut,
trained on the cut's cached maps. The same mathematics as fine-tuning the whole network with its bottom frozen
(checked on EfficientNet-Lite0 with its real weights), fitted, saved, logged and used by predict like any run,
deterministic for a seed, and streamed from HDF5 in windows when the maps do not fit the shuffle window."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import U32, assert_one_line_error, cli, unwrapped, widest_sum

pytestmark = pytest.mark.slow  # TensorFlow and real EfficientNet-Lite0 weights throughout

SIZE, CUT = 64, "block6d_add"  # Lite0 at 64 px: block6d_add is 2x2x192


@pytest.fixture(scope="module")
def tail_cache(tmp_path_factory, elpv_folder):
    """The ELPV folder's cut maps (and the final layer's) cached with --pool none, as float16, with flipped views."""
    cache_dir = tmp_path_factory.mktemp("tail_cache")
    rc, _, err = cli(
        "extract",
        "--data",
        elpv_folder,
        "--input-size",
        SIZE,
        "--layers",
        f"{CUT},top_activation",
        "--pool",
        "none",
        "--views",
        "flip",
        "--dtype",
        "float16",
        "--cache-dir",
        cache_dir,
        "--quiet",
    )
    assert rc == 0, err
    return cache_dir


def test_one_step_on_cached_maps_equals_one_step_on_images_with_the_bottom_frozen(elpv_folder):
    """One AdamW step of the tail on the maps the extractor caches updates every tail and head weight as one step
    of the whole network fed the images, every layer below the cut frozen (BatchNorm in inference mode in both),
    built here on its own from a second copy of the backbone."""
    import keras
    import tensorflow as tf

    from featx.backbones import file_hashes, get_backbone
    from featx.backbones.cuts import final_layer
    from featx.classifiers.tail import NO_DECAY, TailClassifier
    from featx.extractor import LayerExtractor
    from featx.sources.decode import load_rgb

    backbone = get_backbone("efficientnet_lite0", "imagenet", SIZE)
    paths = sorted(str(p) for p in Path(elpv_folder).rglob("*.png"))[::3]
    images = np.stack([load_rgb(p, (SIZE, SIZE)) for p in paths])
    labels = np.arange(len(paths)) % 3
    targets = np.eye(3, dtype=np.float32)[labels]
    maps = LayerExtractor(backbone, [CUT], "none")(images)[CUT]  # (n, 2*2*192), as the cache stores it

    clf = TailClassifier(
        cut=CUT,
        backbone={
            **{"name": "efficientnet_lite0", "weights": "imagenet", "input_size": SIZE, "preprocess": None},
            "file_hashes": file_hashes("efficientnet_lite0", "imagenet"),
            "weights_id": backbone.weights_id,
        },
        backbone_lr=1e-3,
        head_lr=1e-2,
        weight_decay=0.05,
        dropout=0.0,
        label_smoothing=0.1,
    )
    tail = clf._tail_model()
    clf.map_shape_, clf.classes_ = tuple(tail.input_shape[1:]), np.arange(3)
    clf.model_ = clf._build(tail, 3)
    head_start = clf.model_.get_layer("head_softmax").get_weights()
    _, full_step = clf.train_step_functions()
    full_step(tf.constant(maps.reshape(-1, *clf.map_shape_)), tf.constant(targets))

    model = get_backbone("efficientnet_lite0", "imagenet", SIZE).model  # its own copy of every weight
    above = {layer.name for layer in tail.layers if layer.weights}
    for layer in model.layers:
        layer.trainable = layer.name in above and not isinstance(layer, keras.layers.BatchNormalization)
    pooled = keras.layers.GlobalAveragePooling2D()(model.get_layer(final_layer(backbone)).output)
    head = keras.layers.Dense(3, activation="softmax")
    network = keras.Model(model.inputs, head(pooled))
    head.set_weights(head_start)
    optimizers = [keras.optimizers.AdamW(learning_rate=lr, weight_decay=0.05) for lr in (1e-2, 1e-3)]
    for optimizer in optimizers:
        optimizer.exclude_from_weight_decay(var_names=[NO_DECAY])
    groups = [head.trainable_variables, [v for n in sorted(above) for v in model.get_layer(n).trainable_variables]]
    with tf.GradientTape() as tape:
        probabilities = network(backbone.preprocess(images.astype("float32")), training=True)
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)(targets, probabilities)
    gradients = tape.gradient(loss, groups[0] + groups[1])
    optimizers[0].apply(gradients[: len(groups[0])], groups[0])
    optimizers[1].apply(gradients[len(groups[0]) :], groups[1])

    pretrained = get_backbone("efficientnet_lite0", "imagenet", SIZE).model
    reference = {id(v): g.numpy() for v, g in zip(groups[0] + groups[1], gradients)}
    # The widest float32 sum on the network's path: 1,280 (the head's inputs; the project convs sum 1,152 channels,
    # the tail's weight gradients 6 images x 2x2 positions); every round-off bound below grows with it.
    widest = widest_sum(network)
    kinks = _relu_kink_allowance(
        clf._tail_model(), head_start, maps.reshape(-1, *clf.map_shape_), targets, widest
    )  # the pretrained tail (a fresh copy) and the head as they were before the step
    compared = 0
    for name in sorted(above):
        for ours, theirs, before in zip(
            tail.get_layer(name).weights, model.get_layer(name).weights, pretrained.get_layer(name).weights
        ):
            if id(theirs) in reference:
                gradient = reference[id(theirs)]
                compared += _assert_same_adam_step(ours, theirs, before, gradient, 1e-3, widest, kinks[name])
            else:  # BatchNorm's scale, offset and statistics: frozen on both sides, exact by construction
                np.testing.assert_array_equal(ours.numpy(), theirs.numpy(), err_msg=ours.path)
                np.testing.assert_array_equal(ours.numpy(), before.numpy(), err_msg=ours.path)
    assert compared == len([n for n in above if not n.endswith("bn")])  # every conv kernel took the step
    for ours, theirs, before in zip(clf.model_.get_layer("head_softmax").weights, head.weights, head_start):
        _assert_same_adam_step(ours, theirs, before, reference[id(theirs)], 1e-2, widest, 0.0)
    for name in ("stem_conv", "block6d_project_conv"):  # the bottom never moves
        np.testing.assert_array_equal(
            model.get_layer(name).get_weights()[0], pretrained.get_layer(name).get_weights()[0]
        )


def _assert_same_adam_step(ours, theirs, before, gradient, lr, widest, kinks):
    """Assert that `ours` and `theirs` (Keras variables) took the same first AdamW step from `before`, `gradient`
    being the reference network's own gradient of that weight, up to the float32 round-off derived here.

    Adam's first step, from zero moments (m = (1-b1) g, v = (1-b2) g^2, both bias-corrected), is
        -lr * g / (|g| + e),  e = epsilon / sqrt(1 - b2) = 1e-7 / sqrt(1e-3) ~ 3.2e-6,
    after AdamW's decoupled decay -lr * wd * w (kernels only, featx.classifiers.tail.NO_DECAY): a step of size lr
    against the gradient's sign where |g| >> e, of lr * g / e where |g| << e.

    Both sides compute g in float32, each in its own order (the cached maps come from the extractor's graph, the
    network's from its own run of the bottom; oneDNN picks kernels by CPU, ISA and thread count). A float32 sum
    of n terms, in any order, is within n u of the sum of the terms' absolute values (u = 2**-24; Higham,
    Accuracy and Stability of Numerical Algorithms, 2nd ed., eq. 3.5); with n the widest sum on the path and the
    tensor's largest |g| standing for those absolute sums, each side's g is within widest * u * max|g| of the
    exact gradient. A ReLU6 unit within round-off of a kink may also be on the other side of it on one side,
    which adds or drops that unit's whole term (`kinks`, _relu_kink_allowance). So the two gradients differ by at
    most D = 2 widest u max|g| + kinks (measured: under 25 u max|g| with oneDNN on or off, its ISA capped at
    SSE4.1, AVX or AVX2, 1 or 2 threads: about 100 times less). The step's slope in g is lr e / (|g| + e)^2, so
    the two steps differ by at most
        lr * min(2, D e / (max(|g| - D, 0) + e)^2)
    plus each side's own rounding of the update: one rounding of w in each of its two updates (decay, step) and
    the step's dozen float32 roundings (lr, 0.1, 1e-3 and epsilon held in float32, nine operations), at most
    2 u |w| + 16 u lr per side. Where |g| > D both sides step in the same direction (asserted exactly); where g
    is within round-off of zero (ReLU6 units dead on these 6 images: about half of the weights) the steps may
    differ by up to D / e of lr. Returns 1 if the weight moved by at least lr / 2 somewhere (|g| >> e)."""
    import re

    from featx.classifiers.tail import NO_DECAY

    u, epsilon, beta_1, beta_2 = U32, 1e-7, 0.9, 0.999  # keras.optimizers.AdamW's defaults
    e = epsilon / np.sqrt(1 - beta_2)
    name, w, g = theirs.path, np.asarray(before, dtype=np.float64), gradient.astype(np.float64)
    w_decayed = w - lr * (0.0 if re.search(NO_DECAY, theirs.name) else 0.05) * w
    # as keras.optimizers.Adam.update_step writes it, its bias corrections from float32 betas (1 - float32(0.999)
    # is 1.3e-5 off 1e-3: the step is 6.4e-6 shorter than lr on both sides)
    alpha = lr * np.sqrt(1 - np.float64(np.float32(beta_2))) / (1 - np.float64(np.float32(beta_1)))
    step = -alpha * (1 - beta_1) * g / (np.sqrt(1 - beta_2) * np.abs(g) + epsilon)
    rounding = 2 * u * np.abs(w) + 16 * u * lr  # one side's
    theirs, ours = theirs.numpy().astype(np.float64), ours.numpy().astype(np.float64)
    # the reference took exactly Adam's first step (this checks e and the decay the bound relies on)
    np.testing.assert_array_less(np.abs(theirs - (w_decayed + step)), rounding, err_msg=f"reference {name}")
    apart = 2 * widest * u * np.abs(g).max() + kinks  # D
    slack = lr * np.minimum(2, apart * e / (np.maximum(np.abs(g) - apart, 0) + e) ** 2)
    np.testing.assert_array_less(np.abs(ours - theirs), slack + 2 * rounding, err_msg=f"tail's {name}")
    clear = np.abs(g) > apart
    np.testing.assert_array_equal(np.sign(ours - w_decayed)[clear], -np.sign(g)[clear], err_msg=name)
    assert clear.mean() > 0.25, name  # the exact comparison covers a good part of each tensor (31-100% here)
    return int(np.max(np.abs(ours - w)) > lr / 2)


def _relu_kink_allowance(tail, head_weights, maps, targets, widest):
    """How much each tail kernel's gradient may change when ReLU6 units lie within round-off of a kink: {layer name:
    array shaped like its kernel}.

    ReLU6's slope jumps between 0 and 1 at 0 and at 6. A unit s whose pre-activation z_s lies within the float32
    round-off of a kink (widest * u * max|z| over its layer, the bound _assert_same_adam_step uses for every
    value) may sit on either side of it on either side of the comparison; the gradient of every weight w below it
    then gains or loses exactly the term dL/da_s * dz_s/dw (a_s the unit's output, continuous at the kink, so
    nothing above the unit changes). Here that term is computed, with the slopes of `tail` (the pretrained tail)
    and the `head_weights` head on `maps` (float32 (n, h, w, c)) and `targets`, for every such unit, and summed
    in absolute value per weight."""
    import keras
    import tensorflow as tf

    relus = [layer for layer in tail.layers if isinstance(layer, keras.layers.ReLU)]
    kernels = {layer.name: layer.kernel for layer in tail.layers if hasattr(layer, "kernel")}
    head = keras.layers.Dense(targets.shape[1], activation="softmax")
    probabilities = head(keras.layers.GlobalAveragePooling2D()(tail.output))
    network = keras.Model(tail.input, [[r.input for r in relus], [r.output for r in relus], probabilities])
    head.set_weights(head_weights)
    with tf.GradientTape() as tape:
        pre, post, output = network(maps)
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)(targets, output)
    slopes = tape.gradient(loss, post)  # dL/da for every unit
    pre_activations = keras.Model(tail.input, [r.input for r in relus])

    @tf.function
    def unit_gradients(image, layer, at):  # dz_s/dw for one unit s: layer (a Python int), its (row, column, channel)
        with tf.GradientTape() as tape:
            z = pre_activations(image)[layer][0, at[0], at[1], at[2]]
        return tape.gradient(z, list(kernels.values()))  # None for the kernels above the unit

    u = U32
    allowance = {name: np.zeros(kernel.shape) for name, kernel in kernels.items()}
    for layer, (relu, z, slope) in enumerate(zip(relus, pre, slopes)):
        z, slope = z.numpy(), slope.numpy()
        tau = widest * u * np.abs(z).max()
        near = np.abs(z) <= tau
        if relu.max_value is not None:
            near |= np.abs(z - relu.max_value) <= tau
        for image, *at in np.argwhere(near):
            terms = unit_gradients(maps[image : image + 1], layer, tf.constant(at))
            for name, term in zip(kernels, terms):
                if term is not None:
                    allowance[name] += np.abs(slope[(image, *at)]) * np.abs(term.numpy())
    return allowance


def test_fit_logs_curves_predicts_new_images_and_is_deterministic(tail_cache, elpv_folder, tmp_path):
    """`featx fit --clf tail` on cached maps with views: a run with its learning curves (head then tail epochs) and a
    .keras model beside model.skops; the same seed gives the same run; `featx predict` on the images themselves
    (bottom up to the cut, then the tail) gives the probabilities the model gives on the cached maps; rm removes it."""
    import featx
    from featx.features.maps import load_maps
    from featx.runs.models import load_model

    args = (
        "fit",
        "--clf",
        "tail",
        "--cut",
        CUT,
        "--epochs",
        3,
        "--warmup-epochs",
        1,
        "--dense-batch-size",
        8,
        "--mixup",
        0.2,
        "--views",
        "flip",
        "--tta",
        "--cache-dir",
        tail_cache,
    )
    rc, out, err = cli(*args)
    assert rc == 0, err
    run_id = out.split()[1].rstrip(":")
    folder = Path(tail_cache) / "runs" / run_id
    history = pd.read_csv(folder / "history.csv")
    assert list(history["stage"]) == ["head", "tail", "tail"] and list(history["epoch"]) == [1, 2, 3]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history.columns)
    assert (folder / "learning_curves.png").stat().st_size > 0 and (folder / "head.keras").is_file()
    rc, again, err = cli(*args)
    assert rc == 0, err
    scores = [re.search(r"val acc [^;]*", unwrapped(text)).group(0) for text in (out, again)]
    assert scores[0] == scores[1] and "test acc" in scores[0]  # same val and test scores
    pd.testing.assert_frame_equal(
        pd.read_csv(Path(tail_cache) / "runs" / again.split()[1].rstrip(":") / "history.csv").drop(columns="seconds"),
        history.drop(columns="seconds"),
    )

    pipeline, row = load_model(run_id, tail_cache)
    assert row["classifier"] == "tail" and row["views"] == "id,hflip" and json_cut(row) == CUT
    X, y, meta = load_maps(featx.Cache(tail_cache).open(), layers=CUT, views=("id", "hflip"))
    expected = pipeline.predict_proba(X)  # tta: mean over the two cached views
    output = tmp_path / "predictions.csv"
    rc, _, err = cli("predict", "--model", run_id, elpv_folder, "--cache-dir", tail_cache, "--output", output)
    assert rc == 0, err
    table = pd.read_csv(output)
    names = featx.Cache(tail_cache).open().class_names
    by_path = {str(Path(elpv_folder) / p): i for i, p in enumerate(meta["path"])}
    rows = [by_path[p] for p in table["path"]]
    # the CSV's 4 decimals (5e-5) plus float32 round-off of probabilities <= 1 recomputed by predict (1,280 u)
    np.testing.assert_allclose(table[[f"p_{n}" for n in names]].to_numpy(), expected[rows], atol=2e-4)

    rc, _, err = cli("rm", run_id, "--cache-dir", tail_cache)
    assert rc == 0 and not folder.exists(), err


def json_cut(row) -> str:
    import json

    return json.loads(row["params"])["cut"]


def test_tail_needs_the_cut_cached_as_maps(tail_cache):
    rc, _, err = cli("fit", "--clf", "tail", "--cut", "block5c_add", "--cache-dir", tail_cache)
    assert_one_line_error(
        rc,
        err,
        r"trains on the activation maps of its cut block5c_add, and cache entry \S+ does not "
        r"cache that layer; run `featx extract --data \S+ --backbone efficientnet_lite0 "
        r"--input-size 64 --layers block5c_add --pool none` with the entry's",
    )
    rc, _, err = cli("fit", "--clf", "tail", "--cache-dir", tail_cache)
    assert_one_line_error(rc, err, r"needs --cut LAYER \(`featx layers efficientnet_lite0 --cuts` lists them\)")


def test_streamed_epochs_visit_every_view_of_every_image_once(tail_cache, monkeypatch):
    """Maps larger than the shuffle window are read window by window: each epoch still yields every (image, view)
    map exactly once, in another order each epoch, and the fit on the stream equals the fit on the same maps held
    in memory when they fit the window."""
    import featx
    from featx.classifiers import tail as tail_module
    from featx.features.maps import load_maps

    X, y, _ = load_maps(featx.Cache(tail_cache).open(), layers=CUT, views=("id", "hflip"))
    full = np.asarray(X)  # (n, 2 * d)
    d = X.d
    pairs = np.concatenate([full[:, :d], full[:, d:]])
    monkeypatch.setattr(tail_module, "SHUFFLE_BYTES", 5 * 4 * d)  # a window of 5 maps
    stream = tail_module._MapStream(X, y, ("id", "hflip"), X.map_shape, 4)
    assert stream.in_memory is None
    rng = np.random.default_rng(0)
    epochs = []
    for _ in range(2):
        batches = list(stream.epoch(rng))
        assert all(len(labels) == 4 for _, labels in batches[:-1])
        maps = np.concatenate([m.reshape(len(m), -1) for m, _ in batches])
        labels = np.concatenate([labels for _, labels in batches])
        epochs.append(maps)
        order = np.lexsort(maps.T[::-1])
        np.testing.assert_array_equal(maps[order], pairs[np.lexsort(pairs.T[::-1])])
        label_of = {row.tobytes(): label for row, label in zip(pairs, np.tile(y, 2))}
        assert [label_of[row.tobytes()] for row in maps] == list(labels)  # each map keeps its image's label
    assert not np.array_equal(epochs[0], epochs[1])


@pytest.fixture
def streamed_only(monkeypatch):
    """The X each tail fit is given (a list, filled as they run); reading every cached map into memory at once
    (np.asarray of a CachedMaps) fails the test: experiments must hand the maps on as streams."""
    from featx.classifiers.tail import TailClassifier
    from featx.features.maps import CachedMaps

    def refuse(self, dtype=None, copy=None):
        raise AssertionError("the maps were read into memory whole")

    given, fit = [], TailClassifier.fit

    def recording_fit(self, X, y, X_val=None, y_val=None):
        given.append(X)
        return fit(self, X, y, X_val, y_val)

    monkeypatch.setattr(CachedMaps, "__array__", refuse)
    monkeypatch.setattr(TailClassifier, "fit", recording_fit)
    return given


@pytest.mark.parametrize("search", ["halving", "exact"])
def test_tune_without_a_cut_searches_the_cached_cuts_and_logs_the_winner(
    tail_cache, monkeypatch, streamed_only, search
):
    """`featx tune --clf tail --search halving|exact` with no --cut: the cuts the entry caches (block6d_add, and the
    final layer top_activation: a head on its map) are an axis of the search, each point trained on its cut's maps
    streamed from HDF5; one line names the cut that won, and the refit is logged on that cut."""
    from featx.features.maps import is_streamed
    from featx.runs.models import load_model
    from featx.selection import spaces
    from featx.selection.spaces import BudgetSearch

    # the default grids (8 configurations x 18 epochs; 6 x 20) cost minutes at any size: one learning rate, 2 epochs
    fixed = {"warmup_epochs": 1, "batch_size": 4}
    monkeypatch.setitem(
        spaces.BUDGET_SEARCHES, "tail", BudgetSearch({"backbone_lr": (1e-3,)}, max_epochs=2, fixed=fixed)
    )
    monkeypatch.setitem(spaces.SEARCHES, "tail", spaces.Search({"backbone_lr": (1e-3,)}, fixed={**fixed, "epochs": 2}))
    rc, out, err = cli("tune", "--clf", "tail", "--search", search, "--metric", "accuracy", "--cache-dir", tail_cache)
    assert rc == 0, err
    epochs = " at 2 epochs" if search == "halving" else ""
    won = re.search(
        rf"tune tail: cut (\S+) won on val \(accuracy, best per cut: block6d_add [0-9.]+{epochs}; "
        rf"top_activation [0-9.]+{epochs}\)",
        out,
    )
    assert won, out
    curve = pd.read_csv(Path(re.search(r"saved search curves in (\S+)", out)[1]) / "tail_curve.csv")
    points = curve[curve["stage"] != "default"]
    assert sorted(points["cut"]) == ["block6d_add", "top_activation"]
    assert curve.loc[curve["best"], "cut"].item() == won[1]
    pipeline, run = load_model(re.search(r"^run (\S+):", out, re.M)[1], tail_cache)
    assert run["classifier"] == "tail" and json_cut(run) == won[1] and run["layers"] == won[1]
    assert pipeline[-1].cut == won[1] and pipeline[-1].epochs == 2
    assert len(streamed_only) == 4 and all(is_streamed(X) for X in streamed_only)  # 2 cuts, the defaults, the refit


def test_compare_streams_the_maps_and_scores_as_the_maps_held_in_memory(tail_cache, streamed_only):
    """`featx compare --clf tail` hands the estimator the maps as a stream from HDF5 (nothing reads them whole), and
    its row scores what the same fit scores on the same maps held in memory (as compare read them before)."""
    import featx
    from featx.backbones import backbone_description
    from featx.features.maps import CachedMaps, load_maps
    from featx.selection.spec import fit_spec
    from featx.selection.train import train_and_score

    params = {"cut": CUT, "epochs": 2, "warmup_epochs": 1, "batch_size": 4}
    rc, out, err = cli(
        "compare",
        "--layer-sets",
        CUT,
        "--clf",
        "tail",
        *(f"--param={k}={v}" for k, v in params.items()),
        "--n-jobs",
        1,
        "--cache-dir",
        tail_cache,
    )
    assert rc == 0, err
    table = pd.read_csv(re.search(r"saved (\S+results\.csv)", out)[1])
    row = table[table["classifier"] == "tail"].iloc[0]
    assert len(streamed_only) == 1 and isinstance(streamed_only[0], CachedMaps)

    entry = featx.Cache(tail_cache).open()
    X, y, meta = load_maps(entry, layers=CUT)
    in_memory = X.read(np.arange(len(X)))  # (n, d) float32, as load gave compare before
    assert isinstance(in_memory, np.ndarray)
    spec = fit_spec("tail", params={**params, "backbone": backbone_description(entry)})
    scores = train_and_score(in_memory, y, meta["split"].to_numpy(), spec, class_names=entry.class_names)
    for split in ("val", "test"):  # the same seeded fit in this process; the table rounds to 4 decimals
        assert row[f"{split}_accuracy"] == pytest.approx(scores.metrics[split]["accuracy"], abs=1e-4)
        assert row[f"{split}_f1_macro"] == pytest.approx(scores.metrics[split]["f1_macro"], abs=1e-4)


def test_tune_without_a_cut_on_an_entry_of_pooled_features_names_the_extraction(elpv_cache):
    rc, _, err = cli("tune", "--clf", "tail", "--search", "halving", "--cache-dir", elpv_cache)
    assert_one_line_error(
        rc,
        err,
        r"--clf tail without --cut searches the cuts cached with --pool none, and cache entry \S+ caches none; "
        r"cache some with `featx extract --layers CUT1,CUT2 --pool none`",
    )


def _tiny_backbone(folder: Path) -> dict:
    import keras

    from featx.backbones import file_hashes, get_backbone

    inputs = keras.Input((4, 4, 3))
    cut = keras.layers.Conv2D(2, 4, name="cut")(inputs)  # (1, 1, 2)
    top = keras.layers.Conv2D(2, 1, name="top")(cut)
    outputs = keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling2D(name="pool")(top))
    path = str(folder / "tiny.keras")
    keras.Model(inputs, outputs).save(path)
    backbone = get_backbone(path, preprocess="none")
    return {
        "name": path,
        "weights": "imagenet",
        "input_size": None,
        "preprocess": "none",
        "file_hashes": file_hashes(path, "imagenet"),
        "weights_id": backbone.weights_id,
    }


def _tail():
    from featx.classifiers.tail import TailClassifier

    folder = Path(tempfile.mkdtemp(prefix="featx-tail-checks-"))
    return TailClassifier(
        cut="cut",
        backbone=_tiny_backbone(folder),
        epochs=8,  # check_classifiers_train wants accuracy > 0.83: 3 epochs passed alone but not always in the suite
        warmup_epochs=1,
        head_lr=0.05,
        backbone_lr=0.01,
        dropout=0.0,
        label_smoothing=0.0,
    )


WIDTH = "feeds data whose width is not the cut's 1x1x2 map (2 features); the tail says so in a ValueError"


TAIL_EXEMPT = dict.fromkeys(
    (
        "check_dict_unchanged",
        "check_dont_overwrite_parameters",
        "check_dtype_object",
        "check_estimators_dtypes",
        "check_estimators_nan_inf",
        "check_estimators_pickle",
        "check_f_contiguous_array_estimator",
        "check_fit2d_1feature",
        "check_fit2d_1sample",
        "check_fit2d_predict1d",
        "check_fit_score_takes_y",
        "check_methods_sample_order_invariance",
        "check_methods_subset_invariance",
        "check_n_features_in_after_fitting",
        "check_pipeline_consistency",
        "check_positive_only_tag_during_fit",
        "check_supervised_y_2d",
        "check_classifiers_one_label",
    ),
    WIDTH,
)


@pytest.mark.slow  # a few Keras fits per check, each rebuilding the tiny backbone: about 5 minutes on 2 cores
def test_tail_passes_sklearn_checks():
    """Every check of scikit-learn's check_estimator (run here, not at collection: building the estimator needs
    Keras, which the fast tier never imports): all pass but the exempt ones, which still fail for their reason."""
    from sklearn.utils.estimator_checks import check_estimator

    results = check_estimator(_tail(), on_fail=None, expected_failed_checks=TAIL_EXEMPT)
    failed = sorted({f"{r['check_name']}: {r['exception']!r}"[:300] for r in results if r["status"] == "failed"})
    assert not failed, failed
    passed = {r["check_name"] for r in results if r["status"] == "passed"}
    assert {
        "check_classifiers_train",
        "check_estimators_unfitted",
        "check_requires_y_none",
        "check_fit_idempotent",
        "check_classifiers_regression_target",
        "check_n_features_in",
        "check_estimator_cloneable",
    } <= passed

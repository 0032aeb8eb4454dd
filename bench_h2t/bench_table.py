"""ELPV Head2Toe table: final layer vs all layers avg vs all layers grid:T, with and without group-lasso selection,
each chosen on val (accuracy), refit on train+val, test scored once. Appends JSON lines to bench_h2t/results.jsonl."""
import json, sys, time
import numpy as np
import featx
from featx.experiments.tune import tune
from featx.experiments.head2toe import tune_head2toe
from featx.features.head2toe import layer_blocks
from featx.reports.metrics import evaluate

ENTRIES = {"final": ("/work/elpv-cache", "efficientnet_lite0-01798de7084e", "top_activation"),
           "avg": ("/tmp/h2t-avg", None, "all"), "blocks-avg": ("/work/elpv-cache", "efficientnet_lite0-01798de7084e", "blocks,final"), "grid:1024": ("/work/elpv-cache", "efficientnet_lite0-07d49e7340a0", "all")}
OUT = "bench_h2t/results.jsonl"


def say(row):
    print(json.dumps(row), flush=True)
    with open(OUT, "a") as f:
        f.write(json.dumps(row) + "\n")


def plain(name):
    cache_dir, entry, layers = ENTRIES[name]
    X, y, meta = featx.load(entry, layers=layers, cache_dir=cache_dir)
    split = meta["split"].to_numpy()
    transforms = {"standardize": True} if name == "final" else {"normalize": "layer", "blocks": layer_blocks(meta)}
    t = time.perf_counter()
    r = tune(X, y, split, "logreg", "accuracy", None, transforms, {"max_iter": 2000}, n_jobs=1, log=lambda *a: None)
    search = time.perf_counter() - t
    rows = np.isin(split, ("train", "val"))
    t = time.perf_counter(); r.pipeline.fit(X[rows], y[rows]); refit = time.perf_counter() - t
    m = evaluate(y[split == "test"], r.pipeline.predict(X[split == "test"]), meta.attrs["class_names"])
    say({"variant": name, "selection": "none", "transforms": {k: v for k, v in transforms.items() if k != "blocks"},
         "C": r.best_params.get("C"), "val_acc": r.selection_scores["accuracy_mean"], "test_acc": m["accuracy"],
         "test_f1_macro": m["f1_macro"], "features": X.shape[1], "kept": X.shape[1], "search_s": round(search, 1),
         "refit_s": round(refit, 1)})


def h2t(name):
    cache_dir, entry, layers = ENTRIES[name]
    t = time.perf_counter()
    r = tune_head2toe(entry, layers=layers, cache_dir=cache_dir, metric="accuracy", log=print, penalties=(0.1,),
                      fractions=(0.01, 0.03, 0.1), Cs=(1.0, 10.0, 100.0, 1000.0, 10000.0))  # reduced: 2 shared cores, load ~25
    b = r.best
    say({"variant": name, "selection": "group-lasso", "best": b, "val_acc": r.selection_scores["accuracy_mean"],
         "test_acc": r.test["accuracy"], "test_f1_macro": r.test["f1_macro"], "kept": int(r.kept["kept"].sum()),
         "features": int(r.kept["features"].sum()), "search_s": round(time.perf_counter() - t, 1),
         "timings": {k: round(v, 1) for k, v in r.timings.items()}, "run_id": r.run_id, "report": str(r.folder),
         "top_layers": r.kept.sort_values("kept", ascending=False).head(8)[["layer", "kept"]].values.tolist()})


for job in sys.argv[1:]:
    kind, name = job.split("/")
    (plain if kind == "plain" else h2t)(name)

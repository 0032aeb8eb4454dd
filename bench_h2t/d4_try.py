"""Target attempt: blocks+final (17 layers, avg) with D4 views for training and TTA, layer L2 + standardize +
group-lasso selection + logreg; F and C chosen on val accuracy (fits on train), test of the chosen one reported."""
import json, time
import featx
from featx.experiments import FitSpec, train_and_score
from featx.features.head2toe import layer_blocks
from featx.sources.views import parse_views

views = parse_views("d4")
X, y, meta = featx.load("efficientnet_lite0-01798de7084e", layers="blocks,final", views=views, cache_dir="/work/elpv-cache")
split = meta["split"].to_numpy()
blocks = layer_blocks(meta)
print("loaded", X.shape, flush=True)
for F in (0.1, 0.3):
    for C in (0.01, 0.1):
        spec = FitSpec(classifier="logreg", params={"C": C, "max_iter": 2000}, views=views, tta=True, n_jobs=1,
                       transforms={"normalize": "layer", "standardize": True, "select": f"group-lasso:{F}",
                                   "select_penalty": 0.1, "blocks": blocks})
        t = time.perf_counter()
        s = train_and_score(X, y, split, spec, class_names=meta.attrs["class_names"])
        row = {"variant": "blocks+final avg, d4 views + TTA", "selection": f"group-lasso:{F}", "C": C,
               "val_acc": s.metrics["val"]["accuracy"], "test_acc": s.metrics["test"]["accuracy"],
               "test_f1_macro": s.metrics["test"]["f1_macro"], "fit_s": round(time.perf_counter() - t, 1)}
        print(json.dumps(row), flush=True)
        open("bench_h2t/results.jsonl", "a").write(json.dumps(row) + "\n")

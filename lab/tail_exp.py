"""ELPV tail experiments (i-tailx lab notebook): fit TailClassifier on one cut's cached maps, train -> val early
stopping, log val and test accuracy to lab/results.jsonl. Test is logged for the record; choices use val only."""
import json, sys, time
import numpy as np
import featx
from featx.backbones import backbone_description
from featx.cache.store import Cache
from featx.classifiers.tail import TailClassifier

cut, params = sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
views = params.pop("views", None)  # a spec: "flip", "d4"
entry = Cache("/work/elpv-cache").open("efficientnet_lite0-1dc04ccc49ab")
X, y, meta = featx.load(entry, layers=cut, views=views)
if views:
    from featx.sources.views import parse_views
    params["views"] = parse_views(views)
split = meta["split"].to_numpy()
tr, va, te = (split == s for s in ("train", "val", "test"))
clf = TailClassifier(cut=cut, backbone=backbone_description(entry), verbose=1, **params)
t = time.time()
clf.fit(X[tr], y[tr], X_val=X[va], y_val=y[va])
fit_s = time.time() - t
val = float(np.mean(clf.predict(X[va]) == y[va])); test = float(np.mean(clf.predict(X[te]) == y[te]))
from sklearn.metrics import f1_score
f1 = float(f1_score(y[te], clf.predict(X[te]), average="macro"))
h = clf.history_
params["views"] = views
row = {"cut": cut, "params": params, "val": round(val, 4), "test": round(test, 4), "test_f1_macro": round(f1, 4), "best_epoch": int(clf.best_epoch_),
       "epochs_run": len(h), "fit_s": round(fit_s, 1), "epoch_s_median": float(h["seconds"].median()),
       "train_acc_last": round(float(h["accuracy"].iloc[-1]), 3), "val_curve": [round(v, 3) for v in h["val_accuracy"]],
       "when": time.strftime("%H:%M:%S", time.gmtime())}
print(json.dumps(row))
with open("/work/wt-tailx/lab/results.jsonl", "a") as f:
    f.write(json.dumps(row) + "\n")

"""End-to-end check: tune(..., "tail", search=halving) on the all-ELPV block6d_add maps, a tiny budget."""
import time
import featx
from featx.backbones import backbone_description
from featx.cache.store import Cache
from featx.experiments.budget import BudgetSearch
from featx.experiments.tune import tune
entry = Cache("/work/elpv-cache").open("efficientnet_lite0-1dc04ccc49ab")
X, y, meta = featx.load(entry, layers="block6d_add")
t = time.time()
r = tune(X, y, meta["split"].to_numpy(), "tail", metric="accuracy", search=BudgetSearch(
    {"backbone_lr": (1e-5, 1e-4, 1e-3)}, max_epochs=3, min_epochs=1, fixed={"warmup_epochs": 0}),
    params={"cut": "block6d_add", "backbone": backbone_description(entry)})
print(r.curve.to_string()); print(r.line()); print("seconds", round(time.time() - t, 1))

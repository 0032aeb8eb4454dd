"""Linear probe and views+TTA on the shared all-ELPV cache, the recipe of bench_views (C by val accuracy)."""
import json, sys
sys.path.insert(0, "/work/wt-tailx/benchmarks")
from bench_views import score, GRID
from featx.cache.store import Cache
e = Cache("/work/elpv-cache").open("efficientnet_lite0-01798de7084e")
from featx.sources.views import parse_views
rows = score("plain", e, 0.0, "top_activation", ("id",), GRID) + score("d4", e, 0.0, "top_activation", parse_views("d4"), GRID)
for r in rows:
    print(json.dumps(r))
    with open("/work/wt-tailx/lab/results.jsonl", "a") as f:
        f.write(json.dumps({"probe": r}) + "\n")

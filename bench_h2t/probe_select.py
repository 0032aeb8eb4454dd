import time, numpy as np, featx
from featx.features.head2toe import GroupLassoSelector, LayerNormalizer, layer_blocks
t=time.time()
X,y,meta=featx.load("efficientnet_lite0-07d49e7340a0", cache_dir="/work/elpv-cache")
split=meta["split"].to_numpy(); blocks=layer_blocks(meta)
print("load", X.shape, round(time.time()-t,1), flush=True)
tr=split=="train"
Xn=LayerNormalizer(blocks=blocks).fit(X[tr]).transform(X)
for pen in (0.03, 0.01, 0.003):
    t=time.time(); s=GroupLassoSelector(fraction=0.1, penalty=pen, blocks=blocks).fit(Xn[tr], y[tr])
    print("penalty", pen, "fit", round(time.time()-t,1), "iters", s.n_iter_, "nonzero", int((s.scores_>0).sum()), flush=True)
    pass

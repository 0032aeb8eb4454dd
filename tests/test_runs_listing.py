"""featx.runs.listing: the runs table, sorted and filtered, on real ELPV features (conftest.elpv_cache)."""

from featx.experiments.fit import fit
from featx.runs.listing import RunFilter
from featx.runs.listing import list_runs as runs
from featx.selection.spec import fit_spec


def test_runs_sorted_best_first_and_filtered(elpv_cache):
    for leaf in (1, 5, 9):
        fit(
            None,
            "block5c_add,block6d_add",
            fit_spec("rf", params={"min_samples_leaf": leaf}),
            cache=elpv_cache,
            log=lambda *a: None,
        )
    fit(None, "block6d_add", fit_spec("knn"), cache=elpv_cache, log=lambda *a: None)
    assert runs(elpv_cache)["selection_score"].is_monotonic_decreasing  # CV mean where a run has one, else val
    forests = runs(elpv_cache, where=RunFilter(clf="rf", layers="block5c"), top=2)
    assert len(forests) == 2 and set(forests["classifier"]) == {"rf"}
    assert forests["val_accuracy"].is_monotonic_decreasing and forests["layer_names"].str.contains("block5c").all()
    fastest = runs(elpv_cache, sort="fit_seconds")
    assert fastest["fit_seconds"].is_monotonic_increasing

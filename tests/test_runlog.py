"""The runs log store (featx.runs.store): format 4 rows (spec and evaluation whole, their hash), the migration
of a real format-3 log written by an older featx, and the module boundaries of the split runs.py (only runlog runs
SQL, only models loads model files)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sqlite3
from pathlib import Path

import pandas as pd

from featx.cache.store import Cache
from featx.experiments.fit import fit
from featx.runs.store import LOG_FILE, LOG_VERSION, read_log

from helpers import assert_one_line_error, cli

FEATX = Path(__file__).parent.parent / "featx"
V3 = (
    Path(__file__).parent / "data" / "runs-v3"
)  # a runs folder featx's format 3 wrote (main at 1eacef3; data/README.md)
V3_ENTRY = "efficientnet_lite0-7b22fba28518"  # the elpv_cache fixture's entry, which its runs were fitted on
# the runs of V3 whose old columns say their spec and evaluation exactly (K-fold CV and val scores of their own)
V3_EXACT = {
    "20261202-121646-14a6b4",
    "20261202-121650-709341",
    "20261202-121650-52d2f0",
    "20261202-121650-731cfb",
    "20261202-122107-8a83ce",
}


def v3_runs(tmp_path: Path) -> Path:
    """A copy of the format-3 runs folder."""
    shutil.copytree(V3, tmp_path / "runs")
    return tmp_path / "runs"


def version(runs: Path) -> int:
    with sqlite3.connect(runs / LOG_FILE) as db:
        return db.execute("PRAGMA user_version").fetchone()[0]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the module boundaries


def _sources():
    return {path.relative_to(FEATX).as_posix(): path.read_text() for path in FEATX.rglob("*.py")}


def test_only_the_log_store_runs_sql():
    sql = re.compile(
        r"\bsqlite3\b|read_sql|\b(?:SELECT .* FROM|INSERT (?:OR IGNORE )?INTO|DELETE FROM|CREATE TABLE|"
        r"ALTER TABLE|PRAGMA \w+|BEGIN IMMEDIATE)\b"
    )
    users = sorted(name for name, text in _sources().items() if sql.search(text))
    assert users == ["runs/store.py"]
    text = _sources()["runs/store.py"]
    # transactions through one helper: BEGIN, COMMIT and ROLLBACK are written once, in it
    assert [len(re.findall(rf'"{word}', text)) for word in ("BEGIN", "COMMIT", "ROLLBACK")] == [1, 1, 1]
    helper = text[text.index("def _transaction(") :]
    helper = helper[: helper.index("\n\n\n")]
    assert all(f'"{word}' in helper for word in ("BEGIN", "COMMIT", "ROLLBACK"))


def test_only_the_models_module_loads_model_files():
    loads = re.compile(r"skops\.io\.load\b|\.load_keras_model\(|\bjoblib\.load\b|\bpickle\.loads?\(")
    users = sorted(name for name, text in _sources().items() if loads.search(text))
    assert users == ["runs/models.py"]
    # and the log store, the run folders and the runs table never import it
    for name in ("store", "folders", "listing"):
        assert not re.search(r"^\s*from featx\.runs\.models import", _sources()[f"runs/{name}.py"], re.M)


# --- the real format-3 log


def test_a_real_format_3_log_is_listed_loaded_and_migrated_whole(tmp_path):
    from featx.runs.models import load_model
    from featx.selection.spec import Evaluation, fit_spec, logged_spec, spec_hash

    runs = v3_runs(tmp_path)
    ids = sorted(p.name for p in runs.iterdir() if p.is_dir())
    assert len(ids) == 15 and version(runs) == 3
    where = ["--cache-dir", tmp_path / "cache", "--runs-dir", runs]
    before = read_log(Cache(None, runs_dir=runs))
    rc, listed, err = cli("runs", *where, "--wide")
    assert rc == 0 and not err and all(run_id in listed for run_id in ids)
    assert version(runs) == 3  # reading writes nothing

    rc, out, err = cli("prune", "--keep-best", "100", *where)  # a command that writes the log: migrates it
    assert rc == 0 and "removed 0 run(s)" in out, err
    assert version(runs) == LOG_VERSION == 4
    after = read_log(Cache(None, runs_dir=runs))
    pd.testing.assert_frame_equal(after, before)  # read before its migration as it is stored after
    assert sorted(after["run_id"]) == ids
    assert cli("runs", *where, "--wide")[1] == listed
    with sqlite3.connect(runs / LOG_FILE) as db:
        stored = {r[0]: r[1:] for r in db.execute("SELECT run_id, spec, evaluation, spec_hash FROM runs")}
    assert {run_id for run_id, (_, _, h) in stored.items() if h} == V3_EXACT  # the others are NULL: never reused
    assert all(spec for spec, _, _ in stored.values())  # every old row's columns give its FitSpec back

    for row in after.to_dict("records"):
        pipeline, logged = load_model(row["run_id"], Cache(None, runs_dir=runs))
        assert logged["run_id"] == row["run_id"] and hasattr(pipeline, "predict")
        spec = json.loads(row["spec"])
        assert (spec["classifier"], spec["seed"]) == (row["classifier"], row["seed"])
        if row["run_id"] in V3_EXACT:
            fitted, evaluation = logged_spec(row)
            assert (fitted.params_json(), fitted.transforms_label()) == (row["params"], row["transforms"])
            assert evaluation.protocol == row["cv"] and row["spec_hash"] == spec_hash(fitted, evaluation)
    # the hash a migrated run got is the one the same fit made today gets: reuse finds it
    rf = after.set_index("run_id").loc["20261202-122107-8a83ce"]
    today = fit_spec("rf", params={"n_estimators": 3, "min_samples_leaf": 10}, pca=10)
    assert rf["spec_hash"] == spec_hash(today, Evaluation(cv=3))


def test_a_failed_migration_leaves_the_old_log_as_it_was(tmp_path):
    runs = v3_runs(tmp_path)
    with sqlite3.connect(runs / LOG_FILE) as db:  # something that makes the last step of the migration fail
        db.execute("CREATE TABLE runs_spec_hash (x)")
    before, digest = read_log(Cache(None, runs_dir=runs)), sha256(runs / LOG_FILE)
    rc, out, err = cli("prune", "--keep-best", "0", "--cache-dir", tmp_path / "cache", "--runs-dir", runs)
    assert_one_line_error(rc, err, r"runs log .*runs.sqlite is damaged or not a featx runs database")
    assert sha256(runs / LOG_FILE) == digest and version(runs) == 3
    pd.testing.assert_frame_equal(read_log(Cache(None, runs_dir=runs)), before)
    assert sorted(p.name for p in runs.iterdir() if p.is_dir()) == sorted(before["run_id"])  # nothing removed


def test_every_run_of_a_real_format_3_log_predicts_after_its_migration(elpv_cache, tmp_path):
    """The runs of tests/data/runs-v3 were fitted on this fixture's entry (the same key), so predict rebuilds its
    backbone; each migrated run's model predicts new images as it predicts their cached features."""
    from featx import Cache, load
    from featx.experiments.predict import predict
    from featx.runs.models import load_model
    from featx.runs.store import finish_removals, logged_selection
    from featx.sources import resolve_source

    runs = v3_runs(tmp_path)
    entry = Cache(elpv_cache).open(V3_ENTRY)  # a changed cache key fails here: remake tests/data/runs-v3
    finish_removals(Cache(None, runs_dir=runs))  # migrates
    assert version(runs) == LOG_VERSION
    table = read_log(Cache(None, runs_dir=runs))
    assert set(table["cache_entry"]) == {V3_ENTRY} and set(table["cache_key"]) == {entry.key}
    test = [i for i, part in enumerate(entry.split) if part == "test"][:3]
    root = resolve_source("elpv").root  # the images the fixture extracted
    images = [str(Path(root) / entry.relpaths[i]) for i in test]
    for row in table.to_dict("records"):
        pipeline, _ = load_model(row["run_id"], Cache(None, runs_dir=runs))
        X, _, _ = load(entry, logged_selection(row))
        predicted = predict(
            row["run_id"],
            images,
            output=tmp_path / "p.csv",
            cache=Cache(elpv_cache, runs_dir=runs),
            log=lambda *a: None,
        )
        names = [entry.class_names[c] for c in pipeline.predict(X[test])]
        assert list(predicted["label"]) == names, row["run_id"]


# --- format 4 rows


def test_a_fit_logs_its_spec_and_evaluation_whole_with_their_hash(elpv_cache, tmp_path):
    import featx
    from featx.selection.spec import Evaluation, FitSpec, fit_spec, logged_spec, spec_hash

    runs = tmp_path / "runs"
    spec = fit_spec("logreg", params={"C": 0.5}, class_weight="balanced", standardize=True, n_jobs=1, seed=2)
    evaluation = Evaluation(cv=3, seed=2)
    first = fit(V3_ENTRY, "block4c_add", spec, evaluation, cache=Cache(elpv_cache, runs_dir=runs), log=None)
    featx.fit(V3_ENTRY, "block3b_add", featx.fit_spec("knn"), cache=featx.Cache(elpv_cache, runs_dir=runs), log=None)
    with sqlite3.connect(runs / LOG_FILE) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == LOG_VERSION
        stored = db.execute(
            "SELECT spec, evaluation, spec_hash, classifier, params, transforms, views, tta, seed "
            "FROM runs ORDER BY seq"
        ).fetchall()
    text, evaluation_text, digest, *readable = stored[0]
    assert json.loads(text) == spec.to_dict() and json.loads(evaluation_text) == evaluation.to_dict()
    assert digest == spec_hash(spec, evaluation) == first.row["spec_hash"]
    assert readable == [spec.classifier, spec.params_json(), spec.transforms_label(), spec.views_label(), 0, 2]
    knn_spec, knn_evaluation = logged_spec(read_log(Cache(None, runs_dir=runs)).iloc[1])
    assert knn_spec == FitSpec(classifier="knn") and knn_evaluation == Evaluation() and stored[1][2]

    # the spec read back from the log is the spec: fitted again it gives the same scores and the same hash
    row = read_log(Cache(None, runs_dir=runs)).iloc[0]
    again_spec, again_evaluation = logged_spec(row)
    assert (again_spec, again_evaluation) == (spec, evaluation)
    again = fit(V3_ENTRY, "block4c_add", again_spec, again_evaluation, cache=Cache(elpv_cache, runs_dir=runs), log=None)
    scores = [c for c in first.row if c.startswith(("val_", "test_", "cv_"))]
    assert {c: again.row[c] for c in scores} == {c: first.row[c] for c in scores}
    assert again.row["spec_hash"] == first.row["spec_hash"]


def test_the_log_and_the_runs_table_say_what_they_left_out_as_values(tmp_path):
    """read_runlog's RunLog and runs_table's RunsTable carry the warnings, the invalid ids and the order line as
    attributes of their own (never in DataFrame.attrs, which pandas operations drop); read_log is the table alone."""
    from featx.runs.listing import format_runs, runs_table
    from featx.runs.store import COLUMNS, append_run, read_runlog

    cache = tmp_path / "cache"
    for run_id in ("20261202-090000-abc123", "20261202-090001-def456", "20261202-090002-0aa0aa"):
        row = {"run_id": run_id, "model_path": "", "model_sha256": "", "classifier": "knn", "layers": "x"}
        append_run(cache, {c: None for c in COLUMNS} | row | {"val_accuracy": 0.5, "layer_names": "x"})
    with sqlite3.connect(cache / "runs" / LOG_FILE) as db:
        db.execute("UPDATE runs SET run_id = 'hand-edited' WHERE run_id = '20261202-090002-0aa0aa'")
    logged = read_runlog(cache)
    assert list(logged.table["run_id"]) == ["20261202-090000-abc123", "20261202-090001-def456"]
    assert logged.invalid_ids == ["hand-edited"] and len(logged.warnings) == 1
    assert "1 row(s) whose run_id is not a featx run id ('hand-edited')" in logged.warnings[0]
    pd.testing.assert_frame_equal(read_log(cache), logged.table)
    listed = runs_table(cache, sort="val_accuracy")
    assert listed.warnings == logged.warnings and listed.order == "ordered by val_accuracy"
    assert len(listed.table) == 2 and format_runs(listed).splitlines()[-1] == listed.order

"""Recording a scored fit as a run: its folder (model, metrics, confusion matrices, learning curves) and its
row in the runs log, published together; and reading a run folder back for reports."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from sklearn.pipeline import Pipeline

from featx.backbones.layers import LayerSelection
from featx.cache.atomic import write_json
from featx.cache.pick import entry_label
from featx.cache.store import CacheEntry
from featx.classifiers import BASELINES
from featx.classifiers.views import final_classifier
from featx.figures.plots import plot_confusion, plot_learning_curves
from featx.progress import silent
from featx.runs.models import MODEL_FILE, save_model
from featx.runs.store import EVAL_SPLITS, log_run, stage_run
from featx.selection.cv import CVResult
from featx.selection.spec import Evaluation, FitSpec
from featx.selection.train import Scores
from featx.sources.views import IDENTITY
from featx.terminal import fit_lines


@dataclass
class FitResult:
    run_id: str
    folder: Path
    spec: FitSpec
    scores: Scores
    row: dict  # the line logged in the runs log

    @property
    def pipeline(self) -> Pipeline:
        return self.scores.pipeline

    @property
    def metrics(self) -> dict:
        return self.scores.metrics


def record_run(
    entry: CacheEntry | list[CacheEntry],
    spec: FitSpec,
    scores: Scores,
    *,
    selection: LayerSelection,
    log=print,
    plots: bool = True,
    keep_model: bool = True,
    cv: CVResult | None = None,
    evaluation: Evaluation | None = None,
    name_entry: bool = True,
) -> FitResult:
    """Save a scored fit as a run: <runs>/<run_id>/ (model, metrics, confusion CSV/PNG, history) and one row
    in the runs log, where <runs> is `entry.cache.runs_dir`.

    entry : the entry fitted on, or the entries whose features were combined (the log's cache_key,
    cache_entry and backbone then join theirs with "+"; the run goes to the first one's runs folder). The row's
    split_fingerprint records which rows the scores are on (the entries' split now, as `load` served it).
    selection : the layers the features came from (the log keeps its spec and names). plots : draw the confusion
    PNGs (the CSVs are always written). keep_model : save the fitted model (else the row's model_path and
    model_sha256 are empty, and predict refuses it). cv : the score the spec is selected by, as a CVResult: on
    K-fold folds, logged as the cv_* columns (mean and CI of every metric); on the one val split (folds labelled
    "val": tune's selection on val, whose refit has no val rows left), logged as the val_* scores. evaluation : how
    the run was judged (default: the fixed val split), logged whole with the spec and their spec_hash.
    What the row's columns mean is the same for every run: n_train and fit_seconds are the rows the saved model
    was fitted on and the seconds that fit took (tune's refit: train+val, the refit alone, not the search); val_*
    and test_* are that model's scores, except val_* of a run selected on val (above).
    The run folder is written under a temporary name and published with its log row, or not at all.
    name_entry : the logged line names the entry's data and backbone (False where the caller said them once
    above, as compare does).
    """
    entries, log = (entry if isinstance(entry, list) else [entry]), log or silent
    metrics, layers = scores.metrics, selection.spec
    with stage_run(entries[0].cache) as staged:
        run_id, folder = staged.run_id, staged.folder
        _write_reports(folder, scores, f"{spec.classifier} on {layers}", plots)
        sha = save_model(scores.pipeline, folder / MODEL_FILE) if keep_model else ""
        row = log_run(
            staged,
            entries,
            spec,
            evaluation or Evaluation(),
            scores,
            selection=selection,
            cv=cv,
            model_path=f"{run_id}/{MODEL_FILE}" if keep_model else "",
            model_sha256=sha,
        )
    folder = staged.final
    text = " | ".join(f"{s} acc {m['accuracy']:.3f} f1 {m['f1_macro']:.3f}" for s, m in metrics.items())
    views = "" if spec.plain else f" with views {spec.views_label()}{' (tta)' if spec.tta else ''}"
    shown = {k: v for k, v in spec.params.items() if k != "backbone"}  # the tail's: the entry's, said below
    params = _json(shown).replace('"', "").replace(" ", "")  # {min_samples_leaf:1,n_estimators:300}: fits a terminal
    what = (
        f"{spec.classifier} (baseline: ignores the features)"
        if spec.classifier in BASELINES
        else f"{spec.classifier} {params}{views} on {layers} ({scores.n_features} features)"
    )
    source = f"; of {' + '.join(map(entry_label, entries))}" if name_entry else ""
    log(fit_lines(f"run {run_id}: {what}, fit {scores.fit_seconds:.1f}s\n  {text}{source} -> {folder}"))
    return FitResult(run_id, folder, spec, scores, row)


def _write_reports(folder: Path, scores: Scores, title: str, plots: bool) -> None:
    metrics = scores.metrics
    # unsorted: each report lists the classes in label order (class index 0 first), as the confusion CSVs do
    write_json(
        folder / "metrics.json",
        {s: {k: v for k, v in m.items() if k != "confusion"} for s, m in metrics.items()},
        sort_keys=False,
    )
    for split, m in metrics.items():
        m["confusion"].to_csv(folder / f"confusion_{split}.csv")
        if plots:
            plot_confusion(
                m["confusion"], folder / f"confusion_{split}.png", f"{title} ({split}, accuracy {m['accuracy']:.3f})"
            )
    history = getattr(final_classifier(scores.pipeline), "history_", None)
    if history is not None:
        history.to_csv(folder / "history.csv", index=False)
        plot_learning_curves(history, folder / "learning_curves.png")
    from featx.figures.kept_layers import write_kept_layers

    write_kept_layers(scores.pipeline, folder)  # --select: kept features per layer, CSV and bar plot


def _json(params: dict) -> str:
    return json.dumps(params, sort_keys=True, default=str)


@dataclass
class RunFiles:
    """What a run folder holds besides its model (written by _write_reports), for reports to show."""

    folder: Path
    confusion: dict  # {split: DataFrame of shape (n_classes, n_classes)}, rows true, columns predicted
    confusion_png: dict  # {split: Path}, only the PNGs that were drawn (compare draws none without --plots)
    history: object  # DataFrame of the dense head's epochs (epoch, loss, accuracy, val_loss, val_accuracy), or None
    learning_png: Path | None


def run_files(runs_dir: Path, run_id: str) -> RunFiles:
    """The confusion matrices, learning curves and their PNGs in <runs_dir>/<run_id>/ (missing parts are empty)."""
    import pandas as pd

    folder = Path(runs_dir) / run_id
    confusion = {
        s: pd.read_csv(folder / f"confusion_{s}.csv", index_col=0)
        for s in EVAL_SPLITS
        if (folder / f"confusion_{s}.csv").is_file()
    }
    pngs = {s: folder / f"confusion_{s}.png" for s in EVAL_SPLITS if (folder / f"confusion_{s}.png").is_file()}
    history = pd.read_csv(folder / "history.csv") if (folder / "history.csv").is_file() else None
    learning = folder / "learning_curves.png"
    return RunFiles(folder, confusion, pngs, history, learning if learning.is_file() else None)


_TRANSFORM_FLAGS = (  # transforms_label() part -> the fit flags that make it again
    (re.compile(r"^standardize$"), lambda m: ["--standardize"]),
    (re.compile(r"^fne\(([^,]+),([^)]+)\)$"), lambda m: ["--discretize", "fne", "--fne-low", m[1], "--fne-high", m[2]]),
    (re.compile(r"^kbins\((\d+)\)$"), lambda m: ["--discretize", "kbins", "--kbins", m[1]]),
    (re.compile(r"^pca\(([^)]+)\)$"), lambda m: ["--pca", m[1]]),
    (re.compile(r"^layernorm$"), lambda m: ["--normalize", "layer"]),
    (
        re.compile(r"^group-lasso\(([^,]+),([^)]+)\)$"),
        lambda m: ["--select", f"group-lasso:{m[1]}", "--select-penalty", m[2]],
    ),
)


def fit_command(row) -> str:
    """The `featx fit` command line that fits a logged run again (row: a runs-log row), from its entry, layers,
    classifier, params, transforms (the reader of transforms_label), views and seed."""
    import shlex

    words = [
        "featx",
        "fit",
        *str(row["cache_entry"]).split("+")[:1],
        *(f"--cache={e}" for e in str(row["cache_entry"]).split("+")[1:]),
        "--layers",
        str(row["layers"]),
        "--clf",
        str(row["classifier"]),
    ]
    from featx.values import parse_value

    for key, value in json.loads(row["params"] or "{}").items():
        text = str(value) if not isinstance(value, str) or parse_value(value) == value else repr(value)
        words += ["--param", f"{key}={text}"]
    label = str(row.get("transforms") or "none")
    for part in [] if label == "none" else label.split("+"):
        words += next((flags(m) for pattern, flags in _TRANSFORM_FLAGS if (m := pattern.match(part))), [f"#{part}"])
    views = str(row.get("views") or IDENTITY).split(",")
    if views != [IDENTITY]:
        words += ["--views", ",".join(views[1:])] + (["--tta"] if int(row.get("tta") or 0) else [])
    words += ["--seed", str(int(row["seed"]))]
    return shlex.join(words)

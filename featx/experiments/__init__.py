"""Experiments on cached features: fit, compare, the runs log, declarative pipelines, t-SNE and predict."""

from featx.experiments.compare import compare, parse_grid
from featx.experiments.fit import FitResult, FitSpec, Scores, fit, record_run, train_and_score
from featx.experiments.pipelines import read_pipeline, run_pipeline
from featx.experiments.predict import predict
from featx.experiments.runs import load_model, runs
from featx.experiments.tsne import tsne

__all__ = ["FitResult", "FitSpec", "Scores", "compare", "fit", "load_model", "parse_grid", "predict", "read_pipeline",
           "record_run", "run_pipeline", "runs", "train_and_score", "tsne"]

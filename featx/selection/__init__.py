"""Model selection: what a fit is and how it is judged (FitSpec, Evaluation), metrics, paired
cross-validation folds with confidence intervals, search spaces, successive halving, pure train-and-score.

Imports nothing heavy here: the command line reads featx.selection.spec without scikit-learn.
"""

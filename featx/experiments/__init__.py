"""The verbs: fit, compare, tune (and its Head2Toe recipe), run_pipeline, predict, export_model, tsne.

Each takes the values its front door built (`verb(entry, <its specs>, evaluation, *, cache, compute, log)`), reads
what featx.experiments.inputs checks, trains and scores through featx.selection and records through featx.runs.
Import a verb from its module (featx.experiments.fit.fit) or from the package `featx` (featx.fit).
"""

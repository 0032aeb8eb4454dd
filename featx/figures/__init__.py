"""Figures as matplotlib Figures (object API) saved as PNG: confusion matrices, learning curves, layer
comparisons, search curves, t-SNE, kept features per layer. Below the verbs; the HTML page is featx.report."""

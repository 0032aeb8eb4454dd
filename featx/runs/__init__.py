"""The runs: the SQLite log, run folders, model files, ranking, listing, housekeeping, reuse of logged fits,
and the report folders (report.json). Nothing here runs a verb; the verbs (featx.experiments) record here."""

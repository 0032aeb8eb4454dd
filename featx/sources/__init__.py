"""Data sources: turn a user's data spec into an ordered, labelled, split list of image files."""

from featx.sources.imageset import ImageSet, resolve_source
from featx.sources.splits import stratified_split

__all__ = ["ImageSet", "resolve_source", "stratified_split"]

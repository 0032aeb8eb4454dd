"""DataSpec: which images an entry holds, as one value (the source, the subset and the split)."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass

from featx.sources.imageset import ImageSet, resolve_source

DEFAULT_DATA = "elpv"  # the built-in example: what `featx extract` uses without --data
DEFAULT_SPLIT = (0.7, 0.15, 0.15)


@dataclass(frozen=True)
class DataSpec:
    """The images of a cache entry: everything about them that decides its rows.

    source : a folder of class subfolders, a CSV manifest (path,label[,split]) or a built-in name ("elpv").
    split : train, val, test fractions of a seeded stratified split (a manifest's split column wins).
    seed : the split's seed, and the subset's. limit : a stratified subset of exactly this many images.
    strict : fail on the first image that does not decode, instead of caching it as unreadable.
    """

    source: str = DEFAULT_DATA
    _: KW_ONLY
    split: tuple = DEFAULT_SPLIT
    seed: int = 0
    limit: int | None = None
    strict: bool = False

    def __post_init__(self):
        object.__setattr__(self, "source", str(self.source))
        object.__setattr__(self, "split", tuple(self.split))

    def images(self, log=None) -> ImageSet:
        """The ImageSet: the source resolved, the subset taken and the split made (a note through `log` when the
        limit exceeds the images)."""
        images = resolve_source(self.source)
        if self.limit:
            if self.limit > len(images) and log is not None:
                log(
                    f"note: --limit {self.limit} is more than the {len(images)} images of {images.description}; all "
                    f"{len(images)} are used"
                )
            images = images.take(self.limit, self.seed)
        images.ensure_split(self.split, self.seed)
        return images

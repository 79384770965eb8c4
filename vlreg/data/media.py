"""Bad media files: skipped, counted in the main process, and fatal beyond a threshold.

A media processor raises :class:`BadMedia` when a file is missing, truncated, in a
codec that cannot be decoded or without frames. A dataset turns that into a
:class:`BadSample` sentinel instead of an item; :func:`vlreg.data.collate.collate`
drops sentinels from the batch and lists them under ``batch["_bad"]``. Counting
therefore happens where batches arrive, in the main process, which also works
with DataLoader workers (whose own counters would be lost)::

    report = dataset.bad_media_report()
    for batch in track_bad_media(loader, report):   # pops "_bad", skips empty batches
        ...
    # at the end of the epoch: one log line, the counts in report.epochs[-1],
    # and DataError beyond max_bad_fraction

:class:`BadMediaReport` fails the run with a :class:`~vlreg.errors.DataError` that
names a few files when more than ``max_bad_fraction`` of the dataset's items are bad
(of the items seen, for a stream of unknown length). Counts are of files: a picture
with five captions is one bad file, and five of the items.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Optional

from ..errors import ConfigError, DataError

log = logging.getLogger("vlreg.data")

BAD_KEY = "_bad"
NAMED_IN_MESSAGES = 5


class BadMedia(Exception):
    """A media file that cannot be used: missing, truncated, undecodable or empty."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


def batch_size(batch: Mapping[str, Any]) -> int:
    """The number of items in a collated batch (0 when every item was bad)."""
    for key, value in batch.items():
        if key != BAD_KEY:
            return len(value)
    return 0


@dataclass(frozen=True)
class BadSample:
    """What a dataset returns in place of an item whose media is bad (dropped by collate)."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path} ({self.reason})"


@dataclass
class BadMediaReport:
    """Counts items and bad media over one epoch; lives in the main process.

    Args:
        name: the dataset, as named in messages (e.g. ``"coco_caption train"``).
        max_bad_fraction: the largest tolerated share of bad items (3 bad of 60 passes 0.05).
        expected_total: the items in one epoch when known (map-style datasets): the share is
            of this total, and the run fails as soon as the bad items alone exceed it, since
            the epoch can no longer end below the threshold.
        min_seen: for streams of unknown length, the fraction is checked after every
            batch once this many items were seen (earlier, a few bad files at the start
            would fail a healthy run), and at the end of the epoch.

    ``epochs`` keeps the counts of each finished epoch (:meth:`as_dict`), for the runner's records.
    """

    name: str = "data"
    max_bad_fraction: float = 0.05
    expected_total: Optional[int] = None
    min_seen: int = 1000
    seen: int = 0
    bad: list[BadSample] = field(default_factory=list)
    epochs: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_bad_fraction <= 1.0:
            raise ConfigError(f"{self.name}: max_bad_fraction must lie in [0, 1], got {self.max_bad_fraction}")

    @property
    def num_bad(self) -> int:
        """Bad media files (each counted once, however many items share it)."""
        return len({b.path for b in self.bad})

    @property
    def bad_items(self) -> int:
        return len(self.bad)

    @property
    def fraction(self) -> float:
        """The share of bad items: of the dataset when its size is known, else of the items seen."""
        total = self.expected_total or self.seen
        return self.bad_items / total if total else 0.0

    def record(self, num_good: int, bad: Iterable[BadSample]) -> None:
        """Count one batch: ``num_good`` usable items and the bad ones."""
        bad = list(bad)
        self.seen += num_good + len(bad)
        self.bad.extend(bad)
        if bad:
            self.check(final=False)

    def update(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Count a collated batch and return it without its ``"_bad"`` entry."""
        bad = batch.pop(BAD_KEY, [])
        self.record(batch_size(batch), bad)
        return batch

    def check(self, final: bool = True) -> None:
        """Raise DataError when the bad items exceed the tolerated fraction.

        During an epoch (``final=False``) only a verdict that cannot change is
        acted on (see ``expected_total`` and ``min_seen``).
        """
        judged = self.expected_total or final or self.seen >= self.min_seen
        if judged and self.fraction > self.max_bad_fraction:
            raise DataError(
                f"{self.name}: {self._count()} among {self.seen} items seen ({self.fraction:.1%}"
                f"{f' of {self.expected_total}' if self.expected_total else ''}) exceed max_bad_fraction "
                f"{self.max_bad_fraction:g}; e.g. {self._examples()}"
            )

    def summary(self) -> str:
        """One line: how many files were bad and which."""
        if not self.bad:
            return f"{self.name}: {self.seen} items, no bad media files"
        return f"{self.name}: skipped {self._count()} of {self.seen} items ({self.fraction:.1%}): {self._examples()}"

    def as_dict(self) -> dict[str, Any]:
        """The counts so far: ``{"items", "bad" (files), "fraction" (of items), "files": ["path (reason)", ...]}``."""
        return {"items": self.seen, "bad": self.num_bad, "fraction": self.fraction, "files": self._files()}

    def end_epoch(self) -> str:
        """Log the summary, keep the epoch's counts in ``epochs``, apply the threshold, count afresh."""
        line = self.summary()
        (log.warning if self.bad else log.info)(line)
        self.epochs.append(self.as_dict())
        try:
            self.check(final=True)
        finally:
            self.seen, self.bad = 0, []
        return line

    def _files(self) -> list[str]:
        """Each bad file once, as ``path (reason)``, in the order met."""
        first: dict[str, str] = {}
        for sample in self.bad:
            first.setdefault(sample.path, str(sample))
        return list(first.values())

    def _count(self) -> str:
        """``3 bad media files (15 items)``; the items only where they differ."""
        items = f" ({self.bad_items} items)" if self.bad_items != self.num_bad else ""
        return f"{self.num_bad} bad media files{items}"

    def _examples(self) -> str:
        files = self._files()
        more = len(files) - NAMED_IN_MESSAGES
        return ", ".join(files[:NAMED_IN_MESSAGES]) + (f" and {more} more" if more > 0 else "")


def track_bad_media(batches: Iterable[Mapping[str, Any]], report: BadMediaReport) -> Iterator[dict[str, Any]]:
    """Iterate over collated batches, counting bad media; skip batches left empty.

    Ends the report's epoch when the iteration completes (logging its summary and
    raising DataError beyond the threshold).
    """
    for batch in batches:
        batch = report.update(dict(batch))
        if batch_size(batch):
            yield batch
    report.end_epoch()

"""The map-style dataset every reader builds on: records read once, media loaded per item.

A reader parses its annotation files at construction (failing there on malformed
entries) into ``records``: plain dicts such as ``{"media_path": ..., "text_input":
..., "image_id": ...}``. ``dataset[i]`` copies record i, runs ``text_input``
through the text processor and ``media_path`` through the media processor, which
adds ``image`` ``[3,H,W]`` / ``video`` ``[T,3,H,W]`` / ``features`` ``[N,D]`` (+
``features_mask`` ``[N]``). A bad media file gives a
:class:`~vlreg.data.media.BadSample` instead of an item (see :mod:`vlreg.data.media`).
Without a media processor, items carry ``media_path`` only (text-only uses).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from torch.utils.data import Dataset

from ..errors import ConfigError
from .layouts import MediaFolders
from .media import BadMedia, BadMediaReport, BadSample


class RecordDataset(Dataset):
    """Records in memory, media and text processed on access.

    Args:
        split: which part of the data (each reader documents its values).
        processor: media processor (path -> tensor), or None for no media.
        text_processor: applied to ``text_input`` (str -> str), or None.
        max_samples: keep only the first N records (e.g. to train on N pairs).
        max_bad_fraction: the largest share of bad media files tolerated per epoch.
    """

    def __init__(self, split: str, processor: Optional[Any] = None, text_processor: Optional[Callable[[str], str]] = None,
                 max_samples: Optional[int] = None, max_bad_fraction: float = 0.05):
        if max_samples is not None and max_samples < 1:
            raise ConfigError(f"{type(self).__name__}: max_samples must be positive or null, got {max_samples}")
        if not 0.0 <= max_bad_fraction <= 1.0:
            raise ConfigError(f"{type(self).__name__}: max_bad_fraction must lie in [0, 1], got {max_bad_fraction}")
        self.split, self.processor, self.text_processor = split, processor, text_processor
        self.max_samples, self.max_bad_fraction = max_samples, max_bad_fraction
        self.records: list[dict[str, Any]] = []

    def keep(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The first ``max_samples`` records (all when it is None)."""
        return records if self.max_samples is None else records[: self.max_samples]

    def media_file(self, root: str | os.PathLike, relative: str) -> str:
        """The file of a media entry: ``root/relative``, with the processor's suffix if it has one."""
        path = Path(root) / relative
        suffix = getattr(self.processor, "suffix", None)
        return str(path.with_suffix(suffix) if suffix else path)

    def media_folders(self, root: str | os.PathLike, folders: Sequence[str], override: Optional[str],
                      reader: str) -> MediaFolders:
        """A layout's media folders (or ``override`` alone, relative to root or absolute); when this
        dataset reads media, one of them must exist."""
        found = MediaFolders(root, folders if override is None else [override])
        if self.processor is not None:
            found.check(reader)
        return found

    def find_media(self, folders: MediaFolders, relative: str) -> str:
        """The file of a media entry, looked up in ``folders``, with the processor's suffix if it has one."""
        suffix = getattr(self.processor, "suffix", None)
        return folders.find(Path(relative).with_suffix(suffix).as_posix() if suffix else relative)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any] | BadSample:
        item = dict(self.records[index])
        if self.text_processor is not None and "text_input" in item:
            item["text_input"] = self.text_processor(item["text_input"])
        if self.processor is not None and "media_path" in item:
            try:
                item.update(self.processor.fields(item["media_path"]))
            except BadMedia as bad:
                return BadSample(item["media_path"], bad.reason)
        return self.finish(item)

    def finish(self, item: dict[str, Any]) -> dict[str, Any]:
        """Last touch on an item (readers override: drop fields, draw answers)."""
        return item

    def bad_media_report(self) -> BadMediaReport:
        """A fresh report for one epoch over this dataset (see :mod:`vlreg.data.media`)."""
        return BadMediaReport(f"{type(self).__name__} {self.split}", self.max_bad_fraction, expected_total=len(self))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(split={self.split!r}, {len(self)} items)"


class RetrievalItems:
    """Mixin for retrieval readers: media as items, their captions as one list of texts.

    After :meth:`index_media`, items are ``{modality: tensor, "index": i, "media_path"}``,
    and ``texts``, ``txt2media`` (text j -> media index) and ``media2txt`` (media i ->
    text indices) describe the ground truth, as the retrieval metric takes it.
    """

    records: list[dict[str, Any]]
    text_processor: Optional[Callable[[str], str]]

    def index_media(self, media: list[tuple[str, list[str]]]) -> None:
        """Set items and texts from ``[(media file, [captions])]``; captions go through text_processor."""
        process = self.text_processor or (lambda text: text)
        self.texts: list[str] = []
        self.txt2media: list[int] = []
        self.media2txt: list[list[int]] = []
        self.records = []
        for index, (path, captions) in enumerate(media):
            first = len(self.texts)
            self.texts.extend(process(caption) for caption in captions)
            self.txt2media.extend([index] * len(captions))
            self.media2txt.append(list(range(first, len(self.texts))))
            self.records.append({"media_path": path, "index": index})

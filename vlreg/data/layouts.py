"""Layouts: the ways a dataset lies on disk, told apart by the files under ``root``.

A dataset family (MSRVTT, VQAv2, COCO) comes in several layouts: its official
release, LAVIS's preprocessed files, and so on (see ``vlreg/data/README.md``). For
one reader and split, each layout that can serve it names the first file it would
read, its *key file*. :func:`choose_layout` picks the layout whose key file exists,
or the one a config names with ``layout:``:

- no key file exists: a :class:`~vlreg.errors.DataError` listing every layout tried
  with the file it looked for;
- several exist: a :class:`~vlreg.errors.ConfigError` asking for ``layout:``.

A chosen layout reads its other files strictly: one that is absent is an error
naming it, never skipped. Its media are looked up in its media folders, in order
(:class:`MediaFolders`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional, Sequence

from ..errors import ConfigError, DataError


def choose_layout(root: str | os.PathLike, key_files: Mapping[str, str], layout: Optional[str],
                  reader: str) -> str:
    """The name of the layout to read ``root`` as.

    Args:
        root: the dataset directory.
        key_files: ``{layout name: key file relative to root}``, in the order tried; only the
            layouts that can serve this reader and split.
        layout: the layout a config names, or None to recognise it.
        reader: the reader and split, as errors name them (``"msrvtt_qa test"``).
    """
    root = Path(root)
    if layout is not None:
        if layout not in key_files:
            raise ConfigError(f"{reader}: layout {layout!r} has no files for it; layouts that do: "
                              f"{', '.join(key_files)}")
        if not (root / key_files[layout]).is_file():
            raise DataError(f"{reader}: layout {layout} needs {root / key_files[layout]}, which is not there")
        return layout
    found = [name for name, key in key_files.items() if (root / key).is_file()]
    if len(found) == 1:
        return found[0]
    if not found:
        tried = "; ".join(f"{name} ({key})" for name, key in key_files.items())
        raise DataError(f"{reader}: no known layout under {root}; looked for {tried}")
    raise ConfigError(f"{reader}: {root} holds the files of several layouts ({', '.join(found)}); "
                      f"set layout: to one of them")


class MediaFolders:
    """The folders a layout keeps its media in; a file is looked up in each, in order.

    A file found in none of them is given under the first folder, so that reading it
    reports it missing (see :mod:`vlreg.data.media`). Folder listings are read once.

    Args:
        root: the dataset directory.
        folders: the folders, relative to root (``..`` allowed) or absolute.
    """

    def __init__(self, root: str | os.PathLike, folders: Sequence[str]):
        self.folders = [os.path.normpath(os.path.join(root, folder)) for folder in folders]
        self._names: dict[str, frozenset[str]] = {}

    def find(self, relative: str) -> str:
        """``folder/relative`` for the first folder that holds it, else under the first folder."""
        directory, _, name = relative.rpartition("/")
        for folder in self.folders:
            if name in self._listing(os.path.join(folder, directory)):
                return os.path.join(folder, relative)
        return os.path.join(self.folders[0], relative)

    def _listing(self, directory: str) -> frozenset[str]:
        if directory not in self._names:
            self._names[directory] = frozenset(os.listdir(directory)) if os.path.isdir(directory) else frozenset()
        return self._names[directory]

    def check(self, reader: str) -> None:
        """DataError when none of the folders exists (media were asked for, and cannot be anywhere)."""
        if not any(os.path.isdir(folder) for folder in self.folders):
            raise DataError(f"{reader}: no media folder found; looked for {', '.join(self.folders)}")

    def __repr__(self) -> str:
        return f"MediaFolders({', '.join(self.folders)})"

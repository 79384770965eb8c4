"""Writing files that survive a crash: fsynced, or written aside and renamed into place.

A reader never sees half a file: :func:`write_json_atomically` writes a hidden
temporary file next to the target and renames it over the target, and
:func:`write_text_durably` fsyncs what it wrote. :func:`raise_os_error` turns the
errors that torch and safetensors raise for a full disk back into the
:class:`OSError` behind them, so that callers can say so in one line.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..errors import os_error_in


def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file or a directory (a directory's entries: a rename inside it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_durably(text: str, path: str | os.PathLike) -> None:
    """Write text to ``path`` and fsync it."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def write_json_atomically(path: str | os.PathLike, payload: Any, indent: int = 1) -> Path:
    """Write ``payload`` as JSON to ``path`` through a temporary file renamed into place; returns ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=indent, default=str), encoding="utf-8")
    os.replace(tmp, path)
    return path


def link_or_copy(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """A hard link of ``source`` at ``target``, or a copy where the file system has no hard links."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def raise_os_error(exc: Exception, path: str | os.PathLike) -> None:
    """Raise the OSError behind ``exc`` (naming ``path``), or ``exc`` itself when there is none."""
    found = os_error_in(exc)
    if found is None:
        raise exc
    raise OSError(found.errno, found.strerror, str(path)) from exc

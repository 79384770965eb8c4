"""One writer per output directory: a lock file that names its holder.

A run holds ``<output_dir>/.vlreg.lock`` while it writes there: an advisory ``flock`` on
the file, which the operating system releases when the process ends however it ends,
and the file's content, ``{"pid", "host", "started"}``, which names the holder in the
message a second run gets. A lock file left by a process that died is therefore free
and taken over; where ``flock`` is not supported (some network file systems) the
content decides: a lock of this host whose process is gone is stale, any other is held.

Under torchrun only the process of global rank 0 takes the lock: the others write
through it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Optional

from ..errors import UserError
from ..io.run_dir import RunDir


class OutputLockedError(UserError):
    """Another run writes into the same output directory."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _holder(path: Path) -> Optional[dict[str, Any]]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _held_by_other(holder: Optional[dict[str, Any]]) -> bool:
    """Whether a lock's content names a live process other than this one (used where flock is unsupported)."""
    if not holder:
        return False
    if holder.get("host") != socket.gethostname():
        return True
    return holder.get("pid") != os.getpid() and _alive(int(holder.get("pid", 0)))


class OutputLock:
    """``with OutputLock(directory): ...``: the calling run is the only writer of ``directory``.

    Raises :class:`OutputLockedError` when another live run holds it.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.path = RunDir(self.directory).lock
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        """Whether this process holds the lock (the others of a torchrun launch do not take it)."""
        return self._fd is not None

    def acquire(self) -> None:
        if int(os.environ.get("RANK", "0")) != 0:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        while self._fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES, errno.ENOLCK, errno.EOPNOTSUPP):
                    os.close(fd)
                    raise
                locked = exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP) and not _held_by_other(_holder(self.path))
            if not locked:
                os.close(fd)
                self._refuse()
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:  # its holder removed it while we waited: try again
                same = False
            if same:
                self._fd = fd
            else:
                os.close(fd)
        self._write_holder()

    def _refuse(self) -> None:
        holder = _holder(self.path) or {}
        who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}"
        raise OutputLockedError(
            f"{self.directory} is in use by another run ({who}): wait for it to end or choose another output_dir; "
            f"if no such run exists, delete {self.path}")

    def _write_holder(self) -> None:
        """Name this process in the lock; on a full disk the lock holds without its name."""
        text = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                           "started": time.strftime("%Y-%m-%d %H:%M:%S")})
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, text.encode(), 0)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)  # closing releases the flock
            self._fd = None

    def __enter__(self) -> "OutputLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

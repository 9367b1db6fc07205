"""An exclusive OS lock on a run folder, so that only one process writes into it.

The lock is ``flock(LOCK_EX | LOCK_NB)`` on the file :data:`LOCK_FILE` inside the
folder. The kernel releases it when the process exits, however it exits
(kill -9 included), so a stale lock never blocks a later run; the lock file
itself stays and is harmless.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

from models.io.files import FileError

__all__ = ["LOCK_FILE", "FolderBusyError", "RunLock"]

LOCK_FILE = ".minigrad.lock"
"""The name of the lock file in a locked folder."""


class FolderBusyError(FileError):
    """Another process holds the folder's lock."""


class RunLock:
    """An exclusive, non-blocking lock on ``folder`` (a context manager).

    Args:
        folder: the run folder; it must exist.
        what: what the folder is, for the message (``"run folder"``).

    Example::

        with RunLock(out):
            ...  # only this process writes into out

    Raises (on ``acquire`` / entering):
        FolderBusyError: another process holds the lock; the message names
            the folder and, when known, the holder's process id.
        FileError: the lock file cannot be created (read-only folder, ...).
    """

    def __init__(self, folder: str | os.PathLike[str], what: str = "run folder") -> None:
        self.folder = Path(folder)
        self.what = what
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        """The lock file."""
        return self.folder / LOCK_FILE

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> RunLock:
        """Take the lock (idempotent); see the class for the errors."""
        if self._fd is not None:
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            raise FileError(
                f"{self.folder}: cannot lock the {self.what} ({exc.strerror or exc})"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = ""
            with contextlib.suppress(OSError, ValueError):
                text = os.pread(fd, 32, 0).decode("ascii").strip()
                if text:
                    holder = f" (process {int(text)})"
            os.close(fd)
            raise FolderBusyError(
                f"{self.folder}: another minigrad process{holder} is writing this {self.what}; "
                "wait for it to finish or choose another --out"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise FileError(
                f"{self.folder}: cannot lock the {self.what} ({exc.strerror or exc})"
            ) from None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Release the lock (idempotent)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

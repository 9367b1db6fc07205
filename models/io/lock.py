"""An exclusive OS lock on a run folder, so that only one process writes into it.

The lock is ``flock(LOCK_EX | LOCK_NB)`` on the file :data:`LOCK_FILE` inside the
folder. The kernel releases it when the process exits, however it exits
(kill -9 included), so a stale lock never blocks a later run; the lock file
itself stays and is harmless.

A command that takes the lock and then refuses the folder (it holds someone
else's run, a sweep with other options, ...) removes the lock file again if it
created it (``release(discard=True)``), so that a refused command leaves the
folder as it found it. The file is removed while still locked, and ``acquire``
checks after locking that the path still names the file it locked (retrying
otherwise), so a process that opened the old file just before it was removed
never takes a lock that another process, on a new file, also holds.
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
        self._created = False

    @property
    def path(self) -> Path:
        """The lock file."""
        return self.folder / LOCK_FILE

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def _cannot(self, exc: OSError) -> FileError:
        return FileError(f"{self.folder}: cannot lock the {self.what} ({exc.strerror or exc})")

    def _open(self) -> tuple[int, bool]:
        """Open the lock file, creating it if needed: ``(fd, created)``."""
        flags = os.O_RDWR | getattr(os, "O_CLOEXEC", 0)
        while True:
            try:
                return os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o644), True
            except FileExistsError:
                pass
            try:
                return os.open(self.path, flags), False
            except FileNotFoundError:  # removed in between: create it
                continue

    def acquire(self) -> RunLock:
        """Take the lock (idempotent); see the class for the errors."""
        if self._fd is not None:
            return self
        for _ in range(100):
            try:
                fd, created = self._open()
            except OSError as exc:
                raise self._cannot(exc) from None
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
                    f"{self.folder}: another minigrad process{holder} is writing this "
                    f"{self.what}; wait for it to finish or choose another --out"
                ) from None
            except OSError as exc:
                os.close(fd)
                raise self._cannot(exc) from None
            if self._same_file(fd):
                break
            # the holder removed the file between our open and our flock: the lock
            # we hold is on a file no one else will open; take the current one
            os.close(fd)
        else:
            raise FolderBusyError(
                f"{self.folder}: the lock file of this {self.what} keeps being replaced; "
                "wait for the other minigrad process to finish or choose another --out"
            )
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd
        self._created = created
        return self

    def _same_file(self, fd: int) -> bool:
        try:
            mine, now = os.fstat(fd), os.stat(self.path)
        except OSError:
            return False
        return (mine.st_dev, mine.st_ino) == (now.st_dev, now.st_ino)

    def release(self, *, discard: bool = False) -> None:
        """Release the lock (idempotent).

        Args:
            discard: also remove the lock file, if this lock created it (a
                command that refused the folder leaves it as it found it). A
                lock file that was there before is left.
        """
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        if discard and self._created:
            with contextlib.suppress(OSError):
                os.unlink(self.path)  # still locked: see the module docstring
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

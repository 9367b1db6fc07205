"""Atomic file writes, and the cleanup of temporaries a killed writer left behind.

A file is written to a temporary file in the target's folder, named
``.<target name>.<random>`` + :data:`TEMP_SUFFIX`, flushed, fsynced and renamed
onto the target with :func:`os.replace`: a crash leaves the previous file
intact. A kill -9 can leave the temporary; :func:`clean_stale_temporaries`
removes those of this naming (call it while holding the folder's
:class:`~models.io.lock.RunLock`, so no live writer's temporary is removed).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

__all__ = [
    "TEMP_SUFFIX",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "clean_stale_temporaries",
]

TEMP_SUFFIX = ".minigrad-tmp"
"""The suffix of every temporary file :func:`atomic_write` creates."""


def _default_mode() -> int:
    """Permission bits a plain ``open(path, "w")`` would give a new file.

    The temporary file is created private (0600); the target should get the
    usual ``0666 & ~umask``. Linux reports the umask in /proc without changing
    it; elsewhere it is read by setting and restoring it.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o077)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> None:
    """Write a file through ``write(fileobj)`` into a temporary file, then rename it.

    Args:
        path: the target file; its folder must exist. An existing file keeps
            its permission bits and is replaced only once the new one is
            complete and on disk. A symbolic link stays a link: the file it
            points to is the one replaced.
        write: writes the complete contents to the binary file it is given.

    Raises:
        OSError: the folder is not writable, the disk is full, the target
            exists and is not a regular file (a FIFO, a device, a folder: it is
            never replaced), ...; the temporary file is removed and the target
            left as it was.
    """
    target = Path(path)
    if target.is_symlink():
        # replace the file the link points to, and keep the link (as
        # ``sed -i --follow-symlinks`` does): renaming onto the link would
        # turn it into a plain file and leave its target stale
        target = Path(os.path.realpath(target))
    with _signals_deferred():
        _atomic_write(target, write)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while a file is written (main thread only).

    A signal that arrives meanwhile is delivered when the write is complete, so
    Ctrl-C or SIGTERM never leaves a temporary file behind (``kill -9`` can;
    :func:`clean_stale_temporaries` removes those).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _atomic_write(target: Path, write: Callable[[IO[bytes]], None]) -> None:
    directory = target.parent
    try:
        mode = os.stat(target).st_mode
    except OSError:
        mode = None  # a new file (or the folder's error, reported below)
    if mode is not None and not stat.S_ISREG(mode):
        # the rename would replace a FIFO or a device by a file, or fail on a folder
        raise OSError(
            errno.EISDIR if stat.S_ISDIR(mode) else errno.EEXIST,
            f"cannot write {target}: it exists and is not a regular file",
        )
    try:
        tmp = tempfile.NamedTemporaryFile(  # closed below; kept on success
            dir=directory, prefix=f".{target.name}.", suffix=TEMP_SUFFIX, delete=False
        )
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write {target}: {exc.strerror or exc}") from None
    try:
        with tmp:
            write(tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        try:
            mode = target.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = _default_mode()
        os.chmod(tmp.name, mode)
        os.replace(tmp.name, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp.name)
        if isinstance(exc, OSError):  # name the file the user asked for, not the temporary
            raise OSError(exc.errno, f"cannot write {target}: {exc.strerror or exc}") from None
        raise
    # Make the rename itself durable; not every platform can open a directory.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""

    def write(f: IO[bytes]) -> None:
        f.write(data)

    atomic_write(path, write)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically, UTF-8, without newline translation."""
    atomic_write_bytes(path, text.encode("utf-8"))


def clean_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries :func:`atomic_write` left in ``folder`` (not below it).

    Only names of this module's pattern (``.<name>.<random>`` +
    :data:`TEMP_SUFFIX`, regular files) are touched. Call it while holding the
    folder's lock.

    Args:
        folder: the folder; a missing one is fine.

    Returns:
        The files removed.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        if not (entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX)):
            continue
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed

"""Opening files that must be regular files, capped text reads, content hashes."""

from __future__ import annotations

import fcntl
import hashlib
import os
import stat
from pathlib import Path
from typing import BinaryIO, TextIO

__all__ = [
    "DEFAULT_TEXT_LIMIT",
    "FileError",
    "check_output_file",
    "content_hash",
    "open_regular",
    "read_text_capped",
    "require_regular_file",
]

DEFAULT_TEXT_LIMIT = 1 << 20
"""The most bytes :func:`read_text_capped` reads by default (1 MiB): a config is far smaller."""


class FileError(ValueError):
    """A file cannot be used; the message is one line naming the file and the problem."""


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def require_regular_file(path: str | os.PathLike[str], what: str) -> Path:
    """Check that ``path`` names an existing regular file (symlinks followed).

    Args:
        path: the file.
        what: what the file is for, used in the message (``"dataset"``,
            ``"--config"``, ``"checkpoint"``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`, unchanged (never resolved, so its
        suffix is the one the user gave).

    Raises:
        FileError: missing, unreadable, or a directory, FIFO, device or socket.
    """
    p = Path(path)
    try:
        mode = os.stat(p).st_mode
    except FileNotFoundError:
        raise FileError(f"{p}: no such file (expected a {what} file)") from None
    except OSError as exc:
        raise FileError(f"{p}: cannot be read ({_one_line(exc.strerror or exc)})") from None
    if not stat.S_ISREG(mode):
        raise FileError(f"{p}: is {_kind(mode)}, expected a regular {what} file")
    return p


def open_regular(path: str | os.PathLike[str], what: str) -> BinaryIO:
    """Open ``path`` for binary reading, refusing anything but a regular file.

    The file is opened without blocking (a FIFO would otherwise wait for a
    writer forever) and checked with ``fstat`` on the open descriptor, so a file
    swapped between a check and the open is caught too.

    Args:
        path: the file.
        what: what the file is for, used in the message.

    Returns:
        The open file (blocking mode restored); the caller closes it.

    Raises:
        FileError: as :func:`require_regular_file`.
    """
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FileError(f"{p}: no such file (expected a {what} file)") from None
    except IsADirectoryError:
        raise FileError(f"{p}: is a directory, expected a regular {what} file") from None
    except OSError as exc:
        raise FileError(f"{p}: cannot be read ({_one_line(exc.strerror or exc)})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise FileError(f"{p}: is {_kind(mode)}, expected a regular {what} file")
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_output_file(path: str | os.PathLike[str], what: str) -> Path:
    """Check that ``path`` can be written as a file: a new name, or a regular file.

    Writing replaces the target by renaming a temporary file onto it; a FIFO,
    device, socket or directory there would be replaced (or the rename fail
    late), so they are refused before any work is done.

    Args:
        path: the file to write.
        what: what the file is for, used in the message (``"-o"``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`, unchanged.

    Raises:
        FileError: an existing path that is not a regular file, an empty name,
            or a folder that does not exist or is not a folder.
    """
    p = Path(path)
    if not str(path) or p.name in ("", ".", ".."):
        raise FileError(f"{what} {str(path)!r}: not a file name")
    try:
        mode = os.stat(p).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise FileError(
            f"{what} {p}: cannot be checked ({_one_line(exc.strerror or exc)})"
        ) from None
    if mode is not None and not stat.S_ISREG(mode):
        raise FileError(
            f"{what} {p}: is {_kind(mode)}; the output must be a regular file or a new name"
        )
    folder = p.parent
    if not folder.is_dir():
        raise FileError(f"{what} {p}: the folder {folder} does not exist")
    return p


def read_text_capped(
    path: str | os.PathLike[str], what: str, limit: int = DEFAULT_TEXT_LIMIT
) -> str:
    """Read a small UTF-8 text file, refusing one longer than ``limit`` bytes.

    Args:
        path: a regular file.
        what: what the file is for, used in the message (``"--config"``).
        limit: the most bytes accepted.

    Returns:
        The decoded text.

    Raises:
        FileError: not a regular file, longer than ``limit``, or not UTF-8.
    """
    p = Path(path)
    with open_regular(p, what) as fh:
        try:
            data = fh.read(limit + 1)
        except OSError as exc:
            raise FileError(f"{p}: cannot be read ({_one_line(exc.strerror or exc)})") from None
    if len(data) > limit:
        raise FileError(f"{p}: longer than {limit} bytes, too large for a {what} file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileError(f"{p}: not UTF-8 text ({_one_line(exc)})") from None


def content_hash(path: str | os.PathLike[str], what: str = "data set") -> tuple[str, int]:
    """The SHA-256 (hex) and size in bytes of a regular file, read in 1 MiB chunks.

    Args:
        path: the file.
        what: what the file is for, used in the message.

    Returns:
        ``(sha256_hex, size)``.

    Raises:
        FileError: not a regular file or unreadable.
    """
    digest = hashlib.sha256()
    size = 0
    with open_regular(path, what) as fh:
        try:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
        except OSError as exc:
            raise FileError(f"{path}: cannot be read ({_one_line(exc.strerror or exc)})") from None
    return digest.hexdigest(), size


class ProgressStream:
    """A text stream for progress messages whose failure ends the messages, not the work.

    A run's results are files: when its standard error is a pipe whose reader went
    away (``minigrad train 2>&1 | head``), or a full disk, the messages are dropped
    from then on and the run goes on.

    Args:
        stream: the stream written to (``sys.stderr``).
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.lost = False
        """Whether a write failed (and later ones are dropped)."""

    def write(self, text: str) -> int:
        if not self.lost:
            try:
                self._stream.write(text)
            except (OSError, ValueError):
                self.lost = True
        return len(text)

    def flush(self) -> None:
        if not self.lost:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                self.lost = True

    def isatty(self) -> bool:
        try:
            return bool(self._stream.isatty())
        except (OSError, ValueError, AttributeError):
            return False

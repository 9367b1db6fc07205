"""File primitives every command uses: safe reading, atomic writing, run-folder locks.

One job: turn hostile or unlucky files into one-line errors, and never leave a
half-written file behind.

* :func:`require_regular_file` / :func:`open_regular`: refuse FIFOs, devices and
  directories before anything blocks on them; :func:`check_output_file` refuses
  them as outputs (an atomic write would replace them);
* :func:`read_text_capped`: a small text file (a TOML config) read with a cap;
* :func:`read_npz`: an ``.npz`` archive read member by member, only the members
  a format defines, each checked (name, dtype, shape, declared and compressed
  sizes) before a byte of it is decompressed; never unpickles;
* :func:`atomic_write_bytes` / :func:`atomic_write_text` / :func:`atomic_write`:
  temporary file in the same folder, fsync, :func:`os.replace`;
  :func:`clean_stale_temporaries` removes the temporaries a killed writer left;
* :class:`RunLock`: an exclusive OS lock (``flock``) on a run folder;
* :func:`content_hash`: SHA-256 and size of a file (a data set);
* :func:`install_signal_handlers`: SIGTERM raises :class:`Terminated`, a
  ``KeyboardInterrupt``, so it unwinds like Ctrl-C.

Every error is a :class:`FileError` (a ``ValueError``) whose message is one line
naming the file.
"""

from models.io.atomic import (
    TEMP_SUFFIX,
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    clean_stale_temporaries,
)
from models.io.files import (
    FileError,
    ProgressStream,
    check_output_file,
    content_hash,
    open_regular,
    read_text_capped,
    require_regular_file,
)
from models.io.lock import LOCK_FILE, FolderBusyError, RunLock
from models.io.npz import Member, NpzLimits, read_npz
from models.io.signals import EXIT_SIGINT, EXIT_SIGTERM, Terminated, install_signal_handlers

__all__ = [
    "EXIT_SIGINT",
    "EXIT_SIGTERM",
    "LOCK_FILE",
    "TEMP_SUFFIX",
    "FileError",
    "FolderBusyError",
    "Member",
    "NpzLimits",
    "ProgressStream",
    "RunLock",
    "Terminated",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_output_file",
    "clean_stale_temporaries",
    "content_hash",
    "install_signal_handlers",
    "open_regular",
    "read_npz",
    "read_text_capped",
    "require_regular_file",
]

"""Reading ``.npz`` archives defensively: only the members a format defines, sized first.

:func:`numpy.load` decompresses whatever member is asked for and trusts the
``.npy`` header's shape, so a 1 MB archive can claim (and make numpy try to
allocate) terabytes. :func:`read_npz` instead

1. refuses anything but a regular file, a zip without duplicate, encrypted or
   unknown members, and more members than :attr:`NpzLimits.max_members`;
2. checks every member's declared uncompressed size (zip directory) against
   the per-member and total limits, and its compression ratio, before
   decompressing any of it;
3. reads each member's ``.npy`` header alone, refuses object, structured and
   unexpected dtypes and dimensions, and checks that the shape's byte count is
   what the zip directory declares (a header claiming 2 TiB is caught here);
4. only then reads the data, at most the declared bytes, into one array.

Nothing is ever unpickled.
"""

from __future__ import annotations

import math
import os
import struct
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from models.io.files import FileError, open_regular

__all__ = ["Member", "NpzLimits", "read_npz"]

_CHUNK = 1 << 20
_KIND_NAMES = {"b": "bool", "i": "signed int", "u": "unsigned int", "f": "float", "U": "text"}


class _Refusal(Exception):
    """A check failed; turned into the caller's ``error`` with the same message."""


@dataclass(frozen=True)
class Member:
    """The members of an archive a format allows.

    Attributes:
        name: the key (the member's name without ``.npy``), or a prefix ending
            in ``*`` that matches every key starting with it (``"param/*"``).
        kinds: the accepted numpy dtype kinds (``"iu"`` integers, ``"f"``
            floating, ``"b"`` boolean, ``"U"`` unicode text).
        ndims: the accepted numbers of dimensions, or None for any.
        required: whether an exact ``name`` must be present.
    """

    name: str
    kinds: str = "biuf"
    ndims: tuple[int, ...] | None = None
    required: bool = False

    def matches(self, key: str) -> bool:
        """Whether ``key`` is a member this entry allows."""
        if self.name.endswith("*"):
            prefix = self.name[:-1]
            return key.startswith(prefix) and len(key) > len(prefix)
        return key == self.name


@dataclass(frozen=True)
class NpzLimits:
    """Limits checked before anything is decompressed.

    Attributes:
        max_members: the most members an archive may hold.
        max_member_bytes: the most uncompressed bytes of one member.
        max_total_bytes: the most uncompressed bytes of all members together.
        max_ratio: the largest uncompressed / compressed size of a compressed
            member bigger than ``ratio_floor`` bytes (deflate reaches about
            1000 on constant data; real piano rolls and weights stay far below).
        ratio_floor: members up to this many uncompressed bytes skip the
            ratio check.
    """

    max_members: int = 4096
    max_member_bytes: int = 1 << 30
    max_total_bytes: int = 1 << 30
    max_ratio: float = 64.0
    ratio_floor: int = 1 << 20


def _find(members: Sequence[Member], key: str) -> Member | None:
    for m in members:
        if m.matches(key):
            return m
    return None


def _header(f: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype[Any], int]:
    """Read a ``.npy`` header: shape, Fortran order, dtype and the header's length."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise ValueError(f"unsupported .npy format version {version}")
    return tuple(int(n) for n in shape), bool(fortran), np.dtype(dtype), int(f.tell())


def read_npz(
    path: str | os.PathLike[str],
    what: str,
    members: Sequence[Member],
    limits: NpzLimits | None = None,
    *,
    error: Callable[[str], Exception] = FileError,
) -> dict[str, npt.NDArray[Any]]:
    """Read the members of an ``.npz`` archive that ``members`` allows, checking each first.

    Args:
        path: the archive (a regular file).
        what: what the file is, for the messages (``"dataset"``, ``"checkpoint"``).
        members: the members the format defines; any other member is refused.
        limits: size limits (default :class:`NpzLimits`).
        error: builds the exception raised, from a one-line message that
            starts with the path (default :class:`FileError`).

    Returns:
        The arrays by key (member name without ``.npy``), writable, with the
        stored shape, dtype and memory order.

    Raises:
        whatever ``error`` builds: not a regular file, not a zip, an unknown,
        duplicate, encrypted, oversized or missing member, a bad header, an
        object or unexpected dtype, a size that does not match the header, a
        truncated or corrupt member.
    """
    lim = limits or NpzLimits()
    p = Path(path)
    try:
        fh = open_regular(p, what)
    except FileError as exc:
        raise error(str(exc)) from None
    with fh:
        head = fh.read(6)
        if head.startswith(b"\x93NUMPY"):
            raise error(f"{p}: is a single .npy array, expected an .npz archive ({what})")
        if not head.startswith(b"PK"):
            raise error(f"{p}: not an .npz (zip) archive, so not a {what} file")
        fh.seek(0)
        key = "(archive directory)"
        try:
            with zipfile.ZipFile(fh) as zf:
                infos = zf.infolist()
                if len(infos) > lim.max_members:
                    raise _Refusal(
                        f"{p}: {len(infos)} members, more than the {lim.max_members} a {what} "
                        "file may hold"
                    )
                plan: list[tuple[str, zipfile.ZipInfo]] = []
                seen: set[str] = set()
                unexpected: list[str] = []
                total = 0
                for info in infos:
                    name = info.filename
                    key = name[:-4] if name.endswith(".npy") else name
                    if not name.endswith(".npy") or _find(members, key) is None:
                        unexpected.append(key)
                        continue
                    if key in seen:
                        raise _Refusal(f"{p}: member {name!r} appears twice")
                    seen.add(key)
                    if info.flag_bits & 0x1:
                        raise _Refusal(f"{p}: member {name!r} is encrypted")
                    size = info.file_size
                    if size > lim.max_member_bytes:
                        raise _Refusal(
                            f"{p}: member {name!r} declares {size} bytes, more than the "
                            f"{lim.max_member_bytes} allowed"
                        )
                    total += size
                    if total > lim.max_total_bytes:
                        raise _Refusal(
                            f"{p}: members declare more than {lim.max_total_bytes} bytes in all"
                        )
                    if (
                        info.compress_type != zipfile.ZIP_STORED
                        and size > lim.ratio_floor
                        and size > lim.max_ratio * max(info.compress_size, 1)
                    ):
                        raise _Refusal(
                            f"{p}: member {name!r} expands {info.compress_size} bytes to {size} "
                            f"(more than {lim.max_ratio:g} times); refusing a possible zip bomb"
                        )
                    plan.append((key, info))
                missing = [m.name for m in members if m.required and m.name not in seen]
                if missing:
                    raise _Refusal(f"{p}: missing member(s) {', '.join(missing)} of a {what} file")
                if unexpected:
                    raise _Refusal(
                        f"{p}: unexpected member(s) {', '.join(map(repr, unexpected[:5]))} "
                        f"in a {what} file"
                    )
                out: dict[str, npt.NDArray[Any]] = {}
                for key, info in plan:
                    out[key] = _read_member(zf, info, p, key, _find(members, key), error)
                return out
        except (
            zipfile.BadZipFile,
            zlib.error,
            struct.error,
            EOFError,
            OSError,
            ValueError,
            KeyError,
            RuntimeError,
            NotImplementedError,
        ) as exc:
            raise error(
                f"{p}: corrupt or truncated archive, cannot read {key!r} "
                f"({type(exc).__name__}: {' '.join(str(exc).split())})"
            ) from None
        except _Refusal as exc:
            raise error(str(exc)) from None


def _read_member(
    zf: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    p: Path,
    key: str,
    spec: Member | None,
    error: Callable[[str], Exception],
) -> npt.NDArray[Any]:
    assert spec is not None  # checked by the caller
    with zf.open(info) as f:
        try:
            shape, fortran, dtype, header_len = _header(f)
        except ValueError as exc:
            raise _Refusal(
                f"{p}: member {key!r}: bad .npy header ({' '.join(str(exc).split())})"
            ) from None
        if dtype.hasobject:
            raise _Refusal(
                f"{p}: member {key!r} is an object (pickled) array, which is never loaded"
            )
        if dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in spec.kinds:
            kinds = ", ".join(_KIND_NAMES.get(k, k) for k in spec.kinds)
            raise _Refusal(f"{p}: member {key!r} has dtype {dtype}; expected {kinds}")
        if spec.ndims is not None and len(shape) not in spec.ndims:
            raise _Refusal(
                f"{p}: member {key!r} has shape {shape}; expected "
                f"{' or '.join(str(n) for n in spec.ndims)} dimension(s)"
            )
        count = math.prod(shape)
        nbytes = count * dtype.itemsize
        if header_len + nbytes != info.file_size:
            raise _Refusal(
                f"{p}: member {key!r} declares shape {shape} of {dtype} ({nbytes} bytes) but "
                f"holds {info.file_size - header_len} bytes"
            )
        flat = bytearray(nbytes)
        view = memoryview(flat)
        pos = 0
        while pos < nbytes:
            chunk = f.read(min(_CHUNK, nbytes - pos))
            if not chunk:
                raise _Refusal(f"{p}: member {key!r} is truncated")
            view[pos : pos + len(chunk)] = chunk
            pos += len(chunk)
        f.read(1)  # reach the end, so that zipfile checks the CRC
    array: npt.NDArray[Any] = np.frombuffer(flat, dtype=dtype)
    return array.reshape(shape, order="F" if fortran else "C")

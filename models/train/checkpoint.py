"""Atomic, pickle-free training checkpoints.

A checkpoint is a single ``.npz`` archive (written with :func:`numpy.savez`)
holding

* ``param/<name>``: the current parameters,
* ``best/<name>``: optionally, the parameters of the best epoch so far,
* ``optim/<key>``: the optimiser state (see ``Optimizer.state_dict``),
* ``meta``: a 0-d unicode array with a JSON document holding the format
  name and version, the epoch, the random generator's state
  (``Generator.bit_generator.state``), the run configuration and any extra
  JSON-able data (history, best epoch, ...).

Nothing is pickled, and files are read with ``allow_pickle=False``, so
loading a checkpoint never executes code from the file. JSON turns tuples
into lists; numpy scalars and arrays found in the metadata (an MT19937
generator state holds an array) are stored tagged and restored as numpy
arrays.

Files are written atomically: the data goes to a temporary file in the target
directory, which is flushed, fsynced and then renamed onto the target with
:func:`os.replace`. A crash or error midway leaves any previous file intact,
and the temporary file is removed on failure.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import numpy as np

from minigrad.types import AnyArray, Array
from models.io import (
    Member,
    NpzLimits,
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    read_npz,
)

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "Checkpoint",
    "CheckpointError",
    "atomic_write_bytes",
    "atomic_write_text",
    "load_checkpoint",
    "save_checkpoint",
]

FORMAT_NAME = "minigrad-checkpoint"
FORMAT_VERSION = 1

_PARAM = "param/"
_BEST = "best/"
_OPTIM = "optim/"
_META = "meta"
_CELL = "cell"
_NDARRAY_TAG = "__ndarray__"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with members, or an empty zip
_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")


class CheckpointError(ValueError):
    """A checkpoint cannot be written or read; the message names the file and the problem."""


@dataclass(frozen=True)
class Checkpoint:
    """The contents of a checkpoint file.

    Attributes:
        params: parameter arrays by name, each of any shape, dtype as saved.
        optimizer: optimiser state arrays by key (``Optimizer.state_dict``).
        epoch: the epoch number stored with the checkpoint.
        rng_state: the ``Generator.bit_generator.state`` dict.
        config: the run configuration (JSON-decoded).
        extra: further JSON-decoded data, or None if none was saved.
        best_params: the best parameters by name, or None if none were saved.
        cell: the model's cell as JSON text (``minigrad.serialize``), or None
            for a file written without one.
    """

    params: dict[str, Array]
    optimizer: dict[str, AnyArray]
    epoch: int
    rng_state: dict[str, Any]
    config: dict[str, Any]
    extra: dict[str, Any] | None
    best_params: dict[str, Array] | None
    cell: str | None = None

    def make_rng(self) -> np.random.Generator:
        """Build a Generator whose bit generator is restored to :attr:`rng_state`.

        Returns:
            A new generator that continues the saved random stream.

        Raises:
            CheckpointError: if the state names an unknown bit generator or
                does not fit it.
        """
        return _generator_from_state(self.rng_state)


def _integers_only(value: Any, where: str) -> None:
    """Refuse a float (or a float array) anywhere in a bit generator's state: numpy
    would truncate it into another random stream without a word."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            _integers_only(v, f"{where}.{k}")
    elif isinstance(value, float | bool) or (
        isinstance(value, np.ndarray) and value.dtype.kind not in "iu"
    ):
        raise CheckpointError(f"{where}: expected an integer, got {value!r}")


def _generator_from_state(state: Mapping[str, Any]) -> np.random.Generator:
    name = state.get("bit_generator")
    if name not in _BIT_GENERATORS:
        raise CheckpointError(
            f"unknown bit generator {name!r} in rng state; known: {', '.join(_BIT_GENERATORS)}"
        )
    _integers_only(state, "rng state")
    bit_generator = getattr(np.random, name)()
    try:
        bit_generator.state = dict(state)
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise CheckpointError(f"invalid {name} rng state: {exc}") from exc
    return np.random.Generator(bit_generator)


# -- atomic writes -----------------------------------------------------------
# atomic_write_bytes / atomic_write_text are models.io's, re-exported here for the
# modules that write a run's files.


# -- JSON metadata -----------------------------------------------------------


def _json_default(obj: object) -> object:
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise TypeError("object arrays cannot be stored in checkpoint metadata")
        return {_NDARRAY_TAG: obj.tolist(), "dtype": obj.dtype.str}
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def _json_object_hook(obj: dict[str, Any]) -> Any:
    if set(obj) == {_NDARRAY_TAG, "dtype"}:
        dtype = np.dtype(obj["dtype"])
        if dtype.hasobject:
            raise ValueError("object dtype in tagged array")
        return np.array(obj[_NDARRAY_TAG], dtype=dtype)
    return obj


_MAX_INT = 2**128
"""The largest integer a checkpoint's metadata may hold (the 128-bit words of the
random generator's state fit; a larger one is a crafted file)."""


def _non_finite_key(value: object, where: str = "") -> str | None:
    """The dotted key (``extra.best_valid_nll``, ``extra.history[3].lr``) of the first
    NaN or infinity in JSON-able ``value`` (tagged arrays included), or of an integer
    beyond the range of a float (``10**400``: it would overflow when used as one), or
    None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else where
    if isinstance(value, int) and not isinstance(value, bool):
        return None if abs(value) <= _MAX_INT else where
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "fc" and not np.all(np.isfinite(value)):
            return where
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _non_finite_key(item, f"{where}.{key}" if where else str(key))
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = _non_finite_key(item, f"{where}[{i}]")
            if found is not None:
                return found
    return None


# -- saving ------------------------------------------------------------------


def _collect_arrays(
    path: Path, prefix: str, what: str, arrays: Mapping[str, AnyArray], *, floating: bool
) -> dict[str, AnyArray]:
    out: dict[str, AnyArray] = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not name:
            raise CheckpointError(f"{path}: {what} name {name!r} is not a non-empty string")
        array = np.asarray(value)
        if array.dtype.hasobject:
            raise CheckpointError(f"{path}: {what} {name!r} is an object array")
        if floating and not np.issubdtype(array.dtype, np.floating):
            raise CheckpointError(
                f"{path}: {what} {name!r} has dtype {array.dtype}, expected a floating dtype"
            )
        out[prefix + name] = array
    return out


def save_checkpoint(
    path: str | Path,
    *,
    params: Mapping[str, Array],
    optimizer: Mapping[str, AnyArray],
    epoch: int,
    rng_state: Mapping[str, Any],
    config: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
    best_params: Mapping[str, Array] | None = None,
    cell: str | None = None,
) -> None:
    """Write a checkpoint atomically to ``path`` (used verbatim; no suffix is added).

    Args:
        path: the target file; its directory must exist. An existing file is
            replaced only once the new one is complete.
        params: parameter arrays by name, each of any shape, floating dtype.
        optimizer: optimiser state arrays by key, any shapes, non-object dtype.
        epoch: the epoch number, a non-negative integer.
        rng_state: ``Generator.bit_generator.state`` (a dict of JSON-able
            values; numpy arrays inside are tagged and restored).
        config: the run configuration, JSON-able.
        extra: further JSON-able data (history, best epoch, ...), or None.
        best_params: the best parameters so far by name (shapes as in
            ``params``), or None.
        cell: the model's cell as JSON text (``minigrad.serialize.to_json``),
            stored as the member ``cell`` (a 0-d unicode array), or None.

    Raises:
        CheckpointError: naming the file, if an argument cannot be stored
            (object arrays, non-floating parameters, non-JSON-able metadata).
        OSError: if the file cannot be written.
    """
    target = Path(path)
    if isinstance(epoch, bool) or not isinstance(epoch, int | np.integer) or epoch < 0:
        raise CheckpointError(f"{target}: epoch must be a non-negative integer, got {epoch!r}")
    arrays = _collect_arrays(target, _PARAM, "parameter", params, floating=True)
    if best_params is not None:
        arrays.update(_collect_arrays(target, _BEST, "best parameter", best_params, floating=True))
    arrays.update(_collect_arrays(target, _OPTIM, "optimizer state", optimizer, floating=False))
    meta = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "epoch": int(epoch),
        "rng_state": dict(rng_state),
        "config": dict(config),
        "extra": None if extra is None else dict(extra),
        "has_best": best_params is not None,
    }
    bad = _non_finite_key(meta)
    if bad is not None:  # it could not be loaded again
        raise CheckpointError(f"{target}: metadata field {bad!r} is not a finite number")
    try:
        text = json.dumps(meta, default=_json_default, sort_keys=False)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{target}: metadata is not JSON-serialisable: {exc}") from exc
    arrays[_META] = np.array(text)
    if cell is not None:
        if not isinstance(cell, str):
            raise CheckpointError(f"{target}: the cell description must be JSON text")
        arrays[_CELL] = np.array(cell)

    def write(f: IO[bytes]) -> None:
        # ``cast``: numpy's stub types ``savez``'s keyword arguments as possibly ``allow_pickle``.
        np.savez(f, **cast(dict[str, Any], arrays))

    atomic_write(target, write)


# -- loading -----------------------------------------------------------------


_MEMBERS = (
    Member(_META, "U", (0,), required=True),
    Member(_CELL, "biufU"),  # checked below, with its own message
    Member(_PARAM + "*", "f"),
    Member(_BEST + "*", "f"),
    Member(_OPTIM + "*", "biuf"),
)
_LIMITS = NpzLimits(max_members=4096, max_member_bytes=1 << 30, max_total_bytes=4 << 30)
MAX_META_CHARS = 16 << 20
"""The longest ``meta`` document accepted (16 Mi characters)."""
MAX_META_DEPTH = 32
"""The deepest nesting of lists and objects accepted in ``meta``."""


def _read_members(path: Path) -> dict[str, AnyArray]:
    """The members of a checkpoint, each checked before it is read (``models.io.read_npz``)."""

    def error(message: str) -> CheckpointError:
        if "no such file" in message:
            return CheckpointError(f"{path}: no such checkpoint file")
        if "missing member(s) meta" in message:
            return CheckpointError(f"{path}: no 'meta' entry, not a {FORMAT_NAME} file")
        return CheckpointError(
            message.replace("not an .npz (zip) archive", "not an npz (zip) archive")
        )

    members = read_npz(path, "checkpoint", _MEMBERS, _LIMITS, error=error)
    for key, array in members.items():
        if array.dtype.kind != "f" or np.all(np.isfinite(array)):
            continue
        if key.startswith((_PARAM, _BEST)):
            raise CheckpointError(
                f"{path}: parameter {key!r} holds NaN or infinite values; refusing to load it"
            )
        if key.startswith(_OPTIM):  # it would make the first step after --resume NaN
            raise CheckpointError(
                f"{path}: optimizer state {key!r} holds NaN or infinite values; refusing to "
                "load it"
            )
    return members


def _depth(text: str) -> int:
    """The deepest nesting of ``[`` / ``{`` in a JSON text (strings skipped)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _parse_meta(path: Path, members: Mapping[str, AnyArray]) -> dict[str, Any]:
    if _META not in members:
        raise CheckpointError(f"{path}: no 'meta' entry, not a {FORMAT_NAME} file")
    raw = members[_META]
    if raw.shape != () or raw.dtype.kind != "U":
        raise CheckpointError(
            f"{path}: 'meta' must be a 0-d unicode array, got shape {raw.shape} dtype {raw.dtype}"
        )
    text = str(raw[()])
    if len(text) > MAX_META_CHARS:
        raise CheckpointError(f"{path}: 'meta' is longer than {MAX_META_CHARS} characters")
    if _depth(text) > MAX_META_DEPTH:
        raise CheckpointError(f"{path}: 'meta' is nested more than {MAX_META_DEPTH} levels deep")
    try:
        meta = json.loads(text, object_hook=_json_object_hook)
    except (ValueError, TypeError, RecursionError) as exc:
        raise CheckpointError(f"{path}: 'meta' is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(f"{path}: wrong format {found!r} in 'meta', expected {FORMAT_NAME!r}")
    version = meta.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{path}: missing or invalid format version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format version {version} is newer than the supported {FORMAT_VERSION}"
        )
    epoch = meta.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise CheckpointError(f"{path}: invalid epoch {epoch!r} in 'meta'")
    for key in ("rng_state", "config"):
        if not isinstance(meta.get(key), dict):
            raise CheckpointError(f"{path}: 'meta' field {key!r} is missing or not an object")
    if meta.get("extra") is not None and not isinstance(meta["extra"], dict):
        raise CheckpointError(f"{path}: 'meta' field 'extra' is not an object")
    if not isinstance(meta.get("has_best"), bool):
        raise CheckpointError(f"{path}: 'meta' field 'has_best' is missing or not a boolean")
    bad = _non_finite_key(meta)
    if bad is not None:  # a NaN best_valid_nll would never be beaten on resume
        raise CheckpointError(f"{path}: 'meta' field {bad!r} is not a finite number")
    return meta


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    The file is opened with ``allow_pickle=False``: object arrays are refused,
    never unpickled.

    Args:
        path: the checkpoint file.

    Returns:
        The checkpoint; arrays have the shapes and dtypes they were saved with.

    Raises:
        CheckpointError: naming the file, if it is missing, empty, truncated,
            not an npz archive, holds object arrays, a NaN or an infinity in
            a parameter or the optimiser state (naming the key), or is not a
            checkpoint of a supported format and version.
    """
    target = Path(path)
    members = _read_members(target)
    meta = _parse_meta(target, members)
    if meta["rng_state"]:  # restorable, or refused now rather than on resume
        try:
            _generator_from_state(meta["rng_state"])
        except CheckpointError as exc:
            raise CheckpointError(f"{target}: {exc}") from None
    params: dict[str, Array] = {}
    best: dict[str, Array] = {}
    optim: dict[str, AnyArray] = {}
    cell: str | None = None
    for key, array in members.items():
        if key == _META:
            continue
        if key == _CELL:
            if array.shape != () or array.dtype.kind != "U":
                raise CheckpointError(
                    f"{target}: 'cell' must be a 0-d unicode array (JSON text), got shape "
                    f"{array.shape} dtype {array.dtype}"
                )
            cell = str(array[()])
            if len(cell) > MAX_META_CHARS or _depth(cell) > 2 * MAX_META_DEPTH:
                raise CheckpointError(
                    f"{target}: 'cell' is longer than {MAX_META_CHARS} characters or nested "
                    f"more than {2 * MAX_META_DEPTH} levels deep"
                )
            continue
        for prefix, store in ((_PARAM, params), (_BEST, best)):
            if key.startswith(prefix):
                if not np.issubdtype(array.dtype, np.floating):
                    raise CheckpointError(
                        f"{target}: entry {key!r} has dtype {array.dtype}, expected floating"
                    )
                store[key[len(prefix) :]] = array
                break
        else:
            if key.startswith(_OPTIM):
                optim[key[len(_OPTIM) :]] = array
            else:
                raise CheckpointError(f"{target}: unexpected entry {key!r}")
    if best and not meta["has_best"]:
        raise CheckpointError(f"{target}: 'best/' entries present but 'meta' says none were saved")
    return Checkpoint(
        params=params,
        optimizer=optim,
        epoch=int(meta["epoch"]),
        rng_state=meta["rng_state"],
        config=meta["config"],
        extra=meta["extra"],
        best_params=best if meta["has_best"] else None,
        cell=cell,
    )

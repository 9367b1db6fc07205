"""Cells as data: a JSON description of a cell, and the registry of node types.

A cell is a graph of typed nodes, so it can be written down as plain data and
built again, in another process, without running any code the data names:

* ``to_json(cell) -> str`` / ``to_dict(cell) -> dict`` write the description;
* ``from_json(text) -> Cell`` / ``from_dict(data) -> Cell`` build the cell again.

The description (``"format": "minigrad-cell"``, ``"version": 1``) holds the
cell's ``name`` and ``dtype``; its ``inputs`` and ``states`` (name, feature
shape, dtype; a noise input also its ``noise``, ``{"rate", "kind", "per"}``
as ``CellBuilder.noise`` takes them; a state also its ``update`` node and
initial value ``init``, a number or nested lists); its ``params`` (name,
shape, dtype and ``init``, the initialiser as data, ``minigrad.init.describe``); its ``nodes`` in
topological order (name, registered ``type`` name, ``attrs`` and ``inputs``);
its ``outputs`` (output name -> node) and ``losses``.

**Node types travel by name.** A node is written as the name its type is
registered under (``"MatMul"``, ``"Sigmoid"``, ...) and its attributes: the
arguments of its constructor, read back from the attributes of the same name
(``Slice(start, stop)`` keeps ``self.start`` and ``self.stop``), which must be
plain JSON data (None, booleans, integers, finite floats, strings, lists and
string-keyed objects of these). ``from_dict`` looks the name up in the
registry and calls the constructor with the attributes; it never imports a
module. A name it does not know is an error naming the type and how to make
it known:

* ``register_node_type(cls)`` (or ``register_node_types(module)``: every node
  type a module defines) in the process that loads the cell; the ``minigrad``
  command does this for ``--import MODULE``;
* an entry point in the group ``minigrad.nodes`` (``NODE_ENTRY_POINTS``) of an
  installed package, whose object is a node type or a module of node types;
  entry points are loaded the first time a name is missing.

Every built-in node type of ``minigrad.nodes`` is registered under its class
name. Writing a cell that uses a node type nobody registered registers it
under its class name.

Initialisers other than ``minigrad.init``'s are written as ``{"kind":
"opaque", "repr": ...}``; such a parameter of a rebuilt cell cannot be drawn
again (``init_params`` raises), but its values load as usual.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import math
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import numpy as np

from minigrad import nodes as N
from minigrad.cell import Cell, CellBuilder
from minigrad.errors import MinigradError
from minigrad.init import Initializer, describe, from_description
from minigrad.types import Array, Shape

__all__ = [
    "FORMAT",
    "NODE_ENTRY_POINTS",
    "VERSION",
    "CellDescriptionError",
    "UnknownNodeTypeError",
    "from_dict",
    "from_json",
    "node_attributes",
    "node_type_name",
    "node_types",
    "register_node_type",
    "register_node_types",
    "to_dict",
    "to_json",
]

FORMAT = "minigrad-cell"
VERSION = 1
MAX_ITEMS = 5_000
"""The most nodes (and the most inputs, parameters or states) a description may hold: a
64-layer LSTM sequence model has 1,730 nodes; building a cell costs a few milliseconds
and tens of kilobytes per node, so a small file listing 100,000 nodes is refused up
front instead of taking minutes and gigabytes."""
NODE_ENTRY_POINTS = "minigrad.nodes"
"""The entry point group through which installed packages provide node types."""


class CellDescriptionError(MinigradError, ValueError):
    """A cell description is malformed, or a cell cannot be written down as data."""


class UnknownNodeTypeError(CellDescriptionError):
    """A description names a node type that is not registered."""


_BUILTIN: tuple[type[N.Node], ...] = tuple(
    obj
    for obj in vars(N).values()
    if isinstance(obj, type) and issubclass(obj, N.Node) and obj is not N.Node
)
_TYPES: dict[str, type[N.Node]] = {cls.__name__: cls for cls in _BUILTIN}
_entry_points_loaded = False


def node_types() -> dict[str, type[N.Node]]:
    """Every registered node type, name -> class (a copy)."""
    return dict(_TYPES)


def register_node_type(cls: type[N.Node], name: str | None = None) -> str:
    """Register a node type under ``name`` (default: its class name) and return the name.

    Registering the same class again is allowed; another class under a taken
    name raises ``CellDescriptionError``.
    """
    if not (isinstance(cls, type) and issubclass(cls, N.Node)) or inspect.isabstract(cls):
        raise CellDescriptionError(f"{cls!r} is not a concrete minigrad Node subclass")
    key = cls.__name__ if name is None else name
    if not isinstance(key, str) or not key:
        raise CellDescriptionError(f"node type name must be a non-empty string, got {key!r}")
    taken = _TYPES.get(key)
    if taken is not None and taken is not cls:
        raise CellDescriptionError(
            f"node type name {key!r} is taken by {taken.__module__}.{taken.__qualname__}; "
            f"register {cls.__module__}.{cls.__qualname__} under another name"
        )
    _TYPES[key] = cls
    return key


def register_node_types(module: ModuleType) -> list[str]:
    """Register every concrete node type defined in ``module`` (not those it imports).

    Returns:
        The names registered, in definition order.
    """
    out = []
    for obj in vars(module).values():
        if (
            isinstance(obj, type)
            and issubclass(obj, N.Node)
            and obj.__module__ == module.__name__
            and not inspect.isabstract(obj)
        ):
            out.append(register_node_type(obj))
    return out


def _load_entry_points() -> None:
    """Register the node types of the ``minigrad.nodes`` entry points (once)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in importlib.metadata.entry_points(group=NODE_ENTRY_POINTS):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin must not hide the others
            raise CellDescriptionError(
                f"entry point {ep.name!r} ({ep.value}) of group {NODE_ENTRY_POINTS!r} "
                f"failed to load: {type(exc).__name__}: {exc}"
            ) from exc
        if isinstance(obj, ModuleType):
            register_node_types(obj)
        else:
            register_node_type(obj, None if ep.name == getattr(obj, "__name__", None) else ep.name)


def _lookup(name: str, where: str) -> type[N.Node]:
    cls = _TYPES.get(name)
    if cls is None:
        _load_entry_points()
        cls = _TYPES.get(name)
    if cls is None:
        raise UnknownNodeTypeError(
            f"{where}: unknown node type {name!r}; make it known with --import MODULE "
            f"(the module that defines it; minigrad.serialize.register_node_types from "
            f"Python) or a {NODE_ENTRY_POINTS!r} entry point"
        )
    return cls


def node_type_name(node: N.Node) -> str:
    """The name ``node``'s type is registered under (registering it by class name if new)."""
    cls = type(node)
    for key, value in _TYPES.items():
        if value is cls:
            return key
    return register_node_type(cls)


# -- plain data ---------------------------------------------------------------------


def _plain(value: object, where: str) -> Any:
    """``value`` as plain JSON data (tuples become lists), or CellDescriptionError."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        if not math.isfinite(float(value)):
            raise CellDescriptionError(f"{where} is {float(value)!r}; it must be a finite number")
        return float(value)
    if isinstance(value, list | tuple):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    raise CellDescriptionError(
        f"{where} is {type(value).__name__} {value!r}; node attributes must be plain JSON "
        "data (None, bool, int, finite float, str, lists and string-keyed dicts of these)"
    )


def node_attributes(node: N.Node, where: str = "node") -> dict[str, Any]:
    """The constructor arguments of ``node``, read from its attributes of the same names.

    Raises:
        CellDescriptionError: an argument not kept as an attribute, or a value
            that is not plain JSON data (NaN and infinities included).
    """
    cls = type(node)
    try:
        sig = inspect.signature(cls.__init__)
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return {}
    out: dict[str, Any] = {}
    for i, p in enumerate(sig.parameters.values()):
        if i == 0 or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if not hasattr(node, p.name):
            raise CellDescriptionError(
                f"{where} ({cls.__name__}): constructor argument {p.name!r} is not kept as "
                f"attribute self.{p.name}, so the node cannot be written down as data"
            )
        out[p.name] = _plain(
            getattr(node, p.name), f"{where} ({cls.__name__}) attribute {p.name!r}"
        )
    return out


# -- writing ------------------------------------------------------------------------


def _init_data(init: Initializer) -> dict[str, Any]:
    data = describe(init)
    return data if data is not None else {"kind": "opaque", "repr": repr(init)}


def _state_init(value: float | Array, where: str) -> Any:
    if isinstance(value, np.ndarray):
        return {"array": _plain(value.tolist(), where)}
    return _plain(float(value), where)


def to_dict(cell: Cell) -> dict[str, Any]:
    """The description of ``cell`` as plain data (see the module docstring).

    Raises:
        CellDescriptionError: a node whose attributes are not plain JSON data.
    """

    def feats(shape: tuple[object, ...]) -> list[int]:
        return [int(d) for d in shape[1:]]  # type: ignore[call-overload]

    return {
        "format": FORMAT,
        "version": VERSION,
        "name": cell.name,
        "dtype": cell.dtype.name,
        "inputs": [
            {
                "name": n,
                "shape": feats(s.shape),
                "dtype": s.dtype.name,
                **(
                    {}
                    if s.noise is None
                    else {
                        "noise": {"rate": s.noise.rate, "kind": s.noise.kind, "per": s.noise.per}
                    }
                ),
            }
            for n, s in cell.inputs.items()
        ],
        "params": [
            {"name": n, "shape": list(p.shape), "dtype": p.dtype.name, "init": _init_data(p.init)}
            for n, p in cell.params.items()
        ],
        "states": [
            {
                "name": n,
                "shape": feats(s.shape),
                "dtype": s.dtype.name,
                "init": _state_init(s.init, f"state {n!r} initial value"),
                "update": s.update,
            }
            for n, s in cell.states.items()
        ],
        "nodes": [
            {
                "name": n,
                "type": node_type_name(cell.ops[n].op),
                "attrs": node_attributes(cell.ops[n].op, f"node {n!r}"),
                "inputs": list(cell.ops[n].inputs),
            }
            for n in cell.order
        ],
        "outputs": dict(cell.outputs),
        "losses": list(cell.losses),
    }


def to_json(cell: Cell) -> str:
    """The description of ``cell`` as JSON text (no NaN, no infinity)."""
    return json.dumps(to_dict(cell), allow_nan=False)


# -- reading ------------------------------------------------------------------------


class _Opaque:
    """The stand-in for an initialiser that was not written down as data."""

    def __init__(self, param: str, text: str) -> None:
        self.param = param
        self.text = text

    def __call__(
        self, rng: np.random.Generator, shape: Shape, dtype: np.dtype[np.floating]
    ) -> Array:
        raise CellDescriptionError(
            f"parameter {self.param!r}: its initialiser {self.text} was not saved as data, so "
            "it cannot be drawn again; load the parameters' values instead"
        )

    def __repr__(self) -> str:
        return f"opaque({self.text})"


def _get(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in data:
        raise CellDescriptionError(f"{where}: missing {key!r}")
    value = data[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise CellDescriptionError(f"{where}: {key!r} has the wrong type ({type(value).__name__})")
    return value


def _dtype(text: object, where: str) -> np.dtype[np.floating]:
    if text not in ("float32", "float64"):
        raise CellDescriptionError(f"{where}: dtype must be 'float32' or 'float64', got {text!r}")
    return np.dtype(str(text))


def _shape(value: object, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in value
    ):
        raise CellDescriptionError(f"{where}: shape must be a list of ints >= 1, got {value!r}")
    return tuple(value)


def _items(data: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    items = _get(data, key, list, "cell description")
    if len(items) > MAX_ITEMS:
        raise CellDescriptionError(
            f"cell description: {len(items):,} {key}, more than the {MAX_ITEMS:,} a cell may have"
        )
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise CellDescriptionError(f"cell description: {key}[{i}] is not an object")
    out: list[Mapping[str, Any]] = items
    return out


def from_dict(data: Mapping[str, Any]) -> Cell:
    """Build the cell a description holds (see the module docstring); imports nothing.

    Raises:
        UnknownNodeTypeError: a node type that is not registered (naming it).
        CellDescriptionError: a malformed description (naming the part at fault).
        minigrad.errors.GraphError, ShapeError: a description of an invalid cell.
    """
    if not isinstance(data, Mapping):
        raise CellDescriptionError("cell description: expected a JSON object")
    if data.get("format") != FORMAT:
        raise CellDescriptionError(
            f"cell description: format {data.get('format')!r}, expected {FORMAT!r}"
        )
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= VERSION:
        raise CellDescriptionError(f"cell description: unsupported version {version!r}")
    b = CellBuilder(_get(data, "name", str, "cell description"), _dtype(data.get("dtype"), "cell"))
    for i, item in enumerate(_items(data, "inputs")):
        where = f"inputs[{i}]"
        name = _get(item, "name", str, where)
        shape, dtype = _shape(item.get("shape"), where), _dtype(item.get("dtype"), where)
        noise = item.get("noise")
        if noise is None:
            b.input(name, shape, dtype=dtype)
            continue
        if not isinstance(noise, dict) or set(noise) != {"rate", "kind", "per"}:
            raise CellDescriptionError(
                f"{where} ({name!r}): noise must be an object with rate, kind and per"
            )
        try:
            b.noise(name, shape, noise["rate"], kind=noise["kind"], per=noise["per"], dtype=dtype)
        except ValueError as exc:
            raise CellDescriptionError(f"{where}: {exc}") from None
    for i, item in enumerate(_items(data, "params")):
        where = f"params[{i}]"
        name = _get(item, "name", str, where)
        spec = _get(item, "init", dict, where)
        init: Initializer
        if spec.get("kind") == "opaque":
            init = _Opaque(name, str(spec.get("repr", "?")))
        else:
            try:
                init = from_description(spec)
            except ValueError as exc:
                raise CellDescriptionError(f"{where} ({name!r}): {exc}") from None
        b.param(
            name,
            _shape(item.get("shape"), where),
            init=init,
            dtype=_dtype(item.get("dtype"), where),
        )
    updates = []
    for i, item in enumerate(_items(data, "states")):
        where = f"states[{i}]"
        name = _get(item, "name", str, where)
        raw = item.get("init", 0.0)
        value: float | Array
        if isinstance(raw, dict) and isinstance(raw.get("array"), list):
            value = np.asarray(_plain(raw["array"], where), dtype=_dtype(item.get("dtype"), where))
        elif isinstance(raw, int | float) and not isinstance(raw, bool):
            value = float(_plain(raw, f"{where} init"))
        else:
            raise CellDescriptionError(
                f"{where} ({name!r}): init must be a number or {{'array': [...]}}"
            )
        b.state(
            name,
            _shape(item.get("shape"), where),
            init=value,
            dtype=_dtype(item.get("dtype"), where),
        )
        updates.append((name, _get(item, "update", str, where)))
    for i, item in enumerate(_items(data, "nodes")):
        where = f"nodes[{i}]"
        name = _get(item, "name", str, where)
        cls = _lookup(_get(item, "type", str, where), f"cell description: node {name!r}")
        attrs = _get(item, "attrs", dict, where)
        inputs = _get(item, "inputs", list, where)
        if not all(isinstance(n, str) for n in inputs):
            raise CellDescriptionError(f"{where} ({name!r}): inputs must be names")
        try:
            op = cls(**_plain(attrs, f"node {name!r} attrs"))
        except TypeError as exc:
            raise CellDescriptionError(
                f"node {name!r} ({cls.__name__}): attributes {sorted(attrs)} do not fit its "
                f"constructor: {exc}"
            ) from None
        b.node(name, op, *inputs)
    for state, update in updates:
        b.update(state, update)
    outputs = _get(data, "outputs", dict, "cell description")
    for out, node in outputs.items():
        if not isinstance(node, str):
            raise CellDescriptionError(f"cell description: output {out!r} must name a node")
        b.output(out, node)
    for i, node in enumerate(_get(data, "losses", list, "cell description")):
        if not isinstance(node, str):
            raise CellDescriptionError(f"cell description: losses[{i}] must name a node")
        b.loss(node)
    return b.build()


def from_json(text: str) -> Cell:
    """Build the cell a JSON description holds (``from_dict`` of the parsed text)."""
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise CellDescriptionError(f"cell description: not valid JSON: {exc}") from None
    return from_dict(data)


def _refuse_constant(name: str) -> Any:
    raise CellDescriptionError(f"cell description: {name} is not allowed (finite numbers only)")

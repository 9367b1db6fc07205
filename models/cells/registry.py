"""The cell registry: cell name -> fragment, at run time.

A cell is named in one of three ways, all resolved by ``resolve_cell``:

* a registered name: the built-ins (``"gru"``, ``"lstm"``, ...), the cells
  added with ``register_cell(name, fragment)`` in this process, and the cells
  of installed packages' entry points in the group ``minigrad.cells``
  (``CELL_ENTRY_POINTS``; the entry point's name is the cell's name, its
  object the fragment), loaded the first time they are needed;
* a ``module:function`` spec typed by the user (``mypkg.cells:light_gru``):
  the module is imported and the function taken from it;
* a fragment function itself (from Python).

Nothing is frozen at import time: every lookup reads the registry as it is.
A saved model never goes through here (it carries its cell as data,
``minigrad.serialize``), so loading a file never imports a module.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
from collections.abc import Callable

from models.cells.fragment import Fragment
from models.cells.gru import gru_chung, gru_reset_after
from models.cells.lstm import lstm
from models.cells.mgu import mgu
from models.cells.rnn import tanh_rnn

__all__ = [
    "BUILTIN_CELLS",
    "CELLS",
    "CELL_ENTRY_POINTS",
    "cell_origins",
    "fragment",
    "is_cell_spec",
    "is_known_cell",
    "load_entry_points",
    "register_cell",
    "resolve_cell",
]

CELL_ENTRY_POINTS = "minigrad.cells"
"""The entry point group through which installed packages provide cells."""

BUILTIN_CELLS: dict[str, Fragment] = {
    "gru": gru_chung,
    "gru_chung": gru_chung,
    "gru_reset_after": gru_reset_after,
    "lstm": lstm,
    "tanh": tanh_rnn,
    "mgu": mgu,
}
"""The cells that ship with minigrad. ``"gru"`` is Chung et al.'s GRU."""

CELLS: dict[str, Fragment] = dict(BUILTIN_CELLS)
"""Cell name -> fragment: the built-ins, then what was registered (see ``register_cell``)."""

_ORIGINS: dict[str, str] = dict.fromkeys(BUILTIN_CELLS, "built-in")
_entry_points_loaded = False
_SPEC = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")


def register_cell(name: str, frag: Fragment, *, origin: str = "registered") -> None:
    """Make ``frag`` available as the cell ``name`` (``minigrad train --cell name``).

    Raises:
        ValueError: a bad name, a non-callable, or a name already taken by
            another fragment.
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][\w.-]*", name):
        raise ValueError(f"cell name must be a word (letters, digits, _ . -), got {name!r}")
    if not callable(frag):
        raise ValueError(f"cell {name!r}: expected a fragment function, got {frag!r}")
    taken = CELLS.get(name)
    if taken is not None and taken is not frag:
        raise ValueError(f"cell name {name!r} is already taken by {_where(taken)}")
    CELLS[name] = frag
    _ORIGINS.setdefault(name, origin)


def _where(frag: Callable[..., object]) -> str:
    return f"{getattr(frag, '__module__', '?')}:{getattr(frag, '__qualname__', repr(frag))}"


def load_entry_points() -> None:
    """Register the cells of the ``minigrad.cells`` entry points (once per process)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in importlib.metadata.entry_points(group=CELL_ENTRY_POINTS):
        if ep.name in CELLS:
            continue
        try:
            frag = ep.load()
        except Exception as exc:
            raise ValueError(
                f"entry point {ep.name!r} ({ep.value}) of group {CELL_ENTRY_POINTS!r} failed "
                f"to load: {type(exc).__name__}: {exc}"
            ) from exc
        dist = ep.dist.name if ep.dist is not None else "?"
        register_cell(ep.name, frag, origin=f"entry point of {dist} ({ep.value})")


def cell_origins() -> dict[str, str]:
    """Every known cell name (entry points loaded) -> where it comes from."""
    load_entry_points()
    return {name: _ORIGINS.get(name, "registered") for name in CELLS}


def is_cell_spec(text: str) -> bool:
    """True for a ``module:function`` spec such as ``mypkg.cells:light_gru``."""
    return bool(_SPEC.match(text))


def is_known_cell(name: str) -> bool:
    """True for a registered name (entry points included) or a ``module:function`` spec;
    a spec is checked by its form only, nothing is imported."""
    if name not in CELLS:
        load_entry_points()
    return name in CELLS or is_cell_spec(name)


def _valid() -> str:
    return ", ".join(repr(c) for c in CELLS) + ", or a module:function spec"


def resolve_cell(cell: str | Fragment) -> tuple[str, Fragment]:
    """The name and fragment of a cell given by name, ``module:function`` spec or function.

    A function gets its registered name if it has one, else ``module:qualname``.

    Raises:
        ValueError: an unknown name (listing the valid ones), a spec whose
            module cannot be imported or has no such function.
    """
    if callable(cell) and not isinstance(cell, str):
        for name, frag in CELLS.items():
            if frag is cell:
                return name, frag
        return _where(cell), cell
    if not isinstance(cell, str):
        raise ValueError(f"cell must be a name, a module:function spec or a function, got {cell!r}")
    if cell not in CELLS:
        load_entry_points()
    if cell in CELLS:
        return cell, CELLS[cell]
    if not is_cell_spec(cell):
        raise ValueError(f"unknown cell {cell!r}; valid: {_valid()}")
    module_name, _, func = cell.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"--cell {cell}: cannot import module {module_name!r}: {exc}") from None
    except Exception as exc:  # the module's own code failed while it was imported
        raise ValueError(
            f"--cell {cell}: importing module {module_name!r} failed: {type(exc).__name__}: "
            f"{' '.join(str(exc).split())}"
        ) from None
    found = getattr(module, func, None)
    if not callable(found):
        raise ValueError(f"--cell {cell}: module {module_name!r} has no function {func!r}")
    spec_frag: Fragment = found
    return cell, spec_frag


def fragment(cell: str | Fragment) -> Fragment:
    """The fragment of a cell (``resolve_cell``); ValueError listing the valid names otherwise."""
    return resolve_cell(cell)[1]
